"""Boxes only where there is something to box: one dominant hot region that does not fill the frame.

Every case runs through both mask paths (OpenCV on the host, torch as on a GPU)
and, at the end, through the render stage into the JSON records and the drawing.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from streamcam.boxes import box_masks, boxes_from_maps, largest_component_box
from streamcam.config import ViewOptions
from streamcam.engine.render_stage import RenderStage
from streamcam.engine.worker import ExplainedBatch
from streamcam.render import draw_predictions
from streamcam.sinks import JsonLinesSink
from streamcam.types import Frame, HostExplanation

NO_BOX = (0, 0, 0, 0)


def both_paths(heatmap: np.ndarray, frame_size: tuple[int, int], threshold: float = 0.2) -> list[tuple[int, ...]]:
    """The box of one map from the host path and from the device path (run on the CPU)."""
    maps = heatmap[None, None].astype(np.float32)
    host = boxes_from_maps(maps, frame_size, threshold)[0, 0]
    device = largest_component_box(box_masks(torch.from_numpy(maps), frame_size, threshold)[0, 0].numpy())
    return [tuple(int(v) for v in host), tuple(int(v) for v in device)]


def squares(size: tuple[int, int], corners: list[tuple[int, int]], side: int, value: float = 1.0) -> np.ndarray:
    """A frame-sized map (so upsampling is the identity), zero but for ``side`` x ``side`` squares at (x, y)."""
    heatmap = np.zeros(size, np.float32)
    for x, y in corners:
        heatmap[y : y + side, x : x + side] = value
    return heatmap


def test_one_compact_blob_gets_a_tight_box():
    heatmap = np.zeros((60, 80), np.float32)
    heatmap[20:35, 30:50] = 1.0
    heatmap[2:4, 2:4] = 0.1  # below 20 % of the max: not part of the mask
    assert both_paths(heatmap, (60, 80)) == [(30, 20, 50, 35)] * 2


def test_a_gaussian_blob_is_boxed_where_it_crosses_the_threshold():
    # exp(-r^2 / 2s^2) >= 0.2 inside the radius s * sqrt(2 ln 5), around the centre
    ys, xs = np.mgrid[0:120, 0:160]
    cx, cy, sigma = 100.0, 50.0, 8.0
    heatmap = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2)).astype(np.float32)
    radius = sigma * np.sqrt(2 * np.log(5))
    expected = np.array([cx - radius, cy - radius, cx + radius + 1, cy + radius + 1])
    for box in both_paths(heatmap, (120, 160)):
        assert np.abs(np.array(box) - expected).max() <= 1.0


def test_a_feature_resolution_blob_is_boxed_in_frame_pixels():
    heatmap = np.zeros((7, 7), np.float32)
    heatmap[2, 4] = 1.0  # one hot cell of a 7 x 7 map over a 140 x 140 frame: 20 px cells
    for x0, y0, x1, y1 in both_paths(heatmap, (140, 140)):
        assert 60 <= x0 < 90 < x1 <= 120 and 20 <= y0 < 50 < y1 <= 80  # around the cell (80-100, 40-60)
        assert (x1 - x0) * (y1 - y0) < 0.2 * 140 * 140


@pytest.mark.parametrize("heatmap", [
    np.zeros((7, 7), np.float32),  # nothing
    np.full((7, 7), 0.5, np.float32),  # flat
    0.8 + 0.2 * np.random.default_rng(0).random((7, 7), dtype=np.float32),  # near-uniform
], ids=["zeros", "flat", "near-uniform"])
def test_an_empty_or_flat_map_gets_no_box(heatmap):
    assert both_paths(heatmap, (144, 176)) == [NO_BOX] * 2


def test_a_box_over_nearly_the_whole_frame_is_no_box():
    kept = squares((100, 100), [(0, 0)], 89)  # 89 x 89 = 79 % of the frame: a box
    assert both_paths(kept, (100, 100)) == [(0, 0, 89, 89)] * 2
    nearly_all = squares((100, 100), [(0, 0)], 97)  # 94 % of the frame
    assert both_paths(nearly_all, (100, 100)) == [NO_BOX] * 2
    ring = np.zeros((100, 100), np.float32)  # a thin frame-sized ring: few pixels, but its box is the frame
    ring[:3], ring[-3:], ring[:, :3], ring[:, -3:] = 1.0, 1.0, 1.0, 1.0
    assert both_paths(ring, (100, 100)) == [NO_BOX] * 2


def test_many_equal_scattered_blobs_get_no_box():
    nine = squares((90, 90), [(x, y) for x in (10, 40, 70) for y in (10, 40, 70)], 8)
    assert both_paths(nine, (90, 90)) == [NO_BOX] * 2
    two = squares((60, 120), [(10, 20), (90, 20)], 15)  # a tie: neither stands for what the map shows
    assert both_paths(two, (60, 120)) == [NO_BOX] * 2


def test_a_dominant_blob_among_specks_is_boxed():
    heatmap = squares((90, 120), [(5, 5), (100, 70), (100, 5)], 4)  # three specks, 48 px
    heatmap[40:60, 30:60] = 0.9  # 600 px: the dominant component
    assert both_paths(heatmap, (90, 120)) == [(30, 40, 60, 60)] * 2


def explained_batch(maps: np.ndarray, image: np.ndarray) -> ExplainedBatch:
    """One frame explained for two classes with the given (1, 2, h, w) maps, as the worker hands it on
    (opacity 0: the overlay is the frame itself; boxes drawn)."""
    frame = Frame(0, 0.0, 0.0, image, "test")
    result = HostExplanation(class_ids=np.array([[1, 2]]), scores=np.array([[0.6, 0.3]], np.float32),
                             labels=[["flat", "blob"]], maps=maps.astype(np.float32), method="cam", layer="x",
                             layer_maps={}, layer_methods={}, frame_sizes=(image.shape[:2],), box_threshold=0.2,
                             engine="torch")
    return ExplainedBatch(frames=(frame,), result=result, class_index=0, alpha=0.0, draw_boxes=True, boxes_needed=True)


def test_no_box_is_null_in_the_records_and_not_drawn(tmp_path):
    image = np.full((144, 176, 3), 90, np.uint8)
    flat = np.full((7, 7), 0.7)
    blob = np.zeros((7, 7))
    blob[3, 3] = 1.0
    view = ViewOptions(alpha=0.0, draw_boxes=True, records=True)  # alpha 0: the overlay is the frame itself
    annotated = RenderStage(view, lambda source: 0).render(explained_batch(np.stack([flat, blob])[None], image))[0]
    flat_prediction, blob_prediction = annotated.predictions
    assert flat_prediction.box is None and blob_prediction.box is not None

    path = tmp_path / "records.jsonl"
    sink = JsonLinesSink(path)
    sink.write(annotated)
    sink.close()
    record = json.loads(path.read_text())
    assert record["predictions"][0]["box"] is None
    assert record["predictions"][1]["box"] == list(blob_prediction.box)

    # Only the labels and the second class's (magenta) box are drawn: nothing for the flat class
    labels_only = image.copy()
    draw_predictions(labels_only, annotated.predictions, 0)
    differs = np.any(annotated.image != labels_only, axis=2)
    x0, y0, x1, y1 = blob_prediction.box
    outline = np.zeros_like(differs)  # OpenCV centres its 2-3 px lines on the box's edges
    outline[y0 - 2 : y1 + 2, x0 - 2 : x1 + 2] = True
    outline[y0 + 3 : y1 - 3, x0 + 3 : x1 - 3] = False
    assert differs.any() and not (differs & ~outline).any()
    magenta = annotated.image[differs]
    assert (magenta[:, 0] > 200).all() and (magenta[:, 1] < 60).all() and (magenta[:, 2] > 200).all()

    # With the flat class alone, the drawn frame is exactly the labelled one
    alone = explained_batch(np.stack([flat, flat])[None], image)
    drawn = RenderStage(view, lambda source: 0).render(alone)[0]
    labels_only = image.copy()
    draw_predictions(labels_only, drawn.predictions, 0)
    assert all(p.box is None for p in drawn.predictions) and np.array_equal(drawn.image, labels_only)
