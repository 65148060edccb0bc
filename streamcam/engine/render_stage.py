"""The render stage: heatmap overlay and boxes (unless the device already made them), labels, latency."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..boxes import box_or_none, boxes_from_maps
from ..config import ViewOptions
from ..render import HeatmapOverlay, Tile, draw_boxes, draw_predictions, layer_grid
from ..types import AnnotatedFrame, Prediction
from .buffers import END, POLL_S, Empty
from .worker import ExplainedBatch


class RenderStage:
    """Turns explained batches into :class:`AnnotatedFrame` records, one per frame, in order."""

    def __init__(self, view: ViewOptions, dropped: Callable[[str], int]) -> None:
        self.view = view
        self.overlay = HeatmapOverlay(view.alpha, torch.device("cpu"))
        self.dropped = dropped

    def run(self, inbox: Any, outbox: Any, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    batch = inbox.get(timeout=POLL_S)
                except Empty:
                    continue
                if batch is END:
                    return
                for annotated in self.render(batch):
                    if not outbox.put(annotated, stop):
                        return
        finally:
            outbox.close(stop)

    def render(self, batch: ExplainedBatch) -> list[AnnotatedFrame]:
        rendered = []
        chosen = batch.class_index
        boxes = self._boxes(batch)
        for i, frame in enumerate(batch.frames):
            predictions = tuple(
                Prediction(
                    class_id=int(c),
                    label=label,
                    score=float(s),
                    box=box_or_none(boxes[i, j]) if boxes is not None else None,
                )
                for j, (c, label, s) in enumerate(zip(batch.class_ids[i], batch.labels[i], batch.scores[i]))
            )
            if batch.layer_maps:  # the grid's first tile lists the predictions; its tiles are not in frame pixels
                tiles = [
                    Tile(layer, maps[i, chosen], _stand_in(batch.layer_methods[layer], batch.method))
                    for layer, maps in batch.layer_maps.items()
                ]
                image = layer_grid(frame.image, tiles, self.overlay, predictions, chosen)
            else:
                image = self._overlay(batch, i)
                if self.view.draw_boxes:
                    draw_boxes(image, predictions)
                draw_predictions(image, predictions, chosen)
            rendered.append(
                AnnotatedFrame(
                    frame=frame,
                    image=image,
                    predictions=predictions,
                    latency=time.monotonic() - frame.captured_at,
                    dropped=self.dropped(frame.source_id),
                    method=batch.method,
                    engine=batch.engine,
                )
            )
        return rendered

    def _overlay(self, batch: ExplainedBatch, i: int) -> np.ndarray:
        """Frame ``i`` with its explained heatmap: blended on the device already (render="device"), or here."""
        if batch.overlays is not None:
            return batch.overlays[i]
        return self.overlay.blend_host(batch.frames[i].image, batch.maps[i, batch.class_index])

    def _boxes(self, batch: ExplainedBatch) -> np.ndarray | None:
        if not self.view.boxes_needed:
            return None
        if batch.boxes is not None:  # thresholded on the device (render="device")
            return batch.boxes
        return boxes_from_maps(batch.maps, batch.frames[0].image.shape[:2], self.view.box_threshold)


def _stand_in(method: str, chosen: str) -> str | None:
    """The method a grid tile names: the one that made its map, when that is not the chosen one."""
    return None if method == chosen else method
