"""A trained classifier as one safetensors file: its weights, and in the metadata all it takes to explain it.

safetensors keeps a flat string -> string map in the file's JSON header
(``__metadata__``); a classifier file stores there:

======================  ==============================================================
``streamcam.format``    ``classifier/1``: the tag that makes it a classifier file
``architecture``        the backbone as :func:`streamcam.load_model` names it:
                        ``efficientnet_lite0``, ``resnet18``, ``timm:NAME``
``head``                how the GAP + linear head was made (:class:`streamcam.head.HeadSpec`), JSON
``labels``              the class names, a JSON list
``input_size``          frames are resized to this square size
``mean``, ``std``       RGB normalisation of [0, 1] pixels, JSON lists of 3
``layer``               the explained layer, by its name in the model
``training``            optional, free-form JSON (epochs, accuracy...)
``streamcam.version``   the streamcam that wrote it (informative)
======================  ==============================================================

Reading builds the architecture with random weights (nothing is downloaded),
makes the same head, and loads the tensors with every key and shape checked: no
code from the file runs, since safetensors holds tensors and strings only. The
header alone says whether a file is a classifier file and which classes it has,
read here without torch, so that the command line can answer before torch loads.
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InputError

if TYPE_CHECKING:
    from torch import nn

    from .head import HeadSpec

FORMAT_KEY = "streamcam.format"
FORMAT = "classifier/1"
_FAMILY = FORMAT.split("/")[0] + "/"  # any version: a classifier file, maybe for a newer streamcam
_MAX_HEADER = 100_000_000  # bytes; safetensors' own limit


@dataclass(frozen=True)
class ClassifierInfo:
    """What a classifier file says of its model, beside the weights. ValueError if it does not hold together."""

    architecture: str  # as load_model names it: efficientnet_lite0, resnet18, timm:NAME
    head: HeadSpec
    labels: tuple[str, ...]  # one per class, in the head's order
    input_size: int  # frames are resized to input_size x input_size
    mean: tuple[float, float, float]  # RGB, on [0, 1] pixels
    std: tuple[float, float, float]
    layer: str  # the explained layer, by its name in the model with its new head
    training: dict[str, Any] | None = None  # free-form, JSON-serialisable: epochs, accuracy...

    def __post_init__(self) -> None:
        for name in ("labels", "mean", "std"):  # lists are welcome (JSON gives lists)
            if not isinstance(getattr(self, name), (list, tuple)):
                raise ValueError(f"{name} must be a list")
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not (isinstance(self.architecture, str) and self.architecture and isinstance(self.layer, str) and self.layer):
            raise ValueError("architecture and layer must be names")
        if not all(isinstance(label, str) for label in self.labels) or len(self.labels) != self.head.classes:
            raise ValueError(f"{len(self.labels)} labels for a head of {self.head.classes} classes")
        if not isinstance(self.input_size, int) or self.input_size < 1:
            raise ValueError(f"input size {self.input_size!r} is not a positive integer")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
                raise ValueError(f"{name} must be 3 numbers (R, G, B)")
        if min(self.std) <= 0:
            raise ValueError("std must be positive")
        if self.training is not None:
            json.dumps(self.training)  # TypeError now rather than when the file is written

    def to_metadata(self) -> dict[str, str]:
        """The file's metadata: every value a string, JSON where it is not one."""
        from . import __version__

        metadata = {
            FORMAT_KEY: FORMAT,
            "architecture": self.architecture,
            "head": self.head.to_json(),
            "labels": json.dumps(list(self.labels), ensure_ascii=False),
            "input_size": str(self.input_size),
            "mean": json.dumps(list(self.mean)),
            "std": json.dumps(list(self.std)),
            "layer": self.layer,
            "streamcam.version": __version__,
        }
        if self.training is not None:
            metadata["training"] = json.dumps(self.training, ensure_ascii=False)
        return metadata

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> ClassifierInfo:
        """The info :meth:`to_metadata` wrote; ValueError (or TypeError) naming what is wrong."""
        from .head import HeadSpec

        training = _json(metadata, "training") if "training" in metadata else None
        if training is not None and not isinstance(training, dict):
            raise ValueError("'training' is not a JSON object")
        size = _field(metadata, "input_size")
        if not size.isdigit():
            raise ValueError(f"'input_size' is not a positive integer: {size!r}")
        head_json = _field(metadata, "head")
        try:
            head = HeadSpec.from_json(head_json)
        except (ValueError, TypeError) as error:
            raise ValueError(f"'head' is not a head description ({error})") from None
        return cls(
            architecture=_field(metadata, "architecture"),
            head=head,
            labels=_labels(metadata),
            input_size=int(size),
            mean=_json(metadata, "mean"),
            std=_json(metadata, "std"),
            layer=_field(metadata, "layer"),
            training=training,
        )


def save_classifier(path: str | Path, model: nn.Module, info: ClassifierInfo) -> None:
    """Write ``model``'s state dict and ``info`` to ``path`` (a safetensors file), replacing what is there.

    The file is written under a temporary name beside ``path`` and renamed into
    place when complete: a crash never leaves half a file under the final name, and
    an earlier file there (the previous best epoch) stays whole until then. Whether
    an existing file may be replaced at all is the caller's question. ValueError
    if ``info`` does not describe ``model``.
    """
    from safetensors.torch import save_file

    from .atomic import OutputFile
    from .identity import identify

    path = Path(path)
    try:
        linear = model.get_submodule(info.head.module)
        model.get_submodule(info.layer)
    except AttributeError as error:
        raise ValueError(f"the model does not have the module info names: {error}") from None
    if getattr(linear, "out_features", None) != info.head.classes:
        raise ValueError(f"{info.head.module} is not the head's Linear layer with {info.head.classes} outputs")
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()}
    file = OutputFile(path, identify(path).replaced_by_writing)
    try:
        mode = file.path.stat().st_mode  # what a new file gets here: safetensors would make it owner-only
        save_file(tensors, str(file.path), metadata=info.to_metadata())
        os.chmod(file.path, stat.S_IMODE(mode))
    except BaseException:
        file.discard()
        raise
    file.publish()


def read_classifier(path: str | Path) -> tuple[nn.Module, ClassifierInfo]:
    """The model a classifier file holds, in eval mode on the CPU, and what the file says of it.

    The architecture is built with random weights (nothing is downloaded), given
    the stored head, and every tensor is loaded with keys and shapes checked.
    Anything wrong (not a classifier file, bad metadata, a missing or misshapen
    tensor, an architecture this installation lacks): one-line InputError naming the file.
    """
    from .head import apply_head
    from .models import fit_weights, read_safetensors, untrained

    path = Path(path)
    info = read_info(path)
    try:
        module = apply_head(untrained(info.architecture), info.head)
        module.get_submodule(info.layer)
    except InputError as error:
        raise InputError(f"cannot rebuild the model of {path}: {error}") from None
    except AttributeError:
        raise InputError(f"{path} names layer {info.layer}, which its model does not have") from None
    fit_weights(module, read_safetensors(path), path)
    return module.eval(), info


def read_info(path: str | Path) -> ClassifierInfo:
    """What the classifier file at ``path`` says of its model (its header only); InputError if it cannot say."""
    metadata = classifier_metadata(path)
    try:
        return ClassifierInfo.from_metadata(metadata)
    except (ValueError, TypeError) as error:
        raise InputError(f"{path} is not a valid streamcam classifier file: {error}") from None


def is_classifier_file(path: str | Path) -> bool:
    """Whether ``path`` is a safetensors file tagged as a streamcam classifier (of any format version).

    Reads the header alone, without torch: 8 bytes (little-endian length) and that much JSON.
    """
    path = Path(path)
    if not path.is_file():  # (a FIFO would block the read)
        return False
    try:
        metadata = _header_metadata(path)
    except OSError:
        return False
    return metadata is not None and metadata.get(FORMAT_KEY, "").startswith(_FAMILY)


def classifier_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of the classifier file at ``path``, read without torch; InputError, one line saying
    what the file is instead, if it is not one this streamcam reads."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    try:
        metadata = _header_metadata(path)
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}") from None
    if metadata is None:
        raise InputError(f"{path} is not a safetensors file (a model file from `streamcam train` is one)")
    tag = metadata.get(FORMAT_KEY)
    if tag is None:
        raise InputError(f"{path} holds weights without streamcam's classifier description: pass it as "
                         f"--weights {path} with --model NAME (its architecture)")
    if tag != FORMAT:
        raise InputError(f"{path} is a streamcam classifier file of format {tag}; this streamcam reads {FORMAT}: "
                         f"update streamcam")
    return metadata


def stored_labels(path: str | Path) -> list[str]:
    """The class names the classifier file at ``path`` stores, read without torch."""
    try:
        return list(_labels(classifier_metadata(path)))
    except ValueError as error:
        raise InputError(f"{path} is not a valid streamcam classifier file: {error}") from None


def _header_metadata(path: Path) -> dict[str, str] | None:
    """A safetensors file's ``__metadata__`` map, from its header alone ({} if it has none); None if it is
    not a safetensors file. OSError if it cannot be read."""
    with path.open("rb") as file:
        prefix = file.read(8)
        if len(prefix) < 8:
            return None
        (length,) = struct.unpack("<Q", prefix)
        if length > _MAX_HEADER:
            return None
        raw = file.read(length)
    if len(raw) < length:
        return None
    try:
        header = json.loads(raw)
    except ValueError:  # also a UnicodeDecodeError: a pickle or anything else
        return None
    metadata = header.get("__metadata__", {}) if isinstance(header, dict) else None
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        return None  # safetensors' metadata is strings only
    return metadata


def _field(metadata: dict[str, str], key: str) -> str:
    if key not in metadata:
        raise ValueError(f"'{key}' is missing")
    return metadata[key]


def _json(metadata: dict[str, str], key: str) -> Any:
    try:
        return json.loads(_field(metadata, key))
    except json.JSONDecodeError:
        raise ValueError(f"'{key}' is not valid JSON") from None


def _labels(metadata: dict[str, str]) -> list[str]:
    labels = _json(metadata, "labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(label, str) for label in labels):
        raise ValueError("'labels' is not a list of class names")
    return labels
