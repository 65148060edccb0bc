"""Borrow a user's ``nn.Module`` and give it back as it was lent.

The Explainer changes what it needs on a model it is handed (eval mode, the
device, channels-last memory) and registers hooks on it; :class:`ModelLoan`
records, when the model is lent, each of those properties that streamcam may
change, and :meth:`ModelLoan.give_back` restores them. Hooks are not swept here:
each owner of a hook removes its own (a model may be lent to two Explainers).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class TensorLayout:
    """Where and how one parameter or buffer was stored."""

    device: torch.device
    dtype: torch.dtype
    stride: tuple[int, ...]

    @classmethod
    def of(cls, tensor: torch.Tensor) -> TensorLayout:
        return cls(tensor.device, tensor.dtype, tuple(tensor.stride()))

    def holds(self, tensor: torch.Tensor) -> bool:
        return TensorLayout.of(tensor) == self

    def restored(self, tensor: torch.Tensor) -> torch.Tensor:
        """The same values, stored as recorded (device, dtype, strides: e.g. back from channels-last)."""
        out = torch.empty_strided(tensor.shape, self.stride, dtype=self.dtype, device=self.device)
        return out.copy_(tensor.detach())


class ModelLoan:
    """A user's model as it was lent: each module's training flag, each parameter's
    ``requires_grad``, and each parameter's and buffer's device, dtype and strides."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._training = [(module, module.training) for module in model.modules()]
        self._requires_grad = [(p, p.requires_grad) for p in model.parameters()]
        self._layouts = [(module, kind, name, TensorLayout.of(tensor))
                         for module in model.modules()
                         for kind, tensors in (("param", module._parameters), ("buffer", module._buffers))
                         for name, tensor in tensors.items() if tensor is not None]

    def give_back(self) -> None:
        """Restore everything recorded; tensors already as recorded are left untouched."""
        with torch.no_grad():
            for module, kind, name, layout in self._layouts:
                self._restore_tensor(module, kind, name, layout)
        for parameter, flag in self._requires_grad:
            parameter.requires_grad_(flag)
        for module, flag in self._training:
            module.training = flag

    @staticmethod
    def _restore_tensor(module: nn.Module, kind: str, name: str, layout: TensorLayout) -> None:
        tensors = module._parameters if kind == "param" else module._buffers
        tensor = tensors.get(name)
        if tensor is None or layout.holds(tensor):
            return
        if kind == "param":
            tensor.data = layout.restored(tensor)  # the same Parameter object, as nn.Module.to() keeps it
        else:
            tensors[name] = layout.restored(tensor)
