"""Engines that run a model and hand back logits, feature maps and gradients."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .onnx_backend import OnnxBackend
from .torch_backend import ForwardResult, TorchBackend

BACKENDS = ("auto", "torch", "onnxruntime")


def is_onnx_file(model: object) -> bool:
    return isinstance(model, (str, Path)) and Path(model).suffix.lower() == ".onnx"


def choose_backend(name: str, onnx_file: bool) -> str:
    """Validate a backend name; an .onnx graph runs on onnxruntime (whether asked or "auto").

    For a PyTorch model "auto" stays "auto": the Explainer picks an engine per method.
    """
    if name not in BACKENDS:
        raise InputError(f"unknown backend '{name}': choose one of {', '.join(BACKENDS)}")
    if onnx_file and name == "torch":
        raise InputError("an .onnx graph runs on --backend onnxruntime (or auto), not torch")
    return "onnxruntime" if onnx_file else name


__all__ = ["BACKENDS", "ForwardResult", "OnnxBackend", "TorchBackend", "choose_backend", "is_onnx_file"]
