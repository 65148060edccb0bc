"""The frame hub: one encode per frame whatever the viewers; a stalled viewer costs the publisher nothing."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from streamcam.serve import hub as hub_module
from streamcam.serve.hub import FrameHub
from streamcam.types import AnnotatedFrame, Frame, Prediction


def annotated(index: int, source: str = "a", image: np.ndarray | None = None) -> AnnotatedFrame:
    image = np.full((90, 160, 3), index % 256, np.uint8) if image is None else image
    frame = Frame(index, index / 25, time.monotonic() - 0.02, image, source)
    return AnnotatedFrame(frame, image, (Prediction(285, "Egyptian cat", 0.7),), 0.02, 3, "cam", "torch")


def test_each_frame_is_encoded_once_whatever_the_number_of_viewers(monkeypatch):
    calls = []
    real = cv2.imencode
    monkeypatch.setattr(hub_module.cv2, "imencode", lambda *a: calls.append(a[0]) or real(*a))
    hub = FrameHub(["a", "b"])
    viewers = [hub.subscribe(i % 2) for i in range(7)]
    for index in range(20):
        hub.publish(annotated(index, "a" if index % 4 else "b"))
    assert len(calls) == hub.encoded == 20 and set(calls) == {".jpg"}
    first = viewers[0].take()  # source a's latest, as a decodable JPEG
    assert first.sequence == 15 and cv2.imdecode(np.frombuffer(first.jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (90, 160, 3)
    assert viewers[2].take() is first  # the same bytes for every viewer: not encoded again
    assert viewers[1].take().sequence == 5 and viewers[1].take() is None


def test_a_slow_viewer_skips_frames_for_itself_only():
    hub = FrameHub(["a"])
    fast, slow = hub.subscribe(0), hub.subscribe(0)
    for index in range(10):
        hub.publish(annotated(index))
        assert fast.take().sequence == index + 1
    assert slow.take().sequence == 10 and slow.skipped == 9 and fast.skipped == 0


def test_stalled_viewers_cost_the_publisher_no_wakes_and_little_time():
    """10 viewers that never read: each is woken once (its slot filled), then only has its slot swapped."""
    hub = FrameHub(["a"])
    wakes = []
    stalled = [hub.subscribe(0, lambda: wakes.append(1)) for _ in range(10)]
    image = np.random.default_rng(0).integers(0, 255, (360, 640, 3), np.uint8)
    frames = [annotated(i, image=image) for i in range(60)]

    def publish_time(target: FrameHub) -> float:
        started = time.perf_counter()
        for frame in frames[:30]:
            target.publish(frame)
        return time.perf_counter() - started

    alone = FrameHub(["a"])
    times = [(publish_time(alone), publish_time(hub)) for _ in range(3)]  # side by side, interleaved
    assert len(wakes) == 10 and all(v.skipped == 89 for v in stalled)  # 90 frames, one wake each
    assert min(t for _, t in times) < 3 * min(t for t, _ in times)  # JPEG encoding dominates either way


def test_a_viewer_that_leaves_frees_its_slot():
    hub = FrameHub(["a"])
    viewer = hub.subscribe(0)
    hub.publish(annotated(0))
    assert hub.viewers(0) == 1
    hub.unsubscribe(viewer)
    hub.unsubscribe(viewer)  # twice is fine
    hub.publish(annotated(1))
    assert hub.viewers(0) == 0 and viewer.take().sequence == 1  # it was offered nothing after leaving
    with pytest.raises(KeyError):
        hub.subscribe(1)


def test_fps_is_right_for_frames_that_come_in_bursts(monkeypatch):
    clock = iter([t + 0.001 * i for t in np.arange(0, 10, 0.32) for i in range(8)])  # 8 frames per 0.32 s
    monkeypatch.setattr(hub_module.time, "monotonic", lambda: next(clock))
    hub = FrameHub(["a"])
    frame = annotated(0)
    for _ in range(8 * 30):
        hub.publish(frame)
    assert hub.stats()[0]["fps"] == pytest.approx(25, rel=0.15)


def test_stats_give_the_hud_its_numbers():
    hub = FrameHub(["cam0"])
    assert hub.stats()[0]["frames"] == 0 and hub.latest(0) is None
    for index in range(5):
        hub.publish(annotated(index, "cam0"))
        time.sleep(0.01)
    stats = hub.stats()[0]
    assert stats["frames"] == 5 and stats["frame"] == 4 and stats["dropped"] == 3 and stats["method"] == "cam"
    assert 20 <= stats["latency_ms"] < 1000 and 10 < stats["fps"] < 110
    assert stats["predictions"] == [{"class_id": 285, "label": "Egyptian cat", "score": 0.7, "box": None}]
    assert (stats["width"], stats["height"]) == (160, 90) and hub.latest(0).sequence == 5
