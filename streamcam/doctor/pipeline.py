"""Pipeline rows: a short clip through ``streamcam.run`` with each encoder and decoder this machine has.

The clip is H.264 (what NVDEC decodes), a photo panning over a plain
background. Each row pins one encoder and one way of decoding, runs the real
pipeline and checks the output: the encoder that wrote it, its frame count and
size. Which encoders and decoders exist here is the only GPU-specific part.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .environment import no_cuda_reason
from .rows import Row, guarded

CLIP_SIZE = (320, 192)  # width, height: small, and even for 4:2:0
CLIP_FPS = 25.0
SOFTWARE = "software"
NVDEC = "NVDEC (FFmpeg CUDA hwaccel)"


@dataclass(frozen=True)
class PipelineSpec:
    """One encoder (FFmpeg's name, e.g. libx264, h264_nvenc) and one way of decoding the input."""

    codec: str  # the --codec it serves
    encoder: str
    decoder: str  # SOFTWARE or NVDEC
    unavailable: str | None = None

    @property
    def name(self) -> str:
        return f"{self.encoder} + {self.decoder} decoding"


def pipeline_specs() -> list[PipelineSpec]:
    """libx264 with software decoding, each NVENC encoder, and NVDEC decoding; each with why not, if not."""
    from ..video_in import _cuda_decoding
    from ..video_out import CODECS, encoder_error

    specs = [PipelineSpec("h264", "libx264", SOFTWARE, encoder_error("libx264"))]
    for codec in ("h264", "hevc", "av1"):
        encoder = CODECS[codec][0]
        specs.append(PipelineSpec(codec, encoder, SOFTWARE, _encoder_unavailable(encoder)))
    no_nvdec = None if _cuda_decoding() is not None else \
        no_cuda_reason() or "FFmpeg's CUDA decoding does not open here"
    specs.append(PipelineSpec("h264", "libx264", NVDEC, no_nvdec))
    return specs


def _encoder_unavailable(encoder: str) -> str | None:
    import av

    from ..video_out import encoder_error

    if encoder not in av.codecs_available:
        return f"this FFmpeg has no {encoder}"
    error = encoder_error(encoder)
    if error is None:
        return None
    return f"{encoder} does not open here ({error.split(': ', 1)[0]}); it needs an NVIDIA GPU and driver"


def make_clip(path: Path, frames: int) -> Path:
    """An H.264 clip of ``frames`` frames: the cat panning across a grey background."""
    from ..demo import pan_frames, photo
    from ..video_out import VideoWriter

    writer = VideoWriter(path, *CLIP_SIZE, CLIP_FPS)
    try:
        for index, (image, _) in enumerate(pan_frames(photo("chelsea"), CLIP_SIZE, frames)):
            writer.write(image, index / CLIP_FPS)
    finally:
        writer.close()
    return path


def check_pipeline(spec: PipelineSpec, clip: Path, frames: int, explainer: Any, folder: Path) -> Row:
    """Run ``clip`` through ``streamcam.run`` with ``spec``'s encoder and decoder; check what comes out."""

    def run() -> tuple[list[str], dict[str, Any]]:
        from ..engine import run as run_pipeline

        output = folder / f"{spec.encoder}-{spec.decoder.split()[0]}.mp4"
        with only(spec):
            summary = run_pipeline(str(clip), str(output), explainer=explainer, codec=spec.codec,
                                   display=False, overwrite=True)
        written, size = count_frames(output)
        encoders = sorted(set(summary.encoders.values()))
        problems = [f"{what} is {got}, expected {want}" for what, got, want in (
            ("the encoder", encoders, [spec.encoder]), ("the output's frame count", written, frames),
            ("the frames explained", summary.frames, frames), ("the output's size", size, CLIP_SIZE)) if got != want]
        return problems, {"frames": written, "encoder": encoders, "seconds": round(summary.seconds, 2)}

    return guarded("pipeline", spec.name, spec.unavailable, run)


@contextlib.contextmanager
def only(spec: PipelineSpec) -> Iterator[None]:
    """For the duration of one run: ``spec.codec`` has ``spec.encoder`` only (no fallback to another),
    and CUDA decoding is off for software decoding. Restored after, also on error."""
    from .. import video_in, video_out

    codecs, decoding = dict(video_out.CODECS), video_in._cuda_decoding
    video_out.CODECS[spec.codec] = (spec.encoder,)
    if spec.decoder == SOFTWARE:
        video_in._cuda_decoding = lambda: None
    video_out.usable_encoder.cache_clear()
    try:
        yield
    finally:
        video_out.CODECS.clear()
        video_out.CODECS.update(codecs)
        video_in._cuda_decoding = decoding
        video_out.usable_encoder.cache_clear()


def count_frames(path: Path) -> tuple[int, tuple[int, int]]:
    """The frames a video file decodes to, and their size (width, height)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        return count, (stream.codec_context.width, stream.codec_context.height)
