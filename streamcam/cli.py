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
log = logging.getLogger("streamcam")


class _Parser(argparse.ArgumentParser):
    """One-line usage errors; help texts are written once, for ``--help`` and README's option tables alike
    (``scripts/options_table.py``): the backticks that mark code there are dropped on the terminal."""

    def error(self, message: str) -> None:  # one line, not usage + message
        self.exit(EXIT_USAGE, f"streamcam: error: {message} (see {self.prog} --help)\n")

    def format_help(self) -> str:
        return super().format_help().replace("`", "")


def build_parser() -> argparse.ArgumentParser:
    """``streamcam``'s parser: :class:`RunConfig`'s fields (see :mod:`streamcam.options`), and the command's own."""
    from .config import RunConfig
    from .options import add_options

    parser = _Parser(
        prog="streamcam",
        description="See what a CNN classifier looks at, live: CAM heatmaps on webcams, videos, images and streams.",
        epilog="examples: streamcam --webcam 0 | streamcam in.mp4 -o out.mp4 | streamcam a.jpg photos/ -o annotated/ | "
        "streamcam --demo | streamcam export --model resnet50 -o models/resnet50.onnx | streamcam batch clips/ -o "
        "explained/ (see streamcam batch --help)",
    )
    add_options(parser, RunConfig, stop="output")  # INPUT ..., --webcam
    parser.add_argument(
        "--demo", action="store_true",
        help="no input needed: a clip made at run time from real photos; writes `streamcam-demo.mp4`, rewritten on "
             "each run (or `-o`, which like every other output is not replaced without `--overwrite`)")
    add_options(parser, RunConfig, start="output")  # -o, --overwrite, then the groups model, view, video files
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    return parser


def build_export_parser() -> argparse.ArgumentParser:
    from .config import RunConfig
    from .defaults import DEFAULT_MODEL, DEFAULT_OPSET, OPSETS
    from .options import add_option

    parser = _Parser(
        prog="streamcam export",
        description="Export a model to an ONNX graph that also outputs its feature maps and the CAM of the "
                    "classes it is asked for when it runs (any --top-k or --class: one export serves all).",
        epilog="example: streamcam export --model resnet50 -o models/resnet50.onnx",
    )
    add_option(parser, RunConfig, "model", metavar="NAME|FILE",
               help=f"as for `streamcam`: `{DEFAULT_MODEL}` (default), a torchvision classifier, `timm:NAME`, a model "
                    "file from `streamcam train`, or a saved model file")
    parser.add_argument("-o", "--output", metavar="PATH", help="the `.onnx` file to write (default: `models/NAME.onnx`)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing file, once the new graph is complete (never an input)")
    add_option(parser, RunConfig, "weights")
    add_option(parser, RunConfig, "labels", help="class names, one a line (stored in the graph)")
    add_option(parser, RunConfig, "trust_model_file")
    add_option(parser, RunConfig, "layer", help="the module whose output the graph exposes (default: as for "
                                                "`streamcam`: a model file's own, else found automatically)")
    # Accepted so that existing scripts keep working, ignored with a warning: the graph serves every top-k.
    parser.add_argument("--top-k", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, metavar="N",
                        help=f"ONNX opset, {OPSETS.start} to {OPSETS.stop - 1} (default {DEFAULT_OPSET})")
    parser.add_argument("--fp16", action="store_true",
                        help="run the model in half precision inside the graph (the CAM stays fp32)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    return parser


def build_train_parser() -> argparse.ArgumentParser:
    """``streamcam train``'s parser: :class:`~streamcam.train.command.TrainCommand`'s and
    :class:`~streamcam.train.options.TrainOptions`' fields, each declared once."""
    from .options import add_options
    from .train.command import TrainCommand
    from .train.options import TrainOptions

    parser = _Parser(
        prog="streamcam train",
        description="Fine-tune a CAM-ready classifier on a folder of labelled images (one subfolder per class, or "
                    "train/ and val/ each holding them): the backbone's head becomes global average pooling + one "
                    "linear layer for your classes; the head trains alone first, then the backbone too. Writes one "
                    "model file that `streamcam --model FILE` and `streamcam.Explainer(model=FILE)` load with "
                    "nothing else, and a report beside it.",
        epilog="example: streamcam train pets/ -o pets.safetensors, then streamcam --webcam 0 --model pets.safetensors",
    )
    parser.add_argument("data", metavar="DATA_DIR",
                        help="the image folder: one subfolder per class (`cats/`, `dogs/`), or `train/` and `val/` "
                             "each with the same class subfolders")
    add_options(parser, TrainCommand, start="output")
    add_options(parser, TrainOptions)
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    return parser


def build_batch_parser() -> argparse.ArgumentParser:
    """``streamcam batch``'s parser: :class:`~streamcam.batch.command.BatchCommand`'s fields, then the run
    options it takes, each declared once (on :class:`RunConfig`)."""
    from .batch.command import RUN_OPTIONS_SKIPPED, BatchCommand
    from .config import RunConfig
    from .options import add_options

    parser = _Parser(
        prog="streamcam batch",
        description="Explain a whole collection of videos: for each, its annotated video and its JSON lines in "
                    "OUT_DIR under the same name, and one summary table (`OUT_DIR/summary.parquet`, a row per "
                    "video: input, outputs, frames, duration, classes seen, time taken, error). One model, loaded "
                    "once; a video that fails is recorded and the others go on; rerunning the same command skips "
                    "the videos already complete. Needs `pip install 'streamcam[batch]'`.",
        epilog="example: streamcam batch clips/ more.txt s3://bucket/videos/a.mp4 -o explained/ --top-k 3 --boxes",
    )
    add_options(parser, BatchCommand)
    add_options(parser, RunConfig, skip=RUN_OPTIONS_SKIPPED)
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
    from .demo import DEMO_OUTPUT, demo_input
    from .engine import run_config
    from .options import parsed

    if args.demo and (args.inputs or args.webcams):
        from .errors import InputError

        raise InputError("--demo takes no input: drop the files or --webcam")
    config = RunConfig(**{  # every option checked here, before torch loads and before the demo clip is made
        **parsed(args, RunConfig),
        "output": args.output or (DEMO_OUTPUT if args.demo else None),
        "replaceable": (DEMO_OUTPUT,) if args.demo and not args.output else (),  # the demo rewrites its own
        "progress": _is_terminal(sys.stderr),
    })
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
    from .preflight import check_export

    if args.top_k is not None:
        log.warning("export --top-k is no longer needed and is ignored: the graph serves every top-k; "
                    "choose it when running (streamcam in.mp4 --model x.onnx --top-k %d)", args.top_k)
    model = args.model
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
        from .atomic import write_whole

        write_whole(report_file, text + "\n", replace=args.overwrite)
        log.info("report written to %s: attach it to bug reports", report_file)
    return report.exit_code


def _train(args: argparse.Namespace) -> int:
    from .options import parsed
    from .train.command import TrainCommand, run_training
    from .train.options import TrainOptions

    command = TrainCommand(data=args.data, **parsed(args, TrainCommand))
    command.check()  # before torch loads
    result = run_training(command, {**parsed(args, TrainOptions), "progress": _is_terminal(sys.stderr)})
    if result.interrupted:
        where = f"the best epoch so far ({result.best.epoch}) is saved in {command.model_file}" if result.best else \
            "no epoch finished: nothing was saved"
        log.error("interrupted: %s", where)
        return interrupts.exit_code(interrupts.received() or 2)
    return EXIT_OK if result.best is not None else EXIT_FAILURE


def _batch(args: argparse.Namespace) -> int:
    from .batch.command import RUN_OPTIONS_SKIPPED, BatchCommand, run_batch
    from .batch.video import FAILED
    from .config import RunConfig
    from .options import parsed

    command = BatchCommand(**parsed(args, BatchCommand))
    options = RunConfig(**parsed(args, RunConfig, skip=RUN_OPTIONS_SKIPPED))  # every option checked here
    jobs = command.check(options)  # before torch loads
    # Their "wrote N frames to", "h264 with libx264" lines name a staging file: one line per video instead.
    quieted = [logging.getLogger(f"streamcam.{name}") for name in ("sinks", "video_out")]
    levels = [logger.level for logger in quieted]
    for logger in quieted:
        logger.setLevel(logging.WARNING)
    try:
        rows = run_batch(command, jobs, options, progress=_is_terminal(sys.stderr))
    finally:
        for logger, level in zip(quieted, levels):
            logger.setLevel(level)
    return EXIT_FAILURE if any(row.status == FAILED for row in rows) else EXIT_OK


SUBCOMMANDS = {"export": (build_export_parser, _export), "doctor": (build_doctor_parser, _doctor),
               "train": (build_train_parser, _train), "batch": (build_batch_parser, _batch)}


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
