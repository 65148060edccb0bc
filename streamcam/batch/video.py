"""One video of a batch through the normal pipeline: :func:`explain_video` -> a :class:`VideoResult` row.

This is the unit both runners call: the local one in a loop, the Ray one inside
its actors. It never raises for a bad video (missing, unreadable, corrupt, a
failure while explaining it): that becomes the row's ``error``. Only a signal
(Ctrl-C, SIGTERM: :class:`KeyboardInterrupt`) stops it, leaving no output
under a final name (:mod:`streamcam.batch.outdir`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import StreamcamError
from .inputs import REMOTE, VideoJob
from .outdir import complete, publish, staging

if TYPE_CHECKING:
    from ..config import RunConfig
    from ..explainer import Explainer

log = logging.getLogger(__name__)

DONE, SKIPPED, FAILED = "done", "skipped", "failed"  # VideoResult.status


@dataclass(frozen=True)
class VideoResult:
    """What became of one video: a row of ``summary.parquet`` (see :mod:`streamcam.batch.summary`)."""

    input: str  # the job's target, as named
    video: str | None  # the annotated video's final path; None when it failed
    records: str | None  # its JSON lines' final path; None when it failed
    status: str  # DONE (explained now), SKIPPED (complete from an earlier batch) or FAILED
    frames: int = 0  # frames explained (records written)
    duration_s: float | None = None  # the span of video explained (see describe_records)
    classes_seen: tuple[str, ...] = ()  # every label that was the top-1 of at least one frame, first seen first
    seconds: float = 0.0  # wall-clock time it took to explain (for SKIPPED: the earlier batch's time)
    error: str | None = None  # FAILED: why, in one line


def explain_video(job: VideoJob, out_dir: Path, explainer: Explainer, options: RunConfig,
                  progress: Callable[[int], None] | None = None) -> VideoResult:
    """Explain ``job`` with ``explainer`` (built once, reused for every video) as ``options`` say.

    ``options`` holds the run options (method, top-k, boxes, alpha, codec...; its
    inputs and outputs are ignored): the video goes through
    :func:`streamcam.engine.run_config` without a window, writing the annotated
    video and its JSON lines in a staging folder; both are moved to their final
    names (``job.video_output(out_dir)``, ``job.records_output(out_dir)``, replacing
    whatever is there) only once both are complete. ``progress`` is called with 1
    for each frame written.
    """
    from ..engine.pipeline import run_config

    started = time.monotonic()
    video, records = job.video_output(out_dir), job.records_output(out_dir)
    try:
        with staging(out_dir) as folder:
            staged_video, staged_records = folder / video.name, folder / records.name
            config = replace(options, inputs=() if job.kind == REMOTE else (job.target,), webcams=(),
                             output=str(staged_video), json=str(staged_records), overwrite=False, replaceable=(),
                             display=False, serve=None, token=None, progress=False)
            summary = run_config(config, explainer, sources=_remote_source(job), progress=progress)
            for problem in summary.problems:
                log.warning("warning: %s", problem)
            if not complete(staged_video, staged_records):
                raise StreamcamError("no frame was explained")
            frames, duration, classes = describe_records(staged_records)
            publish([(staged_video, video), (staged_records, records)])
    except Exception as error:  # noqa: BLE001 - one video's failure is its row, never the batch's end
        log.debug("%s failed", job.target, exc_info=True)
        return VideoResult(job.target, None, None, FAILED, seconds=time.monotonic() - started,
                           error=one_line(error))
    return VideoResult(job.target, str(video), str(records), DONE, frames, duration, classes,
                       time.monotonic() - started)


def skipped_result(job: VideoJob, out_dir: Path, earlier: VideoResult | None) -> VideoResult | None:
    """The row of a video whose outputs are complete from an earlier batch: its figures from that batch's
    row (``earlier``) if it has one, else read back from its records file; None if that file is not
    records streamcam wrote (damaged since: the video is to be explained again)."""
    video, records = job.video_output(out_dir), job.records_output(out_dir)
    if earlier is not None and earlier.status != FAILED:
        return replace(earlier, input=job.target, video=str(video), records=str(records), status=SKIPPED, error=None)
    try:
        frames, duration, classes = describe_records(records)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, IndexError, TypeError) as error:
        log.warning("warning: %s cannot be read back (%s): %s is explained again", records, one_line(error),
                    job.target)
        return None
    return VideoResult(job.target, str(video), str(records), SKIPPED, frames, duration, classes)


def describe_records(path: Path) -> tuple[int, float, tuple[str, ...]]:
    """A records file's frames, duration and top-1 labels (each once, first seen first), read line by line.

    The duration is the span of the frames' timestamps plus one mean frame interval,
    ``(t_last - t_first) * n / (n - 1)``: ``n / fps`` at a constant rate (0 for one frame).
    """
    frames, first, last = 0, 0.0, 0.0
    classes: dict[str, None] = {}
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            first = record["time"] if frames == 0 else first
            last = record["time"]
            frames += 1
            if record["predictions"]:
                classes.setdefault(record["predictions"][0]["label"], None)
    duration = (last - first) * frames / (frames - 1) if frames > 1 else 0.0
    return frames, duration, tuple(classes)


def one_line(error: BaseException) -> str:
    """An error as one line: streamcam's own say what is wrong; others are named by their type."""
    text = (str(error).strip().splitlines() or [""])[0]
    return text if isinstance(error, StreamcamError) else f"{type(error).__name__}: {text}".rstrip(": ")


def _remote_source(job: VideoJob) -> list | None:
    if job.kind != REMOTE:
        return None
    from .remote import RemoteVideoSource

    return [RemoteVideoSource(job.target)]
