"""Frames/s of ``streamcam.ray.Explain`` through Ray Data with 1, 2... actors, side by side.

A local cluster (``--cpus``), ``--frames`` frames of a generated clip of a real photo (scikit-image's
cat panned across a 320x240 canvas), ``Dataset.map_batches(Explain, ...)`` with an actor pool of
each size in turn, round after round (a machine shared with other work slows them alike). Each
time is the whole run, actor start-up (one model load each) included, as a user's job would see it.
The frames are split into blocks of one batch each (``from_numpy`` of a list of arrays): one
array is one block, and one block goes to one actor. One markdown row per pool size: median and range.

    python scripts/bench_ray.py [--actors 1 2] [--frames 192] [--batch 8] [--rounds 3] [--cpus 2] [--backend auto]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import ray

import streamcam.ray
from streamcam.demo import pan_frames, photo


def run(frames: np.ndarray, actors: int, batch: int, backend: str) -> float:
    """Seconds to explain ``frames`` (N x H x W x 3 RGB) with a pool of ``actors``, start-up included."""
    start = time.perf_counter()
    blocks = ray.data.from_numpy(np.array_split(frames, max(1, len(frames) // batch)))  # work for every actor
    blocks.rename_columns({"data": "image"}).map_batches(
        streamcam.ray.Explain, fn_constructor_kwargs=dict(backend=backend, keep_image=False),
        batch_format="numpy", batch_size=batch, compute=ray.data.ActorPoolStrategy(size=actors),
        **streamcam.ray.actor_resources(),
    ).materialize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--frames", type=int, default=192)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=None, help="the local cluster's CPUs (default: this machine's)")
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args()

    streamcam.ray.connect(None, num_cpus=args.cpus, object_store_memory=500 * 2**20, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    cat = photo("chelsea")[..., ::-1]  # RGB, as Ray Data columns are
    frames = np.stack([frame for frame, _ in pan_frames(cat, (320, 240), args.frames)])
    run(frames[:1], 1, 1, args.backend)  # the model's files in the page cache, the graph in streamcam's cache
    times: dict[int, list[float]] = {n: [] for n in args.actors}
    for _ in range(args.rounds):
        for n in args.actors:
            times[n].append(run(frames, n, args.batch, args.backend))
    print(f"{args.frames} frames of 320x240, batch {args.batch}, {ray.cluster_resources().get('CPU', 0):g} CPUs, "
          f"{args.rounds} rounds\n")
    print("| actors | frames/s (start-up included) | seconds |")
    print("|---|---|---|")
    for n in args.actors:
        rates = [args.frames / t for t in times[n]]
        print(f"| {n} | {statistics.median(rates):.1f} ({min(rates):.1f}-{max(rates):.1f}) "
              f"| {statistics.median(times[n]):.1f} |")
    ray.shutdown()


if __name__ == "__main__":
    main()
