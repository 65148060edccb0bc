"""The command line: one clear line and exit 2 on bad input; interrupted recordings stay playable."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import cv2
import pytest

from conftest import assert_one_line_error, count_frames, make_pan_video, run_cli, start_streamcam

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("headless")]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_pan_video(tmp_path_factory.mktemp("clip") / "in.mp4", count=12)


def test_missing_file(capsys, tmp_path):
    assert_one_line_error(*run_cli(capsys, str(tmp_path / "nope.mp4")), "no such file")


def test_corrupt_file(capsys, tmp_path):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(4096))
    assert_one_line_error(*run_cli(capsys, str(corrupt)), "corrupt.mp4")


def test_corrupt_image(capsys, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg at all")
    assert_one_line_error(*run_cli(capsys, str(bad)), "bad.jpg")


def test_unknown_model(capsys, clip):
    assert_one_line_error(*run_cli(capsys, str(clip), "--model", "resnet81"), "unknown model", "resnet18")


def test_wrong_layer(capsys, clip):
    assert_one_line_error(*run_cli(capsys, str(clip), "--layer", "blocks.99"), "blocks.99", "bn2")


def test_absent_webcam(capsys):
    started = time.monotonic()
    assert_one_line_error(*run_cli(capsys, "--webcam", "57"), "no webcam at index 57")
    assert time.monotonic() - started < 30


def test_unreachable_stream(capsys):
    assert_one_line_error(*run_cli(capsys, "rtsp://127.0.0.1:9/none"), "rtsp://127.0.0.1:9/none")


def test_unwritable_output(capsys, clip):
    assert_one_line_error(*run_cli(capsys, str(clip), "-o", "/proc/streamcam/out.mp4"), "/proc/streamcam/out.mp4")


def test_unknown_option_and_bad_value(capsys, clip):
    assert_one_line_error(*run_cli(capsys, str(clip), "--bogus"), "--bogus")
    assert_one_line_error(*run_cli(capsys, str(clip), "--alpha", "2"), "--alpha")


def test_unknown_class(capsys, clip):
    assert_one_line_error(*run_cli(capsys, str(clip), "--class", "egyptan cat"), "Egyptian cat")


def test_cam_on_a_net_without_gap_head_points_to_gradcam(capsys, clip):
    assert_one_line_error(*run_cli(capsys, str(clip), "--model", "vgg11", "--weights", "random"), "gradcam")


def test_a_video_run_writes_the_output(capsys, clip, tmp_path):
    out = tmp_path / "sub" / "out.mp4"  # a missing folder is created
    code, err = run_cli(capsys, str(clip), "-o", str(out), "--top-k", "2", "--batch", "3")
    assert code == 0, err
    assert int(cv2.VideoCapture(str(out)).get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    assert "explained 12 frames" in err


def test_demo_needs_no_input(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(capsys, "--demo")
    assert code == 0, err
    capture = cv2.VideoCapture(str(tmp_path / "streamcam-demo.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 80
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(25.0)
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (640, 360)


@pytest.mark.parametrize("signum, expected", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_interrupted_recording_is_playable(tmp_path, signum, expected):
    source = make_pan_video(tmp_path / "long.mp4", count=1500, size=(320, 240))
    out = tmp_path / "out.mp4"
    process = start_streamcam(str(source), "-o", str(out), "--batch", "2", module="streamcam.cli",
                              stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while (not out.exists() or out.stat().st_size < 50_000) and time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read()
            time.sleep(0.1)
        process.send_signal(signum)
        code = process.wait(timeout=30)
    finally:
        process.kill()
    err = process.stderr.read()
    assert code == expected, err
    assert "Traceback" not in err
    written = count_frames(out)
    assert 0 < written < 1500
    assert f"wrote {written} frames" in err  # every frame processed was kept


@pytest.mark.parametrize("method", ["gradcam", "eigencam", "guided-gradcam"])
def test_methods_and_the_layer_grid_from_the_cli(capsys, clip, tmp_path, method):
    out = tmp_path / "grid.mp4"
    code, err = run_cli(capsys, str(clip), "-o", str(out), "--method", method, "--layers", "auto")
    assert code == 0, err
    assert count_frames(out) == 12


def test_unknown_method_and_layers(capsys, clip):
    assert_one_line_error(*run_cli(capsys, str(clip), "--method", "magic"), "unknown method", "gradcam++")
    assert_one_line_error(*run_cli(capsys, str(clip), "--layers", "blocks.1,nope"), "nope")


def test_boxes_smoothing_and_records_from_the_cli(capsys, clip, tmp_path):
    records = tmp_path / "records" / "out.jsonl"
    code, err = run_cli(capsys, str(clip), "-o", str(tmp_path / "out.mp4"), "--boxes", "--smooth", "0.6",
                        "--box-threshold", "0.15", "--json", str(records))
    assert code == 0, err
    lines = records.read_text().splitlines()
    assert len(lines) == 12 and '"box": [' in lines[0]


def test_bad_view_options(capsys, clip):
    assert_one_line_error(*run_cli(capsys, str(clip), "--smooth", "1.5"), "--smooth")
    assert_one_line_error(*run_cli(capsys, str(clip), "--box-threshold", "0"), "--box-threshold")
    assert_one_line_error(*run_cli(capsys, str(clip), "--json", "/proc/streamcam/x.jsonl"), "/proc/streamcam/x.jsonl")


def test_several_sources_from_the_cli(capsys, clip, tmp_path):
    other = make_pan_video(tmp_path / "other.mp4", count=5, size=(160, 120))
    code, err = run_cli(capsys, str(clip), str(other), "-o", str(tmp_path / "x_{source}.avi"))
    assert code == 0, err
    assert count_frames(tmp_path / "x_in.avi") == 12 and count_frames(tmp_path / "x_other.avi") == 5
    assert_one_line_error(*run_cli(capsys, str(clip), str(other), "-o", str(tmp_path / "x.avi")), "{source}")
    assert_one_line_error(*run_cli(capsys, "--webcam", "57", "--webcam", "58"), "webcam at index 57")


@pytest.mark.parametrize("command", [(), ("doctor",), ("export",), ("train", "data"), ("batch", "a.mp4")])
def test_a_bad_flag_points_at_its_own_commands_help(capsys, command):
    prog = " ".join(("streamcam", *command[:1]))
    assert_one_line_error(*run_cli(capsys, *command, "--no-such-flag"), "--no-such-flag", f"(see {prog} --help)")
