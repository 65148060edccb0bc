"""--backend auto: the fastest engine per method, a cached export, the same results either way."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import streamcam
import streamcam.cache
from streamcam.cache import cache_dir, cached_graph
from streamcam.config import ViewOptions
from streamcam.engine import annotate
from streamcam.engine.pipeline import live_controls

from conftest import correlation, make_pan_video

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("STREAMCAM_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_auto_serves_each_method_from_the_fastest_engine():
    ex = streamcam.Explainer(device="cpu")  # by name, on the CPU: both engines
    assert set(ex.engines) == {"torch"}  # the graph comes with prepare() or the first call
    assert set(ex.prepare().engines) == {"torch", "onnxruntime"}
    expected = {"cam": "onnxruntime", "eigencam": "onnxruntime", "gradcam": "onnxruntime", "layercam": "onnxruntime",
                "guided-backprop": "torch", "guided-gradcam": "torch"}
    for method, engine in expected.items():
        ex.set_method(method)
        assert ex.engine == engine, method
    ex.set_method("gradcam")
    assert ex.engine_for(ex.method, ["blocks.4"]) == "torch"  # the grid needs gradients elsewhere
    other_layer = streamcam.Explainer(device="cpu", method="gradcam", layer="blocks.5")
    assert other_layer.engine == "torch"  # gradients through other layers: torch
    module = streamcam.Explainer(model=ex.model, device="cpu")  # a live nn.Module: torch only
    assert set(module.prepare().engines) == {"torch"}
    assert set(streamcam.Explainer(device="cpu", backend="torch").prepare().engines) == {"torch"}


def test_switching_engines_never_changes_results(photos):
    auto = streamcam.Explainer(device="cpu", top_k=3)
    torch_only = streamcam.Explainer(device="cpu", top_k=3, backend="torch")
    for method in ("cam", "gradcam", "eigencam"):
        auto.set_method(method)
        torch_only.set_method(method)
        a, b = auto(photos), torch_only(photos)
        assert (a.engine, b.engine) == ("onnxruntime", "torch")
        assert a.labels == b.labels, method
        assert torch.allclose(a.scores, b.scores, atol=1e-4), method
        assert all(correlation(a.maps[i, j], b.maps[i, j]) >= 0.999 for i in range(2) for j in range(3)), method


def test_one_cached_export_serves_every_top_k_and_class(fresh_cache, monkeypatch, photos):
    started = time.monotonic()
    first = streamcam.Explainer(device="cpu").prepare()
    first_s = time.monotonic() - started
    assert cache_dir() == fresh_cache
    entries = [path for path in fresh_cache.rglob("*") if path.is_file()]
    assert len(entries) == 1 and entries[0].suffix == ".onnx"

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(streamcam.cache, "write_graph", no_export)
    started = time.monotonic()
    again = streamcam.Explainer(device="cpu").prepare()
    assert time.monotonic() - started < first_s
    # neither the top-k nor the explained class is part of the key: no second export, no second entry
    others = [streamcam.Explainer(device="cpu", top_k=3).prepare(),
              streamcam.Explainer(device="cpu", target_class="espresso").prepare()]
    assert [path for path in fresh_cache.rglob("*") if path.is_file()] == entries
    reference = first.model  # the same weights, explained by the torch engine
    for ex in (first, again, *others):
        a = ex(photos)
        b = streamcam.Explainer(model=reference, device="cpu", backend="torch", labels=ex.labels, top_k=ex.top_k,
                                target_class=ex.target_class)(photos)
        assert (a.engine, b.engine) == ("onnxruntime", "torch")
        assert torch.equal(a.class_ids, b.class_ids), ex.top_k
        assert torch.allclose(a.scores, b.scores, atol=1e-4), ex.top_k
        assert torch.allclose(a.maps, b.maps, atol=1e-4), ex.top_k
    assert others[0](photos).labels[0] == ["Egyptian cat", "tiger cat", "tabby"]
    assert others[1](photos).labels == [["espresso"], ["espresso"]]


def test_a_corrupt_or_stale_entry_is_rebuilt(fresh_cache, caplog):
    caplog.set_level(logging.INFO, logger="streamcam")
    loaded = streamcam.load_model("resnet18", weights="random")
    path = cached_graph(loaded, "layer4")
    stages = ["exporting resnet18 to ONNX: tracing...", "checking the graph...", f"writing {path}"]
    assert [r.getMessage() for r in caplog.records if r.getMessage() in stages] == stages
    assert ".tmp" not in caplog.text  # the entry's own name, never the temporary file's
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # corrupt
    again = cached_graph(loaded, "layer4")
    assert again == path and "corrupt" in caplog.text
    onnx.checker.check_model(onnx.load(str(path)))
    # stale: an entry whose stored key does not match (as if made by another version)
    proto = onnx.load(str(path))
    for prop in proto.metadata_props:
        if prop.key == streamcam.cache.KEY_PROP:
            prop.value = prop.value.replace('"streamcam"', '"streamcam-old"')
    onnx.save(proto, str(path))
    caplog.clear()
    cached_graph(loaded, "layer4")
    assert "another model, version or setting" in caplog.text
    assert not list((fresh_cache / "graphs").glob("*.tmp"))  # no temporary file left behind
    assert cached_graph(loaded, "layer3") != path  # what shapes the graph (here the layer) is another entry
    assert len(list((fresh_cache / "graphs").glob("*.onnx"))) == 2


def test_concurrent_runs_do_not_corrupt_the_cache(fresh_cache):
    script = ("import torch, streamcam; from streamcam.cache import cached_graph; torch.manual_seed(0); "
              "print(cached_graph(streamcam.load_model('resnet18', weights='random'), 'layer4'))")
    env = dict(os.environ, STREAMCAM_CACHE_DIR=str(fresh_cache))
    processes = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=env) for _ in range(3)]
    outputs = [p.communicate(timeout=300) for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs
    paths = {out.strip() for out, _ in outputs}
    assert len(paths) == 1
    onnx.checker.check_model(onnx.load(paths.pop()))
    assert not list((fresh_cache / "graphs").glob("*.tmp"))


def test_records_and_hud_name_the_engine(tmp_path, capsys):
    from streamcam.cli import main

    clip = make_pan_video(tmp_path / "in.mp4", count=4)
    for backend in ("auto", "torch"):
        records = tmp_path / f"{backend}.jsonl"
        assert main([str(clip), "--json", str(records), "--backend", backend, "--no-display"]) == 0
        engines = {json.loads(line)["engine"] for line in records.read_text().splitlines()}
        assert engines == {"onnxruntime" if backend == "auto" else "torch"}
    capsys.readouterr()
    from streamcam.render import draw_hud

    image = np.zeros((120, 400, 3), np.uint8)
    draw_hud(image, 30.0, 0.02, 0, "cam | onnxruntime")
    assert image.any()


def test_live_method_switching_moves_between_engines_without_dropping(tmp_path):
    ex = streamcam.Explainer(device="cpu")
    controls = live_controls(ex)
    clip = make_pan_video(tmp_path / "in.mp4", count=48, size=(160, 120))
    engines_seen = []
    with streamcam.open_source([clip]) as source:
        for item in annotate(source, ex, batch=2, view=ViewOptions(), controls=controls):
            engines_seen.append((item.frame.index, item.method, item.engine))
            if item.frame.index in (8, 20, 32):
                controls.methods = ["cam", "guided-backprop", "eigencam"]
                controls.press("m")
    assert [index for index, _, _ in engines_seen] == list(range(48))  # nothing lost
    pairs = {(method, engine) for _, method, engine in engines_seen}
    assert {("cam", "onnxruntime"), ("guided-backprop", "torch"), ("eigencam", "onnxruntime")} <= pairs
