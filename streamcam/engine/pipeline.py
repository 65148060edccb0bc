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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import RunConfig, ViewOptions
from ..controls import LiveControls
from ..errors import InputError
from ..interrupts import deferred, outputs_open
from ..options import explainer_arguments
from ..phases import phase
from ..plan import plan_outputs
from ..sources import Source, open_sources
from .batcher import Muxer
from .buffers import END, POLL_S, BoundedQueue, Empty, LatestSlot
from .stages import Failure, join_all, start_stage

if TYPE_CHECKING:  # torch loads with the model, after every input and output is checked (see run_config)
    from ..explainer import Explainer
    from ..sinks import Sink
    from ..types import AnnotatedFrame

log = logging.getLogger(__name__)

# The run() options that build an Explainer (and so cannot go with explainer=): its arguments, but for those
# the view reads too (box_threshold: boxes are thresholded where the view is drawn).
EXPLAINER_OPTIONS = frozenset(explainer_arguments(RunConfig)) - {f.name for f in fields(ViewOptions)}
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
    frames_by_source: dict[str, int] = field(default_factory=dict)
    encoders: dict[str, str] = field(default_factory=dict)  # video file -> the encoder that wrote it (libx264...)


def annotate(sources: Source | Sequence[Source], explainer: Explainer, batch: int = 8,
             view: ViewOptions | None = None, controls: LiveControls | None = None) -> Iterator[AnnotatedFrame]:
    """Explain every frame of ``sources`` (every delivered one, if live) and yield it annotated.

    One capture thread per source, ONE inference worker batching frames of all
    sources together (up to ``batch``, or a deadline; round-robin across sources),
    one render thread. Each source's frames come out in order; sources interleave.
    Closing the generator (or an exception in the caller) stops every thread, and
    an exception in any of them is re-raised here as a :class:`StageError` naming
    the stage. ``view`` says how to draw (opacity, smoothing, boxes); ``controls``
    (see :func:`live_controls`, which starts them from ``view``) may change the method, class, grid, opacity
    and boxes mid-run.
    """
    from .render_stage import RenderStage
    from .worker import InferenceWorker

    sources = [sources] if isinstance(sources, Source) else list(sources)
    view = view or ViewOptions()
    controls = controls or live_controls(explainer, view)
    stop = threading.Event()
    failure = Failure(stop)
    buffers = {s.info.source_id: LatestSlot() if s.live else BoundedQueue(2 * batch) for s in sources}
    explained = BoundedQueue(2)
    annotated = BoundedQueue(2 * batch * len(sources))
    for source in sources:
        log.debug("source %s: drop policy %s", source.info.source_id, buffers[source.info.source_id].policy)

    def capture(source: Source) -> Callable[[], None]:
        frames = buffers[source.info.source_id]

        def body() -> None:
            try:
                with contextlib.closing(source.frames()) as stream:
                    for frame in stream:
                        if stop.is_set() or not frames.put(frame, stop):
                            return
            finally:
                frames.close(stop)

        return body

    lent_method = explainer.method  # live switches are for this run: the explainer is given back as it came
    live = any(s.live for s in sources)  # a live source never waits for a batch to fill
    muxer = Muxer(list(buffers.values()), batch, 0.0 if live else FILE_BATCH_DEADLINE_S, stop)
    worker = InferenceWorker(explainer, view, controls)
    renderer = RenderStage(view, lambda source_id: buffers[source_id].dropped)
    threads = [start_stage("capture", capture(source), failure) for source in sources]
    threads += [
        start_stage("inference", lambda: worker.run(muxer, explained, stop), failure),
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
        for source in sources:
            source.interrupt()  # a live source waiting to reconnect gives up at once
        join_all(threads, JOIN_TIMEOUT_S)
        explainer.method = lent_method


def live_controls(explainer: Explainer, view: ViewOptions | None = None) -> LiveControls:
    """Controls starting from the explainer's state (its method, the top class, the grid if it has layers)
    and the view's (opacity, boxes drawn)."""
    view = view or ViewOptions()
    return LiveControls(explainer.available_methods, explainer.method.name, explainer.top_k, bool(explainer.layers),
                        view.alpha, view.draw_boxes, grid_available=bool(explainer.grid_layers))


def run(source: Any = None, output: str | Path | None = None, **options: Any) -> RunSummary:
    """Explain ``source`` end to end, as the CLI does: window and/or file output.

    ``source``: a video path, a URL or a webcam index; a list of them (explained
    side by side, ``output`` then a pattern such as ``out_{source}.mp4``); or
    image paths and folders. ``options``: the fields of :class:`RunConfig` (model, method, layer,
    batch, top_k, alpha, display, ...), plus ``explainer=`` to reuse a built one.
    """
    explainer = options.pop("explainer", None)
    clash = sorted(EXPLAINER_OPTIONS & set(options)) if explainer is not None else []
    if clash:
        raise InputError(f"explainer= is already built: set {', '.join(clash)} on the Explainer, not on run()")
    config = RunConfig.from_options(source, output, **options)
    return run_config(config, explainer)


def run_config(config: RunConfig, explainer: Explainer | None = None, sources: Sequence[Source] | None = None,
               progress: Callable[[int], None] | None = None) -> RunSummary:
    """Run one validated configuration.

    Every input is opened and every output path checked (:mod:`streamcam.plan`)
    before the model loads, and the model is ready (its first-run export for
    onnxruntime included, which may take seconds) before any output file is
    created: a refused or interrupted start leaves nothing behind.

    ``sources``: already opened (e.g. a file on remote storage, see :mod:`streamcam.batch.remote`), explained
    instead of ``config.inputs`` and closed with the run. ``progress``: called with 1 for each frame written,
    instead of the run's own bar (``streamcam batch`` feeds one bar over many runs with it).
    """
    with contextlib.ExitStack() as stack:
        if sources is None:
            with phase("opening the inputs"):
                sources = open_sources(config.inputs, config.webcams)
        sources = [stack.enter_context(s) for s in sources]
        plan = plan_outputs(config, sources)  # nothing is created yet
        if config.serve is not None:
            from ..serve.address import check_can_serve

            check_can_serve(config.serve)  # a busy port or unknown host: said before the model loads
        # checks the model, layer, method, class; one built here is closed with the run (a caller's stays open)
        explainer = explainer or stack.enter_context(build_explainer(config))
        explainer.prepare()
        from ..sinks import open_routes  # draws with torch: loaded with the model

        stack.enter_context(outputs_open())  # from here a Ctrl-C finalises the outputs instead of leaving at once
        with deferred():  # every sink opened is also on the stack, to be closed, before a Ctrl-C lands
            routes = open_routes(plan, [s.info for s in sources], config.display, encoding=config.encoding,
                                 audio={s.info.source_id: s.audio for s in sources}, serve=config.serve,
                                 token=config.token)
            for sink in dict.fromkeys(sink for sinks in routes.values() for sink in sinks):
                stack.enter_context(sink)
        return _run(config, explainer, sources, routes, stack, progress)


def build_explainer(config: RunConfig) -> Explainer:
    """The Explainer ``config``'s model options describe (torch loads here)."""
    name = config.model if isinstance(config.model, str) else type(config.model).__name__
    with phase(f"loading {name}"):
        from ..explainer import Explainer  # and torch with it

        return Explainer(**{name: getattr(config, name) for name in explainer_arguments(config)})


def _run(config: RunConfig, explainer: Explainer, sources: list[Source], routes: dict[str, list[Sink]],
         stack: contextlib.ExitStack, progress: Callable[[int], None] | None = None) -> RunSummary:
    """Drain the pipeline into each source's sinks; the caller's ``stack`` closes everything."""
    from ..serve.sink import ServeSink
    from ..sinks import VideoFileSink, WindowSink

    started = time.monotonic()
    counts: dict[str, int] = {}
    dropped: dict[str, int] = {}
    stopped_by_user = False
    controls = live_controls(explainer, config.view)
    for sink in dict.fromkeys(sink for sinks in routes.values() for sink in sinks):
        if isinstance(sink, (WindowSink, ServeSink)):
            sink.controls = controls  # the window's m / c / l keys, the page's controls
    if not any(routes.values()):
        log.warning("no display and no output: frames are explained but neither shown nor saved")
    if progress is None:  # the run's own bar, if any
        bar = stack.enter_context(_progress(sources, config.progress))
        progress = bar.update if bar is not None else None
    stream = annotate(sources, explainer, config.batch, config.view, controls)
    stack.enter_context(contextlib.closing(stream))
    for item in stream:
        source_id = item.frame.source_id
        sinks = routes[source_id]
        with deferred():  # a Ctrl-C waits until every sink has this frame
            for sink in sinks:
                sink.write(item)
        counts[source_id] = counts.get(source_id, 0) + 1
        dropped[source_id] = item.dropped
        if progress is not None:
            progress(1)
        if any(sink.stop_requested for sink in sinks):
            stopped_by_user = True
            break
    return RunSummary(
        frames=sum(counts.values()),
        dropped=sum(dropped.values()),
        seconds=time.monotonic() - started,
        outputs=tuple(dict.fromkeys(str(p) for sinks in routes.values() for sink in sinks for p in sink.outputs)),
        stopped_by_user=stopped_by_user,
        problems=tuple(p for s in sources for p in s.problems),
        frames_by_source=counts,
        encoders={str(sink.path): sink.encoder for sinks in routes.values() for sink in sinks
                  if isinstance(sink, VideoFileSink)},
    )


@contextlib.contextmanager
def _progress(sources: Sequence[Source], enabled: bool) -> Iterator[Any]:
    """A tqdm bar over every source's frames, when all their lengths are known."""
    counts = [s.info.frame_count for s in sources]
    if not enabled or any(c is None for c in counts):
        yield None
        return
    from tqdm import tqdm

    name = Path(sources[0].info.source_id).name if len(sources) == 1 else f"{len(sources)} sources"
    with tqdm(total=sum(counts), unit="frame", desc=name) as bar:
        yield bar
