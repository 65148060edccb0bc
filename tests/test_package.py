"""The package's face: its public names load, and ``python -m streamcam`` is the command."""

from __future__ import annotations

import streamcam

from conftest import streamcam_cli

# DESIGN.md's public names: what users import from ``streamcam``.
PUBLIC = {
    "AnnotatedFrame", "DEFAULT_MODEL", "Explainer", "Explanation", "Frame", "InputError", "METHODS", "Prediction",
    "RunConfig", "RunSummary", "StageError", "StreamcamError", "VideoInfo", "ViewOptions", "annotate",
    "export_onnx", "load_model", "open_source", "run",
}


def test_all_lists_the_public_names_and_each_one_loads():
    assert set(streamcam.__all__) == PUBLIC
    for name in streamcam.__all__:
        assert getattr(streamcam, name) is not None, name
    assert set(streamcam.__all__) <= set(dir(streamcam))


def test_python_dash_m_streamcam_is_the_command():
    done = streamcam_cli("--version", timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"streamcam {streamcam.__version__}"
    done = streamcam_cli("--bogus", timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("streamcam: error:")
