"""The shared base of every explanation method.

A method turns what the backend measured at the explained layer (activations
``A`` (B, K, h, w), and for gradient methods ``G = dy_c/dA`` (B, k, K, h, w), or
gradients at the input) into one raw map per frame and target class, (B, k, h, w).
The base then applies what every method shares: ``M <- ReLU(M)``, then min-max
normalisation of each map to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

_EPS = 1e-7


@dataclass(frozen=True, eq=False)
class MethodInput:
    """What a method may read. Tensors are on the model's device, batched over frames and targets."""

    features: torch.Tensor  # A: (B, K, h, w)
    class_ids: torch.Tensor  # (B, k) int64, the classes to explain
    classifier_weight: torch.Tensor | None = None  # W: (C, K), on GAP + linear nets
    gradients: torch.Tensor | None = None  # G = dy_c/dA: (B, k, K, h, w), for needs_grad methods
    input_gradients: torch.Tensor | None = None  # (B, k, 3, S, S), for needs_input_grad methods


class Method:
    """One explanation method; subclasses override one function and set the flags."""

    name: ClassVar[str]
    # CAM reads the classifier rows: it is defined only where logits = W @ GAP(A) + b.
    needs_gap_linear: ClassVar[bool] = False
    # Gradients of the target scores with respect to the explained layer's activations.
    needs_grad: ClassVar[bool] = False
    # Guided-backpropagation gradients with respect to the input image.
    needs_input_grad: ClassVar[bool] = False

    def raw_maps(self, inputs: MethodInput) -> torch.Tensor:
        """Return (B, k, h, w) maps, before ReLU and normalisation."""
        raise NotImplementedError

    def __call__(self, inputs: MethodInput) -> torch.Tensor:
        """``normalise(ReLU(raw_maps))``: (B, k, h, w) float32 in [0, 1]."""
        return normalise_maps(self.raw_maps(inputs).float().relu())


class ChannelWeightedMethod(Method):
    """Methods of the form ``M_c = sum_k w_k^c A_k``: they differ only in the channel weights."""

    def channel_weights(self, inputs: MethodInput) -> torch.Tensor:
        """Return the weights ``w`` (B, k, K) of each channel, per frame and target."""
        raise NotImplementedError

    def raw_maps(self, inputs: MethodInput) -> torch.Tensor:
        # One batched matmul for every frame and target: (B, k, K) x (B, K, h*w).
        features = inputs.features
        batch, channels, height, width = features.shape
        weights = self.channel_weights(inputs).to(features.dtype)
        return torch.bmm(weights, features.reshape(batch, channels, height * width)).view(batch, -1, height, width)


def normalise_maps(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each (h, w) map of a (B, k, h, w) tensor to [0, 1].

    ``M' = (M - min M) / (max M - min M)``; a constant map becomes all zeros.
    """
    flat = maps.flatten(2)
    low = flat.amin(dim=2, keepdim=True)
    span = flat.amax(dim=2, keepdim=True) - low
    scaled = (flat - low) / span.clamp_min(_EPS)
    return torch.where(span > _EPS, scaled, torch.zeros_like(scaled)).view_as(maps)
