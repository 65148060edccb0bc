"""ONNX export with feature maps and the in-graph CAM of any top-k or class; onnxruntime against the torch backend."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
import torch

import streamcam
from streamcam.cli import main
from streamcam.export import export_onnx

from conftest import correlation, make_pan_video

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """One exported graph per model, made once: the real default model and random-weight torchvision nets."""
    folder = tmp_path_factory.mktemp("graphs")
    made = {}

    def get(name: str, **kwargs):
        key = (name, tuple(sorted(kwargs.items())))
        if key not in made:
            weights = None if name == streamcam.DEFAULT_MODEL else "random"
            torch.manual_seed(0)
            loaded = streamcam.load_model(name, weights=weights)
            path = export_onnx(folder / f"{name}-{len(made)}.onnx", loaded=loaded, **kwargs)
            made[key] = (path, loaded)
        return made[key]

    return get


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


@pytest.mark.parametrize("name", [streamcam.DEFAULT_MODEL, "resnet18", "resnet50"])
def test_graph_matches_the_torch_backend(graphs, photos, name):
    path, loaded = graphs(name)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert [o.name for o in proto.graph.output] == ["logits", "features", "class_ids", "scores", "cam"]
    assert [i.name for i in proto.graph.input] == ["frames", "top_k", "target_class"]
    torch_ex = streamcam.Explainer(model=loaded.module, device="cpu", top_k=3, labels=loaded.labels)
    onnx_ex = streamcam.Explainer(model=path, device="cpu", top_k=3)
    assert onnx_ex.model is None and onnx_ex.layer == torch_ex.layer and onnx_ex.labels == torch_ex.labels
    x = torch_ex.preprocess(photos)
    ours, theirs = onnx_ex.backend.forward(x, [onnx_ex.layer]), torch_ex.backend.forward(x, [torch_ex.layer])
    assert relative_error(ours.logits, theirs.logits) <= 1e-4
    a, b = onnx_ex.explain_tensor(x), torch_ex.explain_tensor(x)
    assert torch.equal(a.class_ids, b.class_ids)
    assert torch.allclose(a.scores, b.scores, atol=1e-4)
    for i in range(2):
        for j in range(3):
            assert correlation(a.maps[i, j], b.maps[i, j]) >= 0.999
    if name == streamcam.DEFAULT_MODEL:
        assert a.labels[0][0] == "Egyptian cat" and a.labels[1][0] == "espresso"


def test_dynamic_batch_and_metadata(graphs, photos):
    path, loaded = graphs(streamcam.DEFAULT_MODEL)
    ex = streamcam.Explainer(model=path, device="cpu")
    for count in (1, 3):
        res = ex(photos[:1] * count)
        assert res.maps.shape == (count, 1, 7, 7)
    meta = ex.backend.metadata
    assert (meta.layer, meta.input_size, meta.mean) == ("bn2", 224, (0.5, 0.5, 0.5))
    assert len(meta.labels) == 1000 and meta.labels[967] == "espresso"
    weight = loaded.module.get_submodule(loaded.anatomy.classifier).weight.detach().float()
    assert torch.equal(ex.classifier_weight, weight)  # W, read from the graph itself
    assert "streamcam.top_k" not in {p.key for p in onnx.load(str(path)).metadata_props}


def test_net_without_gap_head_exports_logits_and_features(graphs, photos):
    path, loaded = graphs("mobilenet_v3_large")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert [o.name for o in proto.graph.output] == ["logits", "features"]
    assert [i.name for i in proto.graph.input] == ["frames"]
    torch_ex = streamcam.Explainer(model=loaded.module, device="cpu", method="eigencam")
    with pytest.raises(streamcam.InputError, match="GAP"):
        streamcam.Explainer(model=path, device="cpu")  # cam
    with pytest.raises(streamcam.InputError, match="--backend torch"):
        streamcam.Explainer(model=path, device="cpu", method="gradcam")
    onnx_ex = streamcam.Explainer(model=path, device="cpu", method="eigencam")
    x = torch_ex.preprocess(photos)
    ours, theirs = onnx_ex.backend.forward(x, [onnx_ex.layer]), torch_ex.backend.forward(x, [torch_ex.layer])
    assert relative_error(ours.logits, theirs.logits) <= 1e-4
    assert relative_error(ours.features[onnx_ex.layer], theirs.features[torch_ex.layer]) <= 1e-4
    a, b = onnx_ex.explain_tensor(x), torch_ex.explain_tensor(x)
    assert torch.allclose(a.maps, b.maps, atol=1e-3)  # Eigen-CAM from the graph's features


def test_gradcam_and_eigencam_are_served_from_the_graph(graphs, photos):
    path, loaded = graphs(streamcam.DEFAULT_MODEL)
    for method in ("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam"):
        onnx_ex = streamcam.Explainer(model=path, device="cpu", method=method, top_k=2)
        torch_ex = streamcam.Explainer(model=loaded.module, device="cpu", method=method, top_k=2)
        a, b = onnx_ex(photos), torch_ex(photos)
        assert torch.equal(a.class_ids, b.class_ids), method
        assert torch.allclose(a.maps, b.maps, atol=1e-3), method
    with pytest.raises(streamcam.InputError, match="--backend torch"):
        streamcam.Explainer(model=path, device="cpu", method="guided-backprop")
    assert "guided-gradcam" not in streamcam.Explainer(model=path, device="cpu").available_methods


def test_one_graph_serves_every_top_k_and_class(graphs, photos):
    path, loaded = graphs(streamcam.DEFAULT_MODEL)
    for options in ({"target_class": "espresso"}, {"top_k": 1}, {"top_k": 5}):
        a = streamcam.Explainer(model=path, device="cpu", **options)(photos)
        b = streamcam.Explainer(model=loaded.module, device="cpu", labels=loaded.labels, **options)(photos)
        assert torch.equal(a.class_ids, b.class_ids), options
        assert torch.allclose(a.scores, b.scores, atol=1e-4) and torch.allclose(a.maps, b.maps, atol=1e-3), options
    assert a.maps.shape == (2, 5, 7, 7)
    # the graph itself chooses the classes and computes their CAM, from its top_k and target_class inputs
    graph = streamcam.Explainer(model=path, device="cpu").backend
    x = streamcam.Explainer(model=path, device="cpu").preprocess(photos)
    top = graph.forward(x, [graph.layer], top_k=4)
    assert top.cam.shape == (2, 4, 7, 7) and top.class_ids[:, 0].tolist() == [285, 967]  # Egyptian cat, espresso
    assert torch.equal(top.class_ids, top.logits.topk(4, dim=1).indices)
    chosen = graph.forward(x, [graph.layer], top_k=1, target_class=967)
    assert chosen.class_ids.tolist() == [[967], [967]] and chosen.cam.shape == (2, 1, 7, 7)
    assert torch.allclose(chosen.scores[:, 0], top.logits.softmax(dim=1)[:, 967])


def test_fp16_graph(graphs, photos, tmp_path):
    path, loaded = graphs(streamcam.DEFAULT_MODEL, fp16=True)
    assert streamcam.Explainer(model=path, device="cpu").backend.metadata.precision == "fp16"
    res = streamcam.Explainer(model=path, device="cpu")(photos)
    assert res.labels == [["Egyptian cat"], ["espresso"]]
    reference = streamcam.Explainer(model=loaded.module, device="cpu")(photos)
    assert all(correlation(res.maps[i, 0], reference.maps[i, 0]) >= 0.99 for i in range(2))


def test_the_cpu_provider_is_chosen_quietly(graphs, capfd):
    path, _ = graphs(streamcam.DEFAULT_MODEL)
    capfd.readouterr()
    ex = streamcam.Explainer(model=path, device="cpu")
    assert ex.backend.session.get_providers() == ["CPUExecutionProvider"]
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


def test_the_pipeline_on_onnxruntime_agrees_with_torch(graphs, tmp_path):
    path, loaded = graphs(streamcam.DEFAULT_MODEL)
    clip = make_pan_video(tmp_path / "in.mp4", count=8)
    summaries = {}
    for backend, model in (("onnxruntime", path), ("torch", loaded.module)):
        records = tmp_path / f"{backend}.jsonl"
        ex = streamcam.Explainer(model=model, device="cpu", backend=backend)
        summaries[backend] = streamcam.run(clip, tmp_path / f"{backend}.mp4", display=False, json=records,
                                           explainer=ex)
    assert summaries["onnxruntime"].frames == summaries["torch"].frames == 8
    onnx_lines = (tmp_path / "onnxruntime.jsonl").read_text().splitlines()
    torch_lines = (tmp_path / "torch.jsonl").read_text().splitlines()
    import json

    for mine, theirs in zip(onnx_lines, torch_lines):
        a, b = json.loads(mine)["predictions"][0], json.loads(theirs)["predictions"][0]
        assert a["label"] == b["label"] and a["score"] == pytest.approx(b["score"], abs=1e-4)


def test_a_named_model_on_onnxruntime_is_exported_on_the_fly(photos):
    ex = streamcam.Explainer(model="resnet18", weights="random", device="cpu", backend="onnxruntime", top_k=2)
    assert ex.backend.name == "onnxruntime" and ex.model is not None
    torch_ex = streamcam.Explainer(model=ex.model, device="cpu", top_k=2)
    a, b = ex(photos), torch_ex(photos)
    assert torch.equal(a.class_ids, b.class_ids) and torch.allclose(a.maps, b.maps, atol=1e-3)


def test_bad_graphs_and_backend_choices(tmp_path, graphs):
    plain = tmp_path / "plain.onnx"  # a valid graph, but not one of ours
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info
    graph = helper.make_graph([helper.make_node("Identity", ["frames"], ["logits"])], "plain",
                              [value("frames", TensorProto.FLOAT, [1, 3])], [value("logits", TensorProto.FLOAT, [1, 3])])
    onnx.save(helper.make_model(graph), str(plain))
    with pytest.raises(streamcam.InputError, match="not exported by streamcam"):
        streamcam.Explainer(model=plain, device="cpu")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(streamcam.InputError, match="corrupt.onnx"):
        streamcam.Explainer(model=corrupt, device="cpu")
    path, _ = graphs(streamcam.DEFAULT_MODEL)
    with pytest.raises(streamcam.InputError, match="onnxruntime"):
        streamcam.Explainer(model=path, device="cpu", backend="torch")
    with pytest.raises(streamcam.InputError, match="explains layer bn2"):
        streamcam.Explainer(model=path, device="cpu", layer="blocks.4")
    with pytest.raises(streamcam.InputError, match="multi-layer"):
        streamcam.Explainer(model=path, device="cpu", layers="auto")


def test_export_from_the_cli(tmp_path, capsys, photos):
    out = tmp_path / "models" / "resnet18.onnx"
    code = main(["export", "--model", "resnet18", "--weights", "random", "-o", str(out), "--opset", "18",
                 "--top-k", "3"])  # accepted for old scripts, ignored: the graph serves every top-k
    err = capsys.readouterr().err
    assert code == 0, err
    lines = [line.removeprefix("streamcam: ") for line in err.splitlines()]
    stages = ["export --top-k is no longer needed and is ignored", "exporting resnet18 to ONNX: tracing...",
              "checking the graph...", f"writing {out}",
              f"exported resnet18 (layer layer4, opset 18; outputs logits, features, class_ids, scores, cam) "
              f"to {out}"]
    found = [next((i for i, line in enumerate(lines) if line.startswith(stage)), None) for stage in stages]
    assert None not in found and found == sorted(found), err  # every stage, in order, naming the final file
    assert ".partial" not in err
    assert streamcam.Explainer(model=out, device="cpu", top_k=7)(photos).maps.shape == (2, 7, 7, 7)
    assert main(["export", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "[--top-k" not in help_text and "\n  --top-k" not in help_text  # not an option to offer any more
    assert main(["export", "--model", "resnet81", "-o", str(tmp_path / "other.onnx")]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_export_onnx_top_k_is_deprecated_and_ignored(tmp_path, photos):
    from conftest import TinyGapNet

    torch.manual_seed(0)
    net = TinyGapNet().eval()
    with pytest.warns(DeprecationWarning, match="every top-k"):
        path = streamcam.export_onnx(tmp_path / "tiny.onnx", model=net, top_k=2)
    a = streamcam.Explainer(model=path, device="cpu", top_k=4)(photos)
    b = streamcam.Explainer(model=net, device="cpu", top_k=4)(photos)
    assert torch.equal(a.class_ids, b.class_ids) and torch.allclose(a.maps, b.maps, atol=1e-4)


class OldExplainingGraph(torch.nn.Module):
    """What streamcam 0.1 exported: ``softmax -> topk(k) -> CAM`` inside the graph, k baked in."""

    def __init__(self, model: torch.nn.Module, k: int) -> None:
        super().__init__()
        self.model, self.k = model, k

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.model.features(frames)
        logits = self.model.fc(features.mean(dim=(2, 3)))
        scores, class_ids = logits.softmax(dim=1).topk(self.k, dim=1)
        cam = torch.bmm(self.model.fc.weight[class_ids], features.flatten(2)).view(*class_ids.shape, *features.shape[2:])
        return logits, features, class_ids, scores, cam


def test_a_graph_exported_with_a_fixed_top_k_still_serves_every_k_and_class(tmp_path, photos, caplog):
    """Files users already have: no top_k input, outputs class_ids, scores and cam for k = 2, and
    ``streamcam.top_k`` = 2 in the metadata. The backend reads their logits and features only."""
    from conftest import TinyGapNet

    torch.manual_seed(0)
    net = TinyGapNet().eval()
    new = onnx.load(str(streamcam.export_onnx(tmp_path / "new.onnx", model=net)))  # for its metadata
    old = tmp_path / "old.onnx"
    with torch.no_grad():
        torch.onnx.export(OldExplainingGraph(net, 2).eval(), (torch.zeros(2, 3, 224, 224),), str(old),
                          input_names=["frames"], output_names=["logits", "features", "class_ids", "scores", "cam"],
                          dynamic_shapes={"frames": {0: torch.export.Dim("batch", min=1, max=1024)}},
                          opset_version=18, dynamo=True, external_data=False, verbose=False)
    proto = onnx.load(str(old))
    for prop in [*new.metadata_props, onnx.StringStringEntryProto(key="streamcam.top_k", value="2")]:
        proto.metadata_props.add(key=prop.key, value=prop.value)
    onnx.save(proto, str(old))
    assert len(onnx.load(str(old)).graph.output) == 5
    caplog.set_level(logging.INFO, logger="streamcam")
    assert streamcam.Explainer(model=old, device="cpu").backend.forward(torch.zeros(1, 3, 224, 224), ["features"]).cam is None
    assert "comes from an earlier streamcam" in caplog.text  # and says how to get the faster graph
    for options in ({"top_k": 1}, {"top_k": 2}, {"top_k": 5}, {"target_class": 3}):
        a = streamcam.Explainer(model=old, device="cpu", **options)(photos)
        b = streamcam.Explainer(model=net, device="cpu", backend="torch", **options)(photos)
        assert torch.equal(a.class_ids, b.class_ids), options
        assert torch.allclose(a.scores, b.scores, atol=1e-4) and torch.allclose(a.maps, b.maps, atol=1e-4), options


@pytest.mark.cuda
def test_iobinding_on_cuda_matches_the_cpu(graphs, photos):
    path, _ = graphs(streamcam.DEFAULT_MODEL)
    gpu = streamcam.Explainer(model=path, device="cuda", top_k=3)
    cpu = streamcam.Explainer(model=path, device="cpu", top_k=3)
    assert gpu.backend.session.get_providers()[0] == "CUDAExecutionProvider"
    x = gpu.preprocess(photos)
    result = gpu.backend.forward(x, [gpu.layer])
    assert result.logits.device.type == "cuda" and result.cam.device.type == "cuda"  # never through the host
    a, b = gpu(photos), cpu(photos)
    assert torch.equal(a.class_ids.cpu(), b.class_ids)
    assert all(correlation(a.maps[i, j].cpu(), b.maps[i, j]) >= 0.999 for i in range(2) for j in range(3))


@pytest.fixture(scope="module")
def tiny_graph(tmp_path_factory):
    """A tiny GAP + linear net (5 classes) and its exported graph."""
    from conftest import TinyGapNet

    torch.manual_seed(0)
    net = TinyGapNet().eval()
    return streamcam.export_onnx(tmp_path_factory.mktemp("tiny") / "tiny.onnx", model=net), net


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_iobinding_gives_what_a_plain_run_gives_for_every_k_and_class(tiny_graph, batch):
    """The bound run against onnxruntime's own ``session.run`` (the host path before IOBinding), bit for
    bit, and against the torch backend, for several top-k and target classes."""
    path, net = tiny_graph
    graph = streamcam.Explainer(model=path, device="cpu").backend
    torch.manual_seed(batch)
    x = torch.rand(batch, 3, 224, 224)
    for top_k, target in [(1, None), (3, None), (5, None), (1, 4), (2, 0)]:
        bound = graph.forward(x, [graph.layer], top_k=top_k, target_class=target)
        feeds = {"frames": x.numpy(), "top_k": np.array(top_k, np.int64),
                 "target_class": np.array(-1 if target is None else target, np.int64)}
        plain = dict(zip(graph.outputs, graph.session.run(list(graph.outputs), feeds)))
        for name, value in [("logits", bound.logits), ("features", bound.features[graph.layer]),
                            ("class_ids", bound.class_ids), ("scores", bound.scores), ("cam", bound.cam)]:
            assert torch.equal(value, torch.from_numpy(plain[name])), (name, top_k, target)
        assert bound.cam.shape == (batch, top_k, 56, 56)
        reference = streamcam.Explainer(model=net, device="cpu", backend="torch", top_k=top_k,
                                        target_class=target).explain_tensor(x)
        if target is None:  # with a target, the torch side explains that class alone (k = 1)
            assert torch.equal(bound.class_ids, reference.class_ids), (top_k, target)
            assert torch.allclose(bound.scores, reference.scores, atol=1e-5)
        else:
            assert (bound.class_ids[:, 0] == target).all() and torch.equal(bound.class_ids[:, :1], reference.class_ids)


def test_the_cpu_runs_through_iobinding(tiny_graph, monkeypatch):
    """CI runs the binding code a GPU runs: ``run_with_iobinding``, never ``session.run``."""
    path, _ = tiny_graph
    ex = streamcam.Explainer(model=path, device="cpu", top_k=2)
    session = ex.backend.session
    calls = []
    bound_run = session.run_with_iobinding
    monkeypatch.setattr(session, "run_with_iobinding", lambda *args: calls.append(args) or bound_run(*args))
    monkeypatch.setattr(session, "run", lambda *args, **kwargs: pytest.fail("session.run was called"))
    res = ex([np.zeros((40, 60, 3), np.uint8)] * 3)
    assert len(calls) == 1 and res.maps.shape == (3, 2, 56, 56)


def test_output_shapes_name_the_batch_and_k_and_refuse_other_symbols(tmp_path):
    from streamcam.backends.onnx_backend import output_shapes

    shapes = {"logits": ["batch", 5], "features": ["batch", 8, 7, 7], "class_ids": ["batch", "u0"],
              "scores": ["s0", "u0"], "cam": ["batch", "u0", 7, 7]}
    assert output_shapes(shapes, tmp_path) == {
        "logits": ("batch", 5), "features": ("batch", 8, 7, 7), "class_ids": ("batch", "k"),
        "scores": ("batch", "k"), "cam": ("batch", "k", 7, 7)}
    with pytest.raises(streamcam.InputError, match="features has a size unknown before the run"):
        output_shapes({"features": ["batch", 8, "h", "w"]}, tmp_path)
