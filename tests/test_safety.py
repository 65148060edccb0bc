"""Never destroy what the user has: inputs, earlier outputs, recordings; never run code from a model file.

Every case runs the real command in a subprocess (``python -m streamcam``) in a
folder of its own, and compares that folder, file by file and byte for byte,
before and after: an input that changed or a file that appeared unasked fails
the test.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import stat
import subprocess
from pathlib import Path

import cv2
import pytest
import torch

import streamcam
from streamcam.demo import photo

from conftest import (TinyGapNet, assert_one_line_error, count_frames, make_pan_video, start_streamcam,
                      streamcam_cli)

pytestmark = pytest.mark.timeout(600)

def snapshot(folder: Path) -> dict[str, str]:
    """Every entry below ``folder``: files by content hash, symlinks by target, folders as such."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            entries[key] = "-> " + os.readlink(path)
        elif path.is_dir():
            entries[key] = "folder"
        else:
            entries[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return entries


def assert_refused(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert_one_line_error(result.returncode, result.stderr, *fragments)


@pytest.fixture
def work(tmp_path) -> Path:
    """A folder with a video, a hard link and a symlink to it, a second video, an image folder, labels."""
    make_pan_video(tmp_path / "in.mp4", count=6)
    make_pan_video(tmp_path / "a.mp4", count=4)
    make_pan_video(tmp_path / "out_a.mp4", count=3)
    os.link(tmp_path / "in.mp4", tmp_path / "hard.mp4")
    (tmp_path / "link.mp4").symlink_to("in.mp4")
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "cat.jpg"), photo("chelsea"))
    cv2.imwrite(str(photos / "espresso.png"), photo("coffee"))
    (tmp_path / "photos-link").symlink_to("photos")
    (tmp_path / "labels.txt").write_text("\n".join(f"class {i}" for i in range(1000)) + "\n")
    return tmp_path


# --- outputs never touch inputs --------------------------------------------------------

REFUSED = {
    "output is the input": (["in.mp4", "-o", "in.mp4", "--overwrite"], "is an input"),
    "output is a symlink to the input": (["in.mp4", "-o", "link.mp4", "--overwrite"], "is an input"),
    "output is a hard link to the input": (["in.mp4", "-o", "hard.mp4", "--overwrite"], "is an input"),
    "output is the input, spelled otherwise": (["in.mp4", "-o", "./photos/../in.mp4", "--overwrite"], "is an input"),
    "records over the input": (["in.mp4", "--json", "in.mp4", "--overwrite"], "is an input"),
    "records over an input image": (["photos", "--json", "photos/cat.jpg", "--overwrite"], "is an input"),
    "records over the labels": (["in.mp4", "--labels", "labels.txt", "--json", "labels.txt", "--overwrite"],
                                "is an input"),
    "image output folder is the input folder": (["photos", "-o", "photos", "--overwrite"], "is the input folder"),
    "image output folder is the input folder by a symlink": (["photos", "-o", "photos-link/", "--overwrite"],
                                                             "is the input folder"),
    "image output folder inside the input folder": (["photos", "-o", "photos/annotated"], "is inside the input"),
    "image output next to an input image": (["photos/cat.jpg", "-o", "photos", "--overwrite"], "is an input"),
    "a pattern naming another input": (["a.mp4", "out_a.mp4", "-o", "out_{source}.mp4", "--overwrite"],
                                       "is an input"),
    "video and records in one file": (["in.mp4", "-o", "x.mp4", "--json", "x.mp4", "--overwrite"],
                                      "-o x.mp4 and --json x.mp4 are the same file"),
    "video and records in one file, unasked": (["in.mp4", "-o", "new/x.mp4", "--json", "new/./x.mp4"],
                                               "are the same file"),
    "the same input in two spellings": (["in.mp4", "./in.mp4", "-o", "o_{source}.mp4"], "same file"),
    "the same input by a hard link": (["in.mp4", "hard.mp4", "-o", "o_{source}.mp4"], "same file"),
    "the same image twice": (["photos/cat.jpg", "photos-link", "-o", "annotated"], "are the same image"),
    "an existing output": (["in.mp4", "-o", "a.mp4"], "already exists"),
    "records in a folder": (["in.mp4", "--json", "photos"], "is a folder"),
    "video to standard output": (["in.mp4", "-o", "-"], "-o -"),
    "the demo's other outputs": (["--demo", "--json", "labels.txt"], "already exists"),
}


@pytest.mark.parametrize("argv, fragment", REFUSED.values(), ids=REFUSED.keys())
def test_a_run_that_would_touch_an_input_is_refused_and_creates_nothing(work, argv, fragment):
    before = snapshot(work)
    assert_refused(streamcam_cli(*argv, cwd=work), fragment)
    assert snapshot(work) == before


def test_a_refused_model_or_layer_creates_nothing(work):
    before = snapshot(work)
    assert_refused(streamcam_cli("in.mp4", "-o", "new/out.mp4", "--json", "new/r.jsonl", "--model", "resnet81",
                                 cwd=work), "unknown model")
    assert_refused(streamcam_cli("in.mp4", "-o", "new/out.mp4", "--layer", "nope", cwd=work), "nope")
    assert snapshot(work) == before


def test_images_of_the_same_name_from_two_folders_get_distinct_outputs_and_records(tmp_path):
    for folder, image in (("one", "chelsea"), ("two", "coffee")):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "photo.png"), photo(image))
    before = snapshot(tmp_path)
    result = streamcam_cli("one", "two", "-o", "annotated", "--json", "r.jsonl", "--backend", "torch", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before
    assert set(after) - set(before) == {"annotated", "annotated/one", "annotated/two", "annotated/one/photo.png",
                                        "annotated/two/photo.png", "r.jsonl"}
    records = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [(r["file"], r["predictions"][0]["label"]) for r in records] == [
        ("one/photo.png", "Egyptian cat"), ("two/photo.png", "espresso")]
    for folder, shape in (("one", photo("chelsea").shape), ("two", photo("coffee").shape)):
        assert cv2.imread(str(tmp_path / "annotated" / folder / "photo.png")).shape == shape


def test_image_output_names_are_distinct_and_predictable(tmp_path):
    from streamcam.plan import image_targets

    images = [Path("one/photo.png"), Path("two/photo.png"), Path("two/Photo.PNG"), Path("one/scan.pxm"),
              Path("one/scan.png"), Path("three/one/photo.png")]
    out = tmp_path / "out"
    targets = image_targets(out, images)
    assert [str(targets[str(p)].relative_to(out)) for p in images] == [
        "one/photo.png", "two/photo.png", "two/Photo_2.PNG",  # names that differ only in case collide somewhere
        "one/scan.png", "one/scan_2.png",  # OpenCV cannot write .pxm: .png, then kept apart from the real .png
        "one_2/photo.png"]  # a second folder called "one"
    flat = image_targets(out, [Path("one/a.png"), Path("two/b.jpg")])
    assert flat == {"one/a.png": out / "a.png", "two/b.jpg": out / "b.jpg"}  # no clash: the names as they are


def test_overwrite_keeps_the_old_file_until_the_new_one_is_complete(tmp_path):
    """kill -9 halfway through a replacement: the old recording is still whole, under its name."""
    make_pan_video(tmp_path / "long.mp4", count=600)
    old = make_pan_video(tmp_path / "out.mp4", count=5).read_bytes()
    process = start_streamcam("long.mp4", "-o", "out.mp4", "--json", "-", "--overwrite", "--batch", "2",
                              "--backend", "torch", cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        for _ in range(20):  # records come out as frames are written
            assert process.stdout.readline(), "the run ended early"
        process.kill()
        process.wait(30)
    finally:
        process.kill()
    assert (tmp_path / "out.mp4").read_bytes() == old
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("long.mp4", "out.mp4")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".out.") and ".partial" in leftovers[0]


def test_overwrite_replaces_once_finished_and_keeps_the_permissions(tmp_path):
    make_pan_video(tmp_path / "in.mp4", count=7)
    make_pan_video(tmp_path / "out.mp4", count=3)
    os.chmod(tmp_path / "out.mp4", 0o640)
    result = streamcam_cli("in.mp4", "-o", "out.mp4", "--overwrite", "--backend", "torch", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert count_frames(tmp_path / "out.mp4") == 7
    assert stat.S_IMODE((tmp_path / "out.mp4").stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.mp4"]


def test_a_new_recording_has_the_usual_permissions(tmp_path):
    make_pan_video(tmp_path / "in.mp4", count=3)
    umask = os.umask(0o022)
    os.umask(umask)
    result = streamcam_cli("in.mp4", "-o", "out.mp4", "--json", "r.jsonl", "--backend", "torch", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for name in ("out.mp4", "r.jsonl"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask


# --- export -----------------------------------------------------------------------------


def test_export_refuses_to_replace_a_file_and_bad_opsets(work):
    (work / "existing.onnx").write_bytes(b"precious")
    before = snapshot(work)
    assert_refused(streamcam_cli("export", "-o", "in.mp4", cwd=work), ".onnx")
    assert_refused(streamcam_cli("export", "-o", "existing.onnx", cwd=work), "already exists", "--overwrite")
    for opset in ("1", "17", "24", "99"):
        assert_refused(streamcam_cli("export", "-o", "new.onnx", "--opset", opset, cwd=work), f"--opset {opset}",
                       "18 to 23")
    (work / "model.onnx").write_bytes(b"not read")
    assert_refused(streamcam_cli("export", "--model", "model.onnx", "-o", "model.onnx", "--overwrite", cwd=work),
                   "is an input")
    assert snapshot(work) == {**before, "model.onnx": hashlib.sha256(b"not read").hexdigest()}


@pytest.mark.parametrize("opset", [18, 21, 23])
def test_the_exported_graph_has_the_opset_asked_for(tmp_path, opset):
    import onnx

    torch.manual_seed(0)
    path = streamcam.export_onnx(tmp_path / "tiny.onnx", model=TinyGapNet().eval(), opset=opset)
    graph = onnx.load(str(path))
    assert [o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")] == [opset]
    with pytest.raises(streamcam.InputError, match="already exists"):
        streamcam.export_onnx(path, model=TinyGapNet().eval(), opset=opset)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.onnx"]  # no temporary file left


# --- standard output and write errors -------------------------------------------------------


def test_records_to_standard_output_and_a_reader_that_goes_away(tmp_path):
    make_pan_video(tmp_path / "in.mp4", count=300, size=(64, 48))
    result = streamcam_cli("in.mp4", "--json", "-", "--backend", "torch", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["frame"] for r in records] == list(range(300))
    # `| head -1`: the reader closes the pipe after one line
    process = start_streamcam("in.mp4", "--json", "-", "--backend", "torch", "-o", "out.mp4", cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert json.loads(process.stdout.readline())["frame"] == 0
    process.stdout.close()
    code = process.wait(120)
    err = process.stderr.read()
    assert code == 0, err
    assert "Traceback" not in err and "Error" not in err and "error" not in err
    assert 1 <= count_frames(tmp_path / "out.mp4") < 300  # it stopped early, its recording finalised


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc")
def test_records_to_a_pipe_named_through_proc(tmp_path):
    """``--json /proc/self/fd/2`` with stderr a pipe: the link leads to "pipe:[N]", written in place."""
    make_pan_video(tmp_path / "in.mp4", count=3, size=(64, 48))
    result = streamcam_cli("in.mp4", "--json", "/proc/self/fd/2", "--backend", "torch", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert [r["frame"] for r in records] == [0, 1, 2]
    assert list(tmp_path.iterdir()) == [tmp_path / "in.mp4"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_write_error_is_one_line_naming_the_file(tmp_path):
    make_pan_video(tmp_path / "in.mp4", count=4)
    result = streamcam_cli("in.mp4", "--json", "/dev/full", "--backend", "torch", cwd=tmp_path)
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert result.returncode == 1, result.stderr
    assert lines == ["streamcam: error: cannot write /dev/full: No space left on device"], result.stderr
    assert "Traceback" not in result.stderr


# --- loading never runs code ------------------------------------------------------------------


class RunsCode:
    """Unpickling this creates a marker file: what a malicious checkpoint would do, harmlessly."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def malicious(tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "MARKER"
    make_pan_video(tmp_path / "in.mp4", count=3)
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": RunsCode(marker)}, tmp_path / "evil.pt")
    with open(tmp_path / "evil.pkl", "wb") as handle:
        pickle.dump(RunsCode(marker), handle)
    return tmp_path, marker


UNTRUSTED = {
    "--model": ["in.mp4", "--model", "evil.pt"],
    "--model, torch, overwrite, debug": ["in.mp4", "--model", "evil.pt", "--backend", "torch", "--overwrite",
                                         "--debug", "-o", "o.mp4"],
    "--weights": ["in.mp4", "--model", "resnet18", "--weights", "evil.pt"],
    "--weights of the default model": ["in.mp4", "--weights", "evil.pt"],
    "a plain pickle": ["in.mp4", "--model", "evil.pkl"],
    "export --model": ["export", "--model", "evil.pt", "-o", "e.onnx"],
    "export --weights": ["export", "--model", "resnet18", "--weights", "evil.pt", "-o", "e.onnx", "--overwrite"],
}


@pytest.mark.parametrize("argv", UNTRUSTED.values(), ids=UNTRUSTED.keys())
def test_a_malicious_pickle_never_runs(malicious, argv):
    folder, marker = malicious
    result = streamcam_cli(*argv, cwd=folder)
    assert not marker.exists()
    if "--debug" in argv:  # the traceback is asked for; the refusal is still the last line
        assert result.returncode == 2 and "--trust-model-file" in result.stderr.splitlines()[-1]
    else:
        assert_refused(result, "--trust-model-file")


def test_a_malicious_pickle_never_runs_from_python(malicious):
    folder, marker = malicious
    for call in (lambda: streamcam.load_model(folder / "evil.pt"),
                 lambda: streamcam.load_model("resnet18", weights=folder / "evil.pt"),
                 lambda: streamcam.Explainer(model=str(folder / "evil.pt"), device="cpu"),
                 lambda: streamcam.Explainer(model=TinyGapNet(), weights=folder / "evil.pt", device="cpu")):
        with pytest.raises(streamcam.InputError, match="trust-model-file"):
            call()
    assert not marker.exists()


def test_the_trust_flag_is_the_only_way_and_it_does_run_the_file(malicious):
    """The opt-in exists and means what it says: with it, the same file's code runs (so the tests above can fail)."""
    folder, marker = malicious
    result = streamcam_cli("in.mp4", "--model", "evil.pkl", "--trust-model-file", cwd=folder)
    assert marker.exists()
    assert result.returncode == 2 and "Traceback" not in result.stderr  # and then: not a model


def test_a_whole_saved_model_loads_only_with_the_flag_and_safetensors_weights_load(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = TinyGapNet().eval()
    torch.save(net, tmp_path / "whole.pt")
    with pytest.raises(streamcam.InputError, match="whole model saved with torch.save"):
        streamcam.load_model(tmp_path / "whole.pt")
    trusted = streamcam.load_model(tmp_path / "whole.pt", trust_model_file=True)
    save_file(net.state_dict(), tmp_path / "tiny.safetensors")
    torch.manual_seed(1)
    from_safetensors = streamcam.load_model(TinyGapNet(), weights=tmp_path / "tiny.safetensors")
    frames = [photo("chelsea")]
    results = [streamcam.Explainer(model=m.module, device="cpu")(frames) for m in (trusted, from_safetensors)]
    assert torch.equal(results[0].class_ids, results[1].class_ids)
    assert torch.allclose(results[0].maps, results[1].maps)
    assert torch.allclose(results[0].scores, streamcam.Explainer(model=net, device="cpu")(frames).scores)


def test_the_export_cache_is_private(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMCAM_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(0)
    loaded = streamcam.load_model(TinyGapNet().eval())
    from streamcam.cache import cached_graph

    path = cached_graph(loaded, "features")
    for folder in (tmp_path / "cache", tmp_path / "cache" / "graphs"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0
    os.chmod(tmp_path / "cache" / "graphs", 0o777)  # loosened by someone: tightened before the entry is used
    assert cached_graph(loaded, "features") == path
    assert stat.S_IMODE((tmp_path / "cache" / "graphs").stat().st_mode) == 0o700


def test_duplicates_are_refused_in_the_api_too(work):
    with pytest.raises(streamcam.InputError, match="same file"):
        streamcam.run([work / "in.mp4", work / "link.mp4"], display=False, output=work / "o_{source}.mp4")
    with pytest.raises(streamcam.InputError, match="is an input"):
        streamcam.run(work / "in.mp4", work / "hard.mp4", display=False, overwrite=True, model=TinyGapNet())
    assert not list(work.glob("o_*"))


def test_a_sink_closed_before_its_first_frame_leaves_nothing(tmp_path):
    from streamcam.sinks import JsonLinesSink, VideoFileSink

    with VideoFileSink(tmp_path / "new" / "out.mp4", 25.0, 64, 48), JsonLinesSink(tmp_path / "new" / "r.jsonl"):
        assert len(list((tmp_path / "new").iterdir())) == 2  # their temporary files, until a frame comes
    assert not (tmp_path / "new").exists()
