"""Sinks: where annotated frames go (a window, a video file, a folder of images).

Each sink is a context manager that opens eagerly (a bad output fails before
frame 1) and finalises on every path out: the end of the input, an error,
Ctrl-C or SIGTERM. A video file closed by ``__exit__`` is playable and holds
every frame written so far.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import queue
import shutil
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import IO

import cv2
import numpy as np

from .atomic import OutputFile
from .audio import AudioTrack
from .controls import LiveControls
from .errors import InputError, OutputClosed, StreamcamError
from .identity import identify
from .plan import STDOUT, OutputPlan, replaces
from .render import draw_hud
from .resource import Resource
from .types import AnnotatedFrame, VideoInfo
from .video_out import EncoderSettings, VideoWriter, container_for

log = logging.getLogger(__name__)

# Stop writing video when the disk has less than this free (checked every DISK_CHECK_EVERY frames).
MIN_FREE_BYTES = 32 * 2**20
DISK_CHECK_EVERY = 30
ENCODE_QUEUE = 8  # frames waiting for the encoder thread
_QUIT_KEYS = {ord("q"), ord("Q"), 27}  # q, Esc


class Sink(Resource, ABC):
    """A destination for annotated frames."""

    stop_requested = False  # set by a sink whose user asked to stop (the window's q / Esc)

    @property
    def outputs(self) -> tuple[Path, ...]:
        """The files or folders this sink writes."""
        return ()

    @abstractmethod
    def write(self, annotated: AnnotatedFrame) -> None:
        """Take one annotated frame."""



class WindowSink(Sink):
    """An OpenCV window with a HUD (method, fps, latency, drops); several sources share it as tiles.

    q or Esc stops the run; m, c and l go to the live controls (method, class, grid).
    """

    def __init__(self, title: str = "streamcam", controls: LiveControls | None = None) -> None:
        self.title = title
        self.controls = controls
        self._tiles: dict[str, np.ndarray] = {}  # source -> its latest frame, HUD drawn
        self._last_shown: dict[str, float] = {}
        self._fps: dict[str, float] = {}
        cv2.namedWindow(title, cv2.WINDOW_NORMAL)

    def write(self, annotated: AnnotatedFrame) -> None:
        source = annotated.frame.source_id
        now = time.monotonic()
        if source in self._last_shown:
            instant = 1.0 / max(now - self._last_shown[source], 1e-6)
            self._fps[source] = 0.9 * self._fps.get(source, instant) + 0.1 * instant
        self._last_shown[source] = now
        image = annotated.image.copy()  # the HUD is for the window only, not the recording
        draw_hud(image, self._fps.get(source, 0.0), annotated.latency, annotated.dropped,
                 f"{annotated.method} | {annotated.engine}")
        self._tiles[source] = image
        cv2.imshow(self.title, image if len(self._tiles) == 1 else tile_grid(list(self._tiles.values())))
        key = cv2.waitKey(1) & 0xFF
        if key in _QUIT_KEYS:
            self.stop_requested = True
        elif self.controls is not None and key != 0xFF:
            self.controls.press(chr(key).lower())

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
        except cv2.error:
            pass


def tile_grid(images: list[np.ndarray], width: int = 1280) -> np.ndarray:
    """Images side by side in a near-square grid ``width`` pixels wide, each fitted to its cell (aspect kept)."""
    columns = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    cell_w = width // columns
    cell_h = max(1, round(cell_w * images[0].shape[0] / images[0].shape[1]))
    canvas = np.zeros((rows * cell_h, columns * cell_w, 3), np.uint8)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        scale = min(cell_w / image.shape[1], cell_h / image.shape[0])
        fitted = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                            interpolation=cv2.INTER_AREA)
        y, x = row * cell_h, column * cell_w
        canvas[y : y + fitted.shape[0], x : x + fitted.shape[1]] = fitted
    return canvas


class VideoFileSink(Sink):
    """A video file written by FFmpeg (:class:`~streamcam.video_out.VideoWriter`): H.264 by default,
    each frame at its own timestamp, the source's sound carried over, crash-safe MP4.

    Written through an :class:`~streamcam.atomic.OutputFile`: a new file takes
    its final name with the first frame; one that replaces an existing file
    (``overwrite``) only when it is closed, so the old one is kept until then. A
    run that wrote no frame leaves nothing behind.

    ``write`` hands the frame to an encoder thread through a short queue, so that
    encoding overlaps everything else; ``close`` lets it finish every frame handed
    over, then finalises the file. Every ``DISK_CHECK_EVERY`` frames the free space
    is checked: below ``MIN_FREE_BYTES`` the run stops with what is written so far
    still playable.
    """

    def __init__(self, path: Path, fps: float, width: int, height: int, overwrite: bool = False,
                 time_base: Fraction | None = None, encoding: EncoderSettings | None = None,
                 audio: AudioTrack | None = None) -> None:
        container_for(path)  # a suffix it can write, before anything is created
        replace = replaces(identify(path), overwrite)
        self.path = path
        self.size = (width, height)
        self.frames_written = 0  # by the encoder thread
        self._submitted = 0
        self._file = OutputFile(path, replace)
        try:
            self._writer: VideoWriter | None = VideoWriter(self._file.path, width, height, fps, time_base,
                                                           encoding, audio, name=path)
        except BaseException:
            self._file.discard()
            raise
        self.encoder = self._writer.encoder
        self._frames: queue.Queue = queue.Queue(ENCODE_QUEUE)
        self._error: BaseException | None = None
        self._encoder = threading.Thread(target=self._encode, name="streamcam-encode", daemon=True)
        self._encoder.start()

    @property
    def outputs(self) -> tuple[Path, ...]:
        return (self.path,)

    def write(self, annotated: AnnotatedFrame) -> None:
        image = annotated.image
        if (image.shape[1], image.shape[0]) != self.size:
            raise StreamcamError(f"{self.path}: frame of size {image.shape[1]}x{image.shape[0]} in a {self.size[0]}x{self.size[1]} video")
        if self._submitted % DISK_CHECK_EVERY == 0:
            free = shutil.disk_usage(self._file.path.parent).free
            if free < MIN_FREE_BYTES:
                raise StreamcamError(f"the disk holding {self.path} is full ({free // 2**20} MB free); stopped")
        while True:  # wait for room, but not for an encoder that has died
            self._raise_encoder_error()
            try:
                self._frames.put((image, annotated.frame.timestamp), timeout=0.1)
                break
            except queue.Full:
                continue
        self._submitted += 1
        if self._submitted == 1:
            self._file.publish_early()

    def close(self) -> None:
        if self._writer is None:
            return
        if self._encoder.is_alive():
            self._frames.put(None)  # after every frame handed over
            self._encoder.join()
        try:
            self._writer.close()  # the last fragment: every frame handed over is in the file
        except Exception as error:  # noqa: BLE001 - a broken file is not published over an old one
            self._error = self._error or error
        self._writer = None
        if self._file.finish(written=self.frames_written > 0, failed=self._error is not None):
            log.info("wrote %d frames to %s", self.frames_written, self.path)

    def _encode(self) -> None:
        while (item := self._frames.get()) is not None:
            try:
                self._writer.write(*item)
            except BaseException as error:  # noqa: BLE001 - surfaces in write()
                self._error = error
                return
            self.frames_written += 1

    def _raise_encoder_error(self) -> None:
        if self._error is not None:
            raise StreamcamError(f"cannot write {self.path}: {self._error}") from self._error


class ImageFolderSink(Sink):
    """One annotated image per input image, at the path ``targets`` gives for it (see
    :func:`streamcam.plan.image_targets`); each file is written whole, then renamed into place."""

    def __init__(self, folder: Path, targets: dict[str, Path] | None = None, overwrite: bool = False) -> None:
        if folder.exists() and not folder.is_dir():
            raise InputError(f"{folder} is a file; images are written into a folder")
        self.folder = folder
        self.targets = targets or {}
        self.overwrite = overwrite

    @property
    def outputs(self) -> tuple[Path, ...]:
        return (self.folder,)

    def write(self, annotated: AnnotatedFrame) -> None:
        frame = annotated.frame
        path = self.targets.get(frame.path or "") or self.folder / (frame.name or f"frame_{frame.index:06d}.png")
        ok, data = cv2.imencode(path.suffix or ".png", annotated.image)
        if not ok:
            raise StreamcamError(f"cannot encode {path} as {path.suffix or 'an image'}")
        output = OutputFile(path, replaces(identify(path), self.overwrite))
        try:
            data.tofile(output.path)
        except BaseException as error:
            output.discard()
            if isinstance(error, OSError):
                raise StreamcamError(f"cannot write {path}: {error.strerror or error}") from error
            raise
        output.publish()


class JsonLinesSink(Sink):
    """One JSON object per explained frame, flushed line by line: a crash loses nothing already written.

    ``{"frame", "time", "source", "predictions": [{"class_id", "label", "score", "box"}], "dropped", "method", "engine"}``
    (image sources add ``"file"``; ``"box"`` is ``null`` where a class has no box, see
    :mod:`streamcam.boxes`). ``path`` ``"-"`` writes to standard output; when
    its reader goes away (``| head``) the run ends quietly (:class:`OutputClosed`).
    """

    def __init__(self, path: Path | str, overwrite: bool = False) -> None:
        self.to_stdout = str(path) == STDOUT
        self.path = path if self.to_stdout else Path(path)
        self._output: OutputFile | None = None
        if self.to_stdout:
            self._file: IO[str] = sys.stdout
        else:
            self._output = OutputFile(self.path, replaces(identify(self.path), overwrite))
            try:
                self._file = self._output.path.open("a" if self._output.in_place else "w", encoding="utf-8")
            except OSError as error:
                self._output.discard()
                raise InputError(f"cannot write {path}: {error.strerror or error}") from error
        self.records_written = 0
        self._failed = False

    @property
    def outputs(self) -> tuple[Path, ...]:
        return () if self.to_stdout else (self.path,)

    def write(self, annotated: AnnotatedFrame) -> None:
        frame = annotated.frame
        record = {
            "frame": frame.index,
            "time": round(frame.timestamp, 6),
            "source": frame.source_id,
            "predictions": [
                {"class_id": p.class_id, "label": p.label, "score": round(p.score, 6),
                 "box": list(p.box) if p.box is not None else None}
                for p in annotated.predictions
            ],
            "dropped": annotated.dropped,
            "method": annotated.method,
            "engine": annotated.engine,
        }
        if frame.path is not None:
            record["file"] = frame.path
        try:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        except BrokenPipeError as error:
            self._failed = True
            raise OutputClosed(f"{self.path}: the reader went away") from error
        except OSError as error:
            self._failed = True
            raise StreamcamError(f"cannot write {self.path}: {error.strerror or error}") from error
        self.records_written += 1
        if self.records_written == 1 and self._output is not None:
            self._output.publish_early()

    def close(self) -> None:
        if self.to_stdout or self._file.closed:
            return
        with contextlib.suppress(OSError):  # a write error was already reported once
            self._file.close()
        if self._output.finish(written=self.records_written > 0, failed=self._failed):
            log.info("wrote %d records to %s", self.records_written, self.path)


def display_available() -> bool:
    """Whether a window can be shown: a display server to talk to and an OpenCV built with a GUI."""
    if sys.platform.startswith(("linux", "freebsd", "openbsd")) and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return False
    try:
        cv2.namedWindow("streamcam-probe", cv2.WINDOW_NORMAL)
        cv2.destroyWindow("streamcam-probe")
        return True
    except cv2.error:
        return False  # a headless OpenCV build


def open_routes(plan: OutputPlan, infos: Sequence[VideoInfo], display: bool | None = None,
                encoding: EncoderSettings | None = None,
                audio: Mapping[str, AudioTrack | None] | None = None, serve: str | None = None,
                token: str | None = None) -> dict[str, list[Sink]]:
    """The sinks of a checked :class:`~streamcam.plan.OutputPlan`: each source's own video file
    (``encoding``, with the source's ``audio``), image folder or JSON lines, the shared JSON lines,
    the window (shared, tiled) unless ``display`` is False, and the browser view at ``serve``
    (``HOST:PORT``, with ``token``: see :mod:`streamcam.serve`). The caller closes every sink, also
    when this raises halfway.
    """
    audio = audio or {}
    routes: dict[str, list[Sink]] = {info.source_id: [] for info in infos}
    opened: list[Sink] = []
    may_replace = plan.may_replace
    try:
        shared: list[Sink] = []
        if plan.shared_records is not None:
            shared.append(_opened(JsonLinesSink(plan.shared_records, may_replace(plan.shared_records)), opened))
        for info in infos:
            outputs = plan.by_source[info.source_id]
            if outputs.video is not None:
                sink: Sink = VideoFileSink(outputs.video, info.fps, info.width, info.height,
                                           may_replace(outputs.video), info.time_base, encoding,
                                           audio.get(info.source_id))
                routes[info.source_id].append(_opened(sink, opened))
            if outputs.image_folder is not None:
                sink = ImageFolderSink(outputs.image_folder, outputs.images, plan.overwrite)
                routes[info.source_id].append(_opened(sink, opened))
            if outputs.records is not None:
                routes[info.source_id].append(_opened(JsonLinesSink(outputs.records, may_replace(outputs.records)),
                                                      opened))
        if display is not False:
            if display_available():
                several = len(infos) > 1
                title = "streamcam - " + (infos[0].source_id if not several else f"{len(infos)} sources")
                shared.append(_opened(WindowSink(title), opened))  # the run gives it its live controls
            else:
                log.warning("no display: the live window is off")
        if serve is not None:
            from .serve.sink import ServeSink

            shared.append(_opened(ServeSink(serve, [info.source_id for info in infos], token), opened))
        for sinks in routes.values():
            sinks.extend(shared)
    except BaseException:
        for sink in opened:
            sink.close()
        raise
    return routes


def _opened(sink: Sink, opened: list[Sink]) -> Sink:
    opened.append(sink)
    return sink
