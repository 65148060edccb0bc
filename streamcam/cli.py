"""The command line: argv -> RunConfig -> run(); errors -> one line and an exit code.

Exit codes: 0 done (also when the reader of ``--json -`` goes away), 1 runtime
failure, 2 bad usage or input, 128 + N for signal N (130 Ctrl-C, 143 SIGTERM,
129 SIGHUP). No pipeline logic lives here.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from contextlib import nullcontext

from . import interrupts

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
TRUST_HELP = ("load a whole pickled model (torch.save(model)) given as --model or --weights: unpickling runs "
              "any code the file holds, so only for files from a source you trust")
log = logging.getLogger("streamcam")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        self.exit(EXIT_USAGE, f"streamcam: error: {message} (see streamcam --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .explainers import METHODS

    parser = _Parser(
        prog="streamcam",
        description="See what a CNN classifier looks at, live: CAM heatmaps on webcams, videos, images and streams.",
        epilog="examples: streamcam --webcam 0 | streamcam in.mp4 -o out.mp4 | streamcam a.jpg photos/ -o annotated/ | "
        "streamcam --demo | streamcam export --model resnet50 -o models/resnet50.onnx",
    )
    parser.add_argument("inputs", nargs="*",
                        help="video files and network stream URLs (rtsp://, http://...), explained side by side; "
                             "or image files and folders")
    parser.add_argument("--webcam", type=int, metavar="N", action="append", dest="webcams", default=[],
                        help="explain webcam number N, live (repeat for several)")
    parser.add_argument("--demo", action="store_true", help="explain a built-in clip (made from real photos) and write streamcam-demo.mp4")
    parser.add_argument("-o", "--output", help="annotated video file (.mp4, .avi, ...), or for images a folder; "
                                               "with several sources a pattern such as out_{source}.mp4")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing output files, once their replacement is complete (never an input)")
    model = parser.add_argument_group("model")
    model.add_argument("--model", default=None, help="efficientnet_lite0 (default), a torchvision name (resnet50...), timm:NAME, or a saved model file")
    model.add_argument("--weights", help="a state dict (.pth, .pt) or .safetensors file; 'random' keeps an untrained net")
    model.add_argument("--labels", help="class names, one a line")
    model.add_argument("--trust-model-file", action="store_true", help=TRUST_HELP)
    model.add_argument("--layer", help="the module to explain (default: the last block before global pooling)")
    model.add_argument("--method", default="cam", help=f"explanation method: {', '.join(METHODS)} (default: cam)")
    model.add_argument("--layers", metavar="A,B,C|auto", help="multi-layer grid: the frame once per layer; auto = each stage's output")
    model.add_argument("--device", default="auto", help="auto (default: CUDA if present), cpu, cuda, cuda:N")
    model.add_argument("--backend", default="auto",
                       help="auto (default: onnxruntime for an .onnx model, else torch), torch, onnxruntime")
    model.add_argument("--batch", type=int, default=8, help="frames per inference batch (default 8)")
    model.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"),
                       help="the model's forward pass (autocast); maps are computed in fp32 (default fp32)")
    model.add_argument("--compile", action="store_true",
                       help="torch engine: compile the forward pass (torch.compile; CUDA graphs on a GPU); "
                            "each batch size compiles once, on first use")
    model.add_argument("--top-k", type=int, default=1, help="explain the K most likely classes (default 1)")
    model.add_argument("--class", dest="target_class", metavar="NAME|ID", help="explain this class instead of the top ones")
    view = parser.add_argument_group("view")
    view.add_argument("--alpha", type=float, default=0.5, help="heatmap opacity, 0 to 1 (default 0.5)")
    view.add_argument("--boxes", action="store_true", help="box each explained class's largest hot region")
    view.add_argument("--box-threshold", type=float, default=0.2, metavar="F",
                      help="keep pixels at or above F x the map's max for boxes (default 0.2, CAM paper; Grad-CAM paper 0.15)")
    view.add_argument("--smooth", type=float, default=0.0, metavar="S",
                      help="temporal smoothing of the heatmaps, 0 (off, default) to 1 (exclusive); resets on cuts and class changes")
    view.add_argument("--json", metavar="FILE", help="one JSON line per explained frame (classes, scores, boxes); "
                                                     "- for standard output")
    view.add_argument("--no-display", action="store_true", help="never open a window")
    video = parser.add_argument_group("video files")
    video.add_argument("--codec", choices=("h264", "hevc", "av1", "mjpeg"),
                       help="h264 (default; mjpeg for .avi), hevc, av1, mjpeg; NVENC on an NVIDIA GPU where present")
    video.add_argument("--crf", type=int, metavar="Q",
                       help="constant quality, lower is better (default: h264 20, hevc 24, av1 32, mjpeg 3)")
    video.add_argument("--bitrate", type=_bitrate, metavar="RATE", help="bits per second instead of --crf, e.g. 4M or 800k")
    video.add_argument("--no-audio", action="store_true", help="leave the input's sound out of the video file")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    return parser


def build_export_parser() -> argparse.ArgumentParser:
    from .export import DEFAULT_OPSET, OPSETS

    parser = _Parser(
        prog="streamcam export",
        description="Export a model to an ONNX graph that also outputs its feature maps and the CAM of the "
                    "classes it is asked for when it runs (any --top-k or --class: one export serves all).",
        epilog="example: streamcam export --model resnet50 -o models/resnet50.onnx",
    )
    parser.add_argument("--model", default=None, help="as for streamcam (default: efficientnet_lite0)")
    parser.add_argument("-o", "--output", help="the .onnx file to write (default: models/MODEL.onnx)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file, once the new graph is complete")
    parser.add_argument("--weights", help="a state dict or safetensors file; 'random' keeps an untrained net")
    parser.add_argument("--labels", help="class names, one a line (stored in the graph)")
    parser.add_argument("--trust-model-file", action="store_true", help=TRUST_HELP)
    parser.add_argument("--layer", help="the module whose output the graph exposes (default: found automatically)")
    # Accepted so that existing scripts keep working, ignored with a warning: the graph serves every top-k.
    parser.add_argument("--top-k", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset, {OPSETS.start} to {OPSETS.stop - 1} (default {DEFAULT_OPSET})")
    parser.add_argument("--fp16", action="store_true", help="run the model in half precision inside the graph")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line in this process and return its exit code; the signal handlers and the
    ``streamcam`` logger's configuration (``--debug`` sets it to DEBUG) are restored after."""
    restore = interrupts.install()
    logging_state = (list(log.handlers), log.level, log.propagate)
    try:
        return _main(argv)
    finally:
        log.handlers, log.level, log.propagate = logging_state
        restore()


def entry() -> None:
    """The ``streamcam`` command. Signals are handled from its first line to its last; the process then
    leaves without the interpreter's teardown: outputs are final by then, and native threads (torch,
    onnxruntime) still winding down must not turn a clean exit into an abort."""
    interrupts.install()
    code = _main(None)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    exporting = bool(argv) and argv[0] == "export"
    debug = "--debug" in argv
    _configure_logging(debug)
    try:
        try:
            args = build_export_parser().parse_args(argv[1:]) if exporting else build_parser().parse_args(argv)
        except SystemExit as exit_:  # --help, --version, or a usage error already printed
            return int(exit_.code or 0)
        _quiet_opencv(debug)
        return _export(args) if exporting else _run(args)
    except KeyboardInterrupt as stop:  # also Terminated (SIGTERM, SIGHUP)
        signum = interrupts.received() or getattr(stop, "signum", 2)
        log.error("%s; outputs were finalised", interrupts.SIGNALS.get(signum, "stopped"))
        return interrupts.exit_code(signum)
    except Exception as error:  # noqa: BLE001 - mapped to one line and an exit code
        from .errors import OutputClosed, StreamcamError

        if isinstance(error, OutputClosed):  # `streamcam ... --json - | head`: done, quietly
            _silence_stdout()
            return EXIT_OK
        if debug:
            log.exception("failed")
        if isinstance(error, StreamcamError):
            _say(f"streamcam: error: {error}")
            code = error.exit_code
        else:
            _say(f"streamcam: error: {type(error).__name__}: {error} (--debug shows the traceback)")
            code = EXIT_FAILURE
        signum = interrupts.received()  # an error while stopping for a signal: the signal's code
        return interrupts.exit_code(signum) if signum else code


def _run(args: argparse.Namespace) -> int:
    from .config import RunConfig
    from .demo import DEMO_OUTPUT, demo_input
    from .engine import run_config
    from .models import DEFAULT_MODEL

    if args.demo and (args.inputs or args.webcams):
        from .errors import InputError

        raise InputError("--demo takes no input: drop the files or --webcam")
    with demo_input() if args.demo else nullcontext(None) as clip, \
            interrupts.scratch(clip.parent) if clip else nullcontext():
        config = RunConfig(
            inputs=(str(clip),) if clip else tuple(args.inputs),
            webcams=tuple(args.webcams),
            output=args.output or (DEMO_OUTPUT if args.demo else None),
            model=args.model or DEFAULT_MODEL,
            weights=args.weights,
            labels=args.labels,
            layer=args.layer,
            layers=args.layers,
            method=args.method,
            device=args.device,
            backend=args.backend,
            batch=args.batch,
            precision=args.precision,
            compile=args.compile,
            top_k=args.top_k,
            target_class=args.target_class,
            alpha=args.alpha,
            boxes=args.boxes,
            box_threshold=args.box_threshold,
            smooth=args.smooth,
            json=args.json,
            codec=args.codec,
            crf=args.crf,
            bitrate=args.bitrate,
            audio=not args.no_audio,
            overwrite=args.overwrite,
            replaceable=(DEMO_OUTPUT,) if args.demo and not args.output else (),  # the demo rewrites its own
            trust_model_file=args.trust_model_file,
            display=False if args.no_display else None,
            progress=sys.stderr.isatty(),
        )
        summary = run_config(config)
    for problem in summary.problems:
        log.warning("warning: %s", problem)
    saved = f", saved to {', '.join(summary.outputs)}" if summary.outputs else ""
    dropped = f", {summary.dropped} dropped" if summary.dropped else ""
    log.info("explained %d frames in %.1f s%s%s", summary.frames, summary.seconds, dropped, saved)
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .export import export_onnx
    from .models import DEFAULT_MODEL

    if args.top_k is not None:
        log.warning("export --top-k is no longer needed and is ignored: the graph serves every top-k; "
                    "choose it when running (streamcam in.mp4 --model x.onnx --top-k %d)", args.top_k)
    model = args.model or DEFAULT_MODEL
    output = args.output or str(Path("models") / f"{Path(model.removeprefix('timm:')).stem}.onnx")
    export_onnx(output, model=model, weights=args.weights, labels=args.labels, layer=args.layer,
                opset=args.opset, fp16=args.fp16, overwrite=args.overwrite,
                trust_model_file=args.trust_model_file)
    return EXIT_OK


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a message comes (it may have been swapped since)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _configure_logging(debug: bool) -> None:
    """streamcam's own messages, one line each, on the current stderr."""
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("streamcam: %(message)s"))
    log.handlers = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG if debug else logging.INFO)


def _quiet_opencv(debug: bool) -> None:
    """OpenCV's and FFmpeg's warnings (a missing camera, a damaged packet) would bury our one-line errors."""
    import os

    import cv2

    if not debug:
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET; read when the first capture opens
    levels = cv2.utils.logging
    levels.setLogLevel(levels.LOG_LEVEL_WARNING if debug else levels.LOG_LEVEL_SILENT)


def _bitrate(text: str) -> int:
    """``4M``, ``800k`` or ``2500000`` -> bits per second."""
    scale = {"k": 10**3, "m": 10**6, "g": 10**9}.get(text[-1:].lower(), 1)
    try:
        value = float(text[:-1] if scale > 1 else text) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a bitrate (e.g. 4M, 800k)") from None
    if not 0 < value < 10**11:
        raise argparse.ArgumentTypeError(f"'{text}' is not a sensible bitrate")
    return int(value)


def _say(line: str) -> None:
    """One line on stderr, which may be gone (a closed terminal): then nobody is listening."""
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def _silence_stdout() -> None:
    """The reader of stdout left: point it at the null device, so that the final flush cannot fail."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError, AttributeError):
        pass


def _version() -> str:
    from . import __version__

    return __version__


if __name__ == "__main__":
    entry()
