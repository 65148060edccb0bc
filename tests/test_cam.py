"""CAM: the fused batched contraction equals the paper's formula computed naively."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import streamcam
from streamcam.backends.hooks import capture_outputs
from streamcam.explainers import normalise_maps

from conftest import TinyFcNet


def naive_cam(features: torch.Tensor, weight: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
    """Zhou et al. 2016, one image, one class, one channel at a time: M_c = sum_k w_k^c A_k, then ReLU, min-max."""
    batch, channels, height, width = features.shape
    out = torch.zeros(batch, class_ids.shape[1], height, width, dtype=torch.float64)
    for b in range(batch):
        for j, c in enumerate(class_ids[b].tolist()):
            cam = torch.zeros(height, width, dtype=torch.float64)
            for k in range(channels):
                cam += float(weight[c, k]) * features[b, k].double()
            cam = cam.clamp_min(0)
            span = cam.max() - cam.min()
            out[b, j] = (cam - cam.min()) / span if span > 0 else torch.zeros_like(cam)
    return out


def layer_output(explainer: streamcam.Explainer, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), capture_outputs(explainer.model, [explainer.layer]) as captured:
        explainer.model(x)
    return captured[explainer.layer]


def test_fused_cam_matches_naive_formula_on_tiny_net(tiny_gap_net):
    ex = streamcam.Explainer(model=tiny_gap_net, device="cpu", top_k=3)
    frames = [np.random.default_rng(i).integers(0, 256, (64, 80, 3), dtype=np.uint8) for i in range(4)]
    x = ex.preprocess(frames)
    res = ex.explain_tensor(x)
    expected = naive_cam(layer_output(ex, x), tiny_gap_net.fc.weight.detach(), res.class_ids)
    assert res.maps.shape == (4, 3) + expected.shape[2:]
    assert torch.allclose(res.maps.double(), expected, atol=1e-5)


def test_fused_cam_matches_naive_formula_on_default_model(default_explainer, cat, espresso):
    ex = default_explainer
    x = ex.preprocess([cat, espresso])
    res = ex.explain_tensor(x)
    weight = ex.model.get_submodule("classifier").weight.detach()
    expected = naive_cam(layer_output(ex, x), weight, res.class_ids)
    assert res.maps.shape == (2, 1, 7, 7)
    assert torch.allclose(res.maps.double(), expected, atol=1e-5)


def test_logits_are_the_mean_of_the_class_maps(default_explainer, cat):
    """GAP is linear: logits = mean_n(W @ A) + b, which is why CAM needs no extra pass."""
    ex = default_explainer
    x = ex.preprocess([cat])
    features = layer_output(ex, x)
    classifier = ex.model.get_submodule("classifier")
    with torch.no_grad():
        logits = ex.model(x)
        from_maps = torch.einsum("ck,bkn->bcn", classifier.weight, features.flatten(2)).mean(2) + classifier.bias
    assert torch.allclose(logits, from_maps, atol=1e-4)


def test_maps_are_normalised_per_map(default_explainer, cat, espresso):
    res = default_explainer([cat, espresso])
    flat = res.maps.flatten(2)
    assert torch.allclose(flat.amax(2), torch.ones(2, 1))
    assert torch.allclose(flat.amin(2), torch.zeros(2, 1))
    assert res.maps.dtype == torch.float32 and res.class_ids.dtype == torch.int64


def test_normalise_turns_a_constant_map_into_zeros():
    maps = torch.stack([torch.full((3, 3), 2.0), torch.arange(9.0).view(3, 3)])[None]
    out = normalise_maps(maps)
    assert torch.equal(out[0, 0], torch.zeros(3, 3))
    assert out[0, 1].min() == 0 and out[0, 1].max() == 1


def test_top_k_gives_k_classes_in_decreasing_score(default_explainer, cat):
    ex = streamcam.Explainer(model=default_explainer.model, device="cpu", top_k=5)
    res = ex([cat])
    assert res.class_ids.shape == (1, 5) and res.maps.shape == (1, 5, 7, 7)
    scores = res.scores[0]
    assert torch.all(scores[:-1] >= scores[1:])
    assert len(res.labels[0]) == 5


def test_fixed_class_is_explained_instead_of_the_top_one(default_explainer, cat):
    ex = streamcam.Explainer(model=default_explainer.model, device="cpu", target_class="espresso")
    res = ex([cat])
    assert res.labels == [["espresso"]]
    assert res.class_ids.tolist() == [[967]]
    x = ex.preprocess([cat])
    with torch.no_grad():
        expected = ex.model(x).softmax(1)[0, 967]
    assert float(res.scores[0, 0]) == pytest.approx(float(expected), rel=1e-5)


def test_no_hook_remains_after_a_call_or_an_exception(tiny_gap_net):
    ex = streamcam.Explainer(model=tiny_gap_net, device="cpu")
    ex([np.zeros((32, 32, 3), np.uint8)])
    assert all(not m._forward_hooks for m in tiny_gap_net.modules())
    with pytest.raises(RuntimeError):
        ex.explain_tensor(torch.zeros(1, 4, 32, 32))  # wrong channel count: the forward raises
    assert all(not m._forward_hooks for m in tiny_gap_net.modules())
    assert not tiny_gap_net.training


def test_cam_is_refused_on_a_net_without_gap_linear_head():
    with pytest.raises(streamcam.InputError, match="gradcam"):
        streamcam.Explainer(model=TinyFcNet().eval(), device="cpu")


def test_cam_on_a_layer_that_does_not_feed_the_pooling_is_refused(tiny_gap_net):
    with pytest.raises(streamcam.InputError, match="does not feed the classifier"):
        streamcam.Explainer(model=tiny_gap_net, device="cpu", layer="features.0")
