"""Boxes from heatmaps, temporal smoothing, per-frame JSON records, and the localisation evaluation."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import streamcam
from streamcam.boxes import box_iou, boxes_from_maps, largest_component_box
from streamcam.config import ViewOptions
from streamcam.demo import pan_frames
from streamcam.engine import annotate
from streamcam.smoothing import MapSmoother, thumbnails
from streamcam.types import Frame

from conftest import SyntheticSource, make_pan_video, read_video

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(300)


# --- boxes --------------------------------------------------------------------


def test_box_is_around_the_largest_component_above_the_threshold():
    heatmap = np.zeros((10, 10), np.float32)
    heatmap[1:3, 1:3] = 1.0  # small, strongest blob
    heatmap[5:9, 4:9] = 0.5  # larger blob, above 20 % of the max
    box = boxes_from_maps(heatmap[None, None], (10, 10), 0.2)[0, 0]
    assert tuple(box) == (4, 5, 9, 9)
    # at a 60 % threshold only the strong blob survives
    assert tuple(boxes_from_maps(heatmap[None, None], (10, 10), 0.6)[0, 0]) == (1, 1, 3, 3)
    assert tuple(boxes_from_maps(np.zeros((1, 1, 7, 7), np.float32), (70, 70), 0.2)[0, 0]) == (0, 0, 0, 0)


def test_boxes_are_in_frame_pixels_of_the_upsampled_map():
    heatmap = np.zeros((7, 7), np.float32)
    heatmap[3, 3] = 1.0
    mask = (cv2.resize(heatmap, (700, 350), interpolation=cv2.INTER_LINEAR) >= 0.2).astype(np.uint8)
    ys, xs = np.nonzero(mask)
    expected = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    assert tuple(boxes_from_maps(heatmap[None, None], (350, 700), 0.2)[0, 0]) == expected


def test_device_and_host_paths_agree():
    rng = np.random.default_rng(0)
    maps = torch.from_numpy(rng.random((3, 2, 7, 7), dtype=np.float32))
    host = boxes_from_maps(maps, (240, 320), 0.5)
    from streamcam.boxes import box_masks  # the device path, run on the CPU

    masks = box_masks(maps, (240, 320), 0.5).numpy()
    device = np.array([[largest_component_box(m) for m in row] for row in masks])
    assert np.abs(host - device).max() <= 2


@pytest.mark.cuda
def test_boxes_on_cuda_match_the_host():
    rng = np.random.default_rng(1)
    maps = torch.from_numpy(rng.random((2, 3, 7, 7), dtype=np.float32))
    assert np.abs(boxes_from_maps(maps.cuda(), (360, 640), 0.2) - boxes_from_maps(maps, (360, 640), 0.2)).max() <= 2


def test_iou():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0


def test_api_boxes_follow_the_frame_sizes(default_explainer, cat):
    res = default_explainer([cat, cv2.resize(cat, (225, 150))])
    assert res.boxes.shape == (2, 1, 4) and res.boxes.dtype == np.int32
    big, small = res.boxes[:, 0]
    assert np.abs(big / 2 - small).max() <= 2  # the same photo at half size: half the box
    x0, y0, x1, y1 = big
    assert 0 <= x0 < x1 <= cat.shape[1] and 0 <= y0 < y1 <= cat.shape[0]


def test_box_follows_a_photo_sliding_across_a_video(tmp_path, default_explainer, cat):
    size = (640, 240)
    truth = [box for _, box in pan_frames(cat, size, 12, height_fraction=0.6)]
    source = make_pan_video(tmp_path / "slide.mp4", count=12, size=size, image=None)
    view = ViewOptions(draw_boxes=True)
    with streamcam.open_source([source]) as opened:
        annotated = list(annotate(opened, default_explainer, batch=4, view=view))
    photo_boxes = [box for _, box in pan_frames(cat, size, 12)]  # make_pan_video's default height fraction
    centres = []
    for item, true_box in zip(annotated, photo_boxes):
        box = item.predictions[0].box
        centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        assert true_box[0] <= centre[0] < true_box[2] and true_box[1] <= centre[1] < true_box[3]
        assert box_iou(box, true_box) >= 0.5
        centres.append(centre[0])
    assert centres == sorted(centres) and centres[-1] - centres[0] > 200
    assert truth  # the helper agrees with itself at another size


# --- smoothing ----------------------------------------------------------------


def test_smoothing_is_the_moving_average_and_resets_on_class_change():
    smoother = MapSmoother(0.75)
    thumbs = torch.zeros(3, 16, 16)
    maps = torch.stack([torch.full((1, 2, 2), v) for v in (0.0, 1.0, 1.0)])
    out = smoother(maps, [[1], [1], [1]], thumbs, ["s"] * 3, "cam")
    assert out[:, 0, 0, 0].tolist() == pytest.approx([0.0, 0.25, 0.4375])
    after = smoother(torch.ones(1, 1, 2, 2), [[2]], thumbs[:1], ["s"], "cam")  # new class: start again
    assert torch.equal(after, torch.ones(1, 1, 2, 2)) and smoother.resets == 1
    other = smoother(torch.zeros(1, 1, 2, 2), [[2]], thumbs[:1], ["t"], "cam")  # another source: its own average
    assert torch.equal(other, torch.zeros(1, 1, 2, 2))


def noisy_static_scene(cat: np.ndarray, count: int, cut_at: int | None = None) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    scene = next(pan_frames(cat, (320, 240), 1))[0]  # the cat at the left, on grey
    other = np.full_like(scene, 220)  # after the cut: the cat, smaller, at the right, on near-white
    other[30:210, 80:320] = cv2.resize(cat, (240, 180))
    frames = []
    for index in range(count):
        base = other if cut_at is not None and index >= cut_at else scene
        noise = rng.normal(0, 12, base.shape)
        frames.append(np.clip(base + noise, 0, 255).astype(np.uint8))
    return frames


def map_sequence(explainer, images, smooth: float) -> np.ndarray:
    smoothers = []
    import streamcam.engine.worker as worker_module

    original = worker_module.MapSmoother

    def spy(strength):
        smoother = original(strength)
        smoothers.append(smoother)
        return smoother

    worker_module.MapSmoother = spy
    try:
        frames = list(annotate(SyntheticSource(images, name="list"), explainer, batch=4, view=ViewOptions(alpha=1.0, smooth=smooth)))
    finally:
        worker_module.MapSmoother = original
    # alpha 1: the image is the heatmap itself; its mean colour change tracks the map's change
    return np.stack([f.image.astype(np.float32) for f in frames]), smoothers[0]


def test_smoothing_lowers_flicker_on_a_noisy_static_scene(default_explainer, cat):
    images = noisy_static_scene(cat, 16)
    raw, _ = map_sequence(default_explainer, images, 0.0)
    smooth, smoother = map_sequence(default_explainer, images, 0.8)
    flicker = lambda seq: np.abs(np.diff(seq[4:], axis=0)).mean()  # noqa: E731
    assert flicker(smooth) < 0.6 * flicker(raw)
    assert smoother.resets == 0


def test_smoothing_resets_on_a_scene_cut(default_explainer, cat):
    images = noisy_static_scene(cat, 12, cut_at=6)
    raw, _ = map_sequence(default_explainer, images, 0.0)
    smooth, smoother = map_sequence(default_explainer, images, 0.8)
    labels = [row[0] for row in default_explainer(images).labels]
    assert labels == ["Egyptian cat"] * 12  # so the cut, not a class change, is what resets
    assert smoother.resets == 1
    assert np.abs(smooth[6] - raw[6]).max() <= 1.0  # the first frame after the cut is not averaged
    assert np.abs(smooth[7] - raw[7]).mean() > 0  # and averaging resumes after it
    change = (thumbnails(torch.from_numpy(np.stack(images[5:7]))).diff(dim=0)).abs().mean()
    assert change > 25


# --- JSON lines ---------------------------------------------------------------


def test_json_lines_one_per_frame_agreeing_with_the_drawn_boxes(tmp_path, default_explainer):
    source = make_pan_video(tmp_path / "in.mp4", count=10, size=(320, 240))
    records_path = tmp_path / "out.jsonl"
    explainer = streamcam.Explainer(model=default_explainer.model, device="cpu", top_k=2)
    streamcam.run(source, tmp_path / "out.mp4", display=False, boxes=True, json=records_path, alpha=0.0,
                  explainer=explainer)
    lines = records_path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["frame"] for r in records] == list(range(10))
    assert records[3]["time"] == pytest.approx(3 / 29.97, abs=1e-5)
    assert records[0]["source"] == str(source) and records[0]["dropped"] == 0
    assert len(records[0]["predictions"]) == 2
    first = records[0]["predictions"][0]
    assert set(first) == {"class_id", "label", "score", "box"} and first["label"] == "Egyptian cat"
    images, _ = read_video(tmp_path / "out.mp4")
    assert len(images) >= len(records)
    for record, image in zip(records, images):
        x0, y0, x1, y1 = record["predictions"][0]["box"]
        # alpha 0: only what was drawn differs from the frame; the top class's box is green
        green = (image[..., 1] > 200) & (image[..., 0] < 80) & (image[..., 2] < 80)
        ys, xs = np.nonzero(green)
        assert abs(xs.min() - x0) <= 3 and abs(xs.max() + 1 - x1) <= 3
        assert abs(ys.min() - y0) <= 3 and abs(ys.max() + 1 - y1) <= 3


def test_json_lines_are_flushed_line_by_line(tmp_path):
    from streamcam.sinks import JsonLinesSink
    from streamcam.types import AnnotatedFrame, Prediction

    path = tmp_path / "records.jsonl"
    sink = JsonLinesSink(path)
    frame = Frame(7, 0.25, 0.0, np.zeros((4, 4, 3), np.uint8), "cam")
    sink.write(AnnotatedFrame(frame, frame.image, (Prediction(1, "a", 0.5, (0, 0, 2, 2)),), 0.01, 3))
    record = json.loads(path.read_text())  # readable before close: a crash loses nothing written
    assert record["frame"] == 7 and record["dropped"] == 3 and record["predictions"][0]["box"] == [0, 0, 2, 2]
    sink.close()


# --- evaluation script ----------------------------------------------------------


def test_localization_eval_script(tmp_path, default_explainer, cat):
    folder = tmp_path / "images"
    folder.mkdir()
    rows = []
    for index, (scene, box) in enumerate(pan_frames(cat, (480, 320), 4, height_fraction=0.6)):
        cv2.imwrite(str(folder / f"{index}.png"), scene)
        rows.append([f"{index}.png", *box, "Egyptian cat"])
    scene, box = next(pan_frames(cat, (480, 320), 1, height_fraction=0.6))
    cv2.imwrite(str(folder / "wrong.png"), scene)
    rows.append(["wrong.png", *box, "espresso"])  # the wrong class can never be localised
    with (tmp_path / "boxes.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "x0", "y0", "x1", "y1", "class"])
        writer.writerows(rows)
    out = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "localization_eval.py"), "--images", str(folder), "--csv",
         str(tmp_path / "boxes.csv"), "--device", "cpu", "--json", str(out)],
        capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    # the same computation by hand
    ex = streamcam.Explainer(device="cpu", top_k=5)
    misses1 = misses5 = 0
    for name, *box, label in rows:
        res = ex([cv2.imread(str(folder / name))])
        target = ex.class_index(label)
        hits = [c == target and box_iou(tuple(res.boxes[0, j]), box) >= 0.5 for j, c in enumerate(res.class_ids[0].tolist())]
        misses1 += not hits[0]
        misses5 += not any(hits)
    assert result["images"] == 5
    assert result["top1_error"] == pytest.approx(misses1 / 5) and result["top5_error"] == pytest.approx(misses5 / 5)
    assert 0.2 <= result["top5_error"] <= result["top1_error"] <= 0.6  # the espresso row always misses
    assert "top-1 localization error" in done.stdout
