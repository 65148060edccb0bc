"""Find, by watching one forward pass, which layer to explain and whether CAM applies.

CAM needs the head to be global average pooling followed by one linear layer,
``logits = W @ mean_xy(A) + b``. Rather than trusting module names, the probe
checks it numerically: the classifier's input must equal the spatial mean of
the layer's output, and the classifier's output must be the model's output.
"""

from __future__ import annotations

import difflib
import itertools
import re
from dataclasses import dataclass

import torch
from torch import nn

from .errors import InputError

# Modules that only pass features on: never the default explained layer.
_PASS_THROUGH = re.compile(r"Pool|Identity|Dropout|Flatten", re.IGNORECASE)
_LISTED_CANDIDATES = 12


@dataclass(frozen=True, eq=False)
class Anatomy:
    """What one probing forward pass revealed about a classifier."""

    num_classes: int
    candidates: tuple[str, ...]  # modules with a (B, K, h, w) output, h*w > 1, in execution order
    blocks: tuple[str, ...]  # the candidates that compute something (not pooling, identity, dropout)
    default_layer: str  # the last block before global pooling
    classifier: str | None  # the final nn.Linear, when its output is the model's output
    gap_layers: frozenset[str]  # layers whose spatial mean is exactly the classifier's input
    sizes: dict[str, tuple[int, int]]  # candidate -> (h, w) of its output on the probe image

    def resolve_layer(self, name: str | None, model_name: str = "the model") -> str:
        """Return the layer to explain, or raise an InputError listing the candidates."""
        if name is None:
            return self.default_layer
        if name in self.candidates:
            return name
        close = difflib.get_close_matches(name, self.candidates, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        # Top-level blocks and their direct children read best; nested ones are accepted too.
        shallow = [n for n in self.blocks if n.count(".") <= 1]
        shown = shallow[-_LISTED_CANDIDATES:]
        raise InputError(
            f"layer '{name}' is not a convolutional layer of {model_name}.{hint} "
            f"Candidates (the last {len(shown)} blocks; nested modules work too): {', '.join(shown)}"
        )

    def stage_layers(self, count: int = 4) -> list[str]:
        """The outputs of the last ``count`` stages, ending with the default layer.

        A stage is the largest block at one feature resolution (the one holding
        the most other blocks; the last one on a tie): layer1..layer4 of a ResNet;
        blocks.1, blocks.2, blocks.4 and bn2 of EfficientNet-Lite0.
        """
        blocks = list(self.blocks[: self.blocks.index(self.default_layer)])
        by_size: dict[tuple[int, int], list[str]] = {}
        for name in blocks:
            if self.sizes[name] != self.sizes[self.default_layer]:
                by_size.setdefault(self.sizes[name], []).append(name)

        def size_rank(name: str) -> tuple[int, int]:
            inside = sum(other.startswith(name + ".") for other in blocks)
            return inside, blocks.index(name)

        ends = [max(names, key=size_rank) for names in by_size.values()]
        return (sorted(ends, key=blocks.index) + [self.default_layer])[-count:]


def probe(module: nn.Module, input_size: int) -> Anatomy:
    """Run one forward pass on a random image and record what each module produced."""
    order = itertools.count()
    spatial: dict[str, int] = {}  # name -> order of its last call
    sizes: dict[str, tuple[int, int]] = {}
    pooled: dict[str, torch.Tensor] = {}  # name -> spatial mean of its output
    linear: dict[str, tuple[int, torch.Tensor, torch.Tensor]] = {}  # name -> (order, input, output)

    def record(name: str, layer: nn.Module):
        def hook(_module: nn.Module, inputs: tuple, output: object) -> None:
            step = next(order)
            # The probe image is square, so true feature maps are too; this skips channels-last
            # tensors (B, h, w, C) such as those inside ConvNeXt blocks.
            if (
                isinstance(output, torch.Tensor)
                and output.dim() == 4
                and output.shape[2] > 1
                and abs(output.shape[2] - output.shape[3]) <= 1
            ):
                spatial[name] = step
                sizes[name] = (output.shape[2], output.shape[3])
                pooled[name] = output.mean(dim=(2, 3))
            if isinstance(layer, nn.Linear) and isinstance(output, torch.Tensor):
                linear[name] = (step, inputs[0], output)

        return hook

    handles = [m.register_forward_hook(record(n, m)) for n, m in module.named_modules() if n]
    try:
        parameter = next(module.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(1, 3, input_size, input_size, generator=generator).to(device)
        with torch.inference_mode():
            logits = module(x)
    except Exception as error:
        raise InputError(f"the model fails on a {input_size}x{input_size} image: {error}") from error
    finally:
        for handle in handles:
            handle.remove()

    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise InputError("the model's output is not a (batch, classes) tensor of class scores")
    if not spatial:
        raise InputError("the model has no layer with a spatial (B, K, h, w) output: is it a CNN?")
    candidates = tuple(sorted(spatial, key=spatial.__getitem__))
    classifier = _final_linear(linear, logits)
    gap_layers = frozenset()
    if classifier is not None:
        features_in = linear[classifier][1].flatten(1)
        gap_layers = frozenset(
            n for n, mean in pooled.items()
            if mean.shape == features_in.shape and torch.allclose(mean, features_in, rtol=1e-4, atol=1e-5)
        )
    # The last real block; on a GAP + linear net, the last one feeding the pooling.
    blocks = [n for n in candidates if not _PASS_THROUGH.search(type(module.get_submodule(n)).__name__)]
    preferred = [n for n in blocks if n in gap_layers] or blocks or list(candidates)
    return Anatomy(
        num_classes=int(logits.shape[1]),
        candidates=candidates,
        blocks=tuple(blocks),
        default_layer=preferred[-1],
        classifier=classifier,
        gap_layers=gap_layers,
        sizes=sizes,
    )


def _final_linear(linear: dict[str, tuple[int, torch.Tensor, torch.Tensor]], logits: torch.Tensor) -> str | None:
    if not linear:
        return None
    name = max(linear, key=lambda n: linear[n][0])
    output = linear[name][2]
    return name if output.shape == logits.shape and torch.equal(output, logits) else None
