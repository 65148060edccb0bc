"""The pipeline: capture thread -> inference worker -> render thread -> the caller's sinks.

``annotate`` is the generator at its heart; ``run`` drains it into the sinks, as the
CLI does. Live sources hand over through a latest-frame slot (drops counted),
files through a bounded queue (every frame, in order, with back-pressure).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import RunConfig, ViewOptions
from ..controls import LiveControls
from ..errors import InputError
from ..explainer import Explainer
from ..interrupts import frame_being_written
from ..sinks import open_sinks
from ..sources import Source, open_source
from ..types import AnnotatedFrame
from .buffers import END, POLL_S, BoundedQueue, Empty, LatestSlot
from .render_stage import RenderStage
from .stages import Failure, join_all, start_stage
from .worker import InferenceWorker

log = logging.getLogger(__name__)

# The run() options that build an Explainer (and so cannot go with explainer=).
EXPLAINER_OPTIONS = frozenset({"model", "weights", "labels", "layer", "layers", "method", "device", "backend",
                               "top_k", "target_class"})
# Files: wait this long for a batch to fill; live sources never wait.
FILE_BATCH_DEADLINE_S = 0.05
JOIN_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class RunSummary:
    """What a run did."""

    frames: int  # annotated frames delivered to the sinks
    dropped: int  # frames a live source dropped because inference was busy
    seconds: float
    outputs: tuple[str, ...]  # files or folders written
    stopped_by_user: bool  # the window's q / Esc
    problems: tuple[str, ...] = ()  # what went wrong without stopping the run (truncated file, lost camera)


def annotate(source: Source, explainer: Explainer, batch: int = 8, view: ViewOptions | None = None,
             controls: LiveControls | None = None) -> Iterator[AnnotatedFrame]:
    """Explain every frame of ``source`` (every delivered one, if live) and yield it annotated.

    Three threads run while the generator is alive; closing it (or an exception
    in the caller) stops them, and an exception in any of them is re-raised
    here as a :class:`StageError` naming the stage. ``view`` says how to draw
    (opacity, smoothing, boxes); ``controls`` (see :func:`live_controls`) may
    change the method, class and grid mid-run.
    """
    view = view or ViewOptions()
    controls = controls or live_controls(explainer)
    stop = threading.Event()
    failure = Failure(stop)
    frames = LatestSlot() if source.live else BoundedQueue(2 * batch)
    explained = BoundedQueue(2)
    annotated = BoundedQueue(2 * batch)
    log.debug("source %s: drop policy %s", source.info.source_id, frames.policy)

    def capture() -> None:
        try:
            with contextlib.closing(source.frames()) as stream:
                for frame in stream:
                    if stop.is_set() or not frames.put(frame, stop):
                        return
        finally:
            frames.close(stop)

    worker = InferenceWorker(explainer, batch, 0.0 if source.live else FILE_BATCH_DEADLINE_S, view, controls)
    renderer = RenderStage(view, lambda: frames.dropped)
    threads = [
        start_stage("capture", capture, failure),
        start_stage("inference", lambda: worker.run(frames, explained, stop), failure),
        start_stage("render", lambda: renderer.run(explained, annotated, stop), failure),
    ]
    try:
        while True:
            try:
                item = annotated.get(timeout=POLL_S)
            except Empty:
                failure.raise_if_any()
                continue
            if item is END:
                break
            yield item
        failure.raise_if_any()
    finally:
        stop.set()
        source.interrupt()  # a live source waiting to reconnect gives up at once
        join_all(threads, JOIN_TIMEOUT_S)


def live_controls(explainer: Explainer) -> LiveControls:
    """Controls starting from the explainer's state: its method, the top class, the grid if it has layers."""
    return LiveControls(explainer.available_methods, explainer.method.name, explainer.top_k, bool(explainer.layers))


def run(source: Any = None, output: str | Path | None = None, **options: Any) -> RunSummary:
    """Explain ``source`` end to end, as the CLI does: window and/or file output.

    ``source``: a video path, image paths or folders (a list), a URL, or a webcam
    index. ``options``: the fields of :class:`RunConfig` (model, method, layer,
    batch, top_k, alpha, display, ...), plus ``explainer=`` to reuse a built one.
    """
    explainer = options.pop("explainer", None)
    clash = sorted(EXPLAINER_OPTIONS & set(options)) if explainer is not None else []
    if clash:
        raise InputError(f"explainer= is already built: set {', '.join(clash)} on the Explainer, not on run()")
    config = RunConfig.from_options(source, output, **options)
    return run_config(config, explainer)


def run_config(config: RunConfig, explainer: Explainer | None = None) -> RunSummary:
    """Run one validated configuration."""
    if explainer is None:
        explainer = Explainer(
            model=config.model,
            method=config.method,
            layer=config.layer,
            labels=config.labels,
            device=config.device,
            top_k=config.top_k,
            backend=config.backend,
            weights=config.weights,
            target_class=config.target_class,
            layers=config.layers,
            box_threshold=config.box_threshold,
        )
    started = time.monotonic()
    count = 0
    stopped_by_user = False
    with open_source(config.inputs, config.webcam) as source, contextlib.ExitStack() as stack:
        controls = live_controls(explainer)
        opened = open_sinks(config.output, source.info, config.display, controls, config.json, config.overwrite)
        sinks = [stack.enter_context(sink) for sink in opened]
        if not sinks:
            log.warning("no display and no output: frames are explained but neither shown nor saved")
        bar = stack.enter_context(_progress(source, config.progress))
        stream = annotate(source, explainer, config.batch, config.view, controls)
        stack.enter_context(contextlib.closing(stream))
        dropped = 0
        for item in stream:
            with frame_being_written():  # a Ctrl-C waits until every sink has this frame
                for sink in sinks:
                    sink.write(item)
            count += 1
            dropped = item.dropped
            if bar is not None:
                bar.update(1)
            if any(sink.stop_requested for sink in sinks):
                stopped_by_user = True
                break
    return RunSummary(
        frames=count,
        dropped=dropped,
        seconds=time.monotonic() - started,
        outputs=tuple(path for path in (config.output, config.json) if path),
        stopped_by_user=stopped_by_user,
        problems=tuple(source.problems),
    )


@contextlib.contextmanager
def _progress(source: Source, enabled: bool) -> Iterator[Any]:
    if not enabled or source.info.frame_count is None:
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=source.info.frame_count, unit="frame", desc=Path(source.info.source_id).name) as bar:
        yield bar
