"""Nothing lost, nothing hangs: damaged inputs, odd frames, lost cameras, full disks, signals, long runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import streamcam
import streamcam.sinks
import streamcam.sources
from streamcam.demo import photo
from streamcam.types import Frame

from conftest import (count_frames, fake_cameras, make_pan_video, read_video, run_cli,
                      start_streamcam, streamcam_threads)

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("headless")]


# --- damaged video files -------------------------------------------------------


def test_truncated_file_every_decodable_frame_then_the_problem(tmp_path, capsys):
    data = make_pan_video(tmp_path / "full.avi", fps=25.0, count=60).read_bytes()
    truncated = tmp_path / "truncated.avi"
    truncated.write_bytes(data[: int(len(data) * 0.6)])
    decodable = count_frames(truncated)
    assert 0 < decodable < 60
    out = tmp_path / "out.avi"
    code, err = run_cli(capsys, str(truncated), "-o", str(out))
    assert code == 0, err
    assert count_frames(out) == decodable
    assert f"{decodable} of the 60 frames" in err and "Traceback" not in err


def test_corruption_in_the_middle_does_not_end_the_run(tmp_path, capsys):
    data = bytearray(make_pan_video(tmp_path / "full.avi", fps=25.0, count=60).read_bytes())
    start = int(len(data) * 0.45)
    data[start : start + 3000] = bytes((b * 7 + 13) % 256 for b in data[start : start + 3000])
    damaged = tmp_path / "damaged.avi"
    damaged.write_bytes(bytes(data))
    decodable = count_frames(damaged)
    out = tmp_path / "out.avi"
    code, err = run_cli(capsys, str(damaged), "-o", str(out))
    assert code == 0, err
    written = count_frames(out)
    assert written == decodable >= 55  # frames after the damage were processed too
    assert "Traceback" not in err


@pytest.mark.parametrize("content, fragment", [(b"", "is empty"), (b"\x00\x00\x00\x18ftypmp42" + os.urandom(5000), "cannot open")])
def test_empty_and_garbage_files(tmp_path, capsys, content, fragment):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    code, err = run_cli(capsys, str(path))
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1


def test_an_mp4_cut_short_says_why(tmp_path, capsys):
    data = make_pan_video(tmp_path / "full.mp4", count=30).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    code, err = run_cli(capsys, str(cut))
    assert code == 2 and "cut short" in err and len(err.strip().splitlines()) == 1


# --- odd images and frames --------------------------------------------------------


def test_grey_rgba_16bit_tiny_huge_and_odd_images_with_other_files_mixed_in(tmp_path, capsys, caplog):
    folder = tmp_path / "in"
    folder.mkdir()
    cat = photo("chelsea")
    cv2.imwrite(str(folder / "grey.png"), cv2.cvtColor(cat, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(folder / "rgba.png"), cv2.cvtColor(cat, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(folder / "deep.png"), cat.astype(np.uint16) * 257)
    cv2.imwrite(str(folder / "tiny.png"), cat[:1, :1])
    cv2.imwrite(str(folder / "huge.jpg"), cv2.resize(cat, (8000, 6000)))
    cv2.imwrite(str(folder / "odd.png"), cat[:201, :333])
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.png").write_bytes(b"\x89PNG but not really")
    out = tmp_path / "out"
    code, err = run_cli(capsys, str(folder), "-o", str(out), "--boxes", "--batch", "3")
    assert code == 0, err
    assert "notes.txt" in err and "broken.png" in err  # skipped, with a warning
    sizes = {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED).shape for p in out.iterdir()}
    assert sizes == {
        "grey.png": (300, 451, 3), "rgba.png": (300, 451, 3), "deep.png": (300, 451, 3),
        "tiny.png": (1, 1, 3), "huge.jpg": (6000, 8000, 3), "odd.png": (201, 333, 3),
    }


def test_a_1x1_video(tmp_path, capsys):
    source = make_pan_video(tmp_path / "dot.avi", fps=25.0, count=5, size=(1, 1))
    out = tmp_path / "out.avi"
    code, err = run_cli(capsys, str(source), "-o", str(out))
    assert code == 0, err
    assert [f.shape for f in read_video(out)[0]] == [(1, 1, 3)] * 5
    code, err = run_cli(capsys, str(source), "-o", str(tmp_path / "out.mp4"))  # H.264 4:4:4 holds 1x1 too
    assert code == 0, err
    assert [f.shape for f in read_video(tmp_path / "out.mp4")[0]] == [(1, 1, 3)] * 5


def test_odd_sizes_are_kept_and_said(tmp_path, caplog):
    frame = Frame(0, 0.0, 0.0, np.zeros((241, 321, 3), np.uint8), "x")
    for name in ("odd.avi", "odd.mp4"):
        sink = streamcam.sinks.VideoFileSink(tmp_path / name, 25.0, 321, 241)
        with sink:
            sink.write(streamcam.AnnotatedFrame(frame, frame.image, (), 0.0, 0))
        frames, _ = read_video(tmp_path / name)
        assert frames[0].shape == (241, 321, 3)
    assert "321x241 is odd-sized: kept exactly with 4:4:4" in caplog.text  # (MJPEG in .avi needs no word)


# --- streams and cameras ------------------------------------------------------------


@pytest.mark.parametrize("url", ["rtsp://127.0.0.1:9/none", "http://127.0.0.1:9/none.mp4", "srt://127.0.0.1:9"])
def test_unreachable_stream_fails_within_seconds(capsys, url):
    started = time.monotonic()
    code, err = run_cli(capsys, url)
    assert code == 2 and url in err and len(err.strip().splitlines()) == 1
    assert time.monotonic() - started < 15


def test_unsupported_url_scheme(capsys):
    code, err = run_cli(capsys, "gopher://example.org/video")
    assert code == 2 and "unsupported URL scheme" in err


def test_unplugged_webcam_retries_then_stops_cleanly(tmp_path, monkeypatch, tiny_explainer):
    monkeypatch.setattr(streamcam.sources, "LIVE_RECONNECT_S", 1.5)
    made = fake_cameras(monkeypatch, [20])
    out = tmp_path / "out.avi"
    started = time.monotonic()
    summary = streamcam.run(0, out, display=False, explainer=tiny_explainer)
    elapsed = time.monotonic() - started
    assert 1.5 <= elapsed < 10
    assert len(made) >= 4  # it tried to reopen the device several times, backing off
    assert summary.problems and "webcam:0 was lost" in summary.problems[0]
    assert count_frames(out) == summary.frames > 0  # finalised with what was processed
    assert not streamcam_threads()


def test_a_webcam_that_comes_back_keeps_streaming(tmp_path, monkeypatch, tiny_explainer):
    monkeypatch.setattr(streamcam.sources, "LIVE_RECONNECT_S", 5.0)
    fake_cameras(monkeypatch, [10, 0, 15])  # unplugged, one failed reopen, then back for 15 frames
    summary = streamcam.run(0, tmp_path / "out.avi", display=False, explainer=tiny_explainer)
    assert summary.frames + summary.dropped > 10  # frames after the reconnection arrived
    assert "lost" in summary.problems[0]  # and it ended when the camera went for good


# --- outputs ----------------------------------------------------------------------


def test_existing_outputs_are_refused_unless_overwrite(tmp_path, capsys):
    clip = make_pan_video(tmp_path / "in.mp4", count=4)
    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    code, err = run_cli(capsys, str(clip), "-o", str(out))
    assert code == 2 and "--overwrite" in err and out.read_bytes() == b"precious"
    records = tmp_path / "r.jsonl"
    records.write_text("old\n")
    code, err = run_cli(capsys, str(clip), "--json", str(records), "-o", str(tmp_path / "new.mp4"))
    assert code == 2 and "--overwrite" in err and records.read_text() == "old\n"
    code, err = run_cli(capsys, str(clip), "-o", str(out), "--overwrite")
    assert code == 0 and count_frames(out) == 4
    folder = tmp_path / "annotated"
    folder.mkdir()
    (folder / "keep.png").write_bytes(b"x")
    image = tmp_path / "cat.png"
    cv2.imwrite(str(image), photo("chelsea"))
    code, err = run_cli(capsys, str(image), "-o", str(folder))  # other files in the folder are left alone
    assert code == 0 and (folder / "keep.png").read_bytes() == b"x" and (folder / "cat.png").exists()
    code, err = run_cli(capsys, str(image), "-o", str(folder))  # but the annotated image is not replaced unasked
    assert code == 2 and "cat.png already exists" in err and "--overwrite" in err


def test_a_full_disk_stops_the_run_with_what_was_saved(tmp_path, capsys, monkeypatch):
    clip = make_pan_video(tmp_path / "in.mp4", count=120)
    real = streamcam.sinks.shutil.disk_usage
    calls = []

    def filling_up(path):
        calls.append(path)
        usage = real(path)
        return usage._replace(free=usage.free if len(calls) < 3 else 1024)

    monkeypatch.setattr(streamcam.sinks.shutil, "disk_usage", filling_up)
    out = tmp_path / "out.mp4"
    code, err = run_cli(capsys, str(clip), "-o", str(out), "--json", str(tmp_path / "r.jsonl"))
    assert code == 1, err
    assert "disk" in err and "full" in err and "wrote 60 frames to" in err
    assert count_frames(out) == 60  # two checks passed (frames 0 and 30), the third stopped it


# --- signals ----------------------------------------------------------------------


def run_and_signal(tmp_path: Path, signum: int, when: str) -> tuple[int, str, float, Path, Path]:
    source = make_pan_video(tmp_path / "long.mp4", count=1500, size=(320, 240))
    out, records = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    process = start_streamcam(str(source), "-o", str(out), "--json", str(records), "--batch", "2",
                              module="streamcam.cli", stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        if when == "loading":  # torch is being imported or the model loaded: main() is running by then
            maps = Path(f"/proc/{process.pid}/maps")
            while "libtorch" not in maps.read_text() and time.monotonic() < deadline:
                time.sleep(0.02)
        else:
            while (not records.exists() or len(records.read_text().splitlines()) < 30) and time.monotonic() < deadline:
                assert process.poll() is None, process.stderr.read()
                time.sleep(0.05)
        sent = time.monotonic()
        process.send_signal(signum)
        code = process.wait(timeout=30)
        elapsed = time.monotonic() - sent
    finally:
        process.kill()
    return code, process.stderr.read(), elapsed, out, records


@pytest.mark.parametrize("signum, expected", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_mid_run_finalises_the_recording_and_the_records_together(tmp_path, signum, expected):
    code, err, elapsed, out, records = run_and_signal(tmp_path, signum, "running")
    assert code == expected, err
    assert "Traceback" not in err and "did not stop" not in err
    assert elapsed < 5  # threads stop within their 2 s, then the process exits
    lines = records.read_text().splitlines()
    assert [json.loads(line)["frame"] for line in lines] == list(range(len(lines)))
    assert count_frames(out) == len(lines) >= 30  # both end on the same frame


@pytest.mark.parametrize("signum, expected", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_loading_exits_cleanly(tmp_path, signum, expected):
    code, err, elapsed, out, records = run_and_signal(tmp_path, signum, "loading")
    assert code == expected, err
    assert "Traceback" not in err


# --- failures in each stage ----------------------------------------------------------


def test_an_error_in_the_render_thread_surfaces_with_its_stage(tmp_path, monkeypatch, tiny_explainer):
    import streamcam.engine.render_stage as render_stage

    def explode(self, batch):
        raise ValueError("colormap melted")

    monkeypatch.setattr(render_stage.RenderStage, "render", explode)
    clip = make_pan_video(tmp_path / "in.mp4", count=10)
    with pytest.raises(streamcam.StageError, match="render: colormap melted") as error:
        streamcam.run(clip, display=False, explainer=tiny_explainer)
    assert error.value.stage == "render"
    assert not streamcam_threads()


def test_a_stage_error_exits_1_from_the_cli(tmp_path, capsys, monkeypatch):
    import streamcam.engine.worker as worker

    def explode(self, frames):
        raise RuntimeError("device lost")

    monkeypatch.setattr(worker.InferenceWorker, "explain", explode)
    clip = make_pan_video(tmp_path / "in.mp4", count=6)
    code, err = run_cli(capsys, str(clip), "-o", str(tmp_path / "out.mp4"))
    assert code == 1 and "inference: device lost" in err and "Traceback" not in err
    assert not streamcam_threads()


# --- long runs ----------------------------------------------------------------------


# Run in a fresh interpreter, so that the memory measured is streamcam's alone: in the test session's process,
# hundreds of earlier tests (models trained, graphs exported) leave a heap of gigabytes whose RSS moves by tens of
# megabytes on its own.
SOAK = """
import gc, json, os, sys, warnings
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
from conftest import SyntheticSource, make_tiny_explainer, streamcam_threads
from streamcam.engine import annotate

def rss_bytes():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def tensor_count():
    with warnings.catch_warnings():  # isinstance() pokes deprecated torch.distributed names
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))

explainer = make_tiny_explainer()
samples, count = {}, 0
# many small frames, as fast as the pipeline takes them
source = SyntheticSource(lambda index: np.full((32, 32, 3), index % 256, np.uint8), 10_000, fps=30.0)
for annotated in annotate(source, explainer, batch=8):
    count += 1
    if count in (2_000, 10_000):
        gc.collect()
        samples[count] = (rss_bytes(), tensor_count())
hooks = sum(len(m._forward_hooks) for m in explainer.model.modules())
print(json.dumps({"count": count, "samples": samples, "hooks": hooks, "threads": len(streamcam_threads())}))
"""


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads RSS from /proc")
def test_ten_thousand_frames_with_flat_memory():
    done = subprocess.run([sys.executable, "-c", SOAK, str(Path(__file__).parent)], capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["count"] == 10_000
    (rss_early, tensors_early), (rss_late, tensors_late) = result["samples"]["2000"], result["samples"]["10000"]
    assert rss_late - rss_early < 20 * 2**20  # 8,000 more frames, under 20 MB more
    assert tensors_late <= tensors_early + 5
    assert result["hooks"] == 0 and result["threads"] == 0
