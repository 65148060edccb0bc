"""Engines that run a model and hand back logits, feature maps and gradients."""

from __future__ import annotations

from ..defaults import BACKENDS
from ..model_names import is_onnx_file
from ..preflight import choose_backend
from .onnx_backend import OnnxBackend
from .torch_backend import ForwardResult, TorchBackend


__all__ = ["BACKENDS", "ForwardResult", "OnnxBackend", "TorchBackend", "choose_backend", "is_onnx_file"]
