"""Fuzzing with hypothesis: no command line and no file may produce a traceback or a hang."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import streamcam
from streamcam.demo import pan_frames, photo
from streamcam.engine import annotate

from conftest import make_pan_video, make_tiny_explainer, run_cli

pytestmark = pytest.mark.timeout(600)

FLAGS = ["--webcam", "--demo", "-o", "--output", "--model", "--weights", "--labels", "--layer", "--layers",
         "--method", "--device", "--backend", "--batch", "--top-k", "--class", "--alpha", "--boxes",
         "--box-threshold", "--smooth", "--json", "--no-display", "--overwrite", "--debug", "--version", "--help"]
VALUES = ["0", "1", "-1", "7", "0.5", "2", "nan", "inf", "", " ", "cam", "gradcam", "eigencam", "magic",
          "resnet18", "efficientnet_lite0", "timm:nope", "random", "cpu", "cuda", "auto", "torch", "onnxruntime",
          "bn2", "blocks.1,bn2", "auto", "egyptian cat", "999999", "out.mp4", "out.avi", "out/", "x.jsonl",
          "/proc/nope/out.mp4", "missing.mp4", "rtsp://127.0.0.1:9/x", "gopher://x", "labels.txt", "\x00",
          "ünïcödé.mp4", "--", "-"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz")
    make_pan_video(folder / "clip.mp4", count=3, size=(64, 48))
    cv2.imwrite(str(folder / "cat.png"), cv2.resize(photo("chelsea"), (64, 48)))
    (folder / "labels.txt").write_text("a\nb\n")
    return folder


@pytest.mark.usefixtures("headless")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tokens=st.lists(st.one_of(st.sampled_from(FLAGS), st.sampled_from(VALUES),
                                 st.sampled_from(["clip.mp4", "cat.png", "."]), st.text(max_size=8)),
                       max_size=7),
       source=st.sampled_from([[], ["clip.mp4"], ["cat.png"]]))
def test_no_command_line_gives_a_traceback(workdir, monkeypatch, capsys, tokens, source):
    monkeypatch.chdir(workdir)
    if "--demo" in tokens or "--webcam" in tokens:  # keep each example small: no 80-frame demo
        tokens = [t for t in tokens if t not in ("--demo",)]
    code, err = run_cli(capsys, *source, "--no-display", *tokens)
    event(f"exit {code}")
    assert code in (0, 1, 2), (tokens, code, err)
    if "--debug" in tokens:
        return  # --debug is there to show tracebacks
    assert "Traceback" not in err, (tokens, err)
    if code == 1:  # a runtime failure is still one clear line
        assert err.strip().splitlines()[-1].startswith("streamcam: error:"), (tokens, err)


@pytest.fixture(scope="module")
def tiny_explainer() -> streamcam.Explainer:
    return make_tiny_explainer()  # once for the module (conftest's is made for each test)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, bytes]:
    """Real small files to mutate: a PNG, a JPEG, an mp4 and an avi."""
    folder = tmp_path_factory.mktemp("seeds")
    frame = next(pan_frames(photo("chelsea"), (64, 48), 1))[0]
    out = {".png": cv2.imencode(".png", frame)[1].tobytes(), ".jpg": cv2.imencode(".jpg", frame)[1].tobytes()}
    out[".mp4"] = make_pan_video(folder / "s.mp4", count=4, size=(64, 48)).read_bytes()
    out[".avi"] = make_pan_video(folder / "s.avi", fps=25.0, count=4, size=(64, 48)).read_bytes()
    return out


def explain_file(path: Path, explainer) -> int:
    """Open and explain a file; an InputError is the only acceptable failure."""
    try:
        with streamcam.open_source([path]) as source:
            return sum(1 for _ in annotate(source, explainer, batch=2))
    except streamcam.InputError:
        return -1
    except streamcam.StageError as error:
        assert isinstance(error.error, streamcam.InputError), error
        return -1


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(suffix=st.sampled_from([".png", ".jpg", ".mp4", ".avi"]),
       edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=8),
       cut=st.one_of(st.just(1.0), st.floats(0.05, 1.0)))
def test_mutated_images_and_videos_decode_or_fail_cleanly(tmp_path_factory, seeds, tiny_explainer, suffix, edits, cut):
    data = bytearray(seeds[suffix])
    for position, value in edits:
        data[int(position * len(data))] = value
    data = data[: max(1, int(len(data) * cut))]
    path = tmp_path_factory.mktemp("mutant") / f"file{suffix}"
    path.write_bytes(bytes(data))
    delivered = explain_file(path, tiny_explainer)  # returns or raises InputError; anything else fails the test
    event("decoded" if delivered > 0 else "refused")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=4096), suffix=st.sampled_from([".png", ".jpg", ".mp4", ".avi", ".mkv", ".bin"]))
def test_random_bytes_fail_cleanly(tmp_path_factory, tiny_explainer, content, suffix):
    path = tmp_path_factory.mktemp("random") / f"file{suffix}"
    path.write_bytes(content)
    assert explain_file(path, tiny_explainer) in (-1, 0, 1, 2, 3, 4)
