"""Every method, batched on the device, against its paper's formula computed naively (per image, loops)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import streamcam

from conftest import TinyFcNet, TinyGapNet, correlation

GRADIENT_METHODS = ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "counterfactual"]


# --- naive references ----------------------------------------------------------


def minmax(m: torch.Tensor) -> torch.Tensor:
    m = m.clamp_min(0)
    span = m.max() - m.min()
    return (m - m.min()) / span if span > 1e-7 else torch.zeros_like(m)


def activations_and_gradient(model: nn.Module, layer: str, x: torch.Tensor, class_id: int):
    """A (K, h, w) and dy_c/dA (K, h, w) for ONE image, with plain full autograd."""
    store = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: store.update(a=o))
    try:
        with torch.enable_grad():
            logits = model(x[None].clone().requires_grad_())
            (grad,) = torch.autograd.grad(logits[0, class_id], store["a"])
    finally:
        handle.remove()
    return store["a"][0].detach().double(), grad[0].double()


def naive_map(method: str, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """One image, one class: each formula written out channel by channel."""
    channels = a.shape[0]
    cam = torch.zeros(a.shape[1:], dtype=torch.float64)
    for k in range(channels):
        if method == "gradcam":  # Selvaraju et al. eq. 1-2
            cam += g[k].mean() * a[k]
        elif method == "counterfactual":  # Selvaraju et al. sec. 5: negated gradients
            cam += -g[k].mean() * a[k]
        elif method == "gradcam++":  # Chattopadhay et al. eq. 19 with the exponential's derivatives
            alpha = g[k] ** 2 / (2 * g[k] ** 2 + a[k].sum() * g[k] ** 3 + 1e-7)
            alpha = torch.where(g[k] != 0, alpha, torch.zeros_like(alpha))
            cam += (alpha * g[k].clamp_min(0)).sum() * a[k]
        elif method == "xgradcam":  # Fu et al. eq. 9
            cam += (a[k] * g[k]).sum() / (a[k].sum() + 1e-7) * a[k]
        elif method == "layercam":  # Jiang et al. eq. 4-5
            cam += g[k].clamp_min(0) * a[k]
        elif method == "hirescam":  # Draelos & Carin eq. 5
            cam += g[k] * a[k]
    return minmax(cam)


def naive_eigencam(a: torch.Tensor) -> torch.Tensor:
    x = a.flatten(1).T.numpy()  # (n, K)
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    projection = x @ vt[0]
    if np.corrcoef(projection, a.sum(0).flatten().numpy())[0, 1] < 0:
        projection = -projection
    return minmax(torch.from_numpy(projection).view(a.shape[1:]))


class GuidedRectifier(torch.autograd.Function):
    """Springenberg et al.: R_in = (f_in > 0) * (R_out > 0) * R_out, for ReLU and ReLU6."""

    @staticmethod
    def forward(ctx, x, upper):
        ctx.save_for_backward(x)
        ctx.upper = upper
        return x.clamp(0, upper)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        passes = (x > 0) & (x < ctx.upper)
        return grad.clamp_min(0) * passes, None


class GuidedModule(nn.Module):
    def __init__(self, upper: float) -> None:
        super().__init__()
        self.upper = upper

    def forward(self, x):
        return GuidedRectifier.apply(x, self.upper)


def guided_copy(model: nn.Module) -> nn.Module:
    """A copy of the model with every ReLU/ReLU6 replaced by its guided version (the textbook way)."""
    guided = copy.deepcopy(model)
    for name, module in list(guided.named_modules()):
        if type(module) in (nn.ReLU, nn.ReLU6):
            parent, _, leaf = name.rpartition(".")
            setattr(guided.get_submodule(parent) if parent else guided, leaf,
                    GuidedModule(6.0 if isinstance(module, nn.ReLU6) else float("inf")))
    return guided


def naive_guided(model: nn.Module, x: torch.Tensor, class_id: int) -> torch.Tensor:
    """Guided-backprop gradient of one image, (3, S, S)."""
    with torch.enable_grad():
        xx = x[None].clone().requires_grad_()
        (grad,) = torch.autograd.grad(model(xx)[0, class_id], xx)
    return grad[0].double()


# --- fixtures -------------------------------------------------------------------


def make(model, method, **kwargs) -> streamcam.Explainer:
    return streamcam.Explainer(model=model, method=method, device="cpu", **kwargs)


def frames_for(seed: int, count: int = 3):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(count)]


# --- tests ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_gradient_methods_match_the_papers_on_a_net_without_gap_head(method):
    torch.manual_seed(3)
    model = TinyFcNet().eval()
    ex = make(model, method, top_k=2)
    x = ex.preprocess(frames_for(0))
    res = ex.explain_tensor(x)
    for b in range(x.shape[0]):
        for j, c in enumerate(res.class_ids[b].tolist()):
            a, g = activations_and_gradient(model, ex.layer, x[b], c)
            assert torch.allclose(res.maps[b, j].double(), naive_map(method, a, g), atol=1e-4), (b, j)


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_gradient_methods_match_the_papers_on_the_default_model(default_explainer, photos, method):
    model = default_explainer.model
    ex = make(model, method, top_k=2, layer="blocks.5")  # a layer inside the net: gradients are not uniform
    x = ex.preprocess(photos)
    res = ex.explain_tensor(x)
    for b in range(2):
        for j, c in enumerate(res.class_ids[b].tolist()):
            a, g = activations_and_gradient(model, ex.layer, x[b], c)
            assert torch.allclose(res.maps[b, j].double(), naive_map(method, a, g), atol=1e-4), (b, j)


@pytest.mark.parametrize("model_factory", [lambda: TinyGapNet().eval(), None], ids=["tiny", "default"])
def test_eigencam_matches_the_first_principal_component(model_factory, default_explainer, photos):
    model = model_factory() if model_factory else default_explainer.model
    ex = make(model, "eigencam", top_k=2)
    frames = frames_for(1) if model_factory else photos
    x = ex.preprocess(frames)
    res = ex.explain_tensor(x)
    with torch.no_grad():
        store = {}
        handle = model.get_submodule(ex.layer).register_forward_hook(lambda m, i, o: store.update(a=o))
        model(x)
        handle.remove()
    for b in range(len(frames)):
        expected = naive_eigencam(store["a"][b].double())
        assert torch.allclose(res.maps[b, 0].double(), expected, atol=1e-4)
        assert torch.equal(res.maps[b, 0], res.maps[b, 1])  # class-agnostic


@pytest.mark.parametrize(
    "model_factory",
    [lambda: TinyFcNet().eval(), lambda: torchvision.models.resnet18(weights=None).eval(), None],
    ids=["tiny", "resnet18-inplace-relu", "default"],
)
def test_guided_methods_match_textbook_guided_backprop(model_factory, default_explainer, photos):
    torch.manual_seed(4)
    model = model_factory() if model_factory else default_explainer.model
    frames = frames_for(2, 2) if model_factory else photos
    before = {k: v.clone() for k, v in model.state_dict().items()}
    guided = guided_copy(model)
    backprop = make(model, "guided-backprop", top_k=2)
    x = backprop.preprocess(frames)
    res = backprop.explain_tensor(x)
    gradcam_ex = make(model, "gradcam", top_k=2)
    combined = make(model, "guided-gradcam", top_k=2).explain_tensor(x)
    size = x.shape[-1]
    for b in range(len(frames)):
        for j, c in enumerate(res.class_ids[b].tolist()):
            g = naive_guided(guided, x[b], c)
            assert res.maps.shape[-2:] == (size, size)
            assert torch.allclose(res.maps[b, j].double(), minmax(g.abs().amax(0)), atol=1e-4)
            a, grad = activations_and_gradient(model, gradcam_ex.layer, x[b], c)
            cam = sum(grad[k].mean() * a[k] for k in range(a.shape[0])).clamp_min(0)
            up = F.interpolate(cam[None, None], size=(size, size), mode="bilinear", align_corners=False)[0, 0]
            assert torch.allclose(combined.maps[b, j].double(), minmax((g * up).abs().amax(0)), atol=1e-4)
    # the model is left as it was: same modules, same weights, no hooks
    assert [type(m) for m in model.modules()] != [type(m) for m in guided.modules()]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


@pytest.mark.parametrize("model_factory", [lambda: TinyGapNet().eval(), None], ids=["tiny", "default"])
def test_gradcam_equals_cam_on_a_gap_linear_net(model_factory, default_explainer, photos):
    torch.manual_seed(5)
    model = model_factory() if model_factory else default_explainer.model
    frames = frames_for(3) if model_factory else photos
    cam = make(model, "cam", top_k=3)(frames)
    gradcam = make(model, "gradcam", top_k=3)(frames)
    assert torch.equal(cam.class_ids, gradcam.class_ids)
    assert torch.allclose(cam.maps, gradcam.maps, atol=1e-4)


def test_gradient_methods_work_on_torchvision_nets_with_several_fc_layers(photos):
    for name in ("vgg11", "alexnet"):
        with pytest.raises(streamcam.InputError, match="gradcam"):
            streamcam.Explainer(model=name, weights="random", device="cpu")
        ex = streamcam.Explainer(model=name, weights="random", method="gradcam++", device="cpu", top_k=2)
        res = ex(photos)
        assert res.maps.shape[:2] == (2, 2) and float(res.maps.amax()) == pytest.approx(1.0)


class ExplodesAfterTheLayer(TinyGapNet):
    armed = False

    def forward(self, x):
        features = self.features(x)
        if self.armed:
            raise RuntimeError("boom after the explained layer")
        return self.fc(self.pool(features).flatten(1))


@pytest.mark.parametrize("method", ["cam", *GRADIENT_METHODS, "eigencam", "guided-backprop", "guided-gradcam"])
def test_no_hook_no_gradient_and_state_restored_after_a_call_and_an_exception(method):
    model = ExplodesAfterTheLayer().eval()
    ex = make(model, method, top_k=2)
    grad_mode = torch.is_grad_enabled()
    ex(frames_for(4, 2))
    for armed in (False, True):
        model.armed = armed
        if armed:
            with pytest.raises(RuntimeError, match="boom"):
                ex(frames_for(4, 2))
        assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
        assert all(p.grad is None for p in model.parameters())
        assert torch.is_grad_enabled() == grad_mode and not model.training


def test_multi_layer_view_returns_one_map_set_per_stage(default_explainer, photos):
    model = default_explainer.model
    ex = make(model, "gradcam", layers="auto")
    res = ex(photos)
    assert list(res.layer_maps) == ["blocks.1", "blocks.2", "blocks.4", "bn2"]
    assert [tuple(m.shape[-2:]) for m in res.layer_maps.values()] == [(56, 56), (28, 28), (14, 14), (7, 7)]
    for layer, maps in res.layer_maps.items():  # the same maps as explaining that layer alone
        alone = make(model, "gradcam", layer=layer)(photos)
        assert torch.allclose(maps, alone.maps, atol=1e-4), layer


def test_multi_layer_view_with_cam_uses_gradcam_away_from_the_pooling_layer(default_explainer, photos):
    ex = make(default_explainer.model, "cam", layers=["blocks.4", "bn2"])
    res = ex(photos)
    assert res.layer_methods == {"blocks.4": "gradcam", "bn2": "cam"}
    assert torch.allclose(res.layer_maps["bn2"], res.maps)


def test_method_switch_and_available_methods(default_explainer):
    ex = make(default_explainer.model, "cam")
    assert "cam" in ex.available_methods and "guided-gradcam" in ex.available_methods
    ex.set_method("layercam")
    assert ex.method.name == "layercam"
    with pytest.raises(streamcam.InputError, match="unknown method"):
        ex.set_method("magic")
    fc = make(TinyFcNet().eval(), "gradcam")
    assert "cam" not in fc.available_methods
    with pytest.raises(streamcam.InputError, match="gradcam"):
        fc.set_method("cam")


def test_eigencam_sign_follows_the_activations():
    """An SVD's sign is arbitrary; over many random activation maps, every Eigen-CAM points where A fires."""
    from streamcam.explainers import EigenCAM, MethodInput

    generator = torch.Generator().manual_seed(6)
    features = torch.rand(64, 16, 5, 5, generator=generator) ** 3  # sparse, positive, like post-ReLU maps
    raw = EigenCAM().raw_maps(MethodInput(features=features, class_ids=torch.zeros(64, 1, dtype=torch.int64)))
    energy = features.sum(1)
    for b in range(64):
        assert correlation(raw[b, 0], energy[b]) > 0, b
