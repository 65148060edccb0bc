"""What an Explainer knows of the model it explains, whichever engine runs it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .errors import InputError
from .models import LoadedModel, resolve_labels

if TYPE_CHECKING:
    from .anatomy import Anatomy
    from .backends import OnnxBackend


@dataclass(frozen=True, eq=False)
class ExplainedModel:
    """A classifier, its explained layer and what feeding it takes: from a PyTorch model or an exported graph."""

    name: str
    labels: list[str]
    input_size: int  # frames are resized to input_size x input_size
    mean: tuple[float, float, float]  # RGB, on [0, 1] pixels
    std: tuple[float, float, float]
    layer: str  # the explained layer
    gap_layers: frozenset[str]  # layers whose spatial mean is exactly the classifier's input
    # The classifier rows W (C, K) that CAM reads; None where the layer does not feed a GAP + linear head.
    classifier_weight: torch.Tensor | None
    module: nn.Module | None = None  # None for a graph
    anatomy: Anatomy | None = None  # None for a graph, which exposes one layer

    @classmethod
    def from_loaded(cls, loaded: LoadedModel, layer: str | None, device: torch.device) -> ExplainedModel:
        """A loaded PyTorch model on ``device``, explained at ``layer`` (default: found by probing)."""
        # Channels-last convolutions run 1.2-1.6x faster on the CPU (scripts/bench.py); results are unchanged.
        module = loaded.module.to(device, memory_format=torch.channels_last)
        anatomy = loaded.anatomy
        layer = anatomy.resolve_layer(layer, loaded.name)
        weight = (module.get_submodule(anatomy.classifier).weight.detach()
                  if layer in anatomy.gap_layers else None)
        return cls(loaded.name, loaded.labels, loaded.input_size, loaded.mean, loaded.std, layer,
                   anatomy.gap_layers, weight, module, anatomy)

    @classmethod
    def from_graph(cls, graph: OnnxBackend, path: Path, labels: str | Path | list[str] | None,
                   layer: str | None, precision: str) -> ExplainedModel:
        """An ONNX graph exported by streamcam: everything comes from its metadata (``labels`` may replace its names)."""
        meta = graph.metadata
        if precision != "fp32" and precision != meta.precision:
            raise InputError(f"{path} is an {meta.precision} graph; export another for {precision}")
        if layer not in (None, meta.layer):
            raise InputError(f"{path} explains layer {meta.layer}; export another graph (--layer) or use --backend torch")
        return cls(meta.model, meta.labels if labels is None else resolve_labels(labels, len(meta.labels)),
                   meta.input_size, meta.mean, meta.std, meta.layer,
                   frozenset({meta.layer}) if meta.classifier_weight else frozenset(), graph.classifier_weight)

    def stage_layers(self) -> list[str]:
        """The multi-layer grid's default: the last four stages' outputs (none for a graph)."""
        return self.anatomy.stage_layers() if self.anatomy is not None else []

    def resolve_layers(self, layers: str | Sequence[str]) -> list[str]:
        """``"auto"``, ``"a,b,c"`` or a list of names -> the grid's layers, each checked."""
        if isinstance(layers, str):
            if layers == "auto":
                return self.stage_layers()
            layers = [name.strip() for name in layers.split(",") if name.strip()]
        return [self.anatomy.resolve_layer(name, self.name) for name in layers]

    def cam_refusal(self) -> str | None:
        """Why CAM cannot explain this model at its layer (no GAP + linear head there), or None."""
        if self.classifier_weight is not None:
            return None
        if self.gap_layers:
            return f"layer '{self.layer}' does not feed the classifier through global average pooling"
        return f"{self.name}'s head is not global average pooling + one linear layer"
