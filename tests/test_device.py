"""One device path: the CUDA primitives' CPU stand-ins keep their contracts, and render="device" run on the
CPU gives what render="host" gives (frames within 2 grey levels, the same boxes, the same records)."""

from __future__ import annotations

import json

import cv2

import numpy as np
import pytest
import torch

import streamcam
from streamcam.config import ViewOptions, resolve_render
from streamcam.device import StagingBuffer, StagingReuseError, to_host
from streamcam.engine import annotate
from streamcam.engine.pipeline import live_controls
from streamcam.engine.worker import InferenceWorker
from streamcam.errors import InputError
from streamcam.sources import open_source
from streamcam.types import Frame

from conftest import make_pan_video

pytestmark = pytest.mark.timeout(300)


class PendingEvent:
    """A stand-in for a CUDA event whose copy is still running until someone waits for it."""

    def __init__(self) -> None:
        self.done = False

    def query(self) -> bool:
        return self.done

    def synchronize(self) -> None:
        self.done = True


def frames_of(value: int, count: int = 2, size: tuple[int, int] = (6, 8)) -> list[np.ndarray]:
    return [np.full((*size, 3), value + i, np.uint8) for i in range(count)]


def test_staging_buffer_waits_for_the_copy_before_the_next_batch():
    events: list[PendingEvent] = []
    staging = StagingBuffer(torch.device("cpu"), events=lambda device: events.append(PendingEvent()) or events[-1],
                            reuse=True)  # as on CUDA, where the pinned buffer is kept
    first = staging.upload(frames_of(10))
    assert not events[0].done  # the copy of batch 1 is "still running"
    second = staging.upload(frames_of(50))  # batch 2 waits for it before rewriting the buffer
    assert events[0].done and not events[1].done
    assert (first[0] == 10).all() and (first[1] == 11).all()  # batch 1 is its own memory, not the buffer
    assert (second[0] == 50).all() and (second[1] == 51).all()


def test_staging_buffer_refuses_a_rewrite_before_the_copy_completed():
    staging = StagingBuffer(torch.device("cpu"), events=lambda device: PendingEvent(), reuse=True)
    staging.upload(frames_of(10))
    with pytest.raises(StagingReuseError):
        staging.write(frames_of(20))  # without waiting: the copy out of the buffer may still be reading it
    staging.wait()
    assert (staging.write(frames_of(20))[0] == 20).all()


def test_a_buffer_allocated_per_batch_is_never_rewritten():
    staging = StagingBuffer(torch.device("cpu"), events=lambda device: PendingEvent(), reuse=False)
    first = staging.upload(frames_of(10))
    second = staging.upload(frames_of(50))  # no wait needed: batch 2 has its own buffer
    assert (first[0] == 10).all() and (second[0] == 50).all()
    assert first.data_ptr() != second.data_ptr()


@pytest.mark.parametrize("reuse", [True, False])
def test_staging_buffer_grows_and_uploads_other_sizes(reuse):
    staging = StagingBuffer(torch.device("cpu"), reuse=reuse)
    small = staging.upload(frames_of(1, 1, (2, 3)))
    large = staging.upload(frames_of(7, 3, (5, 4)))
    assert small.shape == (1, 2, 3, 3) and large.shape == (3, 5, 4, 3) and (large[2] == 9).all()
    assert small.dtype == large.dtype == torch.uint8


def test_to_host_returns_every_tensor_as_an_array():
    arrays = to_host([torch.arange(4), torch.ones(2, 3, dtype=torch.uint8)])
    assert np.array_equal(arrays[0], np.arange(4)) and arrays[1].shape == (2, 3) and arrays[1].dtype == np.uint8


def test_render_choice_is_made_by_name():
    assert resolve_render("auto", "cpu") == "host"
    assert resolve_render("auto", "cuda") == "device"
    assert resolve_render("device", "cpu") == "device" and resolve_render("host", "cuda") == "host"
    with pytest.raises(InputError, match="--render"):
        resolve_render("gpu", "cpu")
    with pytest.raises(InputError, match="--render"):
        streamcam.config.RunConfig(inputs=("a.mp4",), render="gpu")


@pytest.mark.parametrize("render, finished_here", [("device", True), ("host", False), ("auto", False)])
def test_the_worker_finishes_frames_where_render_says(default_explainer, cat, render, finished_here):
    view = ViewOptions(draw_boxes=True, render=render)
    worker = InferenceWorker(default_explainer, view, live_controls(default_explainer, view))
    batch = worker.explain([Frame(i, 0.0, 0.0, cat, "cat") for i in range(2)])
    result = batch.result
    assert (result.overlays is not None) == finished_here and (result.masks is not None) == finished_here
    if finished_here:
        assert result.overlays.shape == (2, *cat.shape) and result.overlays.dtype == np.uint8
        assert result.masks[0].shape == (2, 1, *cat.shape[:2])
    assert result.boxes.shape == (2, 1, 4) and (result.boxes[:, 0, 2] > result.boxes[:, 0, 0]).all()


def annotated(clip, explainer, view: ViewOptions) -> list:
    with open_source(clip) as source:
        return list(annotate(source, explainer, 4, view))


@pytest.mark.parametrize("smooth", [0.0, 0.6])
def test_device_render_on_the_cpu_matches_the_host_end_to_end(tmp_path, default_explainer, smooth):
    clip = make_pan_video(tmp_path / "in.mp4", count=10, size=(320, 240))
    runs = {}
    for render in ("device", "host"):
        view = ViewOptions(alpha=0.5, smooth=smooth, draw_boxes=True, records=True, render=render)
        runs[render] = annotated(clip, default_explainer, view)
        streamcam.run(clip, display=False, explainer=default_explainer, boxes=True, smooth=smooth, render=render,
                      json=tmp_path / f"{render}.jsonl")
    device, host = runs["device"], runs["host"]
    assert len(device) == len(host) == 10
    boxes = [p.box for a in host for p in a.predictions]
    assert sum(box is not None for box in boxes) >= 5  # the cat is boxed: the comparison compares boxes
    for d, h in zip(device, host):
        assert d.frame.index == h.frame.index and d.predictions == h.predictions
        assert np.abs(d.image.astype(int) - h.image).max() <= 2
    records = {r: (tmp_path / f"{r}.jsonl").read_text().splitlines() for r in runs}
    assert len(records["device"]) == 10 and records["device"] == records["host"]
    assert all(json.loads(line)["predictions"][0]["label"] for line in records["host"])


def test_the_grid_through_the_device_path_matches_the_host(tmp_path, default_explainer):
    clip = make_pan_video(tmp_path / "in.mp4", count=4, size=(320, 240))
    ex = streamcam.Explainer(model=default_explainer.model, device="cpu", backend="torch", layers="auto")
    runs = {}
    for render in ("device", "host"):
        with open_source(clip) as source:
            controls = live_controls(ex)
            runs[render] = list(annotate(source, ex, 4, ViewOptions(records=True, render=render), controls))
    for d, h in zip(runs["device"], runs["host"], strict=True):
        assert d.predictions == h.predictions and any(p.box for p in h.predictions)
        assert np.abs(d.image.astype(int) - h.image).max() <= 2


def test_to_host_finishes_on_the_device_what_it_is_asked_and_the_host_agrees(default_explainer, cat, espresso):
    """Frames of two sizes in one call: the boxes from device masks equal the boxes OpenCV takes on the host,
    the device's overlay equals the host's blend within 2 grey levels, and everything else is the same copy."""
    from streamcam.render import HeatmapOverlay

    small = cv2.resize(cat, (cat.shape[1] // 2, cat.shape[0] // 2))
    mixed = default_explainer([cat, cat, small, espresso])
    assert mixed.images is None and mixed.frame_sizes == (cat.shape[:2],) * 2 + (small.shape[:2], espresso.shape[:2])
    on_device, on_host = mixed.to_host(box_masks=True), mixed.to_host(box_masks=False)
    assert len(on_device.masks) == 3 and on_host.masks is None  # one mask tensor per run of one size
    assert np.array_equal(on_device.boxes, on_host.boxes) and np.array_equal(mixed.boxes, on_host.boxes)
    assert (on_host.boxes[:, 0, 2] > on_host.boxes[:, 0, 0]).all()  # a cat and an espresso: each boxed
    assert np.array_equal(on_host.maps, mixed.maps.numpy()) and np.array_equal(on_host.class_ids, mixed.class_ids)
    assert [p.label for p in on_host.predictions(3)] == mixed.labels[3]
    with pytest.raises(ValueError, match="one size"):
        mixed.to_host(overlay=HeatmapOverlay(0.5, default_explainer.device))

    same = default_explainer([cat, cat])
    overlay = HeatmapOverlay(0.5, default_explainer.device)
    blended = same.to_host(overlay=overlay).overlays
    for i in range(2):
        host = overlay.blend_host(cat, same.maps[i, 0].numpy())
        assert np.abs(blended[i].astype(int) - host.astype(int)).max() <= 2
