"""CAM: Class Activation Mapping (Zhou et al., CVPR 2016)."""

from __future__ import annotations

import torch

from .base import ChannelWeightedMethod, MethodInput


class CAM(ChannelWeightedMethod):
    """``M_c(x, y) = sum_k w_k^c A_k(x, y)``, with ``w^c`` the classifier row of class c.

    For a whole batch and its top-k classes this is one batched matmul on the
    device: ``bmm(W[class_ids], A.flatten(2))``, (B, k, K) x (B, K, h*w).
    """

    name = "cam"
    needs_gap_linear = True

    def channel_weights(self, inputs: MethodInput) -> torch.Tensor:
        return inputs.classifier_weight[inputs.class_ids]
