"""What a ``--model`` name refers to, told without importing torch.

A name is the built-in default, ``timm:NAME``, a file (a saved model, weights or
an ``.onnx`` graph) or a torchvision classifier. torchvision's classifiers are
read from its source files (each is a function decorated ``@register_model()``
in ``torchvision/models/*.py``) rather than from ``list_models()``, which would
import torch: a typo in ``--model`` is answered in a fraction of a second. A
test checks that this list is ``list_models(module=torchvision.models)``.
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import re
from pathlib import Path

from .defaults import DEFAULT_MODEL
from .errors import InputError

RANDOM_WEIGHTS = "random"  # --weights random: an untrained net
CHECKPOINT_SUFFIXES = frozenset({".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle", ".safetensors"})
TIMM_PREFIX = "timm:"
_REGISTERED = re.compile(r"@register_model\((?:name=['\"](?P<alias>\w+)['\"])?\)(?:.|\n)*?\ndef (?P<function>\w+)")


def looks_like_file(name: str) -> bool:
    """Whether ``--model`` names a file rather than an architecture."""
    return Path(name).suffix.lower() in CHECKPOINT_SUFFIXES | {".onnx"} or "/" in name or "\\" in name


def is_onnx_file(model: object) -> bool:
    return isinstance(model, (str, Path)) and Path(model).suffix.lower() == ".onnx"


@functools.cache
def torchvision_classifier_names() -> tuple[str, ...]:
    """torchvision's classification models, from its installed sources; () if it is not installed."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return ()
    names: list[str] = []
    for source in sorted(Path(spec.submodule_search_locations[0], "models").glob("*.py")):
        text = source.read_text(encoding="utf-8", errors="replace")
        names += [m["alias"] or m["function"] for m in _REGISTERED.finditer(text)]
    return tuple(names)


def check_model_name(name: str) -> None:
    """Refuse a name that is neither the default, ``timm:NAME``, a file, nor a torchvision classifier.

    timm names and files are checked where they load (timm's registry needs torch; a file's
    existence is checked with the run's other inputs).
    """
    if name == DEFAULT_MODEL or name.startswith(TIMM_PREFIX) or looks_like_file(name):
        return
    known = torchvision_classifier_names()
    if known and name not in known:
        raise unknown_model(name, known)


def unknown_model(name: str, known: tuple[str, ...]) -> InputError:
    close = difflib.get_close_matches(name, (*known, DEFAULT_MODEL), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return InputError(f"unknown model '{name}'.{hint} Use a torchvision classifier name (resnet50, vgg16...), "
                      f"timm:NAME for a timm model, or the path of a saved model.")
