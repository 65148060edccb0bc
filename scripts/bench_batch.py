"""``streamcam batch`` here, and with ``--ray`` on 1 and 2 local actors, side by side: videos per minute.

The same clips (real photos panning, 640x360, mp4) are explained into a fresh
OUT_DIR by each runner in turn, round after round (alternating, so that a busy
moment on a shared machine hurts all alike); medians are printed:

- ``local``: the batch without Ray, one process, one Explainer (torch's threads: all cores);
- ``ray xN``: ``--ray`` on a local cluster started with ``num_cpus=N`` before the batch
  (so the batch makes N actors, each one CPU and one torch thread); the cluster's own
  start is timed apart, as a cluster outlives a batch.

Each batch's wall-clock time includes building its Explainers (the actors load the
model in parallel). "Steady" is frames per second per actor while videos are
explained (the rows' times), what a GPU node's actor would multiply. Decoding and
encoding a frame alone (PyAV, streamcam's h264 settings) are timed too: the part of
each frame that a GPU does not take over.

    python scripts/bench_batch.py [--videos 6] [--frames 100] [--rounds 3] [--actors 1,2]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import pyarrow
import ray
import torch

import streamcam
from streamcam.batch import BatchCommand, expand_inputs, run_batch
from streamcam.batch.ray_runner import LOCAL_CLUSTER
from streamcam.config import RunConfig
from streamcam.demo import pan_frames, photo, write_clip
from streamcam.video_in import open_video_file
from streamcam.video_out import VideoWriter

SIZE = (640, 360)
PHOTOS = ("chelsea", "coffee", "astronaut")


def make_clips(folder: Path, videos: int, frames: int) -> list[Path]:
    clips = []
    for index in range(videos):
        path = folder / f"clip{index}.mp4"
        write_clip(path, (f for f, _ in pan_frames(photo(PHOTOS[index % len(PHOTOS)]), SIZE, frames)), 25.0)
        clips.append(path)
    return clips


def run_once(clips: list[Path], work: Path, options: RunConfig, actors: int | None) -> dict[str, float]:
    """One batch of ``clips`` into a fresh folder: wall seconds, the cluster's start, steady frames/s/actor."""
    out = work / f"out-{actors or 'local'}"
    shutil.rmtree(out, ignore_errors=True)
    cluster_s = 0.0
    if actors:
        started = time.perf_counter()
        ray.init(address="local", num_cpus=actors, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
        cluster_s = time.perf_counter() - started
    try:
        started = time.perf_counter()
        rows = run_batch(BatchCommand(output=str(out), ray=LOCAL_CLUSTER if actors else None),
                         expand_inputs([str(c) for c in clips]), options)
        wall = time.perf_counter() - started
    finally:
        if actors:
            ray.shutdown()
    assert all(row.status == "done" for row in rows), rows
    frames = sum(row.frames for row in rows)
    busy = sum(row.seconds for row in rows)  # actor-seconds spent explaining
    return {"wall": wall, "cluster": cluster_s, "videos_per_min": 60 * len(rows) / wall,
            "fps": frames / wall, "steady_fps_per_actor": frames / busy}


def decode_encode_ms(clip: Path) -> tuple[float, float]:
    """Per-frame ms to decode ``clip`` (PyAV, to BGR arrays) and to encode its frames (streamcam's h264)."""
    source = open_video_file(clip)
    images = []
    started = time.perf_counter()
    for frame in source.frames():
        images.append(frame.image)
    decode = (time.perf_counter() - started) / len(images)
    source.close()
    with tempfile.TemporaryDirectory() as folder:
        writer = VideoWriter(Path(folder) / "x.mp4", images[0].shape[1], images[0].shape[0], 25.0)
        started = time.perf_counter()
        for index, image in enumerate(images):
            writer.write(np.ascontiguousarray(image), index / 25.0)
        writer.close()
        encode = (time.perf_counter() - started) / len(images)
    return 1000 * decode, 1000 * encode


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False,
                            cwd=Path(__file__).parent).stdout.strip()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    return (f"{cpu}, {os.cpu_count()} cores; {platform.platform()}\n"
            f"python {platform.python_version()}, torch {torch.__version__}, ray {ray.__version__}, "
            f"pyarrow {pyarrow.__version__}, PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info}), "
            f"streamcam {streamcam.__version__} @ {commit}\n"
            f"uptime: {uptime}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--actors", default="1,2", help="actor counts to compare, e.g. 1,2")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(machine())
    options = RunConfig(device=args.device)  # the default model, its default batch (8), h264
    configs = [None, *(int(n) for n in args.actors.split(","))]
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as folder:
        work = Path(folder)
        clips = make_clips(work, args.videos, args.frames)
        print(f"{args.videos} clips of {args.frames} frames, {SIZE[0]}x{SIZE[1]}; model {options.model}, "
              f"device {args.device}, batch {options.batch}; {args.rounds} rounds, alternating")
        results: dict[int | None, list[dict[str, float]]] = {c: [] for c in configs}
        for round_ in range(args.rounds):
            for config in configs:
                result = run_once(clips, work, options, config)
                results[config].append(result)
                print(f"  round {round_ + 1} {'local' if config is None else f'ray x{config}'}: "
                      f"{result['wall']:.1f} s", flush=True)
        decode, encode = zip(*(decode_encode_ms(clips[0]) for _ in range(args.rounds)))
    print("\n| runner | videos/min | frames/s | wall s | steady frames/s per actor | cluster start s |")
    print("|---|---|---|---|---|---|")
    for config, runs in results.items():
        med = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        name = "local (1 process)" if config is None else f"--ray, {config} actor{'s' * (config > 1)}"
        cluster = f"{med['cluster']:.1f}" if config else "-"
        print(f"| {name} | {med['videos_per_min']:.1f} | {med['fps']:.1f} | {med['wall']:.1f} | "
              f"{med['steady_fps_per_actor']:.1f} | {cluster} |")
    print(f"\ndecode {statistics.median(decode):.2f} ms/frame, encode (h264) {statistics.median(encode):.2f} ms/frame "
          f"({SIZE[0]}x{SIZE[1]}, PyAV/FFmpeg as streamcam runs them)")


if __name__ == "__main__":
    main()
