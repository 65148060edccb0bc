"""Engine choice reads the Backend protocol's capabilities, never an engine's name."""

from __future__ import annotations

import pytest
import torch

import streamcam
from streamcam.backends import OnnxBackend, TorchBackend
from streamcam.backends.choice import KINDS, Engines, check_options
from streamcam.errors import InputError
from streamcam.explained_model import ExplainedModel
from streamcam.explainers import CAM, GradCAM, GuidedGradCAM, LayerCAM

CPU = torch.device("cpu")


class OneLayerEngine:
    """An engine that looks like an exported graph: one layer, no autograd, fp32 on the CPU."""

    name = "one-layer"
    gradients_at_any_layer = False
    gradients_to_input = False
    several_layers = False
    precisions = frozenset({"fp32"})
    device_types = frozenset({"cpu"})
    compiles = False


class EveryThingEngine:
    name = "everything"
    gradients_at_any_layer = True
    gradients_to_input = True
    several_layers = True
    precisions = frozenset({"fp32", "fp16", "bf16"})
    device_types = None
    compiles = True


def explained(gap_linear: bool = True) -> ExplainedModel:
    """A model explained at a GAP + linear layer (CAM applies) or not."""
    weight = torch.ones(3, 4) if gap_linear else None
    return ExplainedModel("net", ["a", "b", "c"], 32, (0.5,) * 3, (0.5,) * 3, "features",
                          frozenset({"features"}) if gap_linear else frozenset(), weight)


def engines(*kinds, model=None) -> Engines:
    return Engines(kinds, model or explained(), {})


def test_the_fastest_engine_that_can_serve_a_method_serves_it():
    both = engines(OneLayerEngine, EveryThingEngine)
    assert both.choose(CAM) is OneLayerEngine
    assert both.choose(GradCAM) is OneLayerEngine  # at a GAP + linear layer, W[c] / (h w) is the gradient
    assert both.choose(GuidedGradCAM) is EveryThingEngine  # back to the input
    assert both.choose(CAM, ["layer1"]) is EveryThingEngine  # the grid: several layers
    elsewhere = engines(OneLayerEngine, EveryThingEngine, model=explained(gap_linear=False))
    assert elsewhere.choose(LayerCAM) is EveryThingEngine  # gradients away from a GAP + linear layer
    assert "GAP + linear" in elsewhere.refusal(CAM)


def test_a_name_does_not_give_an_engine_capabilities():
    """An engine called "torch" that cannot back-propagate is refused what needs it; one called
    "onnxruntime" that can is given it."""
    fake_torch = type("FakeTorch", (OneLayerEngine,), {"name": "torch"})
    fake_onnx = type("FakeOnnx", (EveryThingEngine,), {"name": "onnxruntime"})
    refusal = engines(fake_torch).refusal(GuidedGradCAM)
    assert refusal is not None and "--backend torch" in refusal  # the hint comes from the real engines' capabilities
    assert engines(fake_onnx).refusal(GuidedGradCAM) is None
    assert engines(fake_torch, fake_onnx).choose(CAM, ["layer1"]) is fake_onnx


def test_precision_device_and_compile_are_checked_against_every_engine():
    with pytest.raises(InputError, match="one-layer runs fp32, not bf16"):
        check_options([OneLayerEngine, EveryThingEngine], CPU, "bf16", compile=False)
    with pytest.raises(InputError, match="one-layer runs on cpu, not meta: use --backend torch"):
        check_options([OneLayerEngine], torch.device("meta"), "fp32", compile=False)
    with pytest.raises(InputError, match="--compile compiles the torch engine"):
        check_options([OneLayerEngine], CPU, "fp32", compile=True)
    check_options([EveryThingEngine], torch.device("meta"), "bf16", compile=True)  # nothing refused


def test_the_real_engines_declare_what_they_do():
    assert KINDS == (TorchBackend, OnnxBackend)
    assert TorchBackend.gradients_at_any_layer and TorchBackend.several_layers and TorchBackend.compiles
    assert not (OnnxBackend.gradients_at_any_layer or OnnxBackend.gradients_to_input or OnnxBackend.several_layers)
    assert "bf16" not in OnnxBackend.precisions and OnnxBackend.device_types == {"cpu", "cuda"}


def test_an_explainer_refuses_an_engine_the_device_cannot_run(tiny_gap_net):
    with pytest.raises(InputError, match="onnxruntime runs on cpu or cuda, not meta"):
        streamcam.Explainer(model=tiny_gap_net, device=torch.device("meta"), backend="onnxruntime")
    # refused before the lent module was moved: it is where it was, with its weights
    assert all(p.device.type == "cpu" for p in tiny_gap_net.parameters())
