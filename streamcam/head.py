"""Give any backbone a CAM-ready head: global average pooling + one linear layer for N classes.

CAM needs ``logits = W @ mean_xy(A) + b``, ``A`` the explained layer's output
(B, K, h, w). What :func:`streamcam.anatomy.probe` found decides how to get there:

- ``replace``: the net already pools ``A`` globally into one final ``nn.Linear``
  (ResNets, EfficientNets, the default model): that Linear makes way for a new
  one with ``classes`` outputs.
- ``wrap``: the head is something else (VGG's three fully connected layers,
  MobileNetV3's hidden layer, ConvNeXt's norm after pooling): the backbone's
  top-level modules that lead to the layer are kept, in order and under their own
  names, followed by ``mean over (h, w)`` and one new Linear; the old head goes.

Why ``wrap`` calls the kept modules in order rather than hooking the layer or
tracing it (``create_feature_extractor``): a hook that hands ``A`` to the head
sees the layer's output before streamcam's own hooks replace it (Grad-CAM hands
on a leaf tensor there, see :func:`streamcam.backends.hooks.capture_outputs`), so
no gradient would reach ``A``; and an FX trace calls leaf modules only, so the
explained layer (``features``) would no longer run as a module to be hooked.
One forward pass checks that the chain is what the backbone computes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .anatomy import Anatomy
from .errors import InputError

REPLACE, WRAP = "replace", "wrap"
_NEW_LINEAR = "classifier"  # the new Linear's name in a wrapped model (another if a kept module has it)
_INIT_STD = 0.01


@dataclass(frozen=True)
class HeadSpec:
    """How a CAM-ready head was made: enough to make it again on a fresh copy of the same architecture."""

    kind: str  # REPLACE or WRAP
    module: str  # the new nn.Linear, by its name in the new model
    layer: str  # the layer the head pools, by its name in the new model: where CAM applies
    channels: int  # the Linear's inputs (the layer's channels, K)
    classes: int  # the Linear's outputs
    kept: tuple[str, ...] = ()  # WRAP: the backbone's top-level modules, called in this order

    def __post_init__(self) -> None:
        object.__setattr__(self, "kept", tuple(self.kept))  # JSON gives a list
        if self.kind not in (REPLACE, WRAP):
            raise ValueError(f"unknown head kind {self.kind!r}")
        if not all(isinstance(v, str) and v for v in (self.module, self.layer, *self.kept)):
            raise ValueError("module, layer and kept must be module names")
        if not all(isinstance(v, int) and v > 0 for v in (self.channels, self.classes)):
            raise ValueError("channels and classes must be positive integers")
        if (self.kind == WRAP) != bool(self.kept):
            raise ValueError("a wrapped head names the modules it keeps, a replaced one none")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> HeadSpec:
        """The spec :meth:`to_json` wrote; ValueError (or TypeError) for anything else."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return cls(**data)


class GapLinearNet(nn.Module):
    """``logits = W @ mean_xy(A) + b``, ``A`` the kept modules applied in turn to the image."""

    def __init__(self, kept: dict[str, nn.Module], linear_name: str, linear: nn.Linear) -> None:
        super().__init__()
        for name, module in kept.items():
            self.add_module(name, module)
        self.add_module(linear_name, linear)
        self.kept = tuple(kept)
        self.linear_name = linear_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.kept:
            x = self._modules[name](x)
        return self._modules[self.linear_name](x.mean(dim=(2, 3)))


def with_new_head(module: nn.Module, anatomy: Anatomy, classes: int, *,
                  input_size: int = 224) -> tuple[nn.Module, HeadSpec]:
    """``module`` with a GAP + one ``nn.Linear(channels, classes)`` head at ``anatomy.default_layer``.

    ``anatomy`` is ``probe(module, input_size)``; ``input_size`` sizes the one
    forward pass that checks a wrapped chain. The new Linear starts with weights
    drawn from N(0, 0.01^2) by the caller's torch seed and a zero bias: every class
    starts near the same logit. The result shares ``module``'s layers (a replaced
    head changes ``module`` itself): keep using the result, not ``module``.
    """
    layer = anatomy.default_layer
    if anatomy.classifier is not None and layer in anatomy.gap_layers:
        old = module.get_submodule(anatomy.classifier)
        spec = HeadSpec(REPLACE, anatomy.classifier, layer, old.in_features, classes)
    else:
        kept, channels = _chain_to(module, layer, input_size)
        spec = HeadSpec(WRAP, _free_name(kept), layer, channels, classes, kept)
    model = apply_head(module, spec)
    linear = model.get_submodule(spec.module)
    with torch.no_grad():
        nn.init.normal_(linear.weight, std=_INIT_STD)
        nn.init.zeros_(linear.bias)
    return model, spec


def apply_head(module: nn.Module, spec: HeadSpec) -> nn.Module:
    """Make ``spec``'s head on ``module`` (a fresh copy of the architecture it was made on); the new
    Linear keeps PyTorch's default initialisation. InputError if ``module`` does not fit ``spec``."""
    if spec.kind == REPLACE:
        parent_name, _, child = spec.module.rpartition(".")
        old = _submodule(module, spec.module)
        if not isinstance(old, nn.Linear) or old.in_features != spec.channels:
            raise InputError(f"{type(module).__name__}'s {spec.module} is not a Linear layer with "
                             f"{spec.channels} inputs")
        linear = nn.Linear(spec.channels, spec.classes, device=old.weight.device, dtype=old.weight.dtype)
        setattr(_submodule(module, parent_name) if parent_name else module, child, linear)
        return module
    kept = {name: _submodule(module, name) for name in spec.kept}
    weight = next(module.parameters(), torch.empty(0))
    model = GapLinearNet(kept, spec.module,
                         nn.Linear(spec.channels, spec.classes, device=weight.device, dtype=weight.dtype))
    if hasattr(module, "pretrained_cfg"):  # timm's preprocessing, which load_model reads from a module
        model.pretrained_cfg = module.pretrained_cfg
    return model


def head_parameters(model: nn.Module, spec: HeadSpec) -> list[nn.Parameter]:
    """The new head's parameters (the frozen-backbone phase trains these alone)."""
    return list(model.get_submodule(spec.module).parameters())


def _submodule(module: nn.Module, name: str) -> nn.Module:
    try:
        return module.get_submodule(name)
    except AttributeError:
        raise InputError(f"{type(module).__name__} has no module {name}") from None


def _chain_to(module: nn.Module, layer: str, input_size: int) -> tuple[tuple[str, ...], int]:
    """The top-level modules that compute ``layer``'s output from the image, each fed the previous
    one's output (checked on one forward pass), and that output's channels."""
    calls: list[tuple[str, object, object]] = []  # (name, first input, output) of each top-level call, in order
    reached: list[torch.Tensor] = []

    def record(name: str):
        return lambda _m, inputs, output: calls.append((name, inputs[0] if inputs else None, output))

    handles = [child.register_forward_hook(record(name)) for name, child in module.named_children()]
    handles.append(_submodule(module, layer).register_forward_hook(lambda _m, _i, output: reached.append(output)))
    modes = {m: m.training for m in module.modules()}
    parameter = next(module.parameters(), None)
    # A generator of its own: the caller's seed is left to draw the new head's weights.
    x = torch.randn(1, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    x = x.to(parameter.device) if parameter is not None else x
    try:
        module.eval()
        with torch.inference_mode():
            module(x)
    finally:
        for handle in handles:
            handle.remove()
        for m, training in modes.items():
            m.train(training)
    kept: list[str] = []
    previous: object = x
    for name, given, output in calls:
        if given is not previous or name in kept:
            break
        kept.append(name)
        previous = output
        if reached and output is reached[0]:
            return tuple(kept), int(output.shape[1])
    raise InputError(f"cannot give {type(module).__name__} a GAP + linear head at {layer}: its top-level modules "
                     f"do not lead there one after the other")


def _free_name(kept: tuple[str, ...]) -> str:
    name = _NEW_LINEAR
    while name in kept:
        name = "new_" + name
    return name
