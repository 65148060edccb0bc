"""Hooks that live exactly as long as a ``with`` block: removed in ``finally``, whatever happens."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

# Rectifier-like activations, whose backward guided backpropagation restricts (not gates like sigmoid).
_ACTIVATION = re.compile(r"ReLU|GELU|SiLU|Swish|Mish|ELU|Hardswish", re.IGNORECASE)


@contextmanager
def capture_outputs(model: nn.Module, layers: Sequence[str], track_gradients: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of the named modules while the block runs.

    With ``track_gradients``, call the model under ``torch.no_grad()``: the first
    named layer to finish hands on ``A.detach().requires_grad_()`` and switches
    autograd on, so only what follows ``A`` is recorded and a backward pass stops
    there. (The caller's ``no_grad`` block restores the grad mode on exit.) The
    captured entry for that layer is the leaf ``A``; it is handed on through a
    clone so that an in-place operation after it cannot touch the leaf.
    """
    captured: dict[str, torch.Tensor] = {}

    def make_hook(name: str):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
            if track_gradients and not captured:
                leaf = output.detach().requires_grad_()
                captured[name] = leaf
                torch.set_grad_enabled(True)
                return leaf.clone()
            captured[name] = output
            return None

        return hook

    handles = [model.get_submodule(name).register_forward_hook(make_hook(name)) for name in dict.fromkeys(layers)]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def guided_activations(model: nn.Module) -> Iterator[None]:
    """Guided backpropagation: every activation module lets only positive gradients back through.

    A forward hook on each activation registers, on its output, a gradient hook
    ``g -> max(g, 0)``; the activation's own backward then applies its forward
    mask. The model itself is not modified; the hooks go in ``finally``.
    """

    def clamp_gradient(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        if output.requires_grad:
            output.register_hook(lambda grad: grad.clamp(min=0))

    handles = [m.register_forward_hook(clamp_gradient) for m in model.modules() if _ACTIVATION.search(type(m).__name__)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
