"""streamcam: see what a CNN classifier looks at, live.

>>> import streamcam
>>> ex = streamcam.Explainer()                  # EfficientNet-Lite0 (ImageNet), CAM
>>> res = ex([bgr_frame])                       # class_ids, scores, labels, maps
>>> streamcam.run("in.mp4", "out.mp4")          # the pipeline, as the CLI runs it
"""

from .config import RunConfig
from .engine import RunSummary, annotate, run
from .errors import InputError, StageError, StreamcamError
from .explainer import Explainer
from .explainers import METHODS
from .models import DEFAULT_MODEL, load_model
from .sources import open_source
from .types import AnnotatedFrame, Explanation, Frame, Prediction, VideoInfo

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "METHODS",
    "AnnotatedFrame",
    "Explainer",
    "Explanation",
    "Frame",
    "InputError",
    "Prediction",
    "RunConfig",
    "RunSummary",
    "StageError",
    "StreamcamError",
    "VideoInfo",
    "annotate",
    "load_model",
    "open_source",
    "run",
]
