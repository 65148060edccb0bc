"""``streamcam.Explainer``: a model, a layer and a method, explaining batches of frames."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .backends import TorchBackend, check_backend
from .errors import InputError
from .explainers import MethodInput, make_method
from .models import DEFAULT_MODEL, load_model
from .preprocess import Preprocessor
from .types import Explanation


class Explainer:
    """Explain what a CNN classifier looks at, for whole batches of frames at once.

    >>> ex = Explainer()                       # EfficientNet-Lite0, ImageNet, CAM
    >>> res = ex([bgr_frame])                  # res.class_ids, .scores, .labels, .maps
    """

    def __init__(
        self,
        model: str | Path | nn.Module = DEFAULT_MODEL,
        method: str = "cam",
        layer: str | None = None,
        labels: str | Path | list[str] | None = None,
        device: str | torch.device = "auto",
        top_k: int = 1,
        backend: str = "auto",
        weights: str | Path | None = None,
        target_class: int | str | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.backend_name = check_backend(backend)
        self.method = make_method(method)
        loaded = load_model(model, weights=weights, labels=labels)
        self.model_name = loaded.name
        # Channels-last convolutions run 1.2-1.6x faster on the CPU (scripts/bench.py); results are unchanged.
        self.model = loaded.module.to(self.device, memory_format=torch.channels_last)
        self.labels = loaded.labels
        self.input_size = loaded.input_size
        self.layer = loaded.anatomy.resolve_layer(layer, loaded.name)
        self.classifier_weight = self._classifier_weight(loaded.anatomy)
        if top_k < 1 or top_k > len(self.labels):
            raise InputError(f"top-k must be between 1 and {len(self.labels)} (the number of classes), not {top_k}")
        self.top_k = top_k
        self.target_class = None if target_class is None else self.class_index(target_class)
        self.preprocess = Preprocessor(loaded.input_size, loaded.mean, loaded.std, self.device)
        self.backend = TorchBackend(self.model, self.layer)

    def class_index(self, target: int | str) -> int:
        """Resolve a class id or a label (case-insensitive) to a class id."""
        if isinstance(target, int) or (isinstance(target, str) and target.strip().isdigit()):
            index = int(target)
            if not 0 <= index < len(self.labels):
                raise InputError(f"class {index} is out of range: the model has {len(self.labels)} classes")
            return index
        folded = [label.lower() for label in self.labels]
        if target.lower() in folded:
            return folded.index(target.lower())
        close = difflib.get_close_matches(target.lower(), folded, n=3)
        hint = f" Did you mean {', '.join(repr(self.labels[folded.index(c)]) for c in close)}?" if close else ""
        raise InputError(f"no class is called '{target}'.{hint} Give a label or a class id.")

    def explain(self, frames: Sequence[np.ndarray]) -> Explanation:
        """Explain H x W x 3 uint8 BGR frames (any sizes) as one batch."""
        return self.explain_tensor(self.preprocess(frames))

    __call__ = explain

    def explain_tensor(self, x: torch.Tensor) -> Explanation:
        """Explain an already preprocessed (B, 3, S, S) batch on ``self.device``."""
        result = self.backend.forward(x)
        probabilities = result.logits.float().softmax(dim=1)
        if self.target_class is None:
            scores, class_ids = probabilities.topk(self.top_k, dim=1)
        else:
            class_ids = torch.full((x.shape[0], 1), self.target_class, dtype=torch.int64, device=x.device)
            scores = probabilities.gather(1, class_ids)
        maps = self.method(MethodInput(result.features, class_ids, self.classifier_weight))
        ids = class_ids.tolist()  # the one small host copy the labels need
        return Explanation(
            class_ids=class_ids,
            scores=scores,
            labels=[[self.labels[i] for i in row] for row in ids],
            maps=maps,
            method=self.method.name,
            layer=self.layer,
        )

    def _classifier_weight(self, anatomy) -> torch.Tensor | None:
        if not self.method.needs_gap_linear:
            return None
        if self.layer not in anatomy.gap_layers:
            where = (
                f"layer '{self.layer}' does not feed the classifier through global average pooling"
                if anatomy.gap_layers
                else f"{self.model_name}'s head is not global average pooling + one linear layer"
            )
            raise InputError(f"{self.method.name} needs a GAP + linear head, but {where}; use --method gradcam")
        return self.model.get_submodule(anatomy.classifier).weight.detach()


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> the first CUDA device if there is one, else the CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError):
        raise InputError(f"unknown device '{device}': use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device '{device}' asked for, but no CUDA GPU is available: use --device cpu")
    return resolved
