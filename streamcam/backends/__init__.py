"""Engines that run a model and hand back logits, feature maps and gradients."""

from __future__ import annotations

from ..errors import InputError
from .torch_backend import ForwardResult, TorchBackend

BACKENDS = ("auto", "torch")


def check_backend(name: str) -> str:
    """Validate a backend name; "auto" resolves to the fastest engine that can serve (torch, for now)."""
    if name not in BACKENDS:
        raise InputError(f"unknown backend '{name}': choose one of {', '.join(BACKENDS)}")
    return "torch" if name == "auto" else name


__all__ = ["BACKENDS", "ForwardResult", "TorchBackend", "check_backend"]
