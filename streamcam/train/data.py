"""A folder of images, one subfolder per class -> checked training and validation samples, and their loaders.

Layouts (torchvision's ImageFolder, whose helpers list the files)::

    root/cat/1.jpg, root/dog/2.png ...            split here: each class keeps ~val_fraction for validation
    root/train/cat/1.jpg ... root/val/cat/9.jpg   split already (same classes in both)

Every file is decoded once, up front, by the function that reads images at inference
(:func:`streamcam.sources.read_image`): what is not a readable image (a ``.txt``, a
truncated download) is skipped and counted, so no epoch fails halfway on a bad file;
training decodes with it too, so it sees pixels exactly as ``streamcam`` will. Hidden files and folders
(``.DS_Store``, ``.ipynb_checkpoints``) are not data and are passed over silently.

Validation preprocessing mirrors inference (:mod:`streamcam.preprocess`): the whole
image resized to S x S (bilinear, antialiased), then ``(x / 255 - mean) / std``.
"""

from __future__ import annotations

import logging
import os
import random
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets.folder import find_classes, make_dataset
from torchvision.transforms import v2
from tqdm import tqdm

from .. import interrupts
from ..errors import InputError
from ..sources import read_image

log = logging.getLogger(__name__)

SPLIT_FOLDERS = ("train", "val")
_LISTED = 5  # files named in a warning before "and N more"


class Sample(NamedTuple):
    """One image and the index of its class (a tuple, as torchvision's datasets hold their samples)."""

    path: Path
    label: int


@dataclass(frozen=True)
class ImageFolderSplit:
    """The checked samples of an image folder, split into training and validation."""

    root: Path
    classes: list[str]  # class names, sorted (a class's index is its place here)
    train: list[Sample]
    val: list[Sample]
    skipped: list[Path]  # files that are not readable images, left out
    presplit: bool  # the folder had train/ and val/; else the split was made here

    @property
    def skipped_count(self) -> int:
        return len(self.skipped)

    def describe(self) -> str:
        """One line: classes, images per part, files skipped."""
        how = "train/ and val/" if self.presplit else "stratified split"
        skipped = f"; {self.skipped_count} unreadable file(s) skipped" if self.skipped else ""
        return (f"{len(self.classes)} classes, {len(self.train)} training and {len(self.val)} validation images "
                f"({how}){skipped}")


def read_image_folder(root: Path, val_fraction: float = 0.2, seed: int = 0) -> ImageFolderSplit:
    """Read and check the image folder ``root`` (see the module's docstring for the layouts).

    Without train/ + val/, each class keeps ``max(1, round(n * val_fraction))`` of its ``n`` images
    for validation (and at least one for training), drawn with a generator seeded by ``seed``.
    Bad input (missing folder, no classes, a single class, an empty class, a class too small to split,
    train/ and val/ with different classes) raises :class:`InputError` naming it.
    """
    root = Path(root)
    if not 0.0 < val_fraction < 1.0:
        raise InputError(f"the validation fraction must lie between 0 and 1 (exclusive), not {val_fraction}")
    _check_folder(root)
    parts = [root / name for name in SPLIT_FOLDERS]
    presplit = all(part.is_dir() for part in parts)
    if presplit:
        train_classes, val_classes = (_class_names(part) for part in parts)
        if train_classes != val_classes:
            raise InputError(_class_mismatch(root, train_classes, val_classes))
        classes = train_classes
    else:
        # A lone train/ is the data itself, not a class named "train".
        parts = [parts[0]] if parts[0].is_dir() and not parts[1].exists() else [root]
        classes = _class_names(parts[0])
    if len(classes) < 2:
        raise InputError(f"only one class folder ('{classes[0]}') in {parts[0]}: a classifier needs at least two, "
                         f"one subfolder per class")
    readable = [_readable_samples(part, classes) for part in parts]  # per part: samples, files skipped
    skipped = [path for _, left_out in readable for path in left_out]
    if skipped:
        log.warning("skipped %d file(s) that are not readable images: %s", len(skipped), _listing(skipped, root))
    if presplit:
        (train, _), (val, _) = readable
    else:
        train, val = _stratified_split(readable[0][0], classes, val_fraction, seed, parts[0])
    split = ImageFolderSplit(root, classes, train, val, skipped, presplit)
    log.info("%s: %s", root, split.describe())
    return split


def _check_folder(root: Path) -> None:
    if not root.exists():
        raise InputError(f"training data folder not found: {root}")
    if not root.is_dir():
        raise InputError(f"{root} is not a folder: give a folder with one subfolder of images per class")
    if not os.access(root, os.R_OK | os.X_OK):
        raise InputError(f"cannot read the folder {root}: permission denied")


def _class_names(folder: Path) -> list[str]:
    """The class subfolders of ``folder`` (hidden ones are not classes), sorted as ImageFolder sorts them."""
    try:
        names = find_classes(folder)[0]
    except FileNotFoundError:
        names = []
    except OSError as error:
        raise InputError(f"cannot read the folder {folder}: {error.strerror or error}") from None
    names = [name for name in names if not name.startswith(".")]
    if not names:
        raise InputError(f"no class folders in {folder}: put each class's images in a subfolder named after the "
                         f"class (e.g. {folder / 'cat' / '1.jpg'})")
    return names


def _class_mismatch(root: Path, train: list[str], val: list[str]) -> str:
    only = [f"only in {part}/: {', '.join(sorted(set(a) - set(b)))}"
            for part, a, b in (("train", train, val), ("val", val, train)) if set(a) - set(b)]
    return f"{root / 'train'} and {root / 'val'} must hold the same class folders; {'; '.join(only)}"


def _readable_samples(folder: Path, classes: list[str]) -> tuple[list[Sample], list[Path]]:
    """Every readable image under each class folder of ``folder``, and the files that are not readable images.

    Each file is decoded once (threads: OpenCV's decoders release the GIL).
    """
    listed = make_dataset(folder, {name: i for i, name in enumerate(classes)},
                          is_valid_file=lambda path: not _hidden(Path(path), folder), allow_empty=True)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        readable = list(tqdm(pool.map(_readable, (path for path, _ in listed)), total=len(listed), unit="img",
                             desc=f"checking {folder.name or folder}", leave=False, disable=None))
    samples = [Sample(Path(path), label) for (path, label), ok in zip(listed, readable, strict=True) if ok]
    skipped = [Path(path) for (path, _), ok in zip(listed, readable, strict=True) if not ok]
    found = {label for _, label in samples}
    for label, name in enumerate(classes):
        if label not in found:
            among = sum(Path(p).is_relative_to(folder / name) for p in skipped)
            why = f" ({among} unreadable file(s) skipped)" if among else ""
            raise InputError(f"the class folder {folder / name} has no readable image{why}")
    return samples, skipped


def _hidden(path: Path, folder: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(folder).parts)


def _readable(path: str) -> bool:
    """Whether the file decodes. At 1/8 scale: a JPEG decodes 2.5x faster so (131 -> 53 ms for a 12-megapixel
    photo), and a damaged one fails alike (a JPEG cut in half fails both ways)."""
    try:
        read_image(Path(path), cv2.IMREAD_REDUCED_COLOR_8)
    except InputError:
        return False
    return True


def _listing(paths: Sequence[Path], root: Path) -> str:
    shown = [str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in paths[:_LISTED]]
    more = f" and {len(paths) - _LISTED} more" if len(paths) > _LISTED else ""
    return f"{', '.join(shown)}{more} (in {root})"


def _stratified_split(samples: list[Sample], classes: list[str], val_fraction: float, seed: int,
                      folder: Path) -> tuple[list[Sample], list[Sample]]:
    """Each class keeps ``max(1, round(n * val_fraction))`` of its images for validation, drawn at random."""
    generator = torch.Generator().manual_seed(seed)
    train: list[Sample] = []
    val: list[Sample] = []
    for label, name in enumerate(classes):
        members = [s for s in samples if s.label == label]
        if len(members) < 2:
            raise InputError(f"the class folder {folder / name} has only {len(members)} readable image: at least 2 "
                             f"are needed to keep one for validation (or give train/ and val/ folders)")
        count = min(len(members) - 1, max(1, round(len(members) * val_fraction)))
        order = torch.randperm(len(members), generator=generator).tolist()
        val.extend(members[i] for i in sorted(order[:count]))
        train.extend(members[i] for i in sorted(order[count:]))
    return train, val


# --- images -> tensors ----------------------------------------------------------------------------


def read_rgb(path: Path) -> torch.Tensor:
    """The image at ``path`` as a (3, H, W) uint8 RGB tensor, decoded as ``streamcam`` decodes images."""
    return torch.from_numpy(cv2.cvtColor(read_image(path), cv2.COLOR_BGR2RGB)).permute(2, 0, 1)


def _normalised(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def train_transform(size: int, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """Augmentation: a random crop of 60-100 % of the area resized to ``size``, a horizontal flip, colour jitter;
    then ``(x / 255 - mean) / std``."""
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(0.6, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
        *_normalised(mean, std),
    ])


def val_transform(size: int, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """As inference preprocesses a frame: the whole image resized to ``size`` x ``size`` (bilinear, antialiased),
    then ``(x / 255 - mean) / std``."""
    return v2.Compose([v2.Resize((size, size), antialias=True), *_normalised(mean, std)])


class ImageDataset(Dataset):
    """Samples -> (transformed image, class index); images are read when asked for."""

    def __init__(self, samples: Sequence[Sample], transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return self.transform(read_rgb(path)), label


def init_worker(worker_id: int) -> None:
    """Ready a DataLoader worker process: seed Python's and NumPy's generators from the seed torch gave it
    (torch's own is already seeded per worker from the loader's generator), and leave signals to the main
    process. A worker is a fork of it: without this, Ctrl-C (sent to every process of the terminal) or the
    loader's own SIGTERM at shutdown would run the main process's handlers there (the command's
    :mod:`streamcam.interrupts`, which may remove scratch files and exit)."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process stops the run, then its workers
    for signum in interrupts.SIGNALS.keys() - {signal.SIGINT}:
        signal.signal(signum, signal.SIG_DFL)


def make_loader(samples: Sequence[Sample], transform: Callable[[torch.Tensor], torch.Tensor], batch: int, *,
                shuffle: bool, workers: int, seed: int, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over ``samples``, shuffled or not by a generator seeded with ``seed``; ``workers`` processes
    decode, kept across epochs. Shuffled, the last partial batch is dropped (another one each epoch): a batch of a
    few images would skew BatchNorm's statistics, or fail with a batch of one."""
    return DataLoader(
        ImageDataset(samples, transform),
        batch_size=batch,
        shuffle=shuffle,
        drop_last=shuffle and len(samples) > batch,
        num_workers=workers,
        persistent_workers=workers > 0,
        worker_init_fn=init_worker,
        generator=torch.Generator().manual_seed(seed),
        pin_memory=pin_memory,
    )
