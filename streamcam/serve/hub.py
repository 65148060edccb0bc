"""The frame hub: each annotated frame JPEG-encoded once, whatever the number of viewers; one latest-frame
slot per viewer, so that a slow viewer skips frames for itself only and publishing never waits for anyone.

``publish`` runs in the sink's thread (the pipeline's); viewers are read from the
server's event loop. A viewer's slot holds one frame: a new one replaces an unread
one (counted as skipped for that viewer), and the viewer is woken only when its slot
goes from empty to full, so that a stalled viewer costs one pointer swap per frame.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ..types import AnnotatedFrame

JPEG_QUALITY = 80
# fps = (n - 1) / (t_n - t_1) over the frames of the last FPS_WINDOW_S seconds: right also when frames come in
# bursts (a batch of 8 rendered at once), where averaging instant rates 1 / dt would not be.
FPS_WINDOW_S = 2.0
LATENCY_WINDOW = 30  # the HUD's capture-to-browser latency: the median of the last 30 frames shown


@dataclass(frozen=True, eq=False)
class Published:
    """One source's latest frame: its JPEG, the annotated image (for PNG snapshots), its sequence number and
    when it was captured (``time.monotonic()``, for the capture-to-browser latency)."""

    sequence: int  # 1, 2, ... per source
    jpeg: bytes
    image: np.ndarray  # H x W x 3 uint8 BGR, never written to again
    captured_at: float
    # What the picture says, as JSON (encoded once, sent with the frame so a page lists what it shows):
    # {"frame": index, "method": name, "predictions": [{"class_id", "label", "score", "box"}, ...]}
    caption: bytes = b"{}"


class Viewer:
    """One viewer of one source: a latest-frame slot, read with :meth:`take`.

    ``wake`` (called in the publisher's thread, so it must not block: e.g.
    ``loop.call_soon_threadsafe(event.set)``) tells the viewer a frame is waiting.
    """

    def __init__(self, source: int, wake: Callable[[], None] | None = None) -> None:
        self.source = source
        self.wake = wake
        self.skipped = 0  # frames replaced before this viewer took them
        self.taken = 0
        self.latency: float | None = None  # capture to shown, for the last frame this viewer acknowledged
        self._lock = threading.Lock()
        self._slot: Published | None = None

    def offer(self, frame: Published) -> None:
        """Put ``frame`` in the slot (replacing an unread one); wake the viewer if the slot was empty."""
        with self._lock:
            was_empty = self._slot is None
            if not was_empty:
                self.skipped += 1
            self._slot = frame
        if was_empty and self.wake is not None:
            self.wake()

    def take(self) -> Published | None:
        """The waiting frame (emptying the slot), or None."""
        with self._lock:
            frame, self._slot = self._slot, None
        if frame is not None:
            self.taken += 1
        return frame


@dataclass
class SourceStats:
    """What the page's HUD shows for one source."""

    name: str
    frames: int = 0
    fps: float = 0.0
    latency: float = 0.0  # seconds from capture to publishing
    # seconds from capture to a browser showing the frame (its acknowledgement reached us), over the last
    # LATENCY_WINDOW frames any browser acknowledged; None before the first
    browser_latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    dropped: int = 0  # frames the source dropped because inference was busy (live sources)
    method: str = ""
    engine: str = ""
    frame_index: int = -1
    size: tuple[int, int] = (0, 0)  # width, height
    predictions: list[dict[str, Any]] = field(default_factory=list)
    recent: deque[float] = field(default_factory=deque)  # when the frames of the last FPS_WINDOW_S were published

    def as_dict(self) -> dict[str, Any]:
        shown = sorted(self.browser_latencies)
        return {"name": self.name, "frames": self.frames, "fps": round(self.fps, 2),
                "latency_ms": round(self.latency * 1000, 1),
                "browser_latency_ms": round(shown[len(shown) // 2] * 1000, 1) if shown else None,
                "dropped": self.dropped, "method": self.method,
                "engine": self.engine, "frame": self.frame_index, "width": self.size[0], "height": self.size[1],
                "predictions": self.predictions}


class FrameHub:
    """Sources by index (``source_ids``' order); each published frame encoded once and offered to its viewers."""

    def __init__(self, source_ids: Sequence[str], quality: int = JPEG_QUALITY) -> None:
        self.source_ids = list(source_ids)
        self.index = {source_id: i for i, source_id in enumerate(self.source_ids)}
        self.quality = quality
        self.encoded = 0  # JPEG encodes so far (one per published frame)
        self._lock = threading.Lock()
        self._viewers: list[set[Viewer]] = [set() for _ in self.source_ids]
        self._latest: list[Published | None] = [None for _ in self.source_ids]
        self._stats = [SourceStats(source_id) for source_id in self.source_ids]

    def publish(self, annotated: AnnotatedFrame) -> None:
        """Encode ``annotated.image`` as JPEG once, update its source's stats, offer it to each of its viewers."""
        source = self.index[annotated.frame.source_id]
        ok, data = cv2.imencode(".jpg", annotated.image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            return  # nothing a viewer can be shown; the other sinks have the frame
        self.encoded += 1
        now = time.monotonic()
        stats = self._stats[source]
        with self._lock:
            self._update(stats, annotated, now)
            caption = json.dumps({"frame": stats.frame_index, "method": stats.method,
                                  "predictions": stats.predictions}).encode()
            frame = Published(stats.frames, data.tobytes(), annotated.image, annotated.frame.captured_at, caption)
            self._latest[source] = frame
            viewers = list(self._viewers[source])
        for viewer in viewers:
            viewer.offer(frame)

    @staticmethod
    def _update(stats: SourceStats, annotated: AnnotatedFrame, now: float) -> None:
        stats.recent.append(now)
        while now - stats.recent[0] > FPS_WINDOW_S:
            stats.recent.popleft()
        span = now - stats.recent[0]
        stats.fps = (len(stats.recent) - 1) / span if span > 0 else 0.0
        stats.frames += 1
        stats.latency = now - annotated.frame.captured_at
        stats.dropped = annotated.dropped
        stats.method, stats.engine = annotated.method, annotated.engine
        stats.frame_index = annotated.frame.index
        stats.size = (annotated.image.shape[1], annotated.image.shape[0])
        stats.predictions = [{"class_id": p.class_id, "label": p.label, "score": round(p.score, 6),
                              "box": list(p.box) if p.box is not None else None} for p in annotated.predictions]

    def shown(self, viewer: Viewer, frame: Published) -> float:
        """``viewer`` says it has shown ``frame``: its capture-to-browser latency (seconds), kept for the HUD."""
        latency = time.monotonic() - frame.captured_at
        viewer.latency = latency
        with self._lock:
            self._stats[viewer.source].browser_latencies.append(latency)
        return latency

    def subscribe(self, source: int, wake: Callable[[], None] | None = None) -> Viewer:
        """A new viewer of source ``source``, offered the latest frame at once (if any)."""
        self._check(source)
        viewer = Viewer(source, wake)
        with self._lock:
            self._viewers[source].add(viewer)
            latest = self._latest[source]
        if latest is not None:
            viewer.offer(latest)
        return viewer

    def unsubscribe(self, viewer: Viewer) -> None:
        """Forget ``viewer`` (its slot and frame go with it); safe to call twice."""
        with self._lock:
            self._viewers[viewer.source].discard(viewer)

    def viewers(self, source: int) -> int:
        with self._lock:
            return len(self._viewers[source])

    def latest(self, source: int) -> Published | None:
        self._check(source)
        with self._lock:
            return self._latest[source]

    def stats(self) -> list[dict[str, Any]]:
        """Each source's HUD values, in source order (see :class:`SourceStats`)."""
        with self._lock:
            return [{**s.as_dict(), "viewers": len(viewers)} for s, viewers in zip(self._stats, self._viewers)]

    def _check(self, source: int) -> None:
        if not 0 <= source < len(self.source_ids):
            raise KeyError(source)
