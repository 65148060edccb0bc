"""Soak test: run the pipeline for a long time and report memory over time.

One long run, as a camera left on for hours would be: a video file (or a
generated clip of a real photo panning) read over and over as one endless
source, through the whole pipeline (capture, inference, render threads, started
once), into a video file closed and reopened every ``--segment`` frames (so the
disk does not fill). Prints, every ``--interval`` seconds: frames, fps, process
RSS, GPU memory (allocated / reserved / peak), live threads, hooks on the model. At the
end: the RSS and GPU memory trend in MB per hour, a least-squares slope over the
second half of the run (the first half lets allocator pools and caches settle).

    python scripts/soak.py [--minutes 120] [--interval 60] [--input clip.mp4] [--model NAME]
        [--method cam] [--device auto] [--batch 8] [--segment 3000]

(Starting and stopping many runs in one process, rather than one long run, grows
RSS through glibc's per-thread malloc arenas, not through streamcam: with
``MALLOC_ARENA_MAX=2`` it stays flat.)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import torch

import streamcam
from streamcam.demo import pan_frames, photo, write_clip
from streamcam.engine import annotate
from streamcam.sinks import VideoFileSink
from streamcam.sources import Source, open_source
from streamcam.types import Frame, VideoInfo


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # not Linux: the peak, which only grows
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gpu_mb(device: torch.device) -> str:
    if device.type != "cuda":
        return "-"
    return (f"{torch.cuda.memory_allocated(device) / 2**20:.0f}/{torch.cuda.memory_reserved(device) / 2**20:.0f}"
            f"/{torch.cuda.max_memory_allocated(device) / 2**20:.0f}")


def hooks(model: torch.nn.Module | None) -> int:
    if model is None:
        return 0
    return sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules())


class LoopingSource(Source):
    """A video file read again and again, as one endless (file-like, lossless) source."""

    def __init__(self, path: Path) -> None:
        with open_source([path]) as first:
            self.info = VideoInfo("soak", first.info.width, first.info.height, first.info.fps, None, live=False)
        self.path = path

    def frames(self) -> Iterator[Frame]:
        index = 0
        while not self._stopping.is_set():
            with open_source([self.path]) as source:
                for frame in source.frames():
                    yield Frame(index, index / self.info.fps, time.monotonic(), frame.image, "soak")
                    index += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=120.0)
    parser.add_argument("--interval", type=float, default=60.0)
    parser.add_argument("--input", type=Path, help="a video file to loop (default: a generated 300-frame clip)")
    parser.add_argument("--model", default=streamcam.DEFAULT_MODEL)
    parser.add_argument("--method", default="cam")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--segment", type=int, default=3000, help="frames per output file before it is reopened")
    args = parser.parse_args()

    ex = streamcam.Explainer(model=args.model, method=args.method, device=args.device)
    with tempfile.TemporaryDirectory() as folder:
        clip = args.input
        if clip is None:
            clip = Path(folder) / "clip.mp4"
            write_clip(clip, (f for f, _ in pan_frames(photo("chelsea"), (640, 360), 300)), 30.0)
        source = LoopingSource(clip)
        started = time.monotonic()
        end = started + args.minutes * 60
        frames, next_report = 0, started
        samples: list[tuple[float, float, float]] = []  # (hours, RSS MB, GPU allocated MB) at each report
        sink = None
        print("elapsed_s  frames  fps  rss_mb  gpu_alloc/reserved/peak_mb  threads  hooks", flush=True)
        stream = annotate(source, ex, batch=args.batch)
        try:
            for annotated in stream:
                if sink is None or sink.frames_written >= args.segment:
                    if sink is not None:
                        sink.close()
                    sink = VideoFileSink(Path(folder) / "out.mp4", source.info.fps, source.info.width,
                                         source.info.height, overwrite=True)
                sink.write(annotated)
                frames += 1
                now = time.monotonic()
                if now >= next_report:
                    allocated = torch.cuda.memory_allocated(ex.device) / 2**20 if ex.device.type == "cuda" else 0.0
                    samples.append(((now - started) / 3600, rss_mb(), allocated))
                    print(f"{now - started:9.0f}  {frames:6d}  {frames / (now - started):5.1f}  {rss_mb():6.0f}  "
                          f"{gpu_mb(ex.device):>26}  {threading.active_count():7d}  {hooks(ex.model):5d}", flush=True)
                    next_report = now + args.interval
                if now >= end:
                    break
        finally:
            stream.close()
            if sink is not None:
                sink.close()
        late = samples[len(samples) // 2 :]
        print(f"\n{frames} frames in {(time.monotonic() - started) / 60:.1f} min; trend over the second "
              f"half: RSS {slope(late, 1):+.1f} MB/h, GPU {slope(late, 2):+.1f} MB/h")


def slope(samples: list[tuple[float, float, float]], column: int) -> float:
    """Least-squares slope of ``column`` against hours."""
    if len(samples) < 2:
        return 0.0
    hours = [s[0] for s in samples]
    values = [s[column] for s in samples]
    mean_h, mean_v = sum(hours) / len(hours), sum(values) / len(values)
    spread = sum((h - mean_h) ** 2 for h in hours)
    return sum((h - mean_h) * (v - mean_v) for h, v in zip(hours, values)) / spread if spread else 0.0


if __name__ == "__main__":
    main()
