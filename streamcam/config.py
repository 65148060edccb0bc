"""The validated, frozen configuration of one run."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from torch import nn

from .errors import InputError
from .models import DEFAULT_MODEL


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs, checked on construction (bad values raise :class:`InputError`)."""

    inputs: tuple[str, ...] = ()  # video file, image files/folders, or one URL
    webcam: int | None = None
    output: str | None = None  # video file, or a folder for images
    model: str | nn.Module = DEFAULT_MODEL
    weights: str | None = None
    labels: str | None = None
    layer: str | None = None
    layers: str | tuple[str, ...] | None = None  # multi-layer grid: names, "a,b,c", or "auto"
    method: str = "cam"
    device: str = "auto"
    backend: str = "auto"
    batch: int = 8
    top_k: int = 1
    target_class: str | int | None = None  # explain this class instead of the top ones
    alpha: float = 0.5
    display: bool | None = None  # None: a window where there is a display
    progress: bool = False  # a tqdm bar for inputs of known length

    def __post_init__(self) -> None:
        if not 1 <= self.batch <= 1024:
            raise InputError(f"--batch must be between 1 and 1024, not {self.batch}")
        if self.top_k < 1:
            raise InputError(f"--top-k must be at least 1, not {self.top_k}")
        if not 0.0 <= self.alpha <= 1.0:
            raise InputError(f"--alpha must be between 0 and 1, not {self.alpha}")
        if self.webcam is not None and self.webcam < 0:
            raise InputError(f"--webcam takes a camera index (0, 1, ...), not {self.webcam}")

    @classmethod
    def from_options(cls, source: Any = None, output: str | Path | None = None, **options: Any) -> RunConfig:
        """Build from :func:`streamcam.run`'s arguments: ``source`` may be a path, a list, a URL or a webcam index."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InputError(f"unknown option(s): {', '.join(unknown)}")
        if isinstance(source, int) and not isinstance(source, bool):
            options["webcam"] = source
        elif isinstance(source, (str, Path)):
            options["inputs"] = (str(source),)
        elif source is not None:
            options["inputs"] = tuple(str(s) for s in source)
        if output is not None:
            options["output"] = str(output)
        return cls(**options)
