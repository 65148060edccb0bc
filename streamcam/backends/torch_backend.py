"""The torch backend: any ``nn.Module``, on the CPU or a CUDA device."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import ForwardResult
from .compiled import CompiledForward
from .hooks import capture_outputs, guided_activations


# --precision -> the autocast dtype of the model's forward pass (None: plain fp32)
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}  # keys: defaults.PRECISION_NAMES


class TorchBackend:
    """Runs an eval-mode module; hands back logits, activations and, on demand, gradients."""

    name = "torch"
    gradients_at_any_layer = True
    gradients_to_input = True
    several_layers = True
    precisions = frozenset(PRECISIONS)
    device_types = None  # wherever torch runs
    compiles = True

    def __init__(self, model: nn.Module, precision: str = "fp32", compile: bool = False) -> None:
        self.model = model
        self.autocast_dtype = PRECISIONS[precision]
        # --compile: the forward passes that need no gradients run compiled (see compiled.py).
        self.compiled = CompiledForward(model, next(model.parameters()).device) if compile else None

    def close(self) -> None:
        """Take ``--compile``'s layer taps off the model (the eager path's hooks live only during a call)."""
        if self.compiled is not None:
            self.compiled.close()

    def _autocast(self, device: torch.device):
        """The model's own layers in the chosen precision; the caller does its maths in fp32."""
        return torch.autocast(device.type, dtype=self.autocast_dtype or torch.float32,
                              enabled=self.autocast_dtype is not None)

    def forward(self, x: torch.Tensor, layers: Sequence[str], track_gradients: bool = False,
                top_k: int = 1, target_class: int | None = None) -> ForwardResult:
        """One forward pass; the hooks exist only during the call. ``top_k`` and ``target_class`` are
        not used: the caller chooses the classes from the logits (an ONNX graph chooses them itself).

        Without gradients it runs in inference mode. With them, the layers before
        the first explained layer still run without autograd (see
        :func:`capture_outputs`): a backward pass then costs about what the part
        of the network after that layer costs, not a whole second pass.
        """
        if self.compiled is not None and not track_gradients:
            with torch.inference_mode(), self._autocast(x.device):
                logits, features = self.compiled(x, layers)
            return ForwardResult(logits=logits, features=features)
        mode = torch.no_grad() if track_gradients else torch.inference_mode()
        with mode, self._autocast(x.device), capture_outputs(self.model, layers, track_gradients) as captured:
            logits = self.model(x)
        return ForwardResult(logits=logits, features=dict(captured))

    def gradients(self, result: ForwardResult, class_ids: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """``dy_c/dA`` for every frame and target, (B, k, K, h, w) per layer, from one backward pass.

        Frames are independent in an eval-mode CNN, so summing the targets' scores
        over the batch gives every frame its own gradient; the k targets are
        batched through ``is_grads_batched``. Parameters get no ``.grad``.
        """
        inputs = [result.features[name] for name in layers]
        grads = target_gradients(result.logits.gather(1, class_ids), inputs)
        return dict(zip(layers, grads))

    def input_gradients(self, x: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
        """Guided-backpropagation gradients of the targets' scores w.r.t. the input: (B, k, 3, S, S)."""
        x = x.detach().requires_grad_()
        with torch.enable_grad(), self._autocast(x.device), guided_activations(self.model):
            logits = self.model(x)
            (grads,) = target_gradients(logits.gather(1, class_ids), [x])
        return grads


def target_gradients(selected: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Gradients of each target column of ``selected`` (B, k) w.r.t. ``inputs``: each (B, k, *input.shape[1:])."""
    targets = selected.shape[1]
    if targets == 1:
        return [g.unsqueeze(1) for g in torch.autograd.grad(selected.sum(), inputs)]
    # One backward for all k targets: grad_outputs is a batch of k one-hot selections.
    one_hot = torch.eye(targets, dtype=selected.dtype, device=selected.device)[:, None, :]
    grad_outputs = one_hot.expand(targets, *selected.shape)
    try:
        grads = torch.autograd.grad(selected, inputs, grad_outputs=grad_outputs, is_grads_batched=True)
    except RuntimeError:  # an op without a batching rule: one backward per target instead
        per_target = [
            torch.autograd.grad(selected[:, j].sum(), inputs, retain_graph=j < targets - 1) for j in range(targets)
        ]
        grads = tuple(torch.stack(parts) for parts in zip(*per_target))
    return [g.movedim(0, 1) for g in grads]
