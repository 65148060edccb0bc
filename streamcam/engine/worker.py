"""The inference worker: the one thread that touches the model (and the GPU)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..explainer import Explainer
from ..render import HeatmapOverlay
from ..types import Frame
from .batcher import next_batch
from ..controls import LiveControls


@dataclass(frozen=True, eq=False)
class ExplainedBatch:
    """What the render stage needs of one explained batch, on the host."""

    frames: tuple[Frame, ...]
    class_ids: np.ndarray  # (B, k) int64
    scores: np.ndarray  # (B, k) float32
    labels: list[list[str]]
    maps: np.ndarray  # (B, k, h, w) float32 in [0, 1]
    method: str
    class_index: int  # which of the k targets the overlay shows
    overlays: np.ndarray | None  # (B, H, W, 3) uint8, when the heatmaps were blended on the GPU
    layer_maps: dict[str, np.ndarray]  # multi-layer grid: layer -> (B, k, h, w); empty when off
    layer_methods: dict[str, str]


def same_size_runs(frames: list[Frame]) -> list[list[Frame]]:
    """Split frames into consecutive runs of one image size (a batch tensor needs one size)."""
    runs: list[list[Frame]] = []
    for frame in frames:
        if runs and runs[-1][0].image.shape == frame.image.shape:
            runs[-1].append(frame)
        else:
            runs.append([frame])
    return runs


class InferenceWorker:
    """Takes batches of frames, explains them, and hands host-side results to the render stage."""

    def __init__(self, explainer: Explainer, batch_size: int, deadline_s: float, alpha: float,
                 controls: LiveControls) -> None:
        self.explainer = explainer
        self.batch_size = batch_size
        self.deadline_s = deadline_s
        self.controls = controls
        on_gpu = explainer.device.type == "cuda"
        # On a GPU the frames are already there: blend on the device and bring back finished pixels.
        self.overlay = HeatmapOverlay(alpha, explainer.device) if on_gpu else None

    def run(self, inbox: Any, outbox: Any, stop: threading.Event) -> None:
        try:
            ended = False
            while not ended and not stop.is_set():
                frames, ended = next_batch(inbox, self.batch_size, self.deadline_s, stop)
                for run in same_size_runs(frames):
                    if not outbox.put(self.explain(run), stop):
                        return
        finally:
            outbox.close(stop)

    def explain(self, frames: list[Frame]) -> ExplainedBatch:
        ex, controls = self.explainer, self.controls
        if controls.method != ex.method.name:
            ex.set_method(controls.method)
        grid = controls.grid
        class_index = min(controls.class_index, ex.top_k - 1) if ex.target_class is None else 0
        images = ex.preprocess.upload([f.image for f in frames])
        result = ex.explain_tensor(ex.preprocess.normalise(images), layers=ex.grid_layers if grid else [])
        device_side = [result.class_ids, result.scores, result.maps, *result.layer_maps.values()]
        blend_here = self.overlay is not None and not grid  # the grid is tiled on the host
        if blend_here:
            device_side.append(self.overlay(images, result.maps[:, class_index]))
        host = _to_host(device_side)
        layers = list(result.layer_maps)
        return ExplainedBatch(
            frames=tuple(frames),
            class_ids=host[0],
            scores=host[1],
            labels=result.labels,
            maps=host[2],
            method=result.method,
            class_index=class_index,
            overlays=host[-1] if blend_here else None,
            layer_maps=dict(zip(layers, host[3 : 3 + len(layers)])),
            layer_methods=result.layer_methods,
        )


def _to_host(tensors: list[torch.Tensor]) -> list[np.ndarray]:
    """Copy to the host with one synchronisation for the whole batch."""
    if tensors[0].device.type != "cuda":
        return [t.numpy() for t in tensors]
    copies = [t.to("cpu", non_blocking=True) for t in tensors]
    torch.cuda.current_stream(tensors[0].device).synchronize()
    return [c.numpy() for c in copies]
