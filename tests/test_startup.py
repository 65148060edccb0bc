"""The first second: help, version and every usage error answer before torch is imported.

Each case runs in a fresh interpreter (torch, once imported, stays in ``sys.modules``),
which reports the exit code, the error and whether torch (or torchvision) was loaded.
The wall-clock figures are in BENCHMARKS.md ("Start-up", scripts/startup.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from streamcam.defaults import BACKENDS, METHOD_NAMES, PRECISION_NAMES

from conftest import make_pan_video, run_fresh


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("startup")
    make_pan_video(folder / "in.mp4", count=4)
    (folder / "taken.mp4").write_bytes(b"an earlier recording")
    (folder / "taken.onnx").write_bytes(b"an earlier graph")
    (folder / "two.txt").write_text("cat\ndog\n")
    return folder


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["export", "--help"]])
def test_help_and_version_need_no_torch(args, workdir):
    code, heavy, _, out = run_fresh(args, workdir)
    assert code == 0 and heavy == []
    assert "streamcam" in out


USAGE_ERRORS = [
    (["--bogus"], "unrecognized arguments"),
    (["--top-k", "three", "in.mp4"], "invalid int value"),
    (["missing.mp4"], "no such file"),
    (["in.mp4", "-o", "taken.mp4"], "already exists"),
    (["in.mp4", "-o", "in.mp4", "--overwrite"], "is an input"),
    (["in.mp4", "-o", "out.txt"], ".txt"),
    (["in.mp4", "--class", "espreso"], "Did you mean 'espresso'"),
    (["in.mp4", "--class", "1000"], "out of range"),
    (["in.mp4", "--model", "resnet5O"], "Did you mean resnet50"),
    (["in.mp4", "--model", "models/missing.onnx"], "no such file"),
    (["in.mp4", "--weights", "missing.pth"], "weights file not found"),
    (["in.mp4", "--labels", "missing.txt"], "cannot read labels file"),
    (["in.mp4", "--labels", "two.txt", "--class", "bird"], "no class is called 'bird'"),
    (["in.mp4", "--method", "gradcam+++"], "unknown method"),
    (["in.mp4", "--precision", "fp8"], "invalid choice"),
    (["in.mp4", "--device", "gpu"], "unknown device"),
    (["in.mp4", "--backend", "tensorrt"], "unknown backend"),
    (["in.mp4", "--top-k", "1001"], "top-k must be between 1 and 1000"),
    (["in.mp4", "--codec", "h264", "--crf", "99"], "crf"),
    (["in.mp4", "--json", "/proc/streamcam/x.jsonl"], "cannot write /proc/streamcam/x.jsonl"),
    (["in.mp4", "-o", "taken.mp4/x.mp4"], "taken.mp4 is a file"),
    (["in.mp4", "in.mp4"], "name it once"),
    (["--demo", "in.mp4"], "--demo takes no input"),
    (["--demo", "--class", "espreso"], "Did you mean 'espresso'"),
    (["export", "--opset", "5"], "--opset 5"),
    (["export", "-o", "taken.onnx"], "already exists"),
    (["export", "-o", "graph.txt"], ".onnx"),
    (["export", "--model", "vgg1G", "-o", "v.onnx"], "unknown model 'vgg1G'"),
    (["export", "--weights", "missing.pth", "-o", "w.onnx"], "weights file not found"),
]


@pytest.mark.parametrize("args,fragment", USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS])
def test_usage_errors_answer_before_torch_loads(args, fragment, workdir):
    code, heavy, err, _ = run_fresh(args, workdir)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("streamcam: error:") and fragment in lines[0], err
    assert heavy == [], f"{args} imported {heavy} before refusing"
    assert not (workdir / "graph.txt").exists() and not (workdir / "v.onnx").exists()


def test_names_listed_before_torch_are_the_implemented_ones():
    from streamcam.backends import BACKENDS as implemented_backends
    from streamcam.backends.torch_backend import PRECISIONS
    from streamcam.explainers import METHODS

    assert tuple(METHODS) == METHOD_NAMES
    assert tuple(PRECISIONS) == PRECISION_NAMES
    assert implemented_backends == BACKENDS


def test_torchvision_names_read_from_sources_match_its_registry():
    import torchvision

    from streamcam.model_names import torchvision_classifier_names

    assert sorted(torchvision_classifier_names()) == sorted(torchvision.models.list_models(module=torchvision.models))


def test_shipped_imagenet_names_are_torchvisions():
    from torchvision.models import ResNet50_Weights

    from streamcam.labels import imagenet_labels

    assert list(imagenet_labels()) == ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
