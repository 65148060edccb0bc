"""The training data: an image folder checked, split by class, and turned into tensors as inference sees frames."""

from __future__ import annotations

import shutil
import signal
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from streamcam.demo import write_photo_folder
from streamcam.errors import InputError
from streamcam.preprocess import Preprocessor
from streamcam.sources import read_image
from streamcam.train.data import (
    ImageDataset,
    init_worker,
    make_loader,
    read_image_folder,
    read_rgb,
    train_transform,
    val_transform,
)

CLASSES = ["astronaut", "chelsea", "coffee"]  # sorted, as ImageFolder numbers them
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def clean_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    write_photo_folder(root, CLASSES, per_class=30)
    return root


@pytest.fixture
def folder(clean_folder, tmp_path) -> Path:
    """A copy of the clean folder the test may change."""
    return Path(shutil.copytree(clean_folder, tmp_path / "data"))


def test_split_keeps_every_class_in_validation_and_counts_what_is_skipped(folder):
    (folder / "coffee" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    (folder / "chelsea" / "notes.txt").write_text("a cat")
    whole = (folder / "astronaut" / "astronaut_001.jpg").read_bytes()
    (folder / "astronaut" / "cut.jpg").write_bytes(whole[: len(whole) // 2])  # a download cut short
    (folder / "chelsea" / ".DS_Store").write_bytes(b"\0\0")  # hidden: not data, not counted
    (folder / ".ipynb_checkpoints").mkdir()  # hidden: not a class
    split = read_image_folder(folder, val_fraction=0.2, seed=0)
    assert split.classes == CLASSES and not split.presplit
    assert split.skipped_count == 3
    assert {p.name for p in split.skipped} == {"broken.jpg", "notes.txt", "cut.jpg"}
    assert Counter(s.label for s in split.val) == {0: 6, 1: 6, 2: 6}  # 20 % of 30 in each class
    assert Counter(s.label for s in split.train) == {0: 24, 1: 24, 2: 24}
    assert not {s.path for s in split.train} & {s.path for s in split.val}
    for path, label in split.train + split.val:
        assert path.parent.name == CLASSES[label]
    assert "3 classes, 72 training and 18 validation images" in split.describe()


def test_split_follows_the_seed(clean_folder):
    first, again, other = (read_image_folder(clean_folder, seed=seed).val for seed in (0, 0, 1))
    assert first == again
    assert first != other


def test_small_classes_keep_one_image_for_validation_and_one_for_training(tmp_path):
    write_photo_folder(tmp_path, ("chelsea", "coffee"), per_class=2)
    split = read_image_folder(tmp_path, val_fraction=0.1)
    assert Counter(s.label for s in split.val) == {0: 1, 1: 1}
    assert Counter(s.label for s in split.train) == {0: 1, 1: 1}


def test_train_and_val_folders_are_used_as_they_are(tmp_path):
    write_photo_folder(tmp_path / "train", ("chelsea", "coffee"), per_class=5)
    write_photo_folder(tmp_path / "val", ("chelsea", "coffee"), per_class=2, seed=1)
    split = read_image_folder(tmp_path)
    assert split.presplit and split.classes == ["chelsea", "coffee"]
    assert len(split.train) == 10 and all(s.path.is_relative_to(tmp_path / "train") for s in split.train)
    assert len(split.val) == 4 and all(s.path.is_relative_to(tmp_path / "val") for s in split.val)


def test_a_lone_train_folder_is_split(tmp_path):
    write_photo_folder(tmp_path / "train", ("chelsea", "coffee"), per_class=5)
    split = read_image_folder(tmp_path)
    assert split.classes == ["chelsea", "coffee"] and not split.presplit
    assert len(split.train) + len(split.val) == 10


def _remove_class_images(root: Path, name: str, keep: int = 0) -> None:
    for path in sorted((root / name).iterdir())[keep:]:
        path.unlink()


BAD_FOLDERS = {
    "missing": (lambda root: root / "nowhere", ["not found", "nowhere"]),
    "a file": (lambda root: next((root / "coffee").iterdir()), ["is not a folder"]),
    "no classes": (lambda root: root / "coffee", ["no class folders", "subfolder"]),
    "one class": (lambda root: (shutil.rmtree(root / "chelsea"), shutil.rmtree(root / "coffee"), root)[-1],
                  ["only one class", "astronaut", "at least two"]),
    "empty class": (lambda root: (_remove_class_images(root, "coffee"), root)[-1],
                    ["coffee", "no readable image"]),
    "only corrupt files": (lambda root: (_remove_class_images(root, "coffee"),
                                         (root / "coffee" / "a.png").write_bytes(b"nope"), root)[-1],
                           ["coffee", "no readable image", "1 unreadable file(s) skipped"]),
    "one image": (lambda root: (_remove_class_images(root, "chelsea", keep=1), root)[-1],
                  ["chelsea", "only 1 readable image", "at least 2"]),
}


@pytest.mark.parametrize("case", BAD_FOLDERS)
def test_bad_folders_are_refused_in_one_line_naming_the_problem(folder, case):
    make, words = BAD_FOLDERS[case]
    with pytest.raises(InputError) as refused:
        read_image_folder(make(folder))
    message = str(refused.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_train_and_val_with_different_classes_are_refused(tmp_path):
    write_photo_folder(tmp_path / "train", ("chelsea", "coffee"), per_class=2)
    write_photo_folder(tmp_path / "val", ("chelsea", "astronaut"), per_class=2)
    with pytest.raises(InputError, match=r"same class folders; only in train/: coffee; only in val/: astronaut"):
        read_image_folder(tmp_path)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_a_validation_fraction_outside_0_1_is_refused(clean_folder, fraction):
    with pytest.raises(InputError, match="validation fraction"):
        read_image_folder(clean_folder, val_fraction=fraction)


def test_validation_images_are_preprocessed_as_inference_preprocesses_frames(clean_folder):
    path = next((clean_folder / "chelsea").glob("*.png"))
    ours = val_transform(64, MEAN, STD)(read_rgb(path))
    inference = Preprocessor(64, MEAN, STD, torch.device("cpu"))([read_image(path)])[0]
    assert ours.shape == inference.shape == (3, 64, 64) and ours.dtype == torch.float32
    # The same resize kernel on the same uint8 pixels, the same maths: equal but for float rounding
    # (one grey level would be 1 / 255 / std = 0.017 here).
    assert (ours - inference).abs().max().item() < 1e-5


def test_images_decode_as_rgb(clean_folder):
    path = next((clean_folder / "chelsea").glob("*.png"))
    bgr = read_image(path)
    assert np.array_equal(read_rgb(path).permute(1, 2, 0).numpy(), bgr[..., ::-1])


def test_training_images_are_augmented_and_normalised(clean_folder):
    image = read_rgb(next((clean_folder / "coffee").glob("*.jpg")))
    transform = train_transform(48, MEAN, STD)
    torch.manual_seed(0)
    first, second = transform(image), transform(image)
    assert first.shape == second.shape == (3, 48, 48) and first.dtype == torch.float32
    assert not torch.equal(first, second)
    # Normalised: a [0, 1] pixel p maps to (p - mean) / std.
    low = torch.tensor([(0 - m) / s for m, s in zip(MEAN, STD)]).view(3, 1, 1)
    high = torch.tensor([(1 - m) / s for m, s in zip(MEAN, STD)]).view(3, 1, 1)
    assert (first >= low - 1e-5).all() and (first <= high + 1e-5).all()


def test_the_loader_yields_batches_of_images_and_labels(clean_folder):
    split = read_image_folder(clean_folder)
    loader = make_loader(split.val, val_transform(32, MEAN, STD), 8, shuffle=False, workers=0, seed=0)
    images, labels = next(iter(loader))
    assert images.shape == (8, 3, 32, 32) and labels.tolist() == [s.label for s in split.val[:8]]
    assert len(ImageDataset(split.val, val_transform(32, MEAN, STD))) == len(split.val)
    shuffled = make_loader(split.train, train_transform(32, MEAN, STD), 32, shuffle=True, workers=0, seed=0)
    assert len(shuffled) == len(split.train) // 32  # the last partial batch is dropped


class _WorkerState(torch.utils.data.Dataset):
    """What a worker process sees: its SIGINT and SIGTERM handlers and a draw from NumPy's generator."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> tuple[bool, bool, float]:
        return (signal.getsignal(signal.SIGINT) is signal.SIG_IGN, signal.getsignal(signal.SIGTERM) is signal.SIG_DFL,
                float(np.random.random()))


def test_workers_leave_signals_to_the_main_process_and_are_seeded():
    ctrl_c = signal.getsignal(signal.SIGINT)  # (ignored already if the tests were started in the background)
    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # a handler of the main process's, as the command's
    try:
        draws = []
        for _ in range(2):
            loader = torch.utils.data.DataLoader(_WorkerState(), batch_size=None, num_workers=2,
                                                 worker_init_fn=init_worker, generator=torch.Generator().manual_seed(0))
            items = list(loader)
            assert all(ignores_ctrl_c and default_term for ignores_ctrl_c, default_term, _ in items)
            draws.append([draw for _, _, draw in items])
        assert draws[0] == draws[1] and draws[0][0] != draws[0][1]  # seeded, and per worker
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert signal.getsignal(signal.SIGINT) is ctrl_c  # this process keeps its Ctrl-C as it was
