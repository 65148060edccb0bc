"""The checks of a run's options that need no torch: every usage error is answered before torch loads.

:class:`streamcam.RunConfig` runs them on construction, so the command line and
the Python API refuse the same things, in a fraction of a second. What only the
loaded model can tell (a layer name, a class id of a model with its own classes,
a CUDA device on a machine without one) is checked when it loads.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from .classifier_file import classifier_metadata, is_classifier_file, stored_labels
from .defaults import BACKENDS, DEFAULT_OPSET, METHOD_NAMES, OPSETS, PRECISION_NAMES
from .errors import InputError
from .labels import class_index, imagenet_labels, read_labels
from .model_names import (
    RANDOM_WEIGHTS,
    TIMM_PREFIX,
    check_model_name,
    is_onnx_file,
    looks_like_file,
)

if TYPE_CHECKING:
    from .config import RunConfig

_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def method_name(name: str) -> str:
    """A method's canonical name (case-insensitive), or an InputError listing them."""
    if name.lower() not in METHOD_NAMES:
        raise InputError(f"unknown method '{name}': choose one of {', '.join(METHOD_NAMES)}")
    return name.lower()


def check_precision(name: str) -> str:
    if name not in PRECISION_NAMES:
        raise InputError(f"unknown precision '{name}': choose one of {', '.join(PRECISION_NAMES)}")
    return name


def check_device(name: object) -> None:
    if isinstance(name, str) and not _DEVICE.fullmatch(name):
        raise InputError(f"unknown device '{name}': use auto, cpu, cuda or cuda:N")


def choose_backend(name: str, onnx_file: bool) -> str:
    """Validate a backend name; an .onnx graph runs on onnxruntime (whether asked or "auto").

    For a PyTorch model "auto" stays "auto": the Explainer picks an engine per method.
    """
    if name not in BACKENDS:
        raise InputError(f"unknown backend '{name}': choose one of {', '.join(BACKENDS)}")
    if onnx_file and name == "torch":
        raise InputError("an .onnx graph runs on --backend onnxruntime (or auto), not torch")
    return "onnxruntime" if onnx_file else name


def known_labels(model: object, labels: object) -> list[str] | None:
    """The class names a run will have, where they are known before the model loads.

    A labels file names them; without one, the default model and every torchvision
    classifier have ImageNet's 1000 (their weights, given or downloaded, must fit
    that head), and a classifier file stores its own. A timm model, another model
    file or a module may have any number.
    """
    if isinstance(labels, str):
        return read_labels(labels)
    if labels is None and isinstance(model, str) and not model.startswith(TIMM_PREFIX) and not looks_like_file(model):
        return list(imagenet_labels())
    if labels is None and isinstance(model, (str, Path)) and is_classifier_file(model):
        return stored_labels(model)
    return None


def check_model_files(model: object, weights: object) -> None:
    """A model or weights file that is not there (the labels file is read by :func:`known_labels`)."""
    if isinstance(model, (str, Path)) and looks_like_file(str(model)) and not Path(model).is_file():
        raise InputError(f"no such file: {model}")
    if isinstance(model, (str, Path)) and Path(model).suffix.lower() == ".safetensors":
        classifier_metadata(model)  # weights alone, or not safetensors at all: said before torch loads
    if isinstance(weights, (str, Path)) and weights != RANDOM_WEIGHTS and not Path(weights).is_file():
        raise InputError(f"weights file not found: {weights}")


def check_run_options(config: RunConfig) -> None:
    """Everything about ``config`` that can be checked without torch (see the module docstring)."""
    method_name(config.method)
    check_precision(config.precision)
    check_device(config.device)
    choose_backend(config.backend, is_onnx_file(config.model))
    if isinstance(config.model, str):
        check_model_name(config.model)
    check_model_files(config.model, config.weights)
    labels = known_labels(config.model, config.labels)
    if labels is None:
        return
    if config.top_k > len(labels):
        raise InputError(f"top-k must be between 1 and {len(labels)} (the number of classes), not {config.top_k}")
    if config.target_class is not None:
        class_index(labels, config.target_class)


def check_opset(opset: int) -> None:
    """``opset`` must be one the exporter writes as asked (see :data:`streamcam.defaults.OPSETS`)."""
    if opset not in OPSETS:
        raise InputError(f"--opset {opset} is not supported: choose {OPSETS.start} to {OPSETS.stop - 1} "
                         f"(default {DEFAULT_OPSET})")


def check_export(output: str | Path, model: object, weights: object, labels: object, opset: int,
                 overwrite: bool) -> None:
    """What ``streamcam export`` can refuse before the model loads: the opset, the model's name and
    files, and the output (an ``.onnx`` name, not an input, not an existing file unless ``overwrite``)."""
    from .identity import identify
    from .plan import check_outputs, model_files

    check_opset(opset)
    path = Path(output)
    if path.suffix.lower() != ".onnx":
        raise InputError(f"streamcam export writes an ONNX graph: give -o a name ending in .onnx, not {path}")
    if isinstance(model, str):
        check_model_name(model)
    check_model_files(model, weights)
    known_labels(model, labels)  # a labels file that cannot be read
    check_outputs([identify(path)], model_files(model, weights, labels), overwrite)
