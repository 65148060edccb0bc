"""The validated, frozen configuration of one run."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

from .defaults import DEFAULT_BOX_THRESHOLD, DEFAULT_MODEL
from .errors import InputError
from .preflight import check_run_options
from .video_out import EncoderSettings

if TYPE_CHECKING:
    from torch import nn


RENDER_CHOICES = ("auto", "device", "host")
# render="auto" per device type: where the overlay and the box masks are made.
# cpu: OpenCV on the host, measured 7-10x faster than the torch kernels there (scripts/bench_render.py,
# BENCHMARKS.md "One device path"); cuda: on the device (not measured: no GPU here), which saves
# copying the maps' frame-sized work back and forth. Any other device type: the device.
AUTO_RENDER = {"cpu": "host", "cuda": "device"}


def resolve_render(choice: str, device_type: str) -> str:
    """``"device"`` or ``"host"``: ``choice`` itself, or for ``"auto"`` the measured default of ``device_type``."""
    if choice not in RENDER_CHOICES:
        raise InputError(f"--render must be one of {', '.join(RENDER_CHOICES)}, not {choice!r}")
    return AUTO_RENDER.get(device_type, "device") if choice == "auto" else choice


@dataclass(frozen=True)
class ViewOptions:
    """How the pipeline draws and what it measures besides the maps."""

    alpha: float = 0.5  # heatmap opacity
    smooth: float = 0.0  # EMA strength over time, 0 = off (see streamcam.smoothing)
    draw_boxes: bool = False
    box_threshold: float = DEFAULT_BOX_THRESHOLD
    records: bool = False  # per-frame JSON records want boxes even when they are not drawn
    # Where the heatmap is blended and boxes are thresholded: "device" (torch, on the explainer's device,
    # in the inference worker), "host" (OpenCV, in the render thread) or "auto" (see AUTO_RENDER).
    render: str = "auto"

    @property
    def boxes_needed(self) -> bool:
        return self.draw_boxes or self.records


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs, checked on construction (bad values raise :class:`InputError`)."""

    inputs: tuple[str, ...] = ()  # video files and URLs (one source each), or image files/folders
    webcams: tuple[int, ...] = ()  # webcam indices (one source each)
    output: str | None = None  # video file, or a folder for images; with several sources, a pattern with {source}
    model: str | nn.Module = DEFAULT_MODEL
    weights: str | None = None
    labels: str | None = None
    layer: str | None = None
    layers: str | tuple[str, ...] | None = None  # multi-layer grid: names, "a,b,c", or "auto"
    method: str = "cam"
    device: str = "auto"
    backend: str = "auto"
    batch: int = 8
    precision: str = "fp32"  # the model's forward pass: fp32, fp16 or bf16 (autocast); maps stay fp32
    compile: bool = False  # torch engine: forward passes without gradients through torch.compile
    top_k: int = 1
    target_class: str | int | None = None  # explain this class instead of the top ones
    alpha: float = 0.5
    boxes: bool = False  # draw a box around each explained class's largest hot region
    box_threshold: float = DEFAULT_BOX_THRESHOLD  # fraction of the map's max
    smooth: float = 0.0  # temporal smoothing strength, 0 (off) to 1
    render: str = "auto"  # overlay and box masks: "device", "host" or "auto" (per device type, see AUTO_RENDER)
    json: str | None = None  # per-frame JSON lines; "-" for standard output
    codec: str | None = None  # video files: h264 (default), hevc, av1, mjpeg
    crf: int | None = None  # constant quality (lower is better); None: the codec's default
    bitrate: int | None = None  # bits per second instead of a constant quality
    audio: bool = True  # carry the input's sound into the video file
    overwrite: bool = False  # replace existing output files (never an input)
    replaceable: tuple[str, ...] = ()  # outputs replaced even without overwrite (the demo's own default output)
    trust_model_file: bool = False  # allow a whole pickled model, whose loading can run code
    display: bool | None = None  # None: a window where there is a display
    progress: bool = False  # a tqdm bar for inputs of known length

    def __post_init__(self) -> None:
        for name in ("output", "json", "labels", "weights"):  # paths may come as Path objects
            value = getattr(self, name)
            if isinstance(value, Path):
                object.__setattr__(self, name, str(value))
        if not 1 <= self.batch <= 1024:
            raise InputError(f"--batch must be between 1 and 1024, not {self.batch}")
        if self.top_k < 1:
            raise InputError(f"--top-k must be at least 1, not {self.top_k}")
        if not 0.0 <= self.alpha <= 1.0:
            raise InputError(f"--alpha must be between 0 and 1, not {self.alpha}")
        if not 0.0 < self.box_threshold <= 1.0:
            raise InputError(f"--box-threshold is a fraction of the map's maximum, in (0, 1], not {self.box_threshold}")
        if not 0.0 <= self.smooth < 1.0:
            raise InputError(f"--smooth must be at least 0 and below 1, not {self.smooth}")
        resolve_render(self.render, "cpu")  # checks the name
        if any(index < 0 for index in self.webcams):
            raise InputError(f"--webcam takes a camera index (0, 1, ...), not {min(self.webcams)}")
        self.encoding  # checks the codec, crf and bitrate
        check_run_options(self)  # method, model name, class...: every check that needs no torch

    @property
    def encoding(self) -> EncoderSettings:
        return EncoderSettings(self.codec, self.crf, self.bitrate, self.audio)

    @property
    def view(self) -> ViewOptions:
        return ViewOptions(self.alpha, self.smooth, self.boxes, self.box_threshold, records=self.json is not None,
                           render=self.render)

    @classmethod
    def from_options(cls, source: Any = None, output: str | Path | None = None, **options: Any) -> RunConfig:
        """Build from :func:`streamcam.run`'s arguments: ``source`` may be a path, a list, a URL or a webcam index.

        ``webcam=N`` is accepted for ``webcams=(N,)``.
        """
        if "webcam" in options:
            options["webcams"] = (options.pop("webcam"),)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InputError(f"unknown option(s): {', '.join(unknown)}")
        if isinstance(source, int) and not isinstance(source, bool):
            options["webcams"] = (source,)
        elif isinstance(source, (str, Path)):
            options["inputs"] = (str(source),)
        elif source is not None:
            options["inputs"] = tuple(str(s) for s in source)
        if output is not None:
            options["output"] = str(output)
        if "webcams" in options:
            options["webcams"] = tuple(options["webcams"])
        return cls(**options)
