"""The threaded pipeline on generated videos, images, live and failing sources."""

from __future__ import annotations

import logging
import threading
import time

import cv2
import numpy as np
import pytest
import torch

import streamcam
from streamcam.config import ViewOptions
from streamcam.engine import annotate
from streamcam.engine.batcher import Muxer
from streamcam.engine.buffers import END, BoundedQueue, LatestSlot
from streamcam.plan import OutputPlan, SourceOutputs
from streamcam.sinks import WindowSink, display_available, open_routes
from streamcam.sources import Source
from streamcam.types import Frame, VideoInfo

from conftest import (SyntheticSource, TinyGapNet, http_server, make_pan_video, make_tiny_explainer, read_video,
                      streamcam_threads)

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("fps, size, count", [(29.97, (320, 240), 24), (25.0, (336, 190), 13), (59.94, (160, 120), 9)])
def test_video_keeps_frame_count_size_and_fps(tmp_path, default_explainer, fps, size, count):
    source = make_pan_video(tmp_path / "in.mp4", fps=fps, count=count, size=size)
    summary = streamcam.run(source, tmp_path / "out.mp4", display=False, batch=4, explainer=default_explainer)
    frames, out_fps = read_video(tmp_path / "out.mp4")
    assert summary.frames == count
    assert len(frames) == count
    assert frames[0].shape == (size[1], size[0], 3)
    assert out_fps == pytest.approx(fps, abs=1e-3)


def test_video_frames_come_out_in_order_and_explained(tmp_path, default_explainer):
    """The cat slides left to right: the heatmap's hot side follows it, frame by frame, in order."""
    source = make_pan_video(tmp_path / "in.mp4", count=10, size=(448, 224))
    with streamcam.open_source([source]) as opened:
        annotated = list(annotate(opened, default_explainer, batch=4))
    assert [a.frame.index for a in annotated] == list(range(10))
    assert all(a.predictions[0].label in {"Egyptian cat", "tabby", "tiger cat"} for a in annotated)
    assert [a.frame.timestamp for a in annotated] == pytest.approx([i / 29.97 for i in range(10)])
    # Red (strong evidence) sits in the left half at first, in the right half at the end.
    def red_centre(image: np.ndarray) -> float:
        red = (image[..., 2].astype(int) - image[..., 0]).clip(0)
        return float((red.sum(0) * np.arange(image.shape[1])).sum() / red.sum())
    assert red_centre(annotated[0].image) < 224 < red_centre(annotated[-1].image)


def test_images_and_folders_in_annotated_images_out(tmp_path, default_explainer, cat, espresso):
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "b_espresso.png"), espresso)
    cv2.imwrite(str(folder / "a_cat.jpg"), cat)
    single = tmp_path / "single.png"
    cv2.imwrite(str(single), cat[:200, :300])
    out = tmp_path / "annotated"
    summary = streamcam.run([single, folder], out, display=False, explainer=default_explainer)
    assert summary.frames == 3
    written = sorted(p.name for p in out.iterdir())
    assert written == ["a_cat.jpg", "b_espresso.png", "single.png"]
    assert cv2.imread(str(out / "b_espresso.png")).shape == espresso.shape
    assert cv2.imread(str(out / "single.png")).shape == (200, 300, 3)


def test_window_sink_falls_back_without_a_display(monkeypatch, caplog):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert not display_available()
    info = VideoInfo("x", 64, 48, 30.0, 10, live=False)
    plan = OutputPlan({"x": SourceOutputs()})
    with caplog.at_level(logging.WARNING, logger="streamcam"):
        routes = open_routes(plan, [info])
    assert routes == {"x": []}
    assert "no display" in caplog.text
    assert open_routes(plan, [info], display=False) == {"x": []}


class FakeLiveSource(Source):
    """A live source that produces numbered frames faster than a slow model can take them."""

    def __init__(self, count: int, interval_s: float = 0.002) -> None:
        self.info = VideoInfo("fake-live", 32, 32, 30.0, None, live=True)
        self.count, self.interval_s, self.produced = count, interval_s, []

    def frames(self):
        for index in range(self.count):
            time.sleep(self.interval_s)
            self.produced.append(index)
            image = np.full((32, 32, 3), index % 256, np.uint8)
            yield Frame(index, index * self.interval_s, time.monotonic(), image, "fake-live")


class SlowNet(TinyGapNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.02)
        return super().forward(x)


def test_live_source_keeps_the_newest_frame_and_counts_drops():
    ex = streamcam.Explainer(model=SlowNet().eval(), device="cpu")
    source = FakeLiveSource(count=200)
    annotated = list(annotate(source, ex, batch=4))
    indices = [a.frame.index for a in annotated]
    assert indices == sorted(set(indices))  # in order, never repeated
    assert set(indices) <= set(source.produced)  # never invented
    assert annotated[-1].dropped > 0
    assert len(indices) + annotated[-1].dropped == len(source.produced)
    assert not streamcam_threads()


class FailingSource(FakeLiveSource):
    def __init__(self, fail_at: int) -> None:
        super().__init__(count=100)
        self.info = VideoInfo("failing", 32, 32, 30.0, 100, live=False)
        self.fail_at = fail_at

    def frames(self):
        for frame in super().frames():
            if frame.index == self.fail_at:
                raise OSError("decoder exploded")
            yield frame


def test_an_error_in_the_capture_thread_surfaces_with_its_stage(tiny_explainer):
    with pytest.raises(streamcam.StageError, match="capture: decoder exploded") as error:
        list(annotate(FailingSource(fail_at=10), tiny_explainer, batch=4))
    assert error.value.stage == "capture"
    assert not streamcam_threads()


class ExplodingNet(TinyGapNet):
    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        type(self).calls += 1
        if type(self).calls > 3:  # the probe and two batches pass
            raise RuntimeError("CUDA fell over")
        return super().forward(x)


def test_an_error_in_the_inference_thread_surfaces_with_its_stage():
    ex = streamcam.Explainer(model=ExplodingNet().eval(), device="cpu")
    with pytest.raises(streamcam.StageError, match="inference: CUDA fell over"):
        list(annotate(FakeLiveSource(count=100), ex, batch=2))
    assert not streamcam_threads()


def test_closing_the_generator_early_stops_every_thread(tmp_path, tiny_explainer):
    source = make_pan_video(tmp_path / "in.mp4", count=60)
    with streamcam.open_source([source]) as opened:
        stream = annotate(opened, tiny_explainer, batch=4)
        first = next(stream)
        stream.close()
    assert first.frame.index == 0
    deadline = time.monotonic() + 5
    while streamcam_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not streamcam_threads()


def test_sinks_are_finalised_when_the_run_fails(tmp_path, tiny_explainer, monkeypatch):
    """A failure mid-run still leaves a playable file with the frames written so far."""
    source = make_pan_video(tmp_path / "in.mp4", count=40)
    original = streamcam.sinks.VideoFileSink.write
    written = []

    def write_then_fail(self, annotated):
        if len(written) == 15:
            raise OSError("disk full")
        original(self, annotated)
        written.append(annotated.frame.index)

    monkeypatch.setattr(streamcam.sinks.VideoFileSink, "write", write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        streamcam.run(source, tmp_path / "out.mp4", display=False, explainer=tiny_explainer)
    frames, _ = read_video(tmp_path / "out.mp4")
    assert len(frames) == 15
    assert not streamcam_threads()


def test_bounded_queue_applies_back_pressure_and_gives_up_on_stop():
    stop = threading.Event()
    buffer = BoundedQueue(2)
    assert buffer.put(1, stop) and buffer.put(2, stop)
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    assert buffer.put(3, stop) is False  # full: waits, then gives up once stopped
    assert time.monotonic() - started >= 0.15


def test_latest_slot_replaces_and_counts():
    stop = threading.Event()
    slot = LatestSlot()
    for i in range(5):
        slot.put(i, stop)
    slot.close(stop)
    assert slot.get(0.1) == 4 and slot.dropped == 4
    assert slot.get(0.1) is END


def test_batcher_waits_no_longer_than_its_deadline():
    stop = threading.Event()
    buffer = BoundedQueue(16)
    muxer = Muxer([buffer], 8, 0.1, stop)
    buffer.put("a", stop)
    started = time.monotonic()
    assert muxer.next_batch() == ["a"] and not muxer.ended
    assert 0.09 <= time.monotonic() - started < 1.0
    for item in ("b", "c", END):
        buffer.put(item, stop)
    assert muxer.next_batch() == ["b", "c"] and muxer.ended
    assert muxer.next_batch() == []


def test_muxer_takes_turns_across_sources():
    stop = threading.Event()
    full, slow = BoundedQueue(32), LatestSlot()
    muxer = Muxer([full, slow], 4, 0.0, stop)
    for i in range(20):
        full.put(f"file{i}", stop)
    slow.put("cam0", stop)
    first = muxer.next_batch()
    assert "cam0" in first and len(first) == 4  # the webcam is not starved by a full file queue
    slow.close(stop)
    full.put(END, stop)
    rest = []
    while batch := muxer.next_batch():
        rest.extend(batch)
    assert sorted(first + rest) == sorted([f"file{i}" for i in range(20)] + ["cam0"])
    assert muxer.ended


def test_http_stream_of_a_file_is_read_whole(tmp_path, tiny_explainer):
    """A URL source: a clip served over HTTP on loopback reports its length, so every frame is delivered."""
    make_pan_video(tmp_path / "clip.mp4", count=15)
    with http_server(tmp_path) as address, streamcam.open_source([f"{address}/clip.mp4"]) as opened:
        assert not opened.live
        annotated = list(annotate(opened, tiny_explainer, batch=4))
    assert [a.frame.index for a in annotated] == list(range(15))


def test_progress_bar_for_inputs_of_known_length(tmp_path, tiny_explainer, capsys):
    source = make_pan_video(tmp_path / "in.mp4", count=10)
    streamcam.run(source, display=False, progress=True, explainer=tiny_explainer)
    assert "10/10" in capsys.readouterr().err


def test_q_in_the_window_stops_the_run(tmp_path, tiny_explainer, monkeypatch):
    """The window sink's key handling, with OpenCV's GUI calls stubbed (no display here)."""
    shown = []
    monkeypatch.setattr(streamcam.sinks, "display_available", lambda: True)
    monkeypatch.setattr(cv2, "namedWindow", lambda *a: None)
    monkeypatch.setattr(cv2, "destroyWindow", lambda *a: None)
    monkeypatch.setattr(cv2, "imshow", lambda title, image: shown.append(image.shape))
    monkeypatch.setattr(cv2, "waitKey", lambda delay: ord("q") if len(shown) == 5 else -1)
    source = make_pan_video(tmp_path / "in.mp4", count=40)
    summary = streamcam.run(source, tmp_path / "out.mp4", explainer=tiny_explainer)
    assert summary.stopped_by_user and summary.frames == 5 and len(shown) == 5
    frames, _ = read_video(tmp_path / "out.mp4")
    assert len(frames) == 5  # the recording holds what was shown
    assert not streamcam_threads()


@pytest.mark.cuda
def test_pipeline_on_cuda_blends_on_the_device(tmp_path, cat):
    ex = streamcam.Explainer(device="cuda")
    source = make_pan_video(tmp_path / "in.mp4", count=20, size=(640, 360))
    summary = streamcam.run(source, tmp_path / "out.mp4", display=False, explainer=ex)
    frames, fps = read_video(tmp_path / "out.mp4")
    assert summary.frames == len(frames) == 20 and fps == pytest.approx(29.97, abs=1e-3)
    assert ex([cat]).labels[0][0] == "Egyptian cat"


def pattern(index: int) -> np.ndarray:
    """A frame with a white block in the top-left corner of a grey field."""
    image = np.full((96, 128, 3), 90, np.uint8)
    image[30:50, 10:40] = 255
    return image


def test_live_controls_switch_method_class_and_grid_without_losing_frames():
    from streamcam.engine.pipeline import live_controls

    ex = make_tiny_explainer(seed=7, top_k=2)
    view = ViewOptions(alpha=0.0)
    controls = live_controls(ex, view)
    assert controls.methods[:2] == ["cam", "gradcam"] and not controls.grid
    seen = []
    source = SyntheticSource(pattern, 60, name="pattern")
    # alpha 0: the overlay is the frame itself, so the grid shows as copies of the white block
    for annotated in annotate(source, ex, batch=2, view=view, controls=controls):
        seen.append(annotated)
        if annotated.frame.index == 10:
            assert controls.press("m") and controls.press("l")
        if annotated.frame.index == 40:
            assert controls.press("c") and controls.press("l")
        assert not controls.press("x")
    assert [a.frame.index for a in seen] == list(range(60))  # nothing lost
    assert seen[0].method == "cam" and seen[-1].method == "gradcam"
    # the tiny net has two stages: two tiles side by side, the second's copy of the block at rows 30-50, columns 69-84
    block_in_last_tile = [bool(a.image[45, 76].min() > 200) for a in seen]
    assert not any(block_in_last_tile[:10]) and all(block_in_last_tile[25:35]) and not any(block_in_last_tile[-10:])
    assert controls.class_index == 1


def test_window_keys_reach_the_live_controls(monkeypatch):
    from streamcam.controls import LiveControls
    from streamcam.types import AnnotatedFrame

    keys = iter([ord("m"), ord("c"), ord("l"), -1, ord("q")])
    monkeypatch.setattr(cv2, "namedWindow", lambda *a: None)
    monkeypatch.setattr(cv2, "imshow", lambda *a: None)
    monkeypatch.setattr(cv2, "waitKey", lambda delay: next(keys))
    controls = LiveControls(["cam", "gradcam", "eigencam"], "cam", top_k=3, grid=False)
    window = WindowSink("test", controls)
    frame = Frame(0, 0.0, time.monotonic(), np.zeros((48, 64, 3), np.uint8), "x")
    annotated = AnnotatedFrame(frame, frame.image, (), 0.01, 0)
    for _ in range(4):
        window.write(annotated)
    assert (controls.method, controls.class_index, controls.grid) == ("gradcam", 1, True)
    assert not window.stop_requested
    window.write(annotated)
    assert window.stop_requested


def test_run_refuses_model_options_beside_a_built_explainer(tmp_path, tiny_explainer):
    source = make_pan_video(tmp_path / "in.mp4", count=3)
    with pytest.raises(streamcam.InputError, match="top_k"):
        streamcam.run(source, display=False, explainer=tiny_explainer, top_k=3)


def test_several_sources_in_one_batch_each_with_its_own_output(tmp_path, default_explainer):
    a = make_pan_video(tmp_path / "a.mp4", fps=25.0, count=14, size=(320, 240))
    b = make_pan_video(tmp_path / "b.mp4", fps=29.97, count=9, size=(256, 144))
    c = make_pan_video(tmp_path / "c.mp4", fps=30.0, count=11, size=(320, 240))
    batch_sources = []
    import streamcam.engine.worker as worker_module

    original = worker_module.InferenceWorker.explain

    def spy(self, frames):
        batch_sources.append({f.source_id for f in frames})
        return original(self, frames)

    worker_module.InferenceWorker.explain = spy
    try:
        summary = streamcam.run([a, b, c], tmp_path / "out" / "explained_{source}.mp4", display=False, batch=8,
                                json=tmp_path / "all.jsonl", explainer=default_explainer)
    finally:
        worker_module.InferenceWorker.explain = original
    assert summary.frames_by_source == {str(a): 14, str(b): 9, str(c): 11}
    for name, (count, size, fps) in {"a": (14, (240, 320), 25.0), "b": (9, (144, 256), 29.97),
                                     "c": (11, (240, 320), 30.0)}.items():
        frames, out_fps = read_video(tmp_path / "out" / f"explained_{name}.mp4")
        assert len(frames) == count and frames[0].shape[:2] == size and out_fps == pytest.approx(fps, abs=1e-3)
    assert any(len(sources) > 1 for sources in batch_sources)  # a and c (same size) shared batches
    import json

    records = [json.loads(line) for line in (tmp_path / "all.jsonl").read_text().splitlines()]
    for source, count in summary.frames_by_source.items():
        indices = [r["frame"] for r in records if r["source"] == source]
        assert indices == list(range(count))  # each source in order, sources interleaved


def test_several_sources_need_an_output_pattern(tmp_path, tiny_explainer):
    a = make_pan_video(tmp_path / "a.mp4", count=3)
    b = make_pan_video(tmp_path / "b.mp4", count=3)
    with pytest.raises(streamcam.InputError, match="{source}"):
        streamcam.run([a, b], tmp_path / "out.mp4", display=False, explainer=tiny_explainer)
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(streamcam.InputError, match="mixed"):
        streamcam.run([a, tmp_path / "x.png"], display=False, explainer=tiny_explainer)


def test_a_live_source_beside_a_file_counts_its_own_drops(tmp_path):
    ex = streamcam.Explainer(model=SlowNet().eval(), device="cpu")
    live = FakeLiveSource(count=150)
    with streamcam.open_source([make_pan_video(tmp_path / "a.mp4", count=20, size=(32, 32))]) as clip:
        annotated = list(annotate([live, clip], ex, batch=4))
    by_source: dict[str, list] = {}
    for item in annotated:
        by_source.setdefault(item.frame.source_id, []).append(item)
    assert [a.frame.index for a in by_source[str(tmp_path / "a.mp4")]] == list(range(20))  # the file: every frame
    assert all(a.dropped == 0 for a in by_source[str(tmp_path / "a.mp4")])
    assert by_source["fake-live"][-1].dropped > 0  # the live one dropped, and counts its own
    assert not streamcam_threads()


def test_the_window_tiles_several_sources(monkeypatch):
    shown = []
    monkeypatch.setattr(cv2, "namedWindow", lambda *a: None)
    monkeypatch.setattr(cv2, "imshow", lambda title, image: shown.append(image.shape))
    monkeypatch.setattr(cv2, "waitKey", lambda delay: -1)
    window = WindowSink("tiles")
    from streamcam.types import AnnotatedFrame

    for source, size in (("a", (240, 320)), ("b", (120, 160)), ("a", (240, 320))):
        frame = Frame(0, 0.0, time.monotonic(), np.zeros((*size, 3), np.uint8), source)
        window.write(AnnotatedFrame(frame, frame.image, (), 0.01, 0))
    assert shown[0] == (240, 320, 3)  # one source: as it is
    assert shown[1] == shown[2] == (480, 1280, 3)  # two: side by side, 640 wide each
