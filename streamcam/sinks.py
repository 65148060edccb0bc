"""Sinks: where annotated frames go (a window, a video file, a folder of images).

Each sink is a context manager that opens eagerly (a bad output fails before
frame 1) and finalises on every path out: the end of the input, an error,
Ctrl-C or SIGTERM. A video file closed by ``__exit__`` is playable and holds
every frame written so far.
"""

from __future__ import annotations

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
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from .config import RunConfig
from .controls import LiveControls
from .errors import InputError, StreamcamError
from .render import draw_hud
from .resource import Resource
from .sources import source_names
from .types import AnnotatedFrame, VideoInfo

log = logging.getLogger(__name__)

# Container -> codec that OpenCV's own FFmpeg build can always write.
# Stop writing video when the disk has less than this free (checked every DISK_CHECK_EVERY frames).
MIN_FREE_BYTES = 32 * 2**20
DISK_CHECK_EVERY = 30
ENCODE_QUEUE = 8  # frames waiting for the encoder thread
VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}
PATTERN = "{source}"  # in -o / --json: replaced by each source's short name
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
    """A video file with the source's size and exact (float) frame rate, encoded on its own thread.

    ``write`` hands the frame to an encoder thread through a short queue, so that
    encoding overlaps everything else; ``close`` lets it finish every frame handed
    over, then finalises the file. OpenCV's writer keeps even sizes only: an odd
    width or height loses its last column or row (said once, at open). Every
    ``DISK_CHECK_EVERY`` frames the free space is checked: below ``MIN_FREE_BYTES``
    the run stops with what is written so far still playable, since OpenCV's
    writer cannot report a failed write.
    """

    def __init__(self, path: Path, fps: float, width: int, height: int, overwrite: bool = False) -> None:
        codec = VIDEO_CODECS.get(path.suffix.lower())
        if codec is None:
            raise InputError(f"cannot write video as {path.suffix or 'a file without extension'}: use one of {', '.join(VIDEO_CODECS)}")
        _refuse_existing(path, overwrite)
        _make_parent(path)
        self.path = path
        self.size = (width, height)
        self.frames_written = 0  # by the encoder thread
        self._submitted = 0
        self._writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), float(fps), self.size)
        if not self._writer.isOpened():
            tiny = " (mp4v needs at least 2x2 pixels: use .avi)" if min(width, height) < 2 else ""
            raise InputError(f"cannot write {path}{tiny}: check the folder exists and is writable")
        if width % 2 or height % 2:
            log.warning("%s: OpenCV writes even sizes only: %dx%d frames are stored as %dx%d",
                        path, width, height, width - width % 2, height - height % 2)
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
            free = shutil.disk_usage(self.path.parent).free
            if free < MIN_FREE_BYTES:
                raise StreamcamError(f"the disk holding {self.path} is full ({free // 2**20} MB free); stopped")
        while True:  # wait for room, but not for an encoder that has died
            self._raise_encoder_error()
            try:
                self._frames.put(image, timeout=0.1)
                break
            except queue.Full:
                continue
        self._submitted += 1

    def close(self) -> None:
        if self._writer is None:
            return
        if self._encoder.is_alive():
            self._frames.put(None)  # after every frame handed over
            self._encoder.join()
        self._writer.release()  # writes the index: the file is playable from here on
        self._writer = None
        log.info("wrote %d frames to %s", self.frames_written, self.path)

    def _encode(self) -> None:
        while (image := self._frames.get()) is not None:
            try:
                self._writer.write(image)
            except BaseException as error:  # noqa: BLE001 - surfaces in write()
                self._error = error
                return
            self.frames_written += 1

    def _raise_encoder_error(self) -> None:
        if self._error is not None:
            raise StreamcamError(f"cannot write {self.path}: {self._error}") from self._error


class ImageFolderSink(Sink):
    """One annotated image per input image, under the input's file name."""

    def __init__(self, folder: Path, overwrite: bool = False) -> None:
        if folder.exists() and not folder.is_dir():
            raise InputError(f"{folder} is a file; images are written into a folder")
        if not overwrite and folder.is_dir() and any(folder.iterdir()):
            raise InputError(f"{folder} already holds files: choose an empty folder, or pass --overwrite")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(f"cannot create the output folder {folder}: {error.strerror or error}") from error
        if not os.access(folder, os.W_OK):
            raise InputError(f"cannot write into {folder}")
        self.folder = folder
        self.images_written = 0

    @property
    def outputs(self) -> tuple[Path, ...]:
        return (self.folder,)

    def write(self, annotated: AnnotatedFrame) -> None:
        frame = annotated.frame
        name = frame.name or f"frame_{frame.index:06d}.png"
        path = self.folder / name
        ok, data = cv2.imencode(path.suffix or ".png", annotated.image)
        if not ok:
            path = path.with_suffix(".png")
            ok, data = cv2.imencode(".png", annotated.image)
        try:
            data.tofile(path)
        except OSError as error:
            raise StreamcamError(f"cannot write {path}: {error.strerror or error}") from error
        self.images_written += 1


class JsonLinesSink(Sink):
    """One JSON object per explained frame, flushed line by line: a crash loses nothing already written.

    ``{"frame", "time", "source", "predictions": [{"class_id", "label", "score", "box"}], "dropped", "method", "engine"}``
    """

    def __init__(self, path: Path, overwrite: bool = False) -> None:
        _refuse_existing(path, overwrite)
        _make_parent(path)
        try:
            self._file = path.open("w", encoding="utf-8")
        except OSError as error:
            raise InputError(f"cannot write {path}: {error.strerror or error}") from error
        self.path = path
        self.records_written = 0

    @property
    def outputs(self) -> tuple[Path, ...]:
        return (self.path,)

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
        if frame.name is not None:
            record["file"] = frame.name
        try:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        except OSError as error:
            raise StreamcamError(f"cannot write {self.path}: {error.strerror or error}") from error
        self.records_written += 1

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
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


def open_routes(config: RunConfig, infos: Sequence[VideoInfo],
                controls: LiveControls | None = None) -> dict[str, list[Sink]]:
    # (the pipeline opens routes before it has an explainer, and hands the window its controls later)
    """Which sinks each source's frames go to: its own video file (``-o`` pattern), the
    JSON lines (shared, or per source with ``{source}``), the window (shared, tiled).

    Existing output files (or a folder with files in it) are refused unless ``config.overwrite``.
    The caller closes every sink, also when this raises halfway.
    """
    several = len(infos) > 1
    if several and config.output is not None and PATTERN not in config.output:
        raise InputError(f"{len(infos)} sources: give -o a pattern with {PATTERN}, e.g. out_{PATTERN}.mp4")
    names = source_names(infos)
    routes: dict[str, list[Sink]] = {info.source_id: [] for info in infos}
    opened: list[Sink] = []
    try:
        shared: list[Sink] = []
        if config.json is not None and PATTERN not in config.json:
            shared.append(_opened(JsonLinesSink(Path(config.json), config.overwrite), opened))
        for info, name in zip(infos, names):
            if config.output is not None:
                path = Path(config.output.replace(PATTERN, name))
                routes[info.source_id].append(_opened(_output_sink(path, info, config.overwrite), opened))
            if config.json is not None and PATTERN in config.json:
                path = Path(config.json.replace(PATTERN, name))
                routes[info.source_id].append(_opened(JsonLinesSink(path, config.overwrite), opened))
        if config.display is not False:
            if display_available():
                title = "streamcam - " + (infos[0].source_id if not several else f"{len(infos)} sources")
                shared.append(_opened(WindowSink(title, controls), opened))
            else:
                log.warning("no display: the live window is off")
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


def _output_sink(path: Path, info: VideoInfo, overwrite: bool) -> Sink:
    if info.fps is None:  # images in -> images out
        if path.suffix.lower() in VIDEO_CODECS:
            raise InputError(f"images in, images out: give a folder for -o, not {path}")
        return ImageFolderSink(path, overwrite)
    return VideoFileSink(path, info.fps, info.width, info.height, overwrite)


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists: pass --overwrite to replace it")


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot create the folder for {path}: {error.strerror or error}") from error
