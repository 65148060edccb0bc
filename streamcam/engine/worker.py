"""The inference worker: the one thread that touches the model (and the GPU)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..boxes import box_masks, boxes_from_masks
from ..config import ViewOptions, resolve_render
from ..controls import LiveControls
from ..device import to_host
from ..explainer import Explainer
from ..render import HeatmapOverlay
from ..smoothing import MapSmoother, thumbnails
from ..types import Explanation, Frame
from .batcher import Muxer


@dataclass(frozen=True, eq=False)
class ExplainedBatch:
    """What the render stage needs of one explained batch, on the host."""

    frames: tuple[Frame, ...]
    class_ids: np.ndarray  # (B, k) int64
    scores: np.ndarray  # (B, k) float32
    labels: list[list[str]]
    maps: np.ndarray  # (B, k, h, w) float32 in [0, 1]
    method: str
    engine: str  # what ran the model
    class_index: int  # which of the k targets the overlay shows
    overlays: np.ndarray | None  # (B, H, W, 3) uint8, when blended on the device (render="device")
    boxes: np.ndarray | None  # (B, k, 4) int32, when thresholded on the device (else the render stage does it)
    layer_maps: dict[str, np.ndarray]  # multi-layer grid: layer -> (B, k, h, w); empty when off
    layer_methods: dict[str, str]


def batches_by_size(frames: list[Frame]) -> list[list[Frame]]:
    """Split frames into batches of one image size each (a batch tensor needs one size).

    Frames of several sources of the same size share a batch. A source whose size
    changes inside a batch must keep its order, so then batches are consecutive runs.
    """
    groups: dict[tuple[int, ...], list[Frame]] = {}
    for frame in frames:
        groups.setdefault(frame.image.shape, []).append(frame)
    ordered = [f for group in groups.values() for f in group]
    position = {id(f): i for i, f in enumerate(ordered)}
    last: dict[str, int] = {}
    for frame in frames:  # each source's frames must still come out in order
        if position[id(frame)] < last.get(frame.source_id, -1):
            return _consecutive_runs(frames)
        last[frame.source_id] = position[id(frame)]
    return list(groups.values())


def _consecutive_runs(frames: list[Frame]) -> list[list[Frame]]:
    runs: list[list[Frame]] = []
    for frame in frames:
        if runs and runs[-1][0].image.shape == frame.image.shape:
            runs[-1].append(frame)
        else:
            runs.append([frame])
    return runs


class InferenceWorker:
    """Takes batches of frames, explains them, and hands host-side results to the render stage.

    Frames go through one sequence of torch operations on the explainer's device,
    whatever it is: upload, resize, normalise, model, maps, smoothing, and with
    ``render="device"`` the box masks and the JET blend too; then ONE copy of
    everything the render stage needs comes back (:func:`streamcam.device.to_host`).
    With ``render="host"`` the render stage blends and boxes with OpenCV instead.
    """

    def __init__(self, explainer: Explainer, view: ViewOptions, controls: LiveControls) -> None:
        self.explainer = explainer
        self.view = view
        self.controls = controls
        self.smoother = MapSmoother(view.smooth)
        self.render = resolve_render(view.render, explainer.device.type)  # chosen once, by name
        self.overlay = HeatmapOverlay(view.alpha, explainer.device) if self.render == "device" else None

    def run(self, muxer: Muxer, outbox: Any, stop: threading.Event) -> None:
        """Explain batches until every source has ended (or ``stop``); always signal the end."""
        try:
            while not stop.is_set():
                frames = muxer.next_batch()
                if not frames:
                    return
                for batch in batches_by_size(frames):
                    if not outbox.put(self.explain(batch), stop):
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
        maps, layer_maps = self._smoothed(result, images, frames)
        device_side = [result.class_ids, result.scores, maps, *layer_maps.values()]
        extra: dict[str, torch.Tensor] = {}  # what render="device" finishes here
        if self.overlay is not None and not grid:  # the grid is tiled on the host
            extra["overlays"] = self.overlay.blend_device(images, maps[:, class_index])
        if self.render == "device" and self.view.boxes_needed:
            extra["masks"] = box_masks(maps, images.shape[1:3], self.view.box_threshold)
        host = to_host([*device_side, *extra.values()])  # the one copy back
        done = dict(zip(extra, host[len(device_side):]))
        return ExplainedBatch(
            frames=tuple(frames),
            class_ids=host[0],
            scores=host[1],
            labels=result.labels,
            maps=host[2],
            method=result.method,
            engine=result.engine,
            class_index=class_index,
            overlays=done.get("overlays"),
            boxes=boxes_from_masks(done["masks"]) if "masks" in done else None,
            layer_maps=dict(zip(layer_maps, host[3 : 3 + len(layer_maps)])),
            layer_methods=result.layer_methods,
        )

    def _smoothed(self, result: Explanation, images: torch.Tensor,
                  frames: list[Frame]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.smoother.strength == 0.0:
            return result.maps, result.layer_maps
        ids = result.class_ids.tolist()
        thumbs = thumbnails(images)
        sources = [f.source_id for f in frames]
        maps = self.smoother(result.maps, ids, thumbs, sources, result.method, result.layer)
        layer_maps = {
            layer: self.smoother(m, ids, thumbs, sources, result.layer_methods[layer], "grid:" + layer)
            for layer, m in result.layer_maps.items()
        }
        return maps, layer_maps
