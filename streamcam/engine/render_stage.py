"""The render stage: heatmap overlay (unless the GPU already did it), labels, latency."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..boxes import boxes_from_maps
from ..config import ViewOptions
from ..render import HeatmapOverlay, draw_boxes, draw_predictions, layer_grid
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
            if batch.layer_maps:
                tiles = [
                    (_tile_title(layer, batch.layer_methods[layer], batch.method), maps[i, chosen])
                    for layer, maps in batch.layer_maps.items()
                ]
                image = layer_grid(frame.image, tiles, self.overlay)
            elif batch.overlays is not None:
                image = batch.overlays[i]
            else:
                image = self.overlay.blend_host(frame.image, batch.maps[i, chosen])
            predictions = tuple(
                Prediction(
                    class_id=int(c),
                    label=label,
                    score=float(s),
                    box=tuple(int(v) for v in boxes[i, j]) if boxes is not None else None,
                )
                for j, (c, label, s) in enumerate(zip(batch.class_ids[i], batch.labels[i], batch.scores[i]))
            )
            if self.view.draw_boxes and not batch.layer_maps:  # the grid's tiles are not in frame pixels
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

    def _boxes(self, batch: ExplainedBatch) -> np.ndarray | None:
        if not self.view.boxes_needed:
            return None
        if batch.boxes is not None:  # made on the GPU
            return batch.boxes
        return boxes_from_maps(batch.maps, batch.frames[0].image.shape[:2], self.view.box_threshold)


def _tile_title(layer: str, method: str, chosen: str) -> str:
    return layer if method == chosen else f"{layer} ({method})"
