"""Explanation methods, one small class each, found by name."""

from __future__ import annotations

from ..errors import InputError
from .base import Method, MethodInput, normalise_maps
from .cam import CAM

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (CAM,)}


def make_method(name: str) -> Method:
    """Instantiate the method called ``name``, or raise an InputError listing the known ones."""
    try:
        return METHODS[name.lower()]()
    except KeyError:
        raise InputError(f"unknown method '{name}': choose one of {', '.join(METHODS)}") from None


__all__ = ["CAM", "METHODS", "Method", "MethodInput", "make_method", "normalise_maps"]
