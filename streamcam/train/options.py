"""How to train (``streamcam train``'s training options), each declared once; no torch here: the parser
is built from these declarations before torch loads."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..defaults import PRECISION_NAMES
from ..errors import InputError
from ..options import option

if TYPE_CHECKING:
    from ..models import LoadedModel

TRAINING = "training"  # the section of `streamcam train --help`


def parse_unfreeze(text: str) -> str | int:
    """``all`` or a whole number of stages."""
    import argparse

    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is neither 'all' nor a number of stages") from None


PRECISION_CHOICES = ("auto", *PRECISION_NAMES)
# precision="auto" per device type. cpu: fp32, measured 8x faster than bf16 autocast on the 2-core CPU
# (no native bf16 there; scripts/bench_train.py, EfficientNet-Lite0 at 224, batch 32, 1 worker: 35.9 against 4.3
# images/s with the head alone, 11.3 against 1.4 for the whole net); cuda: fp16 with a gradient scaler
# (not measured: no GPU here; the tensor cores' format, as PyTorch's AMP recipe). Any other device: fp32.
AUTO_PRECISION = {"cpu": "fp32", "cuda": "fp16"}
# workers=None (DataLoader processes) per device type. cpu: 0, measured fastest on the 2-core CPU
# (scripts/bench_train.py, EfficientNet-Lite0 at 224, batch 32, medians of 3 rounds): the head alone 68.3
# images/s with 0 workers, 43.6 with 1, 45.0 with 2; the whole net 19.5, 13.3, 13.1. Training there is bound
# by the model's maths on every core, and a worker's decoding takes a core from it. Elsewhere (cuda: not
# measured, no GPU here) the device computes while workers decode: up to ACCELERATOR_WORKERS, one per core.
AUTO_WORKERS = {"cpu": 0}
ACCELERATOR_WORKERS = 4


def resolve_workers(workers: int | None, device_type: str) -> int:
    """``workers`` itself, or for None the measured default of ``device_type`` (see AUTO_WORKERS)."""
    if workers is not None:
        return workers
    return AUTO_WORKERS.get(device_type, min(ACCELERATOR_WORKERS, os.cpu_count() or 1))


def resolve_precision(choice: str, device_type: str) -> str:
    """``choice`` itself, or for ``"auto"`` the measured default of ``device_type``."""
    if choice not in PRECISION_CHOICES:
        raise InputError(f"precision must be one of {', '.join(PRECISION_CHOICES)}, not {choice!r}")
    return AUTO_PRECISION.get(device_type, "fp32") if choice == "auto" else choice


@dataclass(frozen=True)
class TrainOptions:
    """How to train; checked on construction (a bad value raises :class:`InputError`).

    ``input_size``, ``mean`` and ``std`` are the backbone's preprocessing (see :meth:`for_model`).
    """

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    epochs: int = option(15, "--epochs", parse=int, metavar="N", group=TRAINING,
                         help="at most N epochs (default 15); training stops earlier when the validation loss stops "
                              "improving (`--patience`)")
    batch: int = option(32, "--batch", parse=int, metavar="N", group=TRAINING, help="images per step (default 32)")
    lr: float = option(1e-3, "--lr", parse=float, metavar="LR", group=TRAINING,
                       help="the head's peak learning rate (default 0.001; the backbone's is a tenth of it), after a "
                            "one-epoch warm-up, then a cosine to 0 (AdamW, label smoothing 0.1)")
    backbone_lr_scale: float = 0.1  # the backbone's peak learning rate, as a fraction of lr
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    warmup_epochs: int = 1
    frozen_epochs: int = option(2, "--frozen-epochs", parse=int, metavar="N", group=TRAINING,
                                help="epochs in which only the new head trains, the backbone frozen (default 2)")
    unfreeze: str | int = option("all", "--unfreeze", parse=parse_unfreeze, metavar="all|N", group=TRAINING,
                                 help="then train the whole backbone (`all`, default) or its last N stages (e.g. "
                                      "`layer4` alone for N = 1 on a ResNet; 0: the head alone throughout)")
    patience: int = option(4, "--patience", parse=int, metavar="N", group=TRAINING,
                           help="stop after N epochs without a lower validation loss (default 4); the best epoch "
                                "is the one kept")
    workers: int | None = option(None, "--workers", parse=int, metavar="N", group=TRAINING,
                                 help="DataLoader processes decoding images (0: in the training process); default: "
                                      "0 on a CPU, where that is measured fastest, up to 4 on CUDA")
    seed: int = option(0, "--seed", parse=int, metavar="N", group=TRAINING,
                       help="seeds the split, the new head, the shuffling and the augmentation (default 0)")
    device: str = option("auto", "--device", metavar="D", group=TRAINING,
                         help="`auto` (default: CUDA if present), `cpu`, `cuda`, `cuda:N`")
    precision: str = option("auto", "--precision", choices=PRECISION_CHOICES, metavar="P", group=TRAINING,
                            help="`auto` (default: fp16 mixed precision with a gradient scaler on CUDA, fp32 on a "
                                 "CPU, measured 8x faster than bf16 there), `fp32`, `fp16`, `bf16`")
    progress: bool = True  # a tqdm bar per epoch (on a terminal only)

    @classmethod
    def for_model(cls, loaded: LoadedModel, **options) -> TrainOptions:
        """Options for a :class:`streamcam.models.LoadedModel`'s backbone: its input size, mean and std (unless
        ``options`` say otherwise)."""
        return cls(**{"input_size": loaded.input_size, "mean": loaded.mean, "std": loaded.std, **options})

    def __post_init__(self) -> None:
        for name in ("input_size", "epochs", "batch"):
            _check_int(name, getattr(self, name), 1)
        for name in ("warmup_epochs", "frozen_epochs", "seed"):
            _check_int(name, getattr(self, name), 0)
        if self.workers is not None:
            _check_int("workers", self.workers, 0)
        _check_int("patience", self.patience, 1)
        if self.unfreeze != "all":
            _check_int("unfreeze", self.unfreeze, 0, "'all' or ")
        for name in ("lr", "backbone_lr_scale"):
            if not (isinstance(getattr(self, name), (int, float)) and getattr(self, name) > 0):
                raise InputError(f"{name} must be a number above 0, not {getattr(self, name)!r}")
        if not 0 <= self.weight_decay:
            raise InputError(f"weight_decay must be 0 or more, not {self.weight_decay!r}")
        if not 0 <= self.label_smoothing < 1:
            raise InputError(f"label_smoothing must lie in [0, 1), not {self.label_smoothing!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise InputError(f"mean and std must be 3 numbers each (RGB), std above 0: {self.mean}, {self.std}")
        resolve_precision(self.precision, "cpu")


def _check_int(name: str, value: object, least: int, others: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InputError(f"{name} must be {others}a whole number >= {least}, not {value!r}")
