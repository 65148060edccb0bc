"""The inference worker: the one thread that touches the model (and the GPU)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any

from ..config import ViewOptions, resolve_render
from ..controls import LiveControls
from ..explainer import Explainer
from ..render import HeatmapOverlay
from ..runs import same_size_runs
from ..smoothing import MapSmoother, thumbnails
from ..types import Explanation, Frame, HostExplanation
from .batcher import Muxer


@dataclass(frozen=True, eq=False)
class ExplainedBatch:
    """One explained batch on its way to the render stage: its frames, their results on the host, and
    which of the k explained classes the overlay shows, at which opacity, and whether boxes are drawn
    (the live controls as the worker read them for this batch: one batch, one state)."""

    frames: tuple[Frame, ...]
    result: HostExplanation
    class_index: int
    alpha: float
    draw_boxes: bool
    boxes_needed: bool  # drawn, or wanted by the records


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
            return [frames[run] for run in same_size_runs([f.image.shape for f in frames])]
        last[frame.source_id] = position[id(frame)]
    return list(groups.values())


class InferenceWorker:
    """Takes batches of frames, explains them, and hands host-side results to the render stage.

    Frames go through one sequence of torch operations on the explainer's device,
    whatever it is: upload, resize, normalise, model, maps (:meth:`Explainer.explain`),
    smoothing, and with ``render="device"`` the box masks and the JET blend too; then
    ONE copy of everything the render stage needs comes back (:meth:`Explanation.to_host`).
    With ``render="host"`` the render stage blends, and the boxes are taken, with OpenCV instead.
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
        """Explain one batch of same-sized frames with the live controls' method, class, grid, opacity and boxes."""
        ex, controls = self.explainer, self.controls
        if controls.method != ex.method.name:
            ex.set_method(controls.method)
        grid, alpha, draw_boxes = controls.grid, controls.alpha, controls.boxes
        boxes_needed = draw_boxes or self.view.records
        class_index = min(controls.class_index, ex.top_k - 1) if ex.target_class is None else 0
        result = self._smoothed(ex.explain([f.image for f in frames], layers=ex.grid_layers if grid else []), frames)
        host = result.to_host(
            overlay=self.overlay.at(alpha) if self.overlay is not None and not grid else None,  # grids: on the host
            explained=class_index,
            box_masks=self.render == "device" and boxes_needed,
        )
        return ExplainedBatch(tuple(frames), host, class_index, alpha, draw_boxes, boxes_needed)

    def _smoothed(self, result: Explanation, frames: list[Frame]) -> Explanation:
        """The maps smoothed over time (``--smooth``), boxed at the view's threshold."""
        if self.smoother.strength == 0.0:
            return replace(result, box_threshold=self.view.box_threshold)
        ids = result.class_ids.tolist()
        thumbs = thumbnails(result.images)
        sources = [f.source_id for f in frames]
        maps = self.smoother(result.maps, ids, thumbs, sources, result.method, result.layer)
        layer_maps = {
            layer: self.smoother(m, ids, thumbs, sources, result.layer_methods[layer], "grid:" + layer)
            for layer, m in result.layer_maps.items()
        }
        return replace(result, maps=maps, layer_maps=layer_maps, box_threshold=self.view.box_threshold)
