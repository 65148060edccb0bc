"""Guided Backpropagation and Guided Grad-CAM: maps at input resolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Method, MethodInput
from .gradcam import GradCAM


class GuidedBackprop(Method):
    """Guided Backpropagation (Springenberg et al., ICLR 2015 workshop).

    Gradients of the target score with respect to the input image, where every
    activation's backward lets only positive gradients through, and only where
    its forward input was positive. Drawn as a heatmap: ``M = max_rgb |g|``, at
    the model's input resolution (S x S).
    """

    name = "guided-backprop"
    needs_input_grad = True

    def raw_maps(self, inputs: MethodInput) -> torch.Tensor:
        return inputs.input_gradients.abs().amax(dim=2)


class GuidedGradCAM(GradCAM):
    """Guided Grad-CAM (Selvaraju et al., ICCV 2017): guided backprop x upsampled Grad-CAM.

    ``M = max_rgb |g * up(GradCAM)|`` at input resolution, with ``up`` bilinear.
    """

    name = "guided-gradcam"
    needs_input_grad = True

    def raw_maps(self, inputs: MethodInput) -> torch.Tensor:
        guided = inputs.input_gradients  # (B, k, 3, S, S)
        cam = super().raw_maps(inputs).relu()  # (B, k, h, w)
        upsampled = F.interpolate(cam, size=guided.shape[-2:], mode="bilinear", align_corners=False)
        return (guided * upsampled[:, :, None]).abs().amax(dim=2)
