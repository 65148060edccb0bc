"""Explanation methods, one small class each, found by name."""

from __future__ import annotations

from ..errors import InputError
from .base import ChannelWeightedMethod, Method, MethodInput, normalise_maps
from .cam import CAM
from .eigencam import EigenCAM
from .gradcam import Counterfactual, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from .guided import GuidedBackprop, GuidedGradCAM

METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (
        CAM, GradCAM, GradCAMPlusPlus, XGradCAM, LayerCAM, HiResCAM, EigenCAM, Counterfactual,
        GuidedBackprop, GuidedGradCAM,
    )
}


def make_method(name: str) -> Method:
    """Instantiate the method called ``name``, or raise an InputError listing the known ones."""
    try:
        return METHODS[name.lower()]()
    except KeyError:
        raise InputError(f"unknown method '{name}': choose one of {', '.join(METHODS)}") from None


__all__ = [
    "CAM", "METHODS", "ChannelWeightedMethod", "Counterfactual", "EigenCAM", "GradCAM", "GradCAMPlusPlus",
    "GuidedBackprop", "GuidedGradCAM", "HiResCAM", "LayerCAM", "Method", "MethodInput", "XGradCAM",
    "make_method", "normalise_maps",
]
