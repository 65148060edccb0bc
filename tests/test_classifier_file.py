"""A trained classifier as one file: a GAP + linear head on any backbone, saved and read back whole.

The meaning test: the default model's backbone with a 3-class head made of its own
ImageNet rows (Egyptian cat, espresso, goldfish), stored under new names, must
call the real cat photo "kitty" and the espresso "coffee" once read back, through
the API and the command line alike.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

import streamcam
from streamcam.anatomy import probe
from streamcam.backends.hooks import capture_outputs
from streamcam.demo import photo
from streamcam.classifier_file import FORMAT, FORMAT_KEY, ClassifierInfo, is_classifier_file, read_classifier, \
    save_classifier
from streamcam.errors import InputError
from streamcam.head import REPLACE, WRAP, head_parameters, with_new_head
from streamcam.labels import imagenet_labels
from streamcam.models import load_model

from conftest import assert_one_line_error, run_cli, run_fresh

# name, --weights, the head with_new_head must make
BACKBONES = [("efficientnet_lite0", None, REPLACE), ("resnet18", "random", REPLACE),
             ("mobilenet_v3_small", "random", WRAP), ("vgg11", "random", WRAP)]
OURS = ("kitty", "coffee", "fish")  # our names for ImageNet's classes below
IMAGENET_ROWS = ("Egyptian cat", "espresso", "goldfish")


@functools.cache
def headed(name: str, weights: str | None, classes: int = 3):
    """``name`` loaded, its layer's output on the cat before the surgery, then the model with its new head."""
    loaded = load_model(name, weights=weights)
    x = _tensor(photo("chelsea"), loaded.input_size, loaded.mean, loaded.std)
    layer = loaded.anatomy.default_layer
    with capture_outputs(loaded.module, [layer]) as captured, torch.no_grad():
        loaded.module(x)
    torch.manual_seed(0)
    model, spec = with_new_head(loaded.module, loaded.anatomy, classes, input_size=loaded.input_size)
    return loaded, captured[layer], model.eval(), spec


def _tensor(image, size: int, mean, std) -> torch.Tensor:
    """A BGR photo as the model's (1, 3, size, size) input."""
    rgb = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)[:, :, ::-1].copy()
    x = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255)
    return ((x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None])[None]


def _info(loaded, spec, labels=("a", "b", "c"), **changes) -> ClassifierInfo:
    fields = dict(architecture=loaded.name, head=spec, labels=labels, input_size=loaded.input_size,
                  mean=loaded.mean, std=loaded.std, layer=spec.layer, training={"epochs": 0})
    return ClassifierInfo(**{**fields, **changes})


@pytest.fixture(scope="module")
def cat_file(tmp_path_factory) -> Path:
    """The default model with a head of three of its own ImageNet rows, saved under our names."""
    loaded, _, model, spec = headed.__wrapped__("efficientnet_lite0", None)  # a model of its own: changed below
    original = load_model().module.get_submodule(loaded.anatomy.classifier)
    rows = [imagenet_labels().index(name) for name in IMAGENET_ROWS]
    with torch.no_grad():
        model.get_submodule(spec.module).weight.copy_(original.weight[rows])
        model.get_submodule(spec.module).bias.copy_(original.bias[rows])
    path = tmp_path_factory.mktemp("classifier") / "pets.safetensors"
    save_classifier(path, model, _info(loaded, spec, OURS, training={"epochs": 0, "rows": list(IMAGENET_ROWS)}))
    return path


# --- the head ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,weights,kind", BACKBONES, ids=[b[0] for b in BACKBONES])
def test_the_new_head_is_gap_plus_one_linear_layer_on_the_same_backbone(name, weights, kind, cat):
    loaded, features_before, model, spec = headed(name, weights)
    assert spec.kind == kind and spec.classes == 3
    anatomy = probe(model, loaded.input_size)
    linear = model.get_submodule(spec.module)
    assert anatomy.classifier == spec.module and isinstance(linear, nn.Linear)
    assert (linear.in_features, linear.out_features) == (spec.channels, 3)
    assert spec.layer in anatomy.gap_layers and anatomy.default_layer == spec.layer
    assert [id(p) for p in head_parameters(model, spec)] == [id(linear.weight), id(linear.bias)]
    assert torch.all(linear.bias == 0) and 0.005 < float(linear.weight.detach().std()) < 0.02  # N(0, 0.01^2)
    if kind == WRAP:  # the old head is gone: no other Linear is left
        assert [n for n, m in model.named_modules() if isinstance(m, nn.Linear)] == [spec.module]
    # the backbone computes what it did before the surgery
    x = _tensor(cat, loaded.input_size, loaded.mean, loaded.std)
    with capture_outputs(model, [spec.layer]) as captured, torch.no_grad():
        logits = model(x)
    assert torch.equal(captured[spec.layer], features_before)
    assert torch.allclose(logits, linear(features_before.mean(dim=(2, 3))), atol=1e-5)


# (An untrained MobileNetV3's features vanish, about 1e-8: its maps are flat. VGG shows a wrapped head.)
EXPLAINED = [b for b in BACKBONES if b[0] != "mobilenet_v3_small"]


@pytest.mark.parametrize("name,weights,kind", EXPLAINED, ids=[b[0] for b in EXPLAINED])
def test_cam_and_gradcam_explain_the_new_head_alike(name, weights, kind, cat):
    """At the pooled layer Grad-CAM's weights are W[c] / hw: its map is CAM's. Equal maps show that the
    gradient reaches the layer through a wrapped head too."""
    _, _, model, spec = headed(name, weights)
    maps = {}
    for method in ("cam", "gradcam"):  # all three classes: a random head may find no evidence for some
        with streamcam.Explainer(model=model, device="cpu", method=method, backend="torch", top_k=3) as ex:
            assert ex.layer == spec.layer
            maps[method] = ex([cat]).maps
    assert maps["cam"].shape[:2] == (1, 3) and float(maps["cam"].max()) == pytest.approx(1.0)
    assert torch.allclose(maps["cam"], maps["gradcam"], atol=1e-4)


def test_a_net_whose_modules_do_not_chain_to_the_layer_is_refused():
    class Between(nn.Module):  # an operation outside any module between stem and body: no chain of modules
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.body = nn.Conv2d(4, 4, 3, padding=1)
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 16 * 16, 2))

        def forward(self, x):
            return self.head(self.body(torch.relu(self.stem(x))))

    module = Between().eval()
    with pytest.raises(InputError, match="cannot give Between a GAP \\+ linear head at body"):
        with_new_head(module, probe(module, 16), 2, input_size=16)


# --- the file ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,weights,kind", BACKBONES, ids=[b[0] for b in BACKBONES])
def test_a_saved_classifier_reads_back_with_the_same_logits_labels_layer_and_preprocessing(
        name, weights, kind, cat, tmp_path):
    loaded, _, model, spec = headed(name, weights)
    path = tmp_path / f"{name}.safetensors"
    info = _info(loaded, spec, ("cat", "dog", "bird"))
    save_classifier(path, model, info)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left beside it
    (tmp_path / "fresh").touch()
    assert path.stat().st_mode == (tmp_path / "fresh").stat().st_mode  # as any new file here, not owner-only
    assert is_classifier_file(path)

    again, read_info = read_classifier(path)
    assert read_info == info and not again.training
    x = _tensor(cat, loaded.input_size, loaded.mean, loaded.std)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))

    reloaded = load_model(path)
    assert (reloaded.name, reloaded.labels, reloaded.input_size) == (name, ["cat", "dog", "bird"], loaded.input_size)
    assert (reloaded.mean, reloaded.std, reloaded.anatomy.default_layer) == (loaded.mean, loaded.std, spec.layer)


def test_the_file_names_its_classes_and_explains_at_its_layer(cat_file, photos, default_explainer):
    with streamcam.Explainer(model=cat_file, device="cpu") as ex:
        assert (ex.model_name, ex.labels, ex.layer, ex.input_size) == ("pets", list(OURS), "bn2", 224)
        assert ex.explained.mean == (0.5, 0.5, 0.5)
        result = ex(photos)
    assert [row[0] for row in result.labels] == ["kitty", "coffee"]
    assert result.method == "cam"
    # the same classes and scores as the full ImageNet model, restricted to those three rows
    with torch.no_grad():
        logits = default_explainer.model(default_explainer.preprocess(photos)).float()
    rows = [imagenet_labels().index(name) for name in IMAGENET_ROWS]
    expected = logits[:, rows].softmax(dim=1).max(dim=1).values
    assert torch.allclose(torch.as_tensor(result.scores[:, 0]), expected, atol=1e-4)


def test_the_stored_layer_wins_and_options_still_override(cat_file, tmp_path):
    other = _rewritten(cat_file, tmp_path / "deeper.safetensors", layer="blocks.5")
    assert load_model(other).anatomy.default_layer == "blocks.5"
    with streamcam.Explainer(model=other, device="cpu", method="gradcam") as ex:
        assert ex.layer == "blocks.5"
    with streamcam.Explainer(model=other, device="cpu", layer="bn2", labels=["a", "b", "c"]) as ex:
        assert (ex.layer, ex.labels, ex.method.name) == ("bn2", ["a", "b", "c"], "cam")


@pytest.mark.usefixtures("headless")
def test_the_command_line_explains_with_the_file_alone(cat_file, photos, tmp_path, capsys):
    inputs = []
    for name, image in zip(("cat", "coffee"), photos):
        inputs.append(tmp_path / f"{name}.jpg")
        cv2.imwrite(str(inputs[-1]), image)
    records = tmp_path / "records.jsonl"
    code, err = run_cli(capsys, *map(str, inputs), "--model", str(cat_file), "-o", str(tmp_path / "out"),
                        "--json", str(records), "--device", "cpu")
    assert code == 0, err
    labels = {Path(r["file"]).stem: r["predictions"][0]["label"] for r in map(json.loads, records.open())}
    assert labels == {"cat": "kitty", "coffee": "coffee"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cat.jpg", "coffee.jpg"]


@pytest.mark.usefixtures("headless")
def test_export_takes_the_file_alone_and_the_graph_keeps_its_classes_and_layer(cat_file, photos, tmp_path, capsys):
    graph = tmp_path / "pets.onnx"
    code, err = run_cli(capsys, "export", "--model", str(cat_file), "-o", str(graph))
    assert code == 0, err
    with streamcam.Explainer(model=graph, device="cpu") as ex:
        assert (ex.labels, ex.layer) == (list(OURS), "bn2")
        assert [row[0] for row in ex(photos).labels] == ["kitty", "coffee"]


# --- damaged and foreign files ------------------------------------------------------------------------


def _rewritten(source: Path, target: Path, drop: str | None = None, **metadata: str) -> Path:
    """``source``'s tensors (but ``drop``) and metadata (with ``metadata`` changed) written to ``target``."""
    with safe_open(source, "pt") as opened:
        stored = opened.metadata()
    tensors = {k: v for k, v in load_file(source).items() if k != drop}
    save_file(tensors, target, metadata={**stored, **metadata})
    return target


TAMPERED = {
    "newer format": (dict(**{FORMAT_KEY: "classifier/9"}), "this streamcam reads classifier/1"),
    "labels not JSON": (dict(labels="kitty, coffee, fish"), "'labels' is not valid JSON"),
    "too few labels": (dict(labels='["kitty", "coffee"]'), "2 labels for a head of 3 classes"),
    "head edited": (dict(head='{"kind": "graft"}'), "'head' is not a head description"),
    "size edited": (dict(input_size="big"), "'input_size' is not a positive integer"),
    "std edited": (dict(std="[0.5, 0.5]"), "std must be 3 numbers"),
    "unknown architecture": (dict(architecture="resnet5O"), "unknown model 'resnet5O'"),
    "architecture of another shape": (dict(architecture="resnet18"), "ResNet has no module"),
    "layer elsewhere": (dict(layer="nowhere"), "names layer nowhere"),
    "layer not convolutional": (dict(layer="classifier"), "layer 'classifier' is not a convolutional layer"),
    "layer not a block": (dict(layer="bn2.drop"), "bn2.drop only passes features on"),
}


@pytest.mark.parametrize("change", TAMPERED, ids=list(TAMPERED))
def test_edited_metadata_is_refused_in_one_line_naming_the_file(change, cat_file, tmp_path):
    metadata, fragment = TAMPERED[change]
    path = _rewritten(cat_file, tmp_path / "edited.safetensors", **metadata)
    with pytest.raises(InputError) as error:
        load_model(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message and fragment in message, message


def test_a_missing_tensor_a_cut_file_and_foreign_files_are_refused(cat_file, tmp_path):
    missing = _rewritten(cat_file, tmp_path / "missing.safetensors", drop="classifier.bias")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(cat_file.read_bytes()[: cat_file.stat().st_size // 2])
    state = load_model("resnet18", weights="random").module.state_dict()
    pickled, plain = tmp_path / "pickled.safetensors", tmp_path / "plain.safetensors"
    torch.save(state, pickled)
    save_file(state, plain)
    cases = {missing: "missing keys [classifier.bias]", cut: "cannot read", pickled: "is not a safetensors file",
             plain: "with --model NAME (its architecture)"}
    for path, fragment in cases.items():
        with pytest.raises(InputError) as error:
            load_model(path)
        message = str(error.value)
        assert "\n" not in message and str(path) in message and fragment in message, message
    assert not any(is_classifier_file(p) for p in (pickled, plain, tmp_path / "nothing.safetensors", tmp_path))
    # a plain state dict is still what --weights takes
    assert load_model("resnet18", weights=plain).anatomy.num_classes == 1000


def test_is_classifier_file_reads_the_header_without_torch(cat_file, tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, plain)
    script = (f"import sys; from streamcam.classifier_file import is_classifier_file as is_it; "
              f"assert is_it({str(cat_file)!r}) and not is_it({str(plain)!r}) and not is_it('nothing'); "
              f"assert 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_the_command_line_refuses_a_file_that_is_not_a_classifier_before_torch_loads(cat_file, tmp_path):
    cv2.imwrite(str(tmp_path / "in.jpg"), photo("chelsea"))
    (tmp_path / "fake.safetensors").write_bytes(b"\x80\x04\x95 a pickle, renamed")
    save_file({"w": torch.zeros(2)}, tmp_path / "plain.safetensors")
    (tmp_path / "pets.safetensors").write_bytes(cat_file.read_bytes())
    cases = [(["in.jpg", "--model", "missing.safetensors"], "no such file"),
             (["in.jpg", "--model", "fake.safetensors"], "is not a safetensors file"),
             (["in.jpg", "--model", "plain.safetensors"], "--weights plain.safetensors with --model NAME"),
             (["in.jpg", "--model", "pets.safetensors", "--top-k", "4"], "top-k must be between 1 and 3"),
             (["in.jpg", "--model", "pets.safetensors", "--class", "kitten"], "Did you mean 'kitty'"),
             (["export", "--model", "fake.safetensors", "-o", "x.onnx"], "is not a safetensors file")]
    for args, fragment in cases:
        code, heavy, err, _ = run_fresh(args, tmp_path)
        assert_one_line_error(code, err, fragment)
        assert heavy == [], f"{args} imported {heavy} before refusing"


def test_info_that_does_not_hold_together_is_refused_before_anything_is_written(tmp_path):
    loaded, _, model, spec = headed("resnet18", "random")
    with pytest.raises(ValueError, match="2 labels for a head of 3 classes"):
        _info(loaded, spec, ("a", "b"))
    with pytest.raises(ValueError, match="does not have"):
        save_classifier(tmp_path / "x.safetensors", model, _info(loaded, spec, layer="layer9"))
    assert list(tmp_path.iterdir()) == []
    assert json.loads(_info(loaded, spec).to_metadata()["head"])["kind"] == REPLACE
    assert _info(loaded, spec).to_metadata()[FORMAT_KEY] == FORMAT
