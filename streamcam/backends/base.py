"""What an engine is to the rest of streamcam: the :class:`Backend` protocol and what a forward pass gives.

An engine says what it can do through class attributes (its capabilities),
readable before it is built: the onnxruntime engine is chosen, or refused,
before its graph is exported. Engine choice (:mod:`streamcam.backends.choice`)
reads these and nothing else; an engine's ``name`` only labels results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch


@dataclass(frozen=True, eq=False)
class ForwardResult:
    """The class scores and the explained layers' activations for one batch."""

    logits: torch.Tensor  # (B, C); attached to the autograd graph when gradients are tracked
    features: dict[str, torch.Tensor]  # layer name -> (B, K, h, w)
    # The chosen classes (B, k), their scores and their CAM (B, k, h, w), from a graph that computes them.
    class_ids: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    cam: torch.Tensor | None = None


class Backend(Protocol):
    """An engine that runs a model: logits and feature maps, and gradients where it has them."""

    name: ClassVar[str]  # what results and records call it: "torch", "onnxruntime"
    # Capabilities, read by engine choice:
    gradients_at_any_layer: ClassVar[bool]  # autograd anywhere; False: only dy_c/dA = W[c] / (h w) at a GAP + linear layer
    gradients_to_input: ClassVar[bool]  # back-propagates to the input (guided methods)
    several_layers: ClassVar[bool]  # any layer, several in one pass (the grid); False: its one exported layer
    precisions: ClassVar[frozenset[str]]  # --precision values it runs
    device_types: ClassVar[frozenset[str] | None]  # torch device types it runs on; None: any torch runs on
    compiles: ClassVar[bool]  # --compile applies to it

    def forward(self, x: torch.Tensor, layers: Sequence[str], track_gradients: bool = False,
                top_k: int = 1, target_class: int | None = None) -> ForwardResult:
        """One forward pass of a preprocessed (B, 3, S, S) batch, keeping ``layers``' activations."""
        ...

    def gradients(self, result: ForwardResult, class_ids: torch.Tensor,
                  layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """``dy_c/dA`` for every frame and chosen class, (B, k, K, h, w) per layer."""
        ...

    def input_gradients(self, x: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
        """Guided-backpropagation gradients of the chosen classes' scores w.r.t. the input: (B, k, 3, S, S)."""
        ...

    def close(self) -> None:
        """Give back whatever the engine changed on a model it was handed."""
        ...
