"""The render stage: heatmap overlay and boxes (unless the device already made them), labels, latency."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from ..config import ViewOptions
from ..render import HeatmapOverlay, Tile, draw_boxes, draw_predictions, layer_grid
from ..types import AnnotatedFrame
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
        result, chosen = batch.result, batch.class_index
        overlay = self.overlay.at(batch.alpha)  # the live controls' opacity and boxes, as read for this batch
        for i, frame in enumerate(batch.frames):
            predictions = result.predictions(i, boxes=batch.boxes_needed)
            if result.layer_maps:  # the grid's first tile lists the predictions; its tiles are not in frame pixels
                tiles = [
                    Tile(layer, maps[i, chosen], _stand_in(result.layer_methods[layer], result.method))
                    for layer, maps in result.layer_maps.items()
                ]
                image = layer_grid(frame.image, tiles, overlay, predictions, chosen)
            else:  # blended on the device already (render="device"), or here
                image = (result.overlays[i] if result.overlays is not None
                         else overlay.blend_host(frame.image, result.maps[i, chosen]))
                if batch.draw_boxes:
                    draw_boxes(image, predictions)
                draw_predictions(image, predictions, chosen)
            rendered.append(
                AnnotatedFrame(
                    frame=frame,
                    image=image,
                    predictions=predictions,
                    latency=time.monotonic() - frame.captured_at,
                    dropped=self.dropped(frame.source_id),
                    method=result.method,
                    engine=result.engine,
                )
            )
        return rendered


def _stand_in(method: str, chosen: str) -> str | None:
    """The method a grid tile names: the one that made its map, when that is not the chosen one."""
    return None if method == chosen else method
