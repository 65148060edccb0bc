"""The shared base of every explanation method.

A method turns the explained layer's activations ``A`` (B, K, h, w) into one raw
map per frame and target class, (B, k, h, w). The base then applies what every
method shares: ``M <- ReLU(M)``, then min-max normalisation of each map to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

_EPS = 1e-7


@dataclass(frozen=True, eq=False)
class MethodInput:
    """What a method may read: the activations, the target classes and the classifier."""

    features: torch.Tensor  # A: (B, K, h, w)
    class_ids: torch.Tensor  # (B, k) int64, the classes to explain
    classifier_weight: torch.Tensor | None  # W: (C, K), only on GAP + linear nets


class Method:
    """One explanation method; subclasses override :meth:`raw_maps` and set the flags."""

    name: ClassVar[str]
    # CAM reads the classifier rows: it is defined only where logits = W @ GAP(A) + b.
    needs_gap_linear: ClassVar[bool] = False

    def raw_maps(self, inputs: MethodInput) -> torch.Tensor:
        """Return (B, k, h, w) maps, before ReLU and normalisation."""
        raise NotImplementedError

    def __call__(self, inputs: MethodInput) -> torch.Tensor:
        """``normalise(ReLU(raw_maps))``: (B, k, h, w) float32 in [0, 1]."""
        return normalise_maps(self.raw_maps(inputs).float().relu())


def normalise_maps(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each (h, w) map of a (B, k, h, w) tensor to [0, 1].

    ``M' = (M - min M) / (max M - min M)``; a constant map becomes all zeros.
    """
    flat = maps.flatten(2)
    low = flat.amin(dim=2, keepdim=True)
    span = flat.amax(dim=2, keepdim=True) - low
    scaled = (flat - low) / span.clamp_min(_EPS)
    return torch.where(span > _EPS, scaled, torch.zeros_like(scaled)).view_as(maps)
