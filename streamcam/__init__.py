"""streamcam: see what a CNN classifier looks at, live.

>>> import streamcam
>>> ex = streamcam.Explainer()                  # EfficientNet-Lite0 (ImageNet), CAM
>>> res = ex([bgr_frame])                       # class_ids, scores, labels, maps, boxes
>>> streamcam.run("in.mp4", "out.mp4")          # the pipeline, as the CLI runs it

Names load on first use (PEP 562), so that ``streamcam.cli`` can start, and
catch a Ctrl-C, before torch is imported.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "RunConfig": ".config",
    "ViewOptions": ".config",
    "RunSummary": ".engine",
    "annotate": ".engine",
    "run": ".engine",
    "InputError": ".errors",
    "StageError": ".errors",
    "StreamcamError": ".errors",
    "Explainer": ".explainer",
    "METHODS": ".explainers",
    "export_onnx": ".export",
    "DEFAULT_MODEL": ".models",
    "load_model": ".models",
    "open_source": ".sources",
    "AnnotatedFrame": ".types",
    "Explanation": ".types",
    "Frame": ".types",
    "Prediction": ".types",
    "VideoInfo": ".types",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'streamcam' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
