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
from dataclasses import replace
from pathlib import Path

from . import interrupts, phases

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
TRUST_HELP = ("allow `--model`/`--weights` to be a whole pickled model (`torch.save(model)`): unpickling runs any "
              "code the file holds, so only for files from a source you trust")
WEIGHTS_HELP = ("a state dict (`.pth`/`.pt`, plain or under `state_dict`/`model`; DataParallel's `module.` prefix is "
                "stripped) or a `.safetensors` file; `random` keeps an untrained net. Without it, torchvision/timm "
                "weights come from those libraries' caches, or download through them when online; offline, one line "
                "names the file to fetch and the `--weights` to pass")
log = logging.getLogger("streamcam")


class _Parser(argparse.ArgumentParser):
    """One-line usage errors; help texts are written once, for ``--help`` and README's option tables alike
    (``scripts/options_table.py``): the backticks that mark code there are dropped on the terminal."""

    def error(self, message: str) -> None:  # one line, not usage + message
        self.exit(EXIT_USAGE, f"streamcam: error: {message} (see streamcam --help)\n")

    def format_help(self) -> str:
        return super().format_help().replace("`", "")


def build_parser() -> argparse.ArgumentParser:
    from .defaults import METHOD_NAMES

    parser = _Parser(
        prog="streamcam",
        description="See what a CNN classifier looks at, live: CAM heatmaps on webcams, videos, images and streams.",
        epilog="examples: streamcam --webcam 0 | streamcam in.mp4 -o out.mp4 | streamcam a.jpg photos/ -o annotated/ | "
        "streamcam --demo | streamcam export --model resnet50 -o models/resnet50.onnx",
    )
    parser.add_argument(
        "inputs", nargs="*", metavar="INPUT",
        help="video files (anything FFmpeg reads) and stream URLs (`rtsp://`, `http://`, ...), any number, explained "
             "side by side; or image files and folders (non-recursive)")
    parser.add_argument("--webcam", type=int, metavar="N", action="append", dest="webcams", default=[],
                        help="webcam number N, live; repeat for several")
    parser.add_argument(
        "--demo", action="store_true",
        help="no input needed: a clip made at run time from real photos; writes `streamcam-demo.mp4`, rewritten on "
             "each run (or `-o`, which like every other output is not replaced without `--overwrite`)")
    parser.add_argument(
        "-o", "--output", metavar="PATH",
        help="video file for video input (`.mp4`, `.avi`, `.mkv`, `.mov`, `.m4v`; missing folders are created), a "
             "folder for image input (images keep their names); with several sources a pattern with `{source}` "
             "(e.g. `out_{source}.mp4`: `out_a.mp4`, `out_webcam0.mp4`, ...)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing output files (refused otherwise), each only once its replacement is "
                             "complete; never an input")
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model", metavar="NAME",
        help="`efficientnet_lite0` (default), a torchvision classifier (`resnet18`, `resnet50`, `vgg16`, `googlenet`, "
             "`mobilenet_v3_large`, `convnext_tiny`, ...), `timm:NAME`, an exported `.onnx` graph, or a whole saved "
             "model (`torch.save(model)`) with `--trust-model-file`")
    model.add_argument("--weights", metavar="FILE", help=WEIGHTS_HELP)
    model.add_argument("--trust-model-file", action="store_true", help=TRUST_HELP)
    model.add_argument("--labels", metavar="FILE",
                       help="class names, one a line (as many as the model has classes); default: ImageNet's for "
                            "1000-class models, `class N` otherwise")
    model.add_argument("--layer", metavar="NAME",
                       help="the module to explain; default: the last block before global pooling, found "
                            "automatically. A wrong name lists the candidates")
    model.add_argument("--method", default="cam", metavar="NAME",
                       help=f"{', '.join(f'`{m}`' for m in METHOD_NAMES)}; default `cam` (see Methods in README)")
    model.add_argument("--layers", metavar="A,B,C|auto",
                       help="multi-layer grid: the frame once per layer, each with that layer's heatmap and name (the "
                            "first tile also lists the classes); `auto` = the output of each of the last four stages "
                            "(e.g. `layer1`..`layer4` of a ResNet)")
    model.add_argument("--top-k", type=int, default=1, metavar="K",
                       help="explain the K most likely classes (default 1; all are listed, the heatmap shows the "
                            "first)")
    model.add_argument("--class", dest="target_class", metavar="NAME|ID",
                       help="explain this class (label, case-insensitive, or id) instead of the top ones")
    model.add_argument("--batch", type=int, default=8, metavar="N",
                       help="frames per inference batch (default 8), taken from all sources together; live sources "
                            "never wait for a batch to fill")
    model.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"), metavar="P",
                       help="`fp32` (default), `fp16` or `bf16`: the model's forward pass under autocast; the maps' "
                            "maths stays fp32")
    model.add_argument("--compile", action="store_true",
                       help="torch engine: run the forward passes that need no gradients (CAM, Eigen-CAM) through "
                            "`torch.compile`, with CUDA graphs on a GPU; each batch size compiles once, on first use")
    model.add_argument("--device", default="auto", help="`auto` (default: CUDA if present), `cpu`, `cuda`, `cuda:N`")
    model.add_argument("--backend", default="auto",
                       help="`auto` (default): per method, the fastest engine that can serve it (see Engines in "
                            "README); `torch`, `onnxruntime` force one")
    view = parser.add_argument_group("view")
    view.add_argument("--alpha", type=float, default=0.5, metavar="A", help="heatmap opacity, 0 to 1 (default 0.5)")
    view.add_argument("--boxes", action="store_true",
                      help="draw, for each explained class, a box around its heatmap's largest hot region (top class "
                           "green, then magenta, cyan, orange, white); a class with no distinct hot region gets none")
    view.add_argument("--box-threshold", type=float, default=0.2, metavar="F",
                      help="a box keeps the pixels at or above F x the map's max (default 0.2, as the CAM paper; the "
                           "Grad-CAM paper used 0.15)")
    view.add_argument("--smooth", type=float, default=0.0, metavar="S",
                      help="temporal smoothing of the heatmaps, 0 (off, default) to below 1: "
                           "`M'_t = S M'_{t-1} + (1 - S) M_t` per source and class; restarts on cuts and class changes")
    view.add_argument("--render", choices=("auto", "device", "host"), default="auto", metavar="WHERE",
                      help="where the heatmap is blended and the boxes thresholded: `device` (torch, on the model's "
                           "device), `host` (OpenCV); `auto` (default): `host` on a CPU, where it is measured faster, "
                           "`device` on CUDA")
    view.add_argument("--json", metavar="FILE",
                      help="one JSON line per explained frame (classes, scores, boxes), flushed line by line; one "
                           "file for all sources, or one each with `{source}` in the name; `-` writes them to "
                           "standard output")
    view.add_argument("--no-display", action="store_true",
                      help="never open a window (it is off anyway where there is no display)")
    video = parser.add_argument_group("video files")
    video.add_argument("--codec", choices=("h264", "hevc", "av1", "mjpeg"), metavar="C",
                       help="`h264` (default; `mjpeg` for `.avi`), `hevc`, `av1`, `mjpeg`; on NVENC where an NVIDIA "
                            "GPU has it")
    video.add_argument("--crf", type=int, metavar="Q",
                       help="constant quality, lower is better (defaults: h264 20, hevc 24, av1 32, mjpeg 3)")
    video.add_argument("--bitrate", type=_bitrate, metavar="RATE",
                       help="bits per second (`4M`, `800k`) instead of `--crf`")
    video.add_argument("--no-audio", action="store_true", help="leave the input's sound out of the video file")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    return parser


def build_export_parser() -> argparse.ArgumentParser:
    from .defaults import DEFAULT_OPSET, OPSETS

    parser = _Parser(
        prog="streamcam export",
        description="Export a model to an ONNX graph that also outputs its feature maps and the CAM of the "
                    "classes it is asked for when it runs (any --top-k or --class: one export serves all).",
        epilog="example: streamcam export --model resnet50 -o models/resnet50.onnx",
    )
    parser.add_argument("--model", metavar="NAME|FILE",
                        help="as for `streamcam`: `efficientnet_lite0` (default), a torchvision classifier, "
                             "`timm:NAME`, or a saved model file")
    parser.add_argument("-o", "--output", metavar="PATH", help="the `.onnx` file to write (default: `models/NAME.onnx`)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing file, once the new graph is complete (never an input)")
    parser.add_argument("--weights", metavar="FILE", help=WEIGHTS_HELP)
    parser.add_argument("--labels", metavar="FILE", help="class names, one a line (stored in the graph)")
    parser.add_argument("--trust-model-file", action="store_true", help=TRUST_HELP)
    parser.add_argument("--layer", metavar="NAME",
                        help="the module whose output the graph exposes (default: found automatically)")
    # Accepted so that existing scripts keep working, ignored with a warning: the graph serves every top-k.
    parser.add_argument("--top-k", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, metavar="N",
                        help=f"ONNX opset, {OPSETS.start} to {OPSETS.stop - 1} (default {DEFAULT_OPSET})")
    parser.add_argument("--fp16", action="store_true",
                        help="run the model in half precision inside the graph (the CAM stays fp32)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    return parser


def build_doctor_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="streamcam doctor",
        description="Check this machine: versions, devices, then every engine x device x precision it offers "
                    "against the CPU torch fp32 reference on real photos, a short clip through the pipeline with "
                    "each encoder and decoder, and the speed of each engine. Exit code 0 when every check that "
                    "can run here passes, 1 otherwise.",
        epilog="example: streamcam doctor --json report.json (attach it to bug reports)",
    )
    parser.add_argument("--json", metavar="FILE",
                        help="also write the whole report (versions, devices, every check with its numbers) as "
                             "JSON to FILE, for bug reports; `-` writes it to standard output (the table then goes "
                             "to standard error)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing report file, once the new one is complete")
    parser.add_argument("--quick", action="store_true",
                        help="two photos instead of four, an 8-frame clip instead of 24, and each engine timed "
                             "for 0.3 s at batch 2 instead of 3 s at batch 8")
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
        phases.use_terminal(False)


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
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    build, act = SUBCOMMANDS[command] if command else (build_parser, _run)
    debug = "--debug" in argv
    _configure_logging(debug)
    try:
        try:
            args = build().parse_args(argv[1:] if command else argv)
        except SystemExit as exit_:  # --help, --version, or a usage error already printed
            return int(exit_.code or 0)
        _quiet_opencv(debug)
        phases.use_terminal(_is_terminal(sys.stderr))
        return act(args)
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
    from .defaults import DEFAULT_MODEL
    from .demo import DEMO_OUTPUT, demo_input
    from .engine import run_config

    if args.demo and (args.inputs or args.webcams):
        from .errors import InputError

        raise InputError("--demo takes no input: drop the files or --webcam")
    config = RunConfig(  # every option checked here, before torch loads and before the demo clip is made
        inputs=tuple(args.inputs),
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
        render=args.render,
        json=args.json,
        codec=args.codec,
        crf=args.crf,
        bitrate=args.bitrate,
        audio=not args.no_audio,
        overwrite=args.overwrite,
        replaceable=(DEMO_OUTPUT,) if args.demo and not args.output else (),  # the demo rewrites its own
        trust_model_file=args.trust_model_file,
        display=False if args.no_display else None,
        progress=_is_terminal(sys.stderr),
    )
    with demo_input() if args.demo else nullcontext(None) as clip, \
            interrupts.scratch(clip.parent) if clip else nullcontext():
        summary = run_config(replace(config, inputs=(str(clip),)) if clip else config)
    for problem in summary.problems:
        log.warning("warning: %s", problem)
    saved = f", saved to {', '.join(summary.outputs)}" if summary.outputs else ""
    dropped = f", {summary.dropped} dropped" if summary.dropped else ""
    log.info("explained %d frames in %.1f s%s%s", summary.frames, summary.seconds, dropped, saved)
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:

    from .defaults import DEFAULT_MODEL
    from .preflight import check_export

    if args.top_k is not None:
        log.warning("export --top-k is no longer needed and is ignored: the graph serves every top-k; "
                    "choose it when running (streamcam in.mp4 --model x.onnx --top-k %d)", args.top_k)
    model = args.model or DEFAULT_MODEL
    output = args.output or str(Path("models") / f"{Path(model.removeprefix('timm:')).stem}.onnx")
    check_export(output, model, args.weights, args.labels, args.opset, args.overwrite)  # before torch loads
    with phases.phase(f"exporting {model} to {output}", long=True):
        from .export import export_onnx

        export_onnx(output, model=model, weights=args.weights, labels=args.labels, layer=args.layer,
                    opset=args.opset, fp16=args.fp16, overwrite=args.overwrite,
                    trust_model_file=args.trust_model_file)
    return EXIT_OK


def _doctor(args: argparse.Namespace) -> int:
    import json

    from .doctor import diagnose
    from .doctor.table import format_report

    report_file = Path(args.json) if args.json and args.json != "-" else None
    if report_file is not None:  # checked before the checks, which take a while; never replaced unasked
        from .identity import identify
        from .plan import check_outputs

        check_outputs([identify(report_file)], [], args.overwrite, ["--json"])
    with phases.phase("checking this machine (streamcam doctor)", long=True):
        report = diagnose(quick=args.quick)
    text = json.dumps(report.as_dict(), indent=2)
    print(format_report(report), file=sys.stderr if args.json == "-" else sys.stdout, flush=True)
    if args.json == "-":
        print(text, flush=True)
    elif report_file is not None:
        _write_whole(report_file, text + "\n", replace=args.overwrite)
        log.info("report written to %s: attach it to bug reports", report_file)
    return report.exit_code


def _write_whole(path: Path, text: str, replace: bool) -> None:
    """Write ``text`` under a temporary name beside ``path``, then move it into place."""
    from .atomic import OutputFile
    from .identity import identify

    file = OutputFile(path, replace and identify(path).replaced_by_writing)
    try:
        file.path.write_text(text, encoding="utf-8")
    except BaseException:
        file.discard()
        raise
    file.publish()


SUBCOMMANDS = {"export": (build_export_parser, _export), "doctor": (build_doctor_parser, _doctor)}


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a message comes (it may have been swapped since),
    out of the way of a progress bar or phase line on the terminal."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        phases.log_write(lambda: super(_CurrentStderr, self).emit(record))


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


def _is_terminal(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):  # replaced by an object without it, or closed
        return False


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
