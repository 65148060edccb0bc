"""Video files and network streams decoded by FFmpeg (PyAV), with their real timestamps.

- **Timestamps**: a file's frames carry the decoder's presentation times
  (from the start of the file), so a variable-frame-rate input keeps its
  timing; a live stream's frames carry their capture time.
- **Rotation**: a phone video's display matrix is applied, so frames come out
  upright (as players show them).
- **Sound**: a file's audio packets are handed to the video file its frames go
  to (:class:`~streamcam.audio.AudioTrack`).
- **Damage**: a packet that does not decode is stepped over; a file that ends
  before the frame count its header announces is reported, after every frame
  that did decode.
- **Live or file** is decided by what the stream is: RTSP, RTMP, UDP, SRT and
  TCP feeds, and HTTP streams of unknown length and duration, are live (newest
  frame only, reopened with backoff when they stop); a file, or a file served
  over HTTP (it has a Content-Length), is read once, every frame, to its end.
- **Decoding** runs on the source's own thread with FFmpeg's frame and slice
  threads; on an NVIDIA GPU through NVDEC (FFmpeg's CUDA hardware decoding)
  where it opens, otherwise in software, silently.
"""

from __future__ import annotations

import collections
import functools
import logging
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .audio import AudioTrack
from .errors import InputError
from .sources import LIVE_RECONNECT_S, NETWORK_SCHEMES, Source, reopen_with_backoff
from .types import Frame, VideoInfo

log = logging.getLogger(__name__)

LIVE_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "udp", "srt", "tcp", "rtp"})
OPEN_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 1.5  # a stalled stream read gives up this soon, so a shutdown is never held up for long
FALLBACK_FPS = 30.0
_CUT_SHORT_HINT = {".mp4", ".mov", ".m4v"}


class AvSource(Source):
    """A video file or a network stream, decoded by FFmpeg through PyAV."""

    def __init__(self, target: str, source_id: str, network: bool, reconnect_s: float | None = None) -> None:
        self._target = target
        self._id = source_id
        self._network = network
        self.files = () if network else (Path(target),)  # what no output may ever be
        self.reconnect_s = LIVE_RECONNECT_S if reconnect_s is None else reconnect_s
        self.skipped = 0  # packets that did not decode
        self._open()
        first = self._next_decoded()
        if first is None:
            self.close()
            raise InputError(f"{source_id}: no frame could be decoded (is it a video?)")
        image, _ = first
        live = network and _is_live(target, self._container)
        self._opened_at = time.monotonic()
        video = self._video
        self._announced = int(video.frames) if video.frames and video.frames > 0 else None
        duration = self._container.duration  # microseconds
        self.info = VideoInfo(
            source_id=source_id,
            width=image.shape[1],
            height=image.shape[0],
            fps=self._fps,
            frame_count=None if live else self._announced or (round(duration / 1e6 * self._fps) if duration else None),
            live=live,
            time_base=None if live else Fraction(video.time_base),
        )
        self._first = first
        self.audio: AudioTrack | None = self._audio_track if not live else None

    # --- opening ---

    def _open(self) -> None:
        """Open the container and its first video stream (and audio stream, for a file)."""
        import av

        options = {"timeout": (OPEN_TIMEOUT_S, READ_TIMEOUT_S)} if self._network else {}
        try:
            self._container = _open_container(self._readable(), **options)
        except (av.error.FFmpegError, OSError, UnicodeDecodeError) as error:
            raise InputError(self._cannot_open()) from error
        if not self._container.streams.video:
            self._container.close()
            raise InputError(f"{self._target} has no video stream")
        self._video = self._container.streams.video[0]
        self._video.thread_type = "AUTO"  # FFmpeg's frame and slice threads
        rate = self._video.average_rate or self._video.guessed_rate or self._video.base_rate
        self._fps = float(rate) if rate and float(rate) > 0 else FALLBACK_FPS
        audio = self._container.streams.audio[0] if self._container.streams.audio else None
        start = self._container.start_time  # microseconds; the source's time 0
        self._origin = start / 1e6 if start is not None else 0.0
        self._audio_track = AudioTrack(audio, self._origin) if audio is not None else None
        self._packets = self._container.demux(*[s for s in (self._video, audio) if s is not None])
        self._decoded: collections.deque = collections.deque()
        self._last_time: float | None = None

    def _readable(self) -> Any:
        """What FFmpeg opens: the path or URL (a subclass may give a file-like object instead)."""
        return self._target

    def _cannot_open(self) -> str:
        if self._network:
            return f"cannot open the stream {self._target}: unreachable, or not a video stream FFmpeg can read"
        hint = " (an .mp4 cut short loses its index at the end)" if Path(self._target).suffix.lower() in _CUT_SHORT_HINT else ""
        return (f"cannot open {self._target} as a video or an image: corrupt, truncated{hint}, "
                f"or a format FFmpeg cannot decode")

    # --- reading ---

    def frames(self) -> Iterator[Frame]:
        try:
            item = self._first
            index = 0
            while item is not None:
                image, timestamp = item
                now = time.monotonic()
                yield Frame(index=index, timestamp=now - self._opened_at if self.live else timestamp,
                            captured_at=now, image=image, source_id=self.info.source_id)
                index += 1
                item = self._next_decoded()
                if item is None and self.live:
                    item = self._reconnect()
            self.report_shortfall(index, self._announced, self.skipped)
        finally:
            self.close()

    def close(self) -> None:
        container = self.__dict__.get("_container")
        if container is not None:
            container.close()

    def _next_decoded(self) -> tuple[np.ndarray, float] | None:
        """The next frame (upright, BGR) and its time from the source's start; None at the end."""
        import av

        while not self._decoded:
            try:
                packet = next(self._packets)
            except StopIteration:
                return None
            except (av.error.FFmpegError, OSError) as error:  # a read error: the end of what can be read
                log.debug("%s: reading stopped (%s)", self._id, error)
                return None
            if packet.stream.type == "audio":
                if self._audio_track is not None:
                    self._audio_track.put(packet)
                continue
            try:
                self._decoded.extend(packet.decode())
            except (av.error.FFmpegError, ValueError) as error:  # a damaged packet: step over it
                self.skipped += 1
                log.debug("%s: a packet did not decode (%s)", self._id, error)
        frame = self._decoded.popleft()
        return _upright(frame), self._time_of(frame)

    def _time_of(self, frame: Any) -> float:
        """Seconds from the source's start; a frame without a timestamp takes the next expected one."""
        if frame.pts is not None and frame.time_base is not None:
            timestamp = float(frame.pts * frame.time_base) - self._origin
        elif self._last_time is not None:
            timestamp = self._last_time + 1.0 / self._fps
        else:
            timestamp = 0.0
        self._last_time = timestamp
        return timestamp

    def _reconnect(self) -> tuple[np.ndarray, float] | None:
        """A live stream stopped: reopen it with backoff, then give up."""

        def reopen() -> tuple[np.ndarray, float] | None:
            self.close()
            try:
                self._open()
            except InputError:
                return None
            return self._next_decoded()

        return reopen_with_backoff(self, reopen)


def _is_live(url: str, container: Any) -> bool:
    """A feed (RTSP, RTMP, UDP, SRT, TCP), or an HTTP stream of unknown length and duration, is live;
    a file served over HTTP (a Content-Length, or a duration) is read once, to its end."""
    if url.split("://", 1)[0].lower() in LIVE_SCHEMES:
        return True
    size = getattr(container, "size", 0) or 0
    return container.duration is None and size <= 0


def _upright(frame: Any) -> np.ndarray:
    """The frame as H x W x 3 BGR, turned as its display matrix says (counter-clockwise degrees).

    4:2:0 frames (nearly all video) are converted by OpenCV, twice as fast as FFmpeg's swscale here
    (BT.601, the same limited range, within 3 grey levels); other formats by swscale.
    """
    if frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0:
        image = cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2BGR_I420)
    else:
        image = frame.to_ndarray(format="bgr24")
    turns = round(frame.rotation / 90) % 4 if frame.rotation else 0
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def _open_container(target: str, **options: Any) -> Any:
    """``av.open`` with NVDEC (CUDA) decoding where this machine has it, software decoding otherwise."""
    import av

    accel = _cuda_decoding()
    if accel is not None:
        try:
            return av.open(target, hwaccel=accel, **options)
        except (av.error.FFmpegError, OSError) as error:
            log.debug("NVDEC decoding unavailable for %s (%s)", target, error)
            if hasattr(target, "seek"):  # a file-like object: from its start again
                target.seek(0)
    return av.open(target, **options)


@functools.cache
def _cuda_decoding() -> Any:
    """FFmpeg's CUDA hardware decoding, if a CUDA device opens here (tried once); frames come back in host memory."""
    import av

    try:
        from av.codec.hwaccel import HWAccel
    except ImportError:
        return None
    accel = HWAccel(device_type="cuda", allow_software_fallback=True)
    try:  # creating the device is what fails without an NVIDIA GPU and driver
        accel.create(av.Codec("h264", "r"))
    except Exception as error:  # noqa: BLE001 - any failure means: no hardware decoding here
        log.debug("no CUDA decoding here (%s)", error)
        return None
    return accel


def open_video_file(path: Path) -> AvSource:
    if not path.exists():
        raise InputError(f"no such file: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a folder with no images in it")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty")
    return AvSource(str(path), str(path), network=False)


def open_stream(url: str) -> AvSource:
    scheme = url.split("://", 1)[0].lower() + "://"
    if scheme not in NETWORK_SCHEMES:
        raise InputError(f"unsupported URL scheme in {url}: streamcam reads {', '.join(s[:-3] for s in NETWORK_SCHEMES)}")
    return AvSource(url, url, network=True)
