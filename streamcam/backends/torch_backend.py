"""The torch backend: any ``nn.Module``, on the CPU or a CUDA device."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .hooks import capture_output


@dataclass(frozen=True, eq=False)
class ForwardResult:
    """The class scores and the explained layer's activations for one batch."""

    logits: torch.Tensor  # (B, C)
    features: torch.Tensor  # (B, K, h, w)


class TorchBackend:
    """Runs an eval-mode module and hands back its logits and the explained layer's output."""

    name = "torch"
    supports_gradients = True

    def __init__(self, model: nn.Module, layer: str) -> None:
        self.model = model
        self.layer = layer

    def forward(self, x: torch.Tensor) -> ForwardResult:
        """One forward pass in inference mode; the hook exists only during the call."""
        with torch.inference_mode(), capture_output(self.model, self.layer) as captured:
            logits = self.model(x)
        return ForwardResult(logits=logits, features=captured.output)
