"""The validated, frozen configuration of one run.

Each run option is declared once, as a :class:`RunConfig` field made by
:func:`streamcam.options.option`: its default, flag, help text, check and whether
it builds the Explainer. The command line's parser, the checks on construction
and the Explainer's arguments are all derived from these declarations.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .defaults import (
    DEFAULT_BOX_THRESHOLD,
    DEFAULT_MODEL,
    METHOD_NAMES,
    PRECISION_NAMES,
)
from .errors import InputError
from .options import (
    check_alpha,
    check_batch,
    check_box_threshold,
    check_serve,
    check_smooth,
    check_token,
    check_top_k,
    check_values,
    check_webcams,
    option,
    parse_bitrate,
)
from .preflight import check_run_options

if TYPE_CHECKING:
    from torch import nn

    from .video_out import EncoderSettings


RENDER_CHOICES = ("auto", "device", "host")
# render="auto" per device type: where the overlay and the box masks are made.
# cpu: OpenCV on the host, measured 7-10x faster than the torch kernels there (scripts/bench_render.py,
# BENCHMARKS.md "One device path"); cuda: on the device (not measured: no GPU here), which saves
# copying the maps' frame-sized work back and forth. Any other device type: the device.
AUTO_RENDER = {"cpu": "host", "cuda": "device"}
# The sections of ``streamcam --help`` (and of README's option table) besides the command's own options.
MODEL, VIEW, VIDEO = "model", "view", "video files"


def check_render(choice: str) -> None:
    if choice not in RENDER_CHOICES:
        raise InputError(f"--render must be one of {', '.join(RENDER_CHOICES)}, not {choice!r}")


def resolve_render(choice: str, device_type: str) -> str:
    """``"device"`` or ``"host"``: ``choice`` itself, or for ``"auto"`` the measured default of ``device_type``."""
    check_render(choice)
    return AUTO_RENDER.get(device_type, "device") if choice == "auto" else choice


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs, checked on construction (bad values raise :class:`InputError`).

    The fields are in ``streamcam --help``'s order; see :mod:`streamcam.options` for what ``option`` declares.
    """

    inputs: tuple[str, ...] = option(
        (), metavar="INPUT",
        help="video files (anything FFmpeg reads) and stream URLs (`rtsp://`, `http://`, ...), any number, explained "
             "side by side; or image files and folders (non-recursive)")
    webcams: tuple[int, ...] = option(
        (), "--webcam", parse=int, metavar="N", repeat=True, check=check_webcams,
        help="webcam number N, live; repeat for several")
    output: str | None = option(
        None, "-o", "--output", metavar="PATH",
        help="video file for video input (`.mp4`, `.avi`, `.mkv`, `.mov`, `.m4v`; missing folders are created), a "
             "folder for image input (images keep their names); with several sources a pattern with `{source}` "
             "(e.g. `out_{source}.mp4`: `out_a.mp4`, `out_webcam0.mp4`, ...)")
    overwrite: bool = option(
        False, "--overwrite", sets=True,
        help="replace existing output files (refused otherwise), each only once its replacement is complete; never "
             "an input")
    replaceable: tuple[str, ...] = ()  # outputs replaced even without overwrite (the demo's own default output)
    model: str | nn.Module = option(  # noqa: RUF009 - option() is dataclasses.field() with metadata
        DEFAULT_MODEL, "--model", metavar="NAME", group=MODEL, explainer=True,
        help=f"`{DEFAULT_MODEL}` (default), a torchvision classifier (`resnet18`, `resnet50`, `vgg16`, `googlenet`, "
             "`mobilenet_v3_large`, `convnext_tiny`, ...), `timm:NAME`, an exported `.onnx` graph, a model file from "
             "`streamcam train` (`.safetensors`: classes, preprocessing and layer included), or a whole saved model "
             "(`torch.save(model)`) with `--trust-model-file`")
    weights: str | None = option(
        None, "--weights", metavar="FILE", group=MODEL, explainer=True,
        help="a state dict (`.pth`/`.pt`, plain or under `state_dict`/`model`; DataParallel's `module.` prefix is "
             "stripped) or a `.safetensors` file; `random` keeps an untrained net. Without it, torchvision/timm "
             "weights come from those libraries' caches, or download through them when online; offline, one line "
             "names the file to fetch and the `--weights` to pass")
    trust_model_file: bool = option(
        False, "--trust-model-file", sets=True, group=MODEL, explainer=True,
        help="allow `--model`/`--weights` to be a whole pickled model (`torch.save(model)`): unpickling runs any "
             "code the file holds, so only for files from a source you trust")
    labels: str | None = option(
        None, "--labels", metavar="FILE", group=MODEL, explainer=True,
        help="class names, one a line (as many as the model has classes); default: ImageNet's for 1000-class "
             "models, `class N` otherwise")
    layer: str | None = option(
        None, "--layer", metavar="NAME", group=MODEL, explainer=True,
        help="the module to explain; default: the one a model file from `streamcam train` names, else the last "
             "block before global pooling, found automatically. A wrong name lists the candidates")
    method: str = option(
        "cam", "--method", metavar="NAME", group=MODEL, explainer=True,
        help=f"{', '.join(f'`{m}`' for m in METHOD_NAMES)}; default `cam` (see Methods in README)")
    layers: str | tuple[str, ...] | None = option(  # names, "a,b,c", or "auto"
        None, "--layers", metavar="A,B,C|auto", group=MODEL, explainer=True,
        help="multi-layer grid: the frame once per layer, each with that layer's heatmap and name (the first tile "
             "also lists the classes); `auto` = the output of each of the last four stages (e.g. `layer1`..`layer4` "
             "of a ResNet)")
    top_k: int = option(
        1, "--top-k", parse=int, metavar="K", group=MODEL, check=check_top_k, explainer=True,
        help="explain the K most likely classes (default 1; all are listed, the heatmap shows the first)")
    target_class: str | int | None = option(
        None, "--class", metavar="NAME|ID", group=MODEL, explainer=True,
        help="explain this class (label, case-insensitive, or id) instead of the top ones")
    batch: int = option(
        8, "--batch", parse=int, metavar="N", group=MODEL, check=check_batch,
        help="frames per inference batch (default 8), taken from all sources together; live sources never wait "
             "for a batch to fill")
    precision: str = option(
        "fp32", "--precision", choices=PRECISION_NAMES, metavar="P", group=MODEL, explainer=True,
        help="`fp32` (default), `fp16` or `bf16`: the model's forward pass under autocast; the maps' maths stays "
             "fp32")
    compile: bool = option(
        False, "--compile", sets=True, group=MODEL, explainer=True,
        help="torch engine: run the forward passes that need no gradients (CAM, Eigen-CAM) through "
             "`torch.compile`, with CUDA graphs on a GPU; each batch size compiles once, on first use")
    device: str = option(
        "auto", "--device", group=MODEL, explainer=True,
        help="`auto` (default: CUDA if present), `cpu`, `cuda`, `cuda:N`")
    backend: str = option(
        "auto", "--backend", group=MODEL, explainer=True,
        help="`auto` (default): per method, the fastest engine that can serve it (see Engines in README); `torch`, "
             "`onnxruntime` force one")
    alpha: float = option(
        0.5, "--alpha", parse=float, metavar="A", group=VIEW, check=check_alpha,
        help="heatmap opacity, 0 to 1 (default 0.5)")
    boxes: bool = option(
        False, "--boxes", sets=True, group=VIEW,
        help="draw, for each explained class, a box around its heatmap's largest hot region (top class green, then "
             "magenta, cyan, orange, white); a class with no distinct hot region gets none")
    box_threshold: float = option(  # the Explainer's, and the view's: run(explainer=..., box_threshold=...) is fine
        DEFAULT_BOX_THRESHOLD, "--box-threshold", parse=float, metavar="F", group=VIEW, check=check_box_threshold,
        explainer=True,
        help=f"a box keeps the pixels at or above F x the map's max (default {DEFAULT_BOX_THRESHOLD}, as the CAM "
             "paper; the Grad-CAM paper used 0.15)")
    smooth: float = option(
        0.0, "--smooth", parse=float, metavar="S", group=VIEW, check=check_smooth,
        help="temporal smoothing of the heatmaps, 0 (off, default) to below 1: `M'_t = S M'_{t-1} + (1 - S) M_t` "
             "per source and class; restarts on cuts and class changes")
    render: str = option(  # see AUTO_RENDER
        "auto", "--render", choices=RENDER_CHOICES, metavar="WHERE", group=VIEW, check=check_render,
        help="where the heatmap is blended and the boxes thresholded: `device` (torch, on the model's device), "
             "`host` (OpenCV); `auto` (default): `host` on a CPU, where it is measured faster, `device` on CUDA")
    json: str | None = option(
        None, "--json", metavar="FILE", group=VIEW,
        help="one JSON line per explained frame (classes, scores, boxes), flushed line by line; one file for all "
             "sources, or one each with `{source}` in the name; `-` writes them to standard output")
    display: bool | None = option(  # None: a window where there is a display
        None, "--no-display", sets=False, group=VIEW,
        help="never open a window (it is off anyway where there is no display)")
    codec: str | None = option(
        None, "--codec", choices=("h264", "hevc", "av1", "mjpeg"), metavar="C", group=VIDEO,
        help="`h264` (default; `mjpeg` for `.avi`), `hevc`, `av1`, `mjpeg`; on NVENC where an NVIDIA GPU has it")
    crf: int | None = option(
        None, "--crf", parse=int, metavar="Q", group=VIDEO,
        help="constant quality, lower is better (defaults: h264 20, hevc 24, av1 32, mjpeg 3)")
    bitrate: int | None = option(
        None, "--bitrate", parse=parse_bitrate, metavar="RATE", group=VIDEO,
        help="bits per second (`4M`, `800k`) instead of `--crf`")
    audio: bool = option(
        True, "--no-audio", sets=False, group=VIDEO, help="leave the input's sound out of the video file")
    serve: str | None = option(
        None, "--serve", metavar="HOST:PORT", const="127.0.0.1:8080", group=VIEW, check=check_serve,
        help="watch the run in a browser at http://HOST:PORT (alone: `127.0.0.1:8080`): the annotated video of "
             "each source, the predictions, fps, latency and drops, and live controls (method, class, grid, "
             "opacity, boxes); any address but loopback needs a token (`--token`, else one is generated and "
             "printed)")
    token: str | None = option(
        None, "--token", metavar="TOKEN", group=VIEW, check=check_token,
        help="the token every request to `--serve` must carry (`?token=` or `Authorization: Bearer`)")
    progress: bool = False  # a tqdm bar for inputs of known length

    def __post_init__(self) -> None:
        for name in ("output", "json", "labels", "weights"):  # paths may come as Path objects
            value = getattr(self, name)
            if isinstance(value, Path):
                object.__setattr__(self, name, str(value))
        check_values(self)  # each option's own check: --batch 1 to 1024, --top-k at least 1, ...
        if self.token is not None and self.serve is None:
            raise InputError("--token goes with --serve")
        self.encoding  # checks the codec, crf and bitrate
        check_run_options(self)  # method, model name, class...: every check that needs no torch

    @property
    def encoding(self) -> EncoderSettings:
        # imported here, with OpenCV: `streamcam --help` reads the fields and needs neither
        from .video_out import EncoderSettings

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


@dataclass(frozen=True)
class ViewOptions:
    """How the pipeline draws and what it measures besides the maps."""

    # The defaults are RunConfig's (the options of the same names, declared there once).
    alpha: float = RunConfig.alpha  # heatmap opacity (alpha and draw_boxes: where the live controls start)
    smooth: float = RunConfig.smooth  # EMA strength over time, 0 = off (see streamcam.smoothing)
    draw_boxes: bool = RunConfig.boxes
    box_threshold: float = RunConfig.box_threshold
    records: bool = False  # per-frame JSON records want boxes even when they are not drawn
    # Where the heatmap is blended and boxes are thresholded: "device" (torch, on the explainer's device,
    # in the inference worker), "host" (OpenCV, in the render thread) or "auto" (see AUTO_RENDER).
    render: str = RunConfig.render
