"""Explanation methods, one small class each, found by name."""

from __future__ import annotations

from ..defaults import METHOD_NAMES
from ..preflight import method_name
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


# The command line lists and checks the names before torch loads (streamcam.defaults): they must agree.
if tuple(METHODS) != METHOD_NAMES:
    raise ImportError(f"streamcam.defaults.METHOD_NAMES {METHOD_NAMES} differs from the methods {tuple(METHODS)}")


def make_method(name: str) -> Method:
    """Instantiate the method called ``name``, or raise an InputError listing the known ones."""
    return METHODS[method_name(name)]()


__all__ = [
    "CAM", "METHODS", "ChannelWeightedMethod", "Counterfactual", "EigenCAM", "GradCAM", "GradCAMPlusPlus",
    "GuidedBackprop", "GuidedGradCAM", "HiResCAM", "LayerCAM", "Method", "MethodInput", "XGradCAM",
    "make_method", "normalise_maps",
]
