"""``streamcam batch --ray [ADDRESS]``: the videos of a batch spread over Ray actors.

:func:`run_on_ray` is what the batch command calls with ``--ray``. Its contract,
which the local runner (:mod:`streamcam.batch.command`) keeps too:

- **Connect** (:func:`streamcam.ray.cluster.connect`): ``address`` is what followed
  ``--ray`` (``auto``, ``HOST:PORT``, ``ray://HOST:10001``), or
  :data:`LOCAL_CLUSTER` for ``--ray`` alone: a cluster started on this machine for
  the batch, and shut down after it (an existing cluster, or a connection this
  process already had, is left alone). An address nobody answers at is one
  :class:`~streamcam.errors.InputError` line.
- **Actors** (:class:`VideoActor`): as many as the cluster has room for (each
  ``num_gpus=1`` when the cluster has GPUs, else ``num_cpus=1``:
  :func:`streamcam.ray.cluster.actor_resources`), never more than the videos;
  each holds ONE Explainer, built once from ``options``
  (``streamcam.engine.pipeline.build_explainer(options)``, then ``prepare()``),
  and explains one whole video per task, as a stream, with
  :func:`streamcam.batch.video.explain_video`, which never raises for a bad video
  (its row says why) and moves its outputs to their final names only once both
  are complete. ``out_dir`` must be the same folder for every actor (a shared
  file system). A model no actor can load is one InputError line.
- **Faults**: an actor process that dies is restarted by Ray (``max_restarts``)
  and the video it was explaining retried (``max_task_retries``); a video is
  reported FAILED only once Ray gives up. A staging folder a dead attempt left is
  removed once every actor has stopped (and by the next batch otherwise:
  :func:`streamcam.batch.outdir.remove_leftovers`), never counted as done.
- **Progress**: actors report each attempt's frame count a few times a second to
  a small :class:`ProgressBoard` actor, which the driver polls; the driver alone
  feeds ``bar`` (``bar.advance(frames)``, ``bar.video_done(row)``). A retried
  video's frames count once: the bar waits until the retry passes where the dead
  attempt was.
- **Result**: one :class:`~streamcam.batch.video.VideoResult` per job, in
  ``jobs``' order. It is called inside :func:`streamcam.interrupts.outputs_open`,
  so Ctrl-C or SIGTERM raises :class:`KeyboardInterrupt` in the driver: the
  actors are killed and it is re-raised (the command then writes the summary of
  what ended).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError

if TYPE_CHECKING:
    from ..config import RunConfig
    from .inputs import VideoJob
    from .progress import BatchProgress
    from .video import VideoResult

log = logging.getLogger(__name__)

LOCAL_CLUSTER = "local"  # --ray without an address: a cluster started on this machine for the batch
TASK_RETRIES = 2  # a video whose actor dies is tried again, 3 attempts in all, before it is FAILED
REPORT_EVERY = 0.25  # seconds between an actor's frame-count reports
POLL_EVERY = 0.2  # seconds between the driver's looks at the progress board
BOARD_TIMEOUT = 5.0  # seconds the driver waits for the board's answer before it looks again later
# The loggers whose per-file lines name a staging file (the driver says one line per video instead).
QUIETED = ("streamcam.sinks", "streamcam.video_out")


def run_on_ray(jobs: Sequence[VideoJob], out_dir: Path, options: RunConfig, address: str,
               bar: BatchProgress) -> list[VideoResult]:
    """Explain ``jobs`` into ``out_dir`` on the Ray cluster at ``address`` (see the module docstring)."""
    if not jobs:
        return []
    with _connected(address):
        rows = _Dispatcher(jobs, out_dir, options, bar).run()
    return [rows[job.target] for job in jobs]


@contextlib.contextmanager
def _connected(address: str) -> Iterator[None]:
    """Connected to the cluster ``address`` names for the block; a cluster started here is shut down after.

    ``ray.init`` replaces the SIGTERM handler with one that calls ``sys.exit``; streamcam's own (a
    :class:`KeyboardInterrupt` in the driver, see :mod:`streamcam.interrupts`) is put back.
    """
    import ray

    from ..ray.cluster import connect

    start = address == LOCAL_CLUSTER and not ray.is_initialized()
    main_thread = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main_thread else None
    try:
        connect(None if address == LOCAL_CLUSTER else address, logging_level=logging.WARNING)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, sigterm)
    try:
        yield
    finally:
        if start:
            ray.shutdown()


class _Dispatcher:
    """The driver's side: actors started, one video at a time given to each idle one, the bar fed, rows kept."""

    def __init__(self, jobs: Sequence[VideoJob], out_dir: Path, options: RunConfig, bar: BatchProgress) -> None:
        import ray

        from ..ray.cluster import actor_resources

        self.out_dir = out_dir
        self.bar = bar
        self.jobs = {job.name: job for job in jobs}  # names are unique in a batch (check_jobs)
        self.queue = deque(jobs)
        self.rows: dict[str, VideoResult] = {}
        self.shown: dict[str, int] = {}  # frames the bar counts for each video being explained, by name
        self.attempts: dict[str, set[str]] = {}  # each video's attempts seen on the board, by name
        resources = actor_resources()
        count = max(1, min(len(jobs), _room_for(resources)))
        self.board = ray.remote(ProgressBoard).options(num_cpus=0, max_restarts=-1).remote()
        actor_class = ray.remote(VideoActor).options(**resources, max_restarts=-1, max_task_retries=TASK_RETRIES)
        self.actors = [actor_class.remote(options, out_dir, os.getcwd()) for _ in range(count)]
        # Each actor's one task in flight: first ready() (its model loaded), then one video after another.
        self.pending: dict[Any, tuple[Any, VideoJob | None]] = {actor.ready.remote(): (actor, None)
                                                               for actor in self.actors}
        self.unready: list[str] = []  # why actors could not load the model
        log.info("explaining %d videos with %d Ray actors (%s each)", len(jobs), count,
                 ", ".join(f"{k.removeprefix('num_')}={v:g}" for k, v in resources.items()))

    def run(self) -> dict[str, VideoResult]:
        import ray

        try:
            while self.pending:
                done, _ = ray.wait(list(self.pending), num_returns=1, timeout=POLL_EVERY)
                self._show_progress()
                for ref in done:
                    actor, job = self.pending.pop(ref)
                    if job is None:
                        self._started(ref, actor)
                    else:
                        self._ended(ref, actor, job)
            self._stop()
        except BaseException:  # Ctrl-C, SIGTERM, or no actor could start: none goes on writing
            self._stop()
            raise
        from .outdir import remove_leftovers

        remove_leftovers(self.out_dir)  # what attempts killed mid-video left (no actor writes any more)
        return self.rows

    def _started(self, ref: Any, actor: Any) -> None:
        """An actor's ready() ended: give it a video, or drop it if its model did not load."""
        import ray

        try:
            where, at_home = ray.get(ref)
        except ray.exceptions.RayError as error:
            self.unready.append(_ray_error_line(error))
            log.debug("a Ray actor could not load the model: %s", self.unready[-1])
            self._drop(actor)
            return
        log.debug("a Ray actor is ready on %s", where)
        if not at_home:
            log.warning("warning: the Ray actor on %s has no folder %s, where relative paths start: name the "
                        "videos and OUT_DIR by absolute paths on a file system every node shares", where, os.getcwd())
        self._next(actor)

    def _ended(self, ref: Any, actor: Any, job: VideoJob) -> None:
        """An actor's video ended: its row (FAILED if Ray gave up on it), the bar told, the next video given."""
        import ray

        from .video import FAILED, VideoResult

        try:
            row = ray.get(ref)
        except ray.exceptions.RayError as error:  # its actor died TASK_RETRIES + 1 times, or is gone for good
            row = VideoResult(job.target, None, None, FAILED,
                              error=f"the Ray actor explaining it failed: {_ray_error_line(error)}")
        self.rows[job.target] = row
        self.board.forget.remote(job.name)
        shown = self.shown.pop(job.name, 0)
        if row.frames > shown:
            self.bar.advance(row.frames - shown)
        self.bar.video_done(row)
        self._next(actor)

    def _next(self, actor: Any) -> None:
        """Give ``actor`` the next video, or let it go when none is left."""
        if self.queue:
            job = self.queue.popleft()
            self.pending[actor.explain.remote(job, self.board)] = (actor, job)
        else:
            self._drop(actor)

    def _drop(self, actor: Any) -> None:
        import ray

        ray.kill(actor)  # its GPU or CPU is free at once for others on the cluster
        self.actors.remove(actor)
        if not self.actors and self.queue:  # only actors whose model did not load are dropped with work left
            raise InputError(f"no Ray actor could load the model: {self.unready[0]}")

    def _show_progress(self) -> None:
        """Advance the bar by the frames the board shows beyond what it counts already, video by video."""
        import ray

        try:
            counts = ray.get(self.board.counts.remote(), timeout=BOARD_TIMEOUT)
        except ray.exceptions.RayError as error:  # the board is being restarted: the bar waits a little
            log.debug("no progress this time: %s", _ray_error_line(error))
            return
        for name, (attempt, frames) in counts.items():
            job = self.jobs.get(name)
            if job is None or job.target in self.rows:  # a late post about a video that ended
                continue
            seen = self.attempts.setdefault(name, set())
            if attempt not in seen:
                seen.add(attempt)
                if len(seen) > 1:
                    log.warning("warning: the Ray actor explaining %s died: Ray explains it again (attempt %d)",
                                job.target, len(seen))
            extra = frames - self.shown.get(name, 0)
            if extra > 0:  # a retry counts from where the dead attempt was
                self.shown[name] = frames
                self.bar.advance(extra)

    def _stop(self) -> None:
        """Kill the actors still there and the board (idempotent)."""
        import ray

        for actor in [*self.actors, self.board]:
            with contextlib.suppress(Exception):  # noqa: BLE001 - gone already, or the cluster is
                ray.kill(actor)
        self.actors = []
        self.pending = {}


class VideoActor:
    """A Ray actor's state (``ray.remote(VideoActor)``): one Explainer, built once, explaining whole videos.

    It works in the driver's working folder (``cwd``) where its node has it, so that relative paths name
    the same files as in the driver (a shared file system mounted at the same place on every node). A model
    that does not load does not kill the actor (Ray would restart it, again and again): the error is kept
    and :meth:`ready` raises it, so the driver reports it in one line.
    """

    def __init__(self, options: RunConfig, out_dir: Path, cwd: str) -> None:
        self.options = options
        self.out_dir = out_dir
        self.error: Exception | None = None
        try:
            os.chdir(cwd)
            self.at_home = True
        except OSError:
            self.at_home = False
        for name in QUIETED:
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            from ..engine.pipeline import build_explainer

            self.explainer = build_explainer(options)
            self.explainer.prepare()
        except Exception as error:  # noqa: BLE001 - raised again by ready(), in the driver
            self.error = error

    def ready(self) -> tuple[str, bool]:
        """Once its model is loaded: where this actor runs (host, process, device), and whether it works in
        the driver's working folder. Its error if the model did not load."""
        if self.error is not None:
            raise self.error
        return f"{socket.gethostname()} (pid {os.getpid()}, {self.explainer.device})", self.at_home

    def explain(self, job: VideoJob, board: Any) -> VideoResult:
        """One whole video, streamed through the normal pipeline (:func:`~streamcam.batch.video.explain_video`),
        its frame count posted on ``board`` (a :class:`ProgressBoard` actor) as it goes."""
        from .video import explain_video

        if self.error is not None:
            raise self.error
        report = _Reporter(board, job.name)
        return explain_video(job, self.out_dir, self.explainer, self.options, report)


class ProgressBoard:
    """A small actor where video actors post each attempt's frame count and the driver reads them all."""

    def __init__(self) -> None:
        self._counts: dict[str, tuple[str, int]] = {}

    def post(self, name: str, attempt: str, frames: int) -> None:
        self._counts[name] = (attempt, frames)

    def forget(self, name: str) -> None:
        """The video ended: its count is no longer sent with every :meth:`counts`."""
        self._counts.pop(name, None)

    def counts(self) -> dict[str, tuple[str, int]]:
        """Each video being explained (by its output name): its latest attempt (an id) and the frames it
        explained so far."""
        return dict(self._counts)


class _Reporter:
    """``explain_video``'s ``progress`` in an actor: counts frames, posts the count at most every REPORT_EVERY s."""

    def __init__(self, board: Any, name: str) -> None:
        self.board = board
        self.name = name
        self.attempt = uuid.uuid4().hex  # a retry on a restarted actor is a new attempt
        self.frames = 0
        self.posted = time.monotonic()

    def __call__(self, frames: int) -> None:
        self.frames += frames
        now = time.monotonic()
        if now - self.posted >= REPORT_EVERY:
            self.posted = now
            self.board.post.remote(self.name, self.attempt, self.frames)  # fire and forget


def _room_for(resources: dict[str, float]) -> int:
    """How many actors asking ``resources`` (one GPU, or one CPU) the cluster has free room for now."""
    import ray

    (name, amount), = resources.items()
    free = ray.available_resources().get({"num_gpus": "GPU", "num_cpus": "CPU"}[name], 0.0)
    return int(free // amount)


def _ray_error_line(error: BaseException) -> str:
    """A Ray error in one line: the error raised in the actor when there is one, else Ray's first line."""
    from .video import one_line

    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        return one_line(cause)
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
