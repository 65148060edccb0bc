"""Sources: video files, images and folders, webcams and network streams, each yielding :class:`Frame` records.

Every source opens and reads its first frame eagerly, so a bad input fails
before the pipeline starts. A source never invents frames.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import cv2
import numpy as np

from .errors import InputError
from .identity import first_duplicate, identify
from .resource import Resource
from .types import Frame, VideoInfo

if TYPE_CHECKING:
    from .audio import AudioTrack

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset(
    ".bmp .dib .jpeg .jpg .jpe .jp2 .png .webp .pbm .pgm .ppm .pxm .pnm .sr .ras .tiff .tif .exr .hdr .pic".split()
)
NETWORK_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
T = TypeVar("T")
# How long a live source keeps reopening a device or stream that stopped, before it ends.
LIVE_RECONNECT_S = 10.0
# Consecutive failed reads a file may skip before it is taken as ended.
MAX_SKIPPED_READS = 25
_FALLBACK_FPS = 30.0


class Source(Resource, ABC):
    """A stream of frames with known properties; use it as a context manager.

    ``problems`` collects what went wrong without stopping the run (a truncated
    file, a camera that went away); the caller reports them at the end.
    """

    info: VideoInfo
    files: tuple[Path, ...] = ()  # the files it reads (none for webcams and streams)
    audio: AudioTrack | None = None  # its sound, for the video file its frames go to
    folders: tuple[Path, ...] = ()  # the folders it lists (image folders)

    @property
    def problems(self) -> list[str]:
        return self.__dict__.setdefault("_problems", [])

    @property
    def _stopping(self) -> threading.Event:
        # Made on first use, so that subclasses need not call an __init__.
        return self.__dict__.setdefault("_stopping_event", threading.Event())

    @property
    def live(self) -> bool:
        """Live sources (webcam, network) run at their own pace: only the newest frame matters."""
        return self.info.live

    @abstractmethod
    def frames(self) -> Iterator[Frame]:
        """Yield frames in order, from the first."""

    def interrupt(self) -> None:
        """Ask a source waiting to reconnect to give up now (any thread may call it)."""
        self._stopping.set()

    def report_shortfall(self, delivered: int, announced: int | None, skipped: int) -> None:
        """A file that ended before the frame count its header announces is a problem worth saying."""
        source = self.info.source_id
        if skipped:
            log.debug("%s: %d reads or packets failed before the end", source, skipped)
        if announced is not None and delivered < announced and not self.live:
            self.problems.append(
                f"{source}: {delivered} of the {announced} frames its header announces could be decoded "
                f"(truncated or corrupt); all {delivered} were processed"
            )


class CaptureSource(Source):
    """Anything OpenCV's VideoCapture reads: a video file, a webcam, a network stream.

    A file is read to its end: a frame that fails to decode is skipped (up to
    ``MAX_SKIPPED_READS`` in a row) and counted, and a file shorter than its header
    says is reported. A live source that stops delivering is reopened with
    exponential backoff for up to ``reconnect_s`` seconds, then ends cleanly.
    """

    def __init__(self, open_capture: Callable[[], cv2.VideoCapture], source_id: str, live: bool,
                 reconnect_s: float | None = None) -> None:
        self._open_capture = open_capture
        self._capture = open_capture()
        self.reconnect_s = LIVE_RECONNECT_S if reconnect_s is None else reconnect_s
        ok, first = self._capture.read() if self._capture.isOpened() else (False, None)
        if not ok or first is None:
            self._capture.release()
            raise InputError(f"{source_id}: no frame could be read (is it a video OpenCV can decode?)")
        self._first = first
        self._opened_at = time.monotonic()
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.info = VideoInfo(
            source_id=source_id,
            width=first.shape[1],
            height=first.shape[0],
            fps=float(fps) if fps and np.isfinite(fps) and fps > 0 else _FALLBACK_FPS,
            frame_count=None if live or count <= 0 else count,
            live=live,
        )
        self.skipped = 0  # undecodable frames stepped over (files)

    def frames(self) -> Iterator[Frame]:
        try:
            image: np.ndarray | None = self._first
            index = 0
            while image is not None:
                yield self._frame(index, image)
                index += 1
                image = self._read_live() if self.live else self._read_file(index)
            self.report_shortfall(index, self.info.frame_count, self.skipped)
        finally:
            self.close()

    def close(self) -> None:
        self._capture.release()

    def _frame(self, index: int, image: np.ndarray) -> Frame:
        now = time.monotonic()
        # Files: the frame's position in the stream; live: time since the source opened.
        timestamp = now - self._opened_at if self.live else index / self.info.fps
        return Frame(index=index, timestamp=timestamp, captured_at=now, image=image, source_id=self.info.source_id)

    def _read_file(self, delivered: int) -> np.ndarray | None:
        """The next decodable frame; None at the end of the file."""
        for _ in range(MAX_SKIPPED_READS):
            ok, image = self._capture.read()
            if ok:
                return image
            expected = self.info.frame_count
            if expected is None or delivered + self.skipped >= expected:
                return None  # a normal end
            self.skipped += 1  # a frame that would not decode: step over it
        return None

    def _read_live(self) -> np.ndarray | None:
        """The next frame; when the device or stream stops, reopen it with backoff, then give up."""
        ok, image = self._capture.read()
        if ok:
            return image

        def reopen() -> np.ndarray | None:
            self._capture.release()
            self._capture = self._open_capture()
            ok, image = self._capture.read() if self._capture.isOpened() else (False, None)
            return image if ok else None

        return reopen_with_backoff(self, reopen)


def reopen_with_backoff(source: Source, reopen: Callable[[], T | None]) -> T | None:
    """A live source stopped: call ``reopen`` until it gives something, waiting 0.1 s, 0.2 s, 0.4 s...
    between tries, for up to ``source.reconnect_s`` seconds or until the source is interrupted.
    Giving up is recorded in ``source.problems``."""
    name = source.info.source_id
    log.warning("%s stopped delivering frames; reconnecting for up to %.0f s", name, source.reconnect_s)
    deadline = time.monotonic() + source.reconnect_s
    delay = 0.1
    while not source._stopping.is_set() and time.monotonic() < deadline:
        item = reopen()
        if item is not None:
            log.warning("%s is back", name)
            return item
        source._stopping.wait(min(delay, max(0.0, deadline - time.monotonic())))
        delay *= 2
    if not source._stopping.is_set():
        source.problems.append(f"{name} was lost and did not come back within {source.reconnect_s:.0f} s; stopped")
    return None


class ImageSource(Source):
    """Image files, in the order given; folders contribute their images sorted by name.

    Its ``source_id`` is the one input named (a folder or a file), or ``images``
    for several; each frame's ``path`` names its file.
    """

    def __init__(self, paths: Sequence[Path], folders: Sequence[Path] = (), source_id: str | None = None) -> None:
        if not paths:
            raise InputError("no images to read")
        self.files = tuple(paths)
        self.folders = tuple(folders)
        # One image named alone must read; among several, unreadable ones are skipped with a warning.
        first = read_image(paths[0]) if len(paths) == 1 else None
        start = 0
        while first is None and start < len(paths):
            first = _read_image_or_skip(paths[start])
            start += first is None
        if first is None:
            raise InputError(f"none of the {len(paths)} images could be decoded")
        self._paths = list(paths[start:])
        self._first = first
        self.info = VideoInfo(
            source_id=source_id or (str(self._paths[0]) if len(paths) == 1 else "images"),
            width=first.shape[1],
            height=first.shape[0],
            fps=None,
            frame_count=len(self._paths),
            live=False,
        )

    def frames(self) -> Iterator[Frame]:
        for index, path in enumerate(self._paths):
            image = self._first if index == 0 else _read_image_or_skip(path)
            if image is None:
                continue
            yield Frame(
                index=index,
                timestamp=0.0,
                captured_at=time.monotonic(),
                image=image,
                source_id=self.info.source_id,
                name=path.name,
                path=str(path),
            )


def read_image(path: Path, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """Read an image file as H x W x 3 uint8 BGR (grey, alpha and 16-bit are converted); ``flags`` may ask
    OpenCV for a reduced size instead (``cv2.IMREAD_REDUCED_COLOR_2``, ``_4``, ``_8``)."""
    try:
        data = np.fromfile(path, dtype=np.uint8)  # imdecode also copes with non-ASCII paths
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}") from error
    image = cv2.imdecode(data, flags) if data.size else None
    if image is None:
        raise InputError(f"{path} is not an image OpenCV can decode")
    return image


def _read_image_or_skip(path: Path) -> np.ndarray | None:
    try:
        return read_image(path)
    except InputError as error:
        log.warning("skipping %s", error)
        return None


def open_sources(inputs: str | Path | Sequence[str | Path] = (), webcams: int | Sequence[int] = ()) -> list[Source]:
    """Open everything the user named: image files and folders (together, one source), or any
    number of video files, stream URLs and webcams (one source each, explained side by side)."""
    if isinstance(inputs, (str, Path)):  # one path or URL, as a user's first try passes it
        inputs = [inputs]
    if isinstance(webcams, int):
        webcams = [webcams]
    if not inputs and not webcams:
        raise InputError("nothing to explain: give a video, images, a folder, a URL, --webcam N or --demo")
    names = [str(i) for i in inputs]
    _refuse_duplicates(names, webcams)
    files = [Path(n) for n in names if "://" not in n]
    images = _expand_images(files) if names else None
    if images is not None and len(images) and (webcams or any("://" in n for n in names)):
        raise InputError("images cannot be mixed with videos, streams or webcams: run them separately")
    if images is not None and all("://" not in n for n in names) and not webcams:
        return [ImageSource(images, [f for f in files if f.is_dir()], names[0] if len(names) == 1 else None)]
    from .video_in import open_stream, open_video_file

    opened: list[Source] = []
    try:
        for name in names:
            opened.append(open_stream(name) if "://" in name else open_video_file(Path(name)))
        opened.extend(open_webcam(index) for index in webcams)
    except BaseException:
        for source in opened:
            source.close()
        raise
    return opened


def open_source(inputs: str | Path | Sequence[str | Path] = (), webcam: int | None = None) -> Source:
    """Open one source: a webcam index, a URL, a video file, or image files and folders."""
    sources = open_sources(inputs, () if webcam is None else (webcam,))
    if len(sources) > 1:
        for source in sources:
            source.close()
        raise InputError("several sources: use open_sources()")
    return sources[0]


def source_names(infos: Sequence[VideoInfo]) -> list[str]:
    """Short, file-name-safe, unique names for sources, for output patterns such as ``out_{source}.mp4``."""
    names = []
    for info in infos:
        raw = info.source_id
        if "://" in raw:
            raw = raw.split("://", 1)[1]
        elif raw.startswith("webcam:"):
            raw = raw.replace(":", "")
        else:
            raw = Path(raw).stem or Path(raw).name
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", raw).strip("._-") or "source"
        candidate, n = name, 2
        while candidate in names:
            candidate, n = f"{name}_{n}", n + 1
        names.append(candidate)
    return names


def open_webcam(index: int) -> CaptureSource:
    capture = cv2.VideoCapture(index)
    if not capture.isOpened():
        raise InputError(f"no webcam at index {index}: check that it is plugged in, or try another --webcam N")
    reopened = iter([capture])
    return CaptureSource(lambda: next(reopened, None) or cv2.VideoCapture(index), f"webcam:{index}", live=True)


def _expand_images(paths: Sequence[Path]) -> list[Path] | None:
    """The image files named or found in the named folders; None when the inputs are videos."""
    found: list[Path] = []
    videos = 0
    for path in paths:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file())
            inside = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
            others = [p.name for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
            if others:
                shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
                log.warning("skipping %d file(s) in %s that are not images: %s", len(others), path, shown)
            if not inside:
                raise InputError(f"{path} is a folder with no images in it")
            found.extend(inside)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            if not path.exists():
                raise InputError(f"no such file: {path}")
            found.append(path)
        else:
            videos += 1
    if videos and found:
        raise InputError("images cannot be mixed with videos, streams or webcams: run them separately")
    _refuse_twice(found, "image", "directly and through its folder")
    return None if videos else found


def _refuse_duplicates(names: Sequence[str], webcams: Sequence[int]) -> None:
    """The same input twice, however spelled (``c.mp4 ./c.mp4``, a symlink, a hard link), would interleave
    its frames into one output: refused."""
    if len(set(webcams)) < len(webcams):
        raise InputError(f"--webcam {next(w for w in webcams if webcams.count(w) > 1)} is named twice")
    urls = [n for n in names if "://" in n]
    if len(set(urls)) < len(urls):
        raise InputError(f"{next(u for u in urls if urls.count(u) > 1)} is named twice")
    _refuse_twice([n for n in names if "://" not in n], "file")


def _refuse_twice(paths: Sequence[str | Path], what: str, how: str = "") -> None:
    """One line naming the first path that is named twice, in any spelling (symlink, hard link, ./x...)."""
    twice = first_duplicate([identify(p) for p in paths])
    if twice:
        first, second = twice[0].named, twice[1].named
        same = f"{first} is named twice{f' ({how})' if how else ''}" if first == second else \
            f"{first} and {second} are the same {what}"
        raise InputError(f"{same}: name it once")
