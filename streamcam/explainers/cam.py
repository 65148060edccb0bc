"""CAM: Class Activation Mapping (Zhou et al., CVPR 2016)."""

from __future__ import annotations

import torch

from .base import Method, MethodInput


class CAM(Method):
    """``M_c(x, y) = sum_k w_k^c A_k(x, y)``, with ``w^c`` the classifier row of class c.

    For a whole batch and its top-k classes this is one batched matmul on the
    device: ``bmm(W[class_ids], A.flatten(2))``, (B, k, K) x (B, K, h*w).
    """

    name = "cam"
    needs_gap_linear = True

    def raw_maps(self, inputs: MethodInput) -> torch.Tensor:
        features = inputs.features
        batch, channels, height, width = features.shape
        rows = inputs.classifier_weight[inputs.class_ids].to(features.dtype)  # (B, k, K)
        return torch.bmm(rows, features.reshape(batch, channels, height * width)).view(batch, -1, height, width)
