"""Forward hooks that live exactly as long as a ``with`` block."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class Capture:
    """Holds the last output of the hooked module."""

    output: torch.Tensor | None = None


@contextmanager
def capture_output(model: nn.Module, layer: str) -> Iterator[Capture]:
    """Record the output of ``model.get_submodule(layer)`` while the block runs.

    The hook is removed in ``finally``: nothing stays on the model after the
    block, whether it ends normally or by an exception.
    """
    captured = Capture()

    def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        captured.output = output

    handle = model.get_submodule(layer).register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()
