"""--precision: the model runs in fp16 or bf16 (autocast), the maps' maths stays in fp32."""

from __future__ import annotations

import pytest
import torch

import streamcam

from conftest import correlation


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("method", ["cam", "gradcam", "layercam"])
def test_low_precision_on_the_cpu_keeps_classes_and_maps(default_explainer, photos, precision, method):
    reference = streamcam.Explainer(model=default_explainer.model, device="cpu", method=method, top_k=2)(photos)
    low = streamcam.Explainer(model=default_explainer.model, device="cpu", method=method, top_k=2,
                              precision=precision)(photos)
    assert low.labels == reference.labels
    assert low.maps.dtype == torch.float32 and low.scores.dtype == torch.float32
    assert all(correlation(low.maps[i, j], reference.maps[i, j]) >= 0.99 for i in range(2) for j in range(2))


def test_unknown_precision_and_bf16_on_onnxruntime_are_refused():
    with pytest.raises(streamcam.InputError, match="precision"):
        streamcam.Explainer(model="resnet18", weights="random", device="cpu", precision="int4")
    with pytest.raises(streamcam.InputError, match="fp16"):
        streamcam.Explainer(model="resnet18", weights="random", device="cpu", precision="bf16", backend="onnxruntime")


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_low_precision_on_cuda(photos, precision):
    reference = streamcam.Explainer(device="cuda", top_k=2)(photos)
    low = streamcam.Explainer(device="cuda", top_k=2, precision=precision)(photos)
    assert low.labels == reference.labels
    assert all(correlation(low.maps[i, 0], reference.maps[i, 0]) >= 0.99 for i in range(2))
