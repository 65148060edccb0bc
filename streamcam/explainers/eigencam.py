"""Eigen-CAM (Muhammad & Yeasin, IJCNN 2020): no gradients, no class."""

from __future__ import annotations

import torch

from .base import Method, MethodInput


class EigenCAM(Method):
    """The activations projected on their first principal component.

    Per frame, with ``X`` the (h*w, K) activations, centred per channel:
    ``X = U S V^T``, ``M = X v_1``. An SVD's sign is arbitrary: it is chosen so
    that M correlates positively with the summed activations ``sum_k A_k``, so
    the map points where the layer fires. Batched over frames; the same map
    serves every target class.
    """

    name = "eigencam"

    def raw_maps(self, inputs: MethodInput) -> torch.Tensor:
        features = inputs.features.float()
        batch, channels, height, width = features.shape
        x = features.reshape(batch, channels, height * width).transpose(1, 2)  # (B, n, K)
        x = x - x.mean(dim=1, keepdim=True)
        _, _, vh = torch.linalg.svd(x, full_matrices=False)
        projection = torch.bmm(x, vh[:, 0, :, None])[..., 0]  # (B, n)
        energy = features.sum(dim=1).reshape(batch, -1)
        agreement = ((projection - projection.mean(1, keepdim=True)) * (energy - energy.mean(1, keepdim=True))).sum(1)
        sign = torch.where(agreement < 0, -1.0, 1.0)[:, None]
        maps = (projection * sign).view(batch, 1, height, width)
        return maps.expand(-1, inputs.class_ids.shape[1], -1, -1)
