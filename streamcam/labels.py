"""Class names: ImageNet's, shipped with streamcam, or the user's labels file; and finding a class by name.

Plain Python, so that ``--class espresso`` is checked before torch loads.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Sequence
from pathlib import Path

from .errors import InputError

IMAGENET_CLASSES = 1000
_IMAGENET_FILE = Path(__file__).with_name("imagenet_classes.txt")  # torchvision's list, one name a line


@functools.cache
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet class names (the same list torchvision ships in its weights' metadata)."""
    return tuple(_IMAGENET_FILE.read_text(encoding="utf-8").splitlines())


def read_labels(path: str | Path) -> list[str]:
    """A labels file: one class name a line, surrounding spaces and trailing empty lines dropped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read labels file {path}: {error}") from error
    labels = [line.strip() for line in lines]
    while labels and not labels[-1]:
        labels.pop()
    if not labels:
        raise InputError(f"labels file {path} has no class names in it")
    return labels


def class_index(labels: Sequence[str], target: int | str) -> int:
    """Resolve a class id or a label (case-insensitive) among ``labels`` to a class id."""
    if isinstance(target, int) or (isinstance(target, str) and target.strip().isdigit()):
        index = int(target)
        if not 0 <= index < len(labels):
            raise InputError(f"class {index} is out of range: the model has {len(labels)} classes")
        return index
    folded = [label.lower() for label in labels]
    wanted = target.strip().lower()
    if wanted in folded:
        return folded.index(wanted)
    close = difflib.get_close_matches(wanted, folded, n=3)
    hint = f" Did you mean {', '.join(repr(labels[folded.index(c)]) for c in close)}?" if close else ""
    raise InputError(f"no class is called '{target}'.{hint} Give a label or a class id.")
