"""Which engine explains what: an Explainer's engines, chosen by their capabilities (:mod:`.base`), never their names."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..errors import InputError
from ..explained_model import ExplainedModel
from ..explainers import Method
from .base import Backend
from .onnx_backend import OnnxBackend
from .torch_backend import TorchBackend

KINDS: tuple[type[Backend], ...] = (TorchBackend, OnnxBackend)  # every engine streamcam has, by --backend name
# Device types where onnxruntime joins torch under --backend auto: on the CPU it serves CAM, Eigen-CAM and
# Grad-CAM at a GAP + linear layer 2-3x faster than torch (BENCHMARKS.md). Not on CUDA, where the torch path
# keeps frames, maps and overlays on the device and no comparison has been measured yet.
AUTO_JOINS_ONNXRUNTIME = frozenset({"cpu"})


def engine_kinds(backend: str, graph_file: bool, device: torch.device, precision: str,
                 live_module: bool) -> list[type[Backend]]:
    """The engines a model may run on, fastest first: ``backend`` (auto, torch or onnxruntime, checked by
    :func:`~streamcam.preflight.choose_backend`) or, for ``auto``, the measured default of the device.

    Under ``auto`` onnxruntime joins only in fp32 and never for a live ``nn.Module``,
    whose weights may change after the graph was exported; a graph file runs on onnxruntime alone.
    """
    if graph_file:
        return [OnnxBackend]
    if backend != "auto":
        return [kind for kind in KINDS if kind.name == backend]
    joins = device.type in AUTO_JOINS_ONNXRUNTIME and precision == "fp32" and not live_module
    return [OnnxBackend, TorchBackend] if joins else [TorchBackend]


def engines_where(can: Callable[[type[Backend]], bool]) -> str:
    """How to ask for an engine that ``can``: ``--backend torch``."""
    return " or ".join(f"--backend {kind.name}" for kind in KINDS if can(kind))


def engines_with(capability: str) -> str:
    """How to ask for an engine that has ``capability`` (a capability attribute of :class:`Backend`)."""
    return engines_where(lambda kind: getattr(kind, capability))


def refusal(kind: type[Backend], method: type[Method], model: ExplainedModel,
            extra_layers: Sequence[str] = ()) -> str | None:
    """Why ``kind`` cannot serve ``method`` on ``model`` (with a grid of ``extra_layers``), or None."""
    if method.needs_gap_linear and model.cam_refusal():
        return f"{method.name} needs a GAP + linear head, but {model.cam_refusal()}; use --method gradcam"
    if extra_layers and not kind.several_layers:
        return f"the multi-layer view needs {engines_with('several_layers')} ({kind.name} serves one layer)"
    if method.needs_input_grad and not kind.gradients_to_input:
        return f"{method.name} back-propagates to the input: it needs {engines_with('gradients_to_input')}"
    if method.needs_grad and not kind.gradients_at_any_layer and model.classifier_weight is None:
        return (f"{method.name} needs gradients, which {kind.name} has only at a GAP + linear layer "
                f"(where Grad-CAM equals CAM); use {engines_with('gradients_at_any_layer')}")
    return None


def check_options(kinds: Sequence[type[Backend]], device: torch.device, precision: str, compile: bool) -> None:
    """Refuse a ``precision``, ``device`` or ``--compile`` that one of ``kinds`` cannot run: before the
    model is loaded or moved (a lent module moved to a device it cannot come back from is lost)."""
    for kind in kinds:
        if precision not in kind.precisions:
            raise InputError(f"{kind.name} runs {' or '.join(sorted(kind.precisions))}, not {precision}: use "
                             f"another --precision, or {engines_where(lambda k: precision in k.precisions)}")
        if kind.device_types is not None and device.type not in kind.device_types:
            raise InputError(f"{kind.name} runs on {' or '.join(sorted(kind.device_types))}, not {device.type}: "
                             f"use {engines_where(lambda k: k.device_types is None)}")
    if compile and not any(kind.compiles for kind in kinds):
        raise InputError(f"--compile compiles the {engines_with('compiles').removeprefix('--backend ')} engine: "
                         f"it does nothing with {' or '.join(kind.name for kind in kinds)}")


class Engines:
    """The engines of one Explainer, fastest first; each serves what its capabilities allow.

    ``ready`` holds those built already, by name; ``later`` builds the others on
    first use (:meth:`prepare`): a torch model's onnxruntime graph is exported, or
    found in the cache, only when a run is about to start.
    """

    def __init__(self, kinds: Sequence[type[Backend]], model: ExplainedModel, ready: dict[str, Backend],
                 later: Callable[[], Backend] | None = None) -> None:
        self.kinds = list(kinds)
        self.model = model
        self.ready = ready
        self._later = later

    def prepare(self) -> dict[str, Backend]:
        """Build the engines left for later; returns every engine, by name."""
        if self._later is not None:
            backend = self._later()
            self.ready[backend.name] = backend
            self._later = None
        return self.ready

    def has(self, capability: str) -> bool:
        """Whether any of these engines has ``capability`` (e.g. ``"several_layers"``)."""
        return any(getattr(kind, capability) for kind in self.kinds)

    def choose(self, method: type[Method], extra_layers: Sequence[str] = ()) -> type[Backend]:
        """The fastest engine that can serve ``method`` (and a grid of ``extra_layers``)."""
        for kind in self.kinds:
            if refusal(kind, method, self.model, extra_layers) is None:
                return kind
        return self.kinds[-1]  # nothing serves it: the last one says why, when it runs

    def refusal(self, method: type[Method]) -> str | None:
        """Why none of these engines can serve ``method``, or None."""
        reasons = [refusal(kind, method, self.model) for kind in self.kinds]
        return None if None in reasons else reasons[0]

    def get(self, kind: type[Backend]) -> Backend:
        return self.prepare()[kind.name]

    def close(self) -> None:
        for backend in self.ready.values():
            backend.close()
        self.ready = {}
        self._later = None
