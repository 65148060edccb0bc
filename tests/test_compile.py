"""--compile: the no-gradient forward pass through torch.compile gives what the eager one gives."""

from __future__ import annotations

import shutil

import cv2
import pytest
import torch

import streamcam
from streamcam.backends.compiled import CompiledForward, LayerTap, padded_size
from streamcam.backends.torch_backend import TorchBackend
from streamcam.cli import main

from conftest import correlation

# Inductor compiles C++ on the CPU: without a compiler there is nothing to test.
needs_compiler = pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
                                    reason="torch.compile on the CPU needs a C++ compiler")
pytestmark = pytest.mark.compiles


def test_batches_are_padded_to_powers_of_two():
    assert [padded_size(b) for b in (1, 2, 3, 4, 5, 8, 9)] == [1, 2, 4, 4, 8, 8, 16]


def test_the_tap_records_only_while_it_runs(tiny_gap_net):
    x = torch.rand(2, 3, 32, 32)
    tap = LayerTap(tiny_gap_net, ["features.1", "features.3"])
    logits, (first, second) = tap(x)
    assert torch.equal(logits, tiny_gap_net(x))
    assert first.shape == (2, 8, 16, 16) and second.shape == (2, 8, 8, 8)
    tiny_gap_net(x)  # the model's other callers leave nothing behind in the tap
    assert tap._outputs == {}
    tap.remove()
    assert not tiny_gap_net.features[1]._forward_hooks and not tiny_gap_net.features[3]._forward_hooks


@needs_compiler
def test_compiled_forward_equals_eager_on_a_partial_batch(tiny_gap_net):
    x = torch.rand(3, 3, 32, 32)  # padded to 4 inside, sliced back to 3
    eager = TorchBackend(tiny_gap_net).forward(x, ["features.3"])
    backend = TorchBackend(tiny_gap_net, compile=True)
    try:
        compiled = backend.forward(x, ["features.3"])
        assert compiled.logits.shape == (3, 5)
        torch.testing.assert_close(compiled.logits, eager.logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(compiled.features["features.3"], eager.features["features.3"], rtol=1e-5, atol=1e-5)
        again = backend.forward(x[:1], ["features.3"])  # another shape: compiled once more, same numbers
        torch.testing.assert_close(again.logits, eager.logits[:1], rtol=1e-5, atol=1e-5)
        assert len(backend.compiled._taps) == 1  # one tap per set of layers, whatever the batch
    finally:
        backend.compiled.close()
    assert not tiny_gap_net.features[3]._forward_hooks


@needs_compiler
def test_compiled_default_model_gives_the_same_classes_and_maps(default_explainer, cat, espresso):
    eager = {m: streamcam.Explainer(model=default_explainer.model, device="cpu", method=m, top_k=2)
             for m in ("cam", "gradcam")}
    compiled = {m: streamcam.Explainer(model=default_explainer.model, device="cpu", method=m, top_k=2, compile=True)
                for m in ("cam", "gradcam")}
    try:
        for method in ("cam", "gradcam"):  # gradcam needs gradients: it runs eager, unchanged
            reference, result = eager[method]([cat, espresso]), compiled[method]([cat, espresso])
            assert result.labels == reference.labels
            assert result.labels[0][0] == "Egyptian cat" and result.labels[1][0] == "espresso"
            torch.testing.assert_close(result.scores, reference.scores, rtol=1e-4, atol=1e-4)
            assert all(correlation(result.maps[i, j], reference.maps[i, j]) >= 0.999 for i in range(2) for j in range(2))
    finally:
        for explainer in compiled.values():
            explainer.engines["torch"].compiled.close()


def test_compile_with_onnxruntime_only_is_refused(capsys, tmp_path, cat):
    cv2.imwrite(str(tmp_path / "in.jpg"), cat)
    code = main([str(tmp_path / "in.jpg"), "--backend", "onnxruntime", "--compile"])
    assert code == 2
    assert "--compile compiles the torch engine" in capsys.readouterr().err


@pytest.mark.cuda
def test_cuda_graphs_keep_each_batch_result(tiny_gap_net):
    model = tiny_gap_net.cuda()
    compiled = CompiledForward(model, torch.device("cuda"))
    try:
        a, b = torch.rand(2, 3, 32, 32, device="cuda"), torch.rand(2, 3, 32, 32, device="cuda")
        with torch.inference_mode():
            first, _ = compiled(a, ["features.3"])
            kept = first.clone()
            compiled(b, ["features.3"])  # replays the graph into the same buffers
            torch.testing.assert_close(first, kept)
            torch.testing.assert_close(first, model(a), rtol=1e-4, atol=1e-4)
    finally:
        compiled.close()
