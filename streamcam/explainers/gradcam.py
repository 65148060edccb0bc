"""The Grad-CAM family: maps from the activations A and the gradients G = dy_c/dA of the target score.

All take (B, k, K, h, w) gradients from ONE backward pass per batch, covering
every frame and every target class.
"""

from __future__ import annotations

import torch

from .base import ChannelWeightedMethod, Method, MethodInput

_EPS = 1e-7


class GradCAM(ChannelWeightedMethod):
    """Grad-CAM (Selvaraju et al., ICCV 2017): ``a_k^c = mean_xy G_k``, ``M = ReLU(sum_k a_k^c A_k)``."""

    name = "gradcam"
    needs_grad = True

    def channel_weights(self, inputs: MethodInput) -> torch.Tensor:
        return inputs.gradients.mean(dim=(3, 4))


class Counterfactual(GradCAM):
    """Counterfactual Grad-CAM (Selvaraju et al., sec. 5): ``M = ReLU(sum_k (-a_k^c) A_k)``.

    The regions whose removal would make the network more confident in class c:
    what argues against it.
    """

    name = "counterfactual"

    def channel_weights(self, inputs: MethodInput) -> torch.Tensor:
        return -super().channel_weights(inputs)


class GradCAMPlusPlus(ChannelWeightedMethod):
    """Grad-CAM++ (Chattopadhay et al., WACV 2018).

    ``alpha_k(x,y) = G^2 / (2 G^2 + sum_ab A_k(a,b) G^3)`` (0 where G = 0),
    ``w_k = sum_xy alpha_k(x,y) ReLU(G_k(x,y))``, ``M = ReLU(sum_k w_k A_k)``.
    """

    name = "gradcam++"
    needs_grad = True

    def channel_weights(self, inputs: MethodInput) -> torch.Tensor:
        grads = inputs.gradients
        squared, cubed = grads.pow(2), grads.pow(3)
        activation_sums = inputs.features.sum(dim=(2, 3))[:, None, :, None, None]  # (B, 1, K, 1, 1)
        alpha = squared / (2 * squared + activation_sums * cubed + _EPS)
        alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
        return (alpha * grads.relu()).sum(dim=(3, 4))


class XGradCAM(ChannelWeightedMethod):
    """XGrad-CAM (Fu et al., BMVC 2020): ``w_k = sum_xy A_k(x,y) G_k(x,y) / sum_xy A_k(x,y)``."""

    name = "xgradcam"
    needs_grad = True

    def channel_weights(self, inputs: MethodInput) -> torch.Tensor:
        features = inputs.features[:, None]  # (B, 1, K, h, w)
        sums = features.sum(dim=(3, 4))  # (B, 1, K)
        return (features * inputs.gradients).sum(dim=(3, 4)) / (sums + _EPS)


class LayerCAM(Method):
    """LayerCAM (Jiang et al., TIP 2021): ``M = ReLU(sum_k ReLU(G_k) * A_k)``, element-wise, no pooling."""

    name = "layercam"
    needs_grad = True

    def raw_maps(self, inputs: MethodInput) -> torch.Tensor:
        return (inputs.gradients.relu() * inputs.features[:, None]).sum(dim=2)


class HiResCAM(Method):
    """HiResCAM (Draelos & Carin, 2020): ``M = ReLU(sum_k G_k * A_k)``, element-wise."""

    name = "hirescam"
    needs_grad = True

    def raw_maps(self, inputs: MethodInput) -> torch.Tensor:
        return (inputs.gradients * inputs.features[:, None]).sum(dim=2)
