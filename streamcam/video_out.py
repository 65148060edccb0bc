"""Video files written by FFmpeg (PyAV): H.264 by default, the frames' own timestamps, sound carried over,
and MP4 that survives a hard kill.

- **Containers**: ``.mp4``/``.m4v``/``.mov`` are written *fragmented*
  (``frag_keyframe+empty_moov+default_base_moof``): the index travels with
  every fragment instead of being written at the end, and a keyframe is forced
  at least once a second, so after ``kill -9`` the file plays up to its last
  complete fragment (at most about a second lost). ``.mkv`` (Matroska) is
  written in one-second clusters and plays after a kill as it is; ``.avi`` too.
- **Codecs** (``--codec``): ``h264`` (default; ``mjpeg`` for ``.avi``),
  ``hevc``, ``av1``, ``mjpeg``. Each is tried on NVIDIA's encoder first (NVENC,
  where the GPU and driver have it) and falls back to FFmpeg's software one
  (libx264, libx265, SVT-AV1): opening NVENC without a GPU fails at once, so
  the same code runs everywhere and the log says which encoder ran.
- **Timestamps**: each frame is stamped with its own time (a file's decoder
  timestamps, a live source's capture time), so a VFR input stays VFR and a
  live recording that dropped frames plays at real speed. No B-frames: the
  output's timestamps are the input's, exactly, with no reordering delay.
- **Sizes**: 4:2:0 colour (what browsers play) needs even sizes; an odd width
  or height is kept exactly by switching to 4:4:4 colour (said at start).
"""

from __future__ import annotations

import functools
import logging
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .audio import AudioTrack
from .errors import InputError, StreamcamError

log = logging.getLogger(__name__)

# Codec -> its encoders, the preferred first (NVENC needs an NVIDIA GPU; without one it fails to open at once).
CODECS: dict[str, tuple[str, ...]] = {
    "h264": ("h264_nvenc", "libx264"),
    "hevc": ("hevc_nvenc", "libx265"),
    "av1": ("av1_nvenc", "libsvtav1"),
    "mjpeg": ("mjpeg",),
}
DEFAULT_CRF = {"h264": 20, "hevc": 24, "av1": 32, "mjpeg": 3}  # about "looks like the input" for each
KEYFRAME_EVERY_S = 1.0  # also the longest fragment, so the most a hard kill can lose
LIVE_TIME_BASE = Fraction(1, 90_000)  # for sources without one of their own (live, images)
AUDIO_REENCODE = "aac"  # when the container cannot hold the input's audio codec
_NAMED_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


@dataclass(frozen=True)
class Container:
    """How a file suffix is written."""

    format: str  # FFmpeg's muxer
    default_codec: str
    options: tuple[tuple[str, str], ...] = ()  # muxer options
    audio_copied: frozenset[str] | None = None  # sound codecs copied as they are (None: whatever the muxer holds)


# Each fragment goes to the disk as soon as it is complete (flush_packets), not when FFmpeg's buffer fills.
_FRAGMENTED = (("movflags", "frag_keyframe+empty_moov+default_base_moof"), ("flush_packets", "1"))
_MP4_SOUND = frozenset({"aac", "mp3", "opus", "flac", "alac", "ac3", "eac3"})  # what players take in MP4 (not PCM)
CONTAINERS = {
    ".mp4": Container("mp4", "h264", _FRAGMENTED, _MP4_SOUND),
    ".m4v": Container("mp4", "h264", _FRAGMENTED, _MP4_SOUND),
    ".mov": Container("mov", "h264", _FRAGMENTED, _MP4_SOUND),
    ".mkv": Container("matroska", "h264", (("cluster_time_limit", "1000"), ("flush_packets", "1"))),
    ".avi": Container("avi", "mjpeg", (("flush_packets", "1"),)),
}


@dataclass(frozen=True)
class EncoderSettings:
    """What the user chose: a codec (None = the container's default), and a quality or a bitrate."""

    codec: str | None = None
    crf: int | None = None  # constant quality: lower is better (for mjpeg: the JPEG quantiser, 2-31)
    bitrate: int | None = None  # bits per second, instead of a constant quality
    audio: bool = True  # carry the input's sound over

    def __post_init__(self) -> None:
        if self.codec is not None and self.codec not in CODECS:
            raise InputError(f"unknown codec '{self.codec}': choose one of {', '.join(CODECS)}")
        if self.crf is not None and not 0 <= self.crf <= 63:
            raise InputError(f"--crf must be between 0 and 63, not {self.crf}")
        if self.bitrate is not None and self.bitrate <= 0:
            raise InputError(f"--bitrate must be positive, not {self.bitrate}")
        if self.crf is not None and self.bitrate is not None:
            raise InputError("give --crf or --bitrate, not both")


def container_for(path: Path) -> Container:
    container = CONTAINERS.get(path.suffix.lower())
    if container is None:
        raise InputError(f"cannot write video as {path.suffix or 'a file without extension'} ({path}): "
                         f"use one of {', '.join(CONTAINERS)}")
    return container


class VideoWriter:
    """One video file: ``write`` frames (BGR arrays with their timestamps), then ``close``.

    ``time_base`` is the source's (its timestamps land exactly on it), or
    :data:`LIVE_TIME_BASE`. ``audio``, when given, is muxed in as frames go.
    """

    def __init__(self, path: Path, width: int, height: int, fps: float, time_base: Fraction | None = None,
                 settings: EncoderSettings | None = None, audio: AudioTrack | None = None,
                 name: Path | None = None) -> None:
        import av

        settings = settings or EncoderSettings()
        container = container_for(name or path)
        self.name = name or path  # for messages: the final name of a file written under a temporary one
        self.codec = settings.codec or container.default_codec
        self.time_base = time_base or LIVE_TIME_BASE
        self.fps = fps
        try:
            self._output = av.open(str(path), "w", format=container.format, options=dict(container.options))
        except av.error.FFmpegError as error:
            raise InputError(f"cannot write {self.name}: {error}") from error
        try:
            self._video = self._open_encoder(width, height, settings)
            self.encoder = self._video.codec_context.name
            self._audio = self._open_audio(audio, container) if audio is not None and settings.audio else None
            # FFmpeg opens the file with its header, not before: from here on it writes to this file,
            # whatever name it is given later (a new recording is renamed into place at its first frame).
            self._output.start_encoding()
        except av.error.FFmpegError as error:
            self._output.close()
            raise InputError(f"cannot write {self.name}: {error}") from error
        except BaseException:
            self._output.close()
            raise
        self._audio_track = audio if self._audio is not None else None
        self._last_pts: int | None = None
        self._last_keyframe: float | None = None
        self._last_time = 0.0

    def write(self, image: np.ndarray, timestamp: float) -> None:
        import av

        if self._pix_fmt == "yuv420p":  # OpenCV's conversion: 3x faster than swscale's, the same limited range
            frame = av.VideoFrame.from_ndarray(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), format="yuv420p")
        else:
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")  # the encoder's swscale converts
        pts = round(timestamp / self.time_base)
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1  # timestamps must grow: a repeated or missing one takes the next tick
        frame.pts, frame.time_base = pts, self.time_base
        if self._last_keyframe is None or timestamp - self._last_keyframe >= KEYFRAME_EVERY_S:
            frame.pict_type = av.video.frame.PictureType.I
            self._last_keyframe = timestamp
        self._output.mux(self._video.encode(frame))
        self._last_pts, self._last_time = pts, timestamp
        if self._audio_track is not None:
            self._write_audio(self._audio_track.take_until(timestamp + self._frame_duration))

    def close(self) -> None:
        """Flush the encoder (and the sound up to the end of the last frame) and finalise the file."""
        try:
            self._output.mux(self._video.encode(None))
            if self._audio_track is not None:
                self._write_audio(self._audio_track.take_until(self._last_time + self._frame_duration))
                if self._audio.codec_context.name != self._audio_track.codec:  # re-encoded: flush it too
                    self._output.mux(self._audio.encode(None))
        finally:
            self._output.close()

    @property
    def _frame_duration(self) -> float:
        return 1.0 / self.fps if self.fps > 0 else 0.0

    def _open_encoder(self, width: int, height: int, settings: EncoderSettings) -> Any:
        """A stream on the first of the codec's encoders that opens here (NVENC first, where there is an NVIDIA GPU)."""
        if self.codec not in self._output.supported_codecs:
            raise InputError(f"{self.name.suffix} cannot hold {self.codec}: use another --codec or file type")
        pix_fmt = self._pix_fmt = _pixel_format(self.codec, width, height, self.name)
        encoder = usable_encoder(self.codec, pix_fmt)
        stream = self._output.add_stream(encoder, rate=Fraction(self.fps).limit_denominator(100_000))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.time_base = self.time_base
        stream.codec_context.time_base = self.time_base
        stream.codec_context.gop_size = max(1, math.ceil(self.fps * KEYFRAME_EVERY_S))
        if settings.bitrate is not None:
            stream.codec_context.bit_rate = settings.bitrate
        _quality(stream.codec_context, encoder, settings, DEFAULT_CRF[self.codec])
        log.info("%s: %s with %s (%s, %dx%d)", self.name, self.codec, encoder, pix_fmt, width, height)
        return stream

    def _open_audio(self, track: AudioTrack, container: Container) -> Any:
        """The input's sound: copied where the container holds its codec, re-encoded to AAC otherwise."""
        copied = self._output.supported_codecs if container.audio_copied is None else container.audio_copied
        if track.codec in copied:
            stream = self._output.add_stream_from_template(track.stream)
        else:
            source = track.stream.codec_context
            stream = self._output.add_stream(AUDIO_REENCODE, rate=source.sample_rate)
            # AAC wants a named channel layout ("mono", not "1 channels") and planar floats (PyAV resamples)
            stream.layout = _NAMED_LAYOUTS.get(source.channels, "stereo")
            stream.format = "fltp"
            log.info("%s: %s sound re-encoded to %s for %s", self.name, track.codec, AUDIO_REENCODE,
                     self.name.suffix)
        track.claim()
        return stream

    def _write_audio(self, packets: list) -> None:
        copying = self._audio.codec_context.name == self._audio_track.codec
        for item in packets:
            if item.time < 0:
                continue  # sound from before the first frame
            packet = item.packet
            if copying:
                shift = round(self._audio_track.origin / packet.time_base)
                packet.pts -= shift
                packet.dts = None if packet.dts is None else packet.dts - shift
                packet.stream = self._audio
                self._output.mux(packet)
                continue
            for frame in self._audio_track.stream.codec_context.decode(packet):
                frame.pts = round(item.time * frame.sample_rate)
                frame.time_base = Fraction(1, frame.sample_rate)
                self._output.mux(self._audio.encode(frame))


def _pixel_format(codec: str, width: int, height: int, path: Path) -> str:
    if codec == "mjpeg":
        return "yuvj420p"  # JPEG pads its blocks itself: any size
    if width % 2 == 0 and height % 2 == 0:
        return "yuv420p"
    if codec == "av1":
        raise InputError(f"{path}: {width}x{height} is odd-sized, which AV1's 4:2:0 encoders cannot store; "
                         f"use --codec h264 or hevc (4:4:4 keeps odd sizes) or mjpeg")
    log.warning("%s: %dx%d is odd-sized: kept exactly with 4:4:4 colour, which most browsers cannot play "
                "(an even size plays everywhere)", path, width, height)
    return "yuv444p"


def _quality(context: Any, encoder: str, settings: EncoderSettings, default_crf: int) -> None:
    """Constant quality (or the bitrate), no B-frames (timestamps stay the input's), forced keyframes as IDR."""
    crf = settings.crf if settings.crf is not None else default_crf
    options: dict[str, str] = {}
    if encoder == "libx264":
        # The CPU is busy explaining: "ultrafast" keeps the whole run as fast as it was with OpenCV's mp4v
        # (veryfast: 0.65-0.83x end to end on 2 cores) for files ~1.2x mp4v's size (BENCHMARKS.md), and
        # one encoder thread per four cores leaves the rest to decoding, the model and drawing.
        context.thread_count = max(1, (os.cpu_count() or 1) // 4)
        options = {"preset": "ultrafast", "bf": "0", "forced-idr": "1"}
        if settings.bitrate is None:
            options["crf"] = str(crf)
    elif encoder == "libx265":
        options = {"preset": "fast", "forced-idr": "1", "x265-params": "bframes=0:log-level=error"}
        if settings.bitrate is None:
            options["crf"] = str(crf)
    elif encoder == "libsvtav1":
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner on stderr unless told: errors only
        options = {"preset": "10", "svtav1-params": "pred-struct=1"}  # low delay: no reordering
        if settings.bitrate is None:
            options["crf"] = str(crf)
    elif encoder.endswith("_nvenc"):
        options = {"preset": "p4", "bf": "0", "forced-idr": "1"}
        if settings.bitrate is None:
            options.update(rc="vbr", cq=str(crf))
    elif encoder == "mjpeg":
        context.qmin = context.qmax = max(2, min(31, crf))
    context.options = options


@functools.cache
def usable_encoder(codec: str, pix_fmt: str) -> str:
    """The first of ``codec``'s encoders that opens on this machine for ``pix_fmt`` (tried once per process).

    NVENC opens only with an NVIDIA GPU and driver; elsewhere it fails at once and
    the software encoder is used: one code path, on every machine.
    """
    failures = []
    for encoder in CODECS[codec]:
        error = encoder_error(encoder, pix_fmt)
        if error is None:
            return encoder
        failures.append(f"{encoder}: {error}")
        log.debug("encoder %s does not open here (%s)", encoder, error)
    raise StreamcamError(f"no {codec} encoder opens here for {pix_fmt}: {'; '.join(failures)}")


def encoder_error(encoder: str, pix_fmt: str = "yuv420p") -> str | None:
    """Why FFmpeg's ``encoder`` does not open here for a small ``pix_fmt`` picture, or None when it opens."""
    import av

    codec = next(name for name, encoders in CODECS.items() if encoder in encoders)
    try:
        context = av.CodecContext.create(encoder, "w")
        context.width, context.height, context.pix_fmt = 64, 64, pix_fmt
        context.time_base = Fraction(1, 30)
        _quality(context, encoder, EncoderSettings(), DEFAULT_CRF[codec])
        context.open()
    except (av.error.FFmpegError, OSError, ValueError) as error:
        return str(error)
    return None
