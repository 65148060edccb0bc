"""The render stage: heatmap overlay (unless the GPU already did it), labels, latency."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ..render import HeatmapOverlay, draw_predictions, layer_grid
from ..types import AnnotatedFrame, Prediction
from .buffers import END, POLL_S, Empty
from .worker import ExplainedBatch


class RenderStage:
    """Turns explained batches into :class:`AnnotatedFrame` records, one per frame, in order."""

    def __init__(self, overlay: HeatmapOverlay, dropped: Callable[[], int]) -> None:
        self.overlay = overlay
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
                Prediction(class_id=int(c), label=label, score=float(s))
                for c, label, s in zip(batch.class_ids[i], batch.labels[i], batch.scores[i])
            )
            draw_predictions(image, predictions, chosen)
            rendered.append(
                AnnotatedFrame(
                    frame=frame,
                    image=image,
                    predictions=predictions,
                    latency=time.monotonic() - frame.captured_at,
                    dropped=self.dropped(),
                    method=batch.method,
                )
            )
        return rendered


def _tile_title(layer: str, method: str, chosen: str) -> str:
    return layer if method == chosen else f"{layer} ({method})"
