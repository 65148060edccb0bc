"""``streamcam batch INPUTS... -o OUT_DIR``: checked options -> jobs -> each video explained (here, or on
Ray with ``--ray``) -> ``OUT_DIR/summary.parquet`` and a one-line summary.

Rerunning the same command resumes: a video whose two outputs are both under
their final names is complete (:mod:`streamcam.batch.outdir`) and skipped,
unless ``--overwrite``.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError
from ..interrupts import outputs_open
from ..options import option
from .inputs import SUMMARY_NAME, VideoJob, check_jobs, expand_inputs, read_inputs
from .outdir import batch_lock, complete
from .ray_runner import LOCAL_CLUSTER

if TYPE_CHECKING:
    from ..config import RunConfig
    from .progress import BatchProgress
    from .video import VideoResult

log = logging.getLogger("streamcam")

# RunConfig's options that streamcam batch does not take: it names its own inputs and outputs, always
# writes the records, never opens a window or serves a page.
RUN_OPTIONS_SKIPPED = frozenset({"inputs", "webcams", "output", "overwrite", "json", "display", "serve", "token"})


@dataclass(frozen=True)
class BatchCommand:
    """What ``streamcam batch`` was asked, besides the run options (a :class:`~streamcam.RunConfig`)."""

    inputs: tuple[str, ...] = option(
        (), metavar="INPUT",
        help="video files, folders of them (not their subfolders), `.txt` files listing paths or URLs (one a line; "
             "`#` comments; paths relative to the list), URLs FFmpeg reads (`http(s)://`, `rtsp://`, ...) and files "
             "on storage pyarrow reads (`s3://`, `gs://`, `hdfs://`, `abfs://`, `file://`); each video once")
    output: str | None = option(
        None, "-o", "--output", metavar="OUT_DIR",
        help="the folder for the outputs (made if missing): for each video its annotated video under the same name "
             "(`clip.mp4` -> `OUT_DIR/clip.mp4`; `.mp4` for containers streamcam does not write) and its JSON "
             "lines (`OUT_DIR/clip.jsonl`), each under its final name only once complete; and `summary.parquet`, "
             "one row per video")
    overwrite: bool = option(
        False, "--overwrite", sets=True,
        help="explain again the videos whose outputs are complete already (without it they are skipped, so that "
             "rerunning a batch resumes it), each replaced once its replacement is complete")
    ray: str | None = option(
        None, "--ray", metavar="ADDRESS", const=LOCAL_CLUSTER,
        help="spread the videos over Ray actors on the cluster at ADDRESS (`auto`, `HOST:PORT`, "
             "`ray://HOST:10001`), or alone a cluster started on this machine; needs `pip install 'streamcam[ray]'`")

    @property
    def out_dir(self) -> Path:
        return Path(self.output or "")

    def check(self, options: RunConfig) -> list[VideoJob]:
        """Everything that needs no torch: the extras, the inputs (expanded to jobs) and every output name."""
        if importlib.util.find_spec("pyarrow") is None:
            raise InputError("streamcam batch needs pyarrow (its summary table): pip install 'streamcam[batch]'")
        if self.ray is not None and importlib.util.find_spec("ray") is None:
            raise InputError("--ray needs Ray: pip install 'streamcam[ray]'")
        if not self.output:
            raise InputError("give the output folder: streamcam batch INPUTS... -o OUT_DIR")
        jobs = expand_inputs(self.inputs)
        check_jobs(jobs, self.out_dir, read_inputs(self.inputs, options.model, options.weights, options.labels))
        if not self.overwrite:
            for job in jobs:
                outputs = [job.video_output(self.out_dir), job.records_output(self.out_dir)]
                there = [path for path in outputs if path.exists()]
                if len(there) == 1:
                    missing = next(path for path in outputs if path not in there)
                    raise InputError(f"{there[0]} is there without {missing.name}, so it is not this batch's complete "
                                     f"output: pass --overwrite to explain {job.target} again, or move it away")
        return jobs


def run_batch(command: BatchCommand, jobs: list[VideoJob], options: RunConfig,
              progress: bool = False) -> list[VideoResult]:
    """Explain every job not complete already into ``command.out_dir``, as ``options`` say; write the summary
    and log its line. Returns the rows, in ``jobs``' order.

    Stopped by a signal (:class:`KeyboardInterrupt`), it writes the summary of the videos that ended, then
    re-raises: no output is left under a final name unless complete, and rerunning resumes.
    """
    from .progress import BatchProgress, announced_frames
    from .summary import summary_line, write_summary

    started = time.monotonic()
    out_dir = command.out_dir
    with batch_lock(out_dir):
        rows, todo = _finished_already(jobs, out_dir) if not command.overwrite else ({}, list(jobs))
        if rows:
            log.info("%d of %d videos are complete already in %s: skipped (--overwrite explains them again)",
                     len(rows), len(jobs), out_dir)
        try:
            with BatchProgress({job.target: announced_frames(job) if progress else None for job in todo},
                               progress) as bar:
                if todo and command.ray is not None:
                    from .ray_runner import run_on_ray

                    try:
                        with outputs_open():  # a signal is raised in the driver (KeyboardInterrupt), as here
                            rows.update((row.input, row) for row in run_on_ray(todo, out_dir, options, command.ray,
                                                                                bar))
                    except KeyboardInterrupt:
                        rows.update(bar.ended)  # the videos that ended on the cluster before the signal
                        raise
                elif todo:
                    _explain_here(todo, out_dir, options, bar, rows)
        except KeyboardInterrupt:  # (a second signal no longer raises: see streamcam.interrupts)
            write_summary(out_dir, [rows[job.target] for job in jobs if job.target in rows])
            log.error("stopped: %s lists the %d videos that ended; run the same command again to resume",
                      out_dir / SUMMARY_NAME, len(rows))
            raise
        ordered = [rows[job.target] for job in jobs]
        write_summary(out_dir, ordered)
    log.info("%s; summary: %s", summary_line(ordered, time.monotonic() - started), out_dir / SUMMARY_NAME)
    return ordered


def _finished_already(jobs: list[VideoJob], out_dir: Path) -> tuple[dict[str, VideoResult], list[VideoJob]]:
    """The rows of the jobs whose outputs are complete in ``out_dir`` (skipped), by input; the other jobs."""
    from .summary import read_summary
    from .video import skipped_result

    earlier = read_summary(out_dir)
    rows: dict[str, VideoResult] = {}
    todo: list[VideoJob] = []
    for job in jobs:
        finished = complete(job.video_output(out_dir), job.records_output(out_dir))
        row = skipped_result(job, out_dir, earlier.get(job.target)) if finished else None
        if row is not None:
            rows[job.target] = row
        else:
            todo.append(job)
    return rows, todo


def _explain_here(jobs: list[VideoJob], out_dir: Path, options: RunConfig, bar: BatchProgress,
                  rows: dict[str, VideoResult]) -> None:
    """The local runner: one Explainer, built once, explains every video in turn in this process."""
    from ..engine.pipeline import build_explainer
    from .video import explain_video

    with build_explainer(options) as explainer:
        explainer.prepare()
        with outputs_open():  # from here a signal is raised, so that each video's staging folder is removed
            for job in jobs:
                row = explain_video(job, out_dir, explainer, options, bar.advance)
                rows[job.target] = row
                bar.video_done(row)
