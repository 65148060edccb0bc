"""``Explainer.close()`` and ``with Explainer(...)``: a lent model is given back exactly as it was lent."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from torch import nn

import streamcam
from streamcam.errors import ExplainerClosed
from streamcam.loan import ModelLoan

from conftest import TinyGapNet

FRAME = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def snapshot(model: nn.Module) -> dict:
    """Everything close() must give back, in comparable form."""
    return {
        "training": [(name, m.training) for name, m in model.named_modules()],
        "hooks": [(name, len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
                  for name, m in model.named_modules()],
        "layouts": [(name, t.device, t.dtype, t.stride(), t.is_contiguous())
                    for name, t in [*model.named_parameters(), *model.named_buffers()]],
        "requires_grad": [(name, p.requires_grad) for name, p in model.named_parameters()],
        "parameters": [id(p) for p in model.parameters()],
    }


def assert_given_back(model: nn.Module, before: dict, state: dict[str, torch.Tensor]) -> None:
    assert snapshot(model) == before
    after = model.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], state[k]) for k in state)


def lent_model() -> TinyGapNet:
    """A user's model in training mode with one frozen parameter and a hook of its own."""
    torch.manual_seed(0)
    model = TinyGapNet().train()
    model.features[0].bias.requires_grad_(False)
    model.features[3].register_forward_hook(lambda *_: None)
    return model


def test_close_gives_a_lent_model_back_as_it_was():
    model = lent_model()
    before, state = snapshot(model), {k: v.clone() for k, v in model.state_dict().items()}
    ex = streamcam.Explainer(model=model, device="cpu", backend="torch", top_k=2)
    assert not model.training and model.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert snapshot(model) != before  # borrowed: eval mode, channels-last
    ex([FRAME])
    ex.close()
    assert_given_back(model, before, state)
    ex.close()  # idempotent
    assert_given_back(model, before, state)
    with pytest.raises(ExplainerClosed, match="closed"):
        ex([FRAME])
    with pytest.raises(ExplainerClosed):
        ex.explain_tensor(torch.zeros(1, 3, 224, 224))


def test_the_with_block_closes_even_on_an_error():
    model = lent_model()
    before, state = snapshot(model), {k: v.clone() for k, v in model.state_dict().items()}
    with streamcam.Explainer(model=model, device="cpu", method="gradcam") as ex:
        assert ex([FRAME, FRAME]).maps.shape[:2] == (2, 1)
    assert_given_back(model, before, state)
    with pytest.raises(RuntimeError, match="inside"), streamcam.Explainer(model=model, device="cpu") as ex:
        ex([FRAME])
        raise RuntimeError("inside")
    assert_given_back(model, before, state)


def test_a_failed_build_gives_the_model_back():
    model = lent_model()
    before = snapshot(model)
    with pytest.raises(streamcam.InputError, match="top-k"):
        streamcam.Explainer(model=model, device="cpu", top_k=99)  # fails after the model was converted
    assert snapshot(model) == before


def test_a_wrong_keyword_is_pythons_type_error():
    # refused before __init__'s first line: close() (run on the way out) has nothing to give back
    with pytest.raises(TypeError, match="unexpected keyword argument 'topk'"):
        streamcam.Explainer(model=lent_model(), device="cpu", topk=3)


def test_a_model_streamcam_loaded_is_released():
    ex = streamcam.Explainer(model="resnet18", weights="random", device="cpu", backend="torch")
    with ex:
        ex([FRAME])
    assert ex.model is None and ex.engines == {}
    with pytest.raises(ExplainerClosed):
        ex.prepare()


def test_the_loan_restores_strides_and_flags_it_finds_changed():
    model = lent_model().eval()
    loan = ModelLoan(model)
    model.to(memory_format=torch.channels_last).train()
    model.fc.weight.requires_grad_(False)
    weight = model.features[0].weight
    loan.give_back()
    assert model.features[0].weight is weight and weight.is_contiguous()
    assert not model.training and model.fc.weight.requires_grad


@pytest.mark.compiles
@pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
                    reason="torch.compile on the CPU needs a C++ compiler")
def test_close_removes_the_compile_taps():
    model = lent_model()
    before, state = snapshot(model), {k: v.clone() for k, v in model.state_dict().items()}
    with streamcam.Explainer(model=model, device="cpu", backend="torch", compile=True) as ex:
        ex([FRAME])
        tapped = model.get_submodule(ex.layer)
        assert any("LayerTap" in hook.__qualname__ for hook in tapped._forward_hooks.values())  # the tap is on
    assert_given_back(model, before, state)
