"""Render on the device vs on the host, side by side: the measurement behind ``--render auto``.

Per frame, ms of what ``render`` decides, on a batch of frames of the real default
model's maps (7x7, the cat photo panning):

- device: :meth:`HeatmapOverlay.blend_device` + :func:`box_masks` in torch on the
  device, then the one copy back and OpenCV's connected components;
- host: :meth:`HeatmapOverlay.blend_host` + the OpenCV mask per frame, then the
  same connected components.

Rounds alternate between the two; the median is kept.

    python scripts/bench_render.py [--device cpu] [--batch 8] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import streamcam
from streamcam.boxes import box_masks, boxes_from_maps, boxes_from_masks
from streamcam.demo import pan_frames, photo
from streamcam.device import to_host
from streamcam.render import HeatmapOverlay


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    device = torch.device(args.device)
    ex = streamcam.Explainer(device=args.device, backend="torch")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, batch {args.batch}")
    print("| frame size | device render ms/frame | host render ms/frame | host faster by |")
    print("|---|---|---|---|")
    for size in ((640, 360), (1280, 720)):
        frames = [f for f, _ in pan_frames(photo("chelsea"), size, args.batch)]
        images = ex.preprocess.upload(frames)
        maps = ex.explain_tensor(ex.preprocess.normalise(images)).maps
        host_maps = maps.cpu().numpy()
        overlay = HeatmapOverlay(0.5, device)

        def on_device() -> float:
            start = time.perf_counter()
            blended, masks = to_host([overlay.blend_device(images, maps[:, 0]), box_masks(maps, size[::-1], 0.2)])
            boxes_from_masks(masks)
            return (time.perf_counter() - start) * 1000 / len(frames)

        def on_host() -> float:
            start = time.perf_counter()
            for frame, heatmap in zip(frames, host_maps[:, 0]):
                overlay.blend_host(frame, heatmap)
            boxes_from_maps(host_maps, size[::-1], 0.2)
            return (time.perf_counter() - start) * 1000 / len(frames)

        times: dict[str, list[float]] = {"device": [], "host": []}
        for _ in range(args.rounds):
            times["device"].append(on_device())
            times["host"].append(on_host())
        d, h = (statistics.median(times[k]) for k in ("device", "host"))
        print(f"| {size[0]}x{size[1]} | {d:.2f} | {h:.2f} | {d / h:.1f}x |")


if __name__ == "__main__":
    main()
