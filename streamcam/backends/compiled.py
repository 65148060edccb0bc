"""``--compile``: the no-gradient forward pass through ``torch.compile`` (CUDA graphs on a GPU).

torch.compile cannot see hooks that change on every call (``capture_outputs``
makes new ones per call), so the explained layers are tapped by a wrapper whose
hooks are registered once and which returns them as outputs. Batches are padded
up to the next power of two: every shape compiles once (a few seconds to a
minute), so a run compiles at most ``log2(batch) + 1`` times, and CUDA graphs,
which need fixed shapes, replay for the partial batches too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext

import torch
from torch import nn

from ..device import graph_step
from ..phases import phase

class LayerTap(nn.Module):
    """``model(x)`` plus the outputs of the named layers: ``(logits, (A_1, A_2, ...))``.

    The hooks are registered once, for the tap's lifetime, and record only while
    the tap itself runs, so the model's other callers are not affected.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.layers = tuple(layers)
        self._outputs: dict[str, torch.Tensor] = {}
        self._recording = False
        self._handles = [model.get_submodule(name).register_forward_hook(self._recorder(name)) for name in self.layers]

    def _recorder(self, name: str) -> Callable:
        def record(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            if self._recording:
                self._outputs[name] = output

        return record

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        self._recording = True
        try:
            logits = self.model(x)
            return logits, tuple(self._outputs[name] for name in self.layers)
        finally:
            self._recording = False
            self._outputs = {}

    def remove(self) -> None:
        """Take the hooks off the model."""
        for handle in self._handles:
            handle.remove()


def padded_size(batch: int) -> int:
    """The compiled batch shape that serves ``batch`` frames: the next power of two."""
    return 1 << (batch - 1).bit_length()


class CompiledForward:
    """Compiled ``(logits, features)`` of a model for each set of layers asked for.

    On CUDA the mode is ``reduce-overhead`` (CUDA graphs: the whole forward pass
    replayed as one launch); elsewhere the default (Inductor's fused kernels).
    """

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.model = model
        self.mode = "reduce-overhead" if device.type == "cuda" else "default"
        self._taps: dict[tuple[str, ...], tuple[LayerTap, Callable]] = {}
        self._compiled: set[tuple[tuple[str, ...], int]] = set()  # (layers, batch shape) already compiled

    def __call__(self, x: torch.Tensor, layers: Sequence[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        key = tuple(dict.fromkeys(layers))
        if key not in self._taps:
            tap = LayerTap(self.model, key)
            self._taps[key] = (tap, torch.compile(tap, mode=self.mode, dynamic=False))
        compiled = self._taps[key][1]
        size = x.shape[0]
        padding = padded_size(size) - size
        if padding:
            x = torch.cat([x, x.new_zeros((padding, *x.shape[1:]))])
        graph_step(x.device)  # CUDA graphs: a new step (a no-op elsewhere)
        first = (key, x.shape[0]) not in self._compiled
        with phase(f"compiling the model for batches of {x.shape[0]} (once per size)") if first else nullcontext():
            logits, features = compiled(x)
        self._compiled.add((key, x.shape[0]))
        # CUDA graphs reuse their output buffers on the next replay: keep copies.
        copy = (lambda t: t[:size].clone()) if self.mode == "reduce-overhead" else (lambda t: t[:size])
        return copy(logits), {name: copy(feature) for name, feature in zip(key, features)}

    def close(self) -> None:
        """Remove every tap's hooks from the model."""
        for tap, _ in self._taps.values():
            tap.remove()
        self._taps.clear()
