"""Fine-tune a classifier: the head alone first, then the backbone too, keeping the epoch with the best validation loss.

- **Phases**: for ``frozen_epochs`` epochs only the head trains (the backbone's BatchNorm layers stay in
  eval mode, so their running statistics are kept too); then ``unfreeze`` opens the whole backbone
  (``"all"``) or its last N stages, at ``lr * backbone_lr_scale``.
- **Optimiser**: AdamW (decoupled weight decay, not on biases and normalisation weights); the learning
  rate warms up linearly for ``warmup_epochs`` then follows a cosine to 0, stepped per batch:
  ``lr_t = lr * (1 + cos(pi * (t - w) / (T - w))) / 2`` for ``t >= w`` warm-up steps of ``T``.
- **Loss**: cross-entropy with label smoothing ``e`` (targets ``1 - e + e/C`` for the class, ``e/C`` elsewhere);
  validation reports plain cross-entropy, the quantity early stopping watches.
- **Precision**: autocast in fp16 (with a gradient scaler) or bf16; ``"auto"`` is the device type's measured
  default (:data:`AUTO_PRECISION`).
- **Keeping the best**: each epoch whose validation loss is the lowest so far is copied to the CPU and handed
  to ``on_best``; training stops early after ``patience`` epochs without one (counted from the unfreezing);
  at the end, on Ctrl-C too, the model holds the best epoch's weights.

Libraries log (see :mod:`streamcam.cli`): one summary line per epoch goes to the ``streamcam`` logger; a tqdm bar
shows the epoch's progress on a terminal.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torchvision.transforms import v2
from tqdm import tqdm

from .. import interrupts
from ..backends.torch_backend import PRECISIONS
from ..device import resolve_device, to_device
from ..errors import InputError
from ..loan import ModelLoan
from .data import ImageFolderSplit, Sample, make_loader, train_transform, val_transform
from .options import AUTO_PRECISION, AUTO_WORKERS, TrainOptions, resolve_precision, resolve_workers  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

WARMUP_START = 0.01  # the warm-up's first learning rate, as a fraction of the full one
POSTFIX_SECONDS = 0.5  # how often the bar's loss and accuracy are read back (each read waits for the device)
# Weights and batches in channels-last memory: training steps of the whole EfficientNet-Lite0 at 224, batch 32,
# ran at 16.6 images/s channels-last against 11.5 contiguous on the 2-core CPU (1.44x, medians of 3 rounds);
# NVIDIA advises it for mixed precision on CUDA too.
MEMORY_FORMAT = torch.channels_last
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@dataclass(frozen=True)
class EpochStats:
    """What one epoch did. Accuracies are fractions in [0, 1]; ``images_per_second`` is the training pass's."""

    epoch: int  # from 1
    epochs: int
    train_loss: float  # with label smoothing
    train_acc: float
    val_loss: float  # plain cross-entropy
    val_acc: float
    images_per_second: float
    seconds: float  # training and validation
    frozen: bool  # only the head trained
    best: bool  # the lowest validation loss so far

    def summary(self) -> str:
        """``epoch 3/15: train loss 0.410 acc 91.2% | val loss 0.220 acc 97.5% | 212 img/s | best``."""
        notes = "".join(note for note, on in ((" | head only", self.frozen), (" | best", self.best)) if on)
        return (f"epoch {self.epoch}/{self.epochs}: train loss {self.train_loss:.3f} acc {self.train_acc:.1%} | "
                f"val loss {self.val_loss:.3f} acc {self.val_acc:.1%} | {self.images_per_second:.0f} img/s{notes}")


@dataclass(frozen=True)
class TrainResult:
    """How training went; the model holds the weights of ``best`` (None if no epoch finished)."""

    best: EpochStats | None
    history: list[EpochStats]
    interrupted: bool  # Ctrl-C (or SIGTERM) stopped it
    stopped_early: bool  # the validation loss stopped improving
    seconds: float
    images_per_second: float  # training images per second of training passes

    @property
    def best_epoch(self) -> int | None:
        return None if self.best is None else self.best.epoch

    @property
    def best_val_loss(self) -> float:
        return math.nan if self.best is None else self.best.val_loss

    @property
    def best_val_acc(self) -> float:
        return math.nan if self.best is None else self.best.val_acc


class Evaluation(NamedTuple):
    """A model on a validation loader: mean cross-entropy, accuracy, and each sample's predicted class."""

    loss: float
    accuracy: float
    predictions: torch.Tensor  # (N,) int64 class indices, in the loader's order, on the CPU


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, precision: str = "fp32") -> Evaluation:
    """Run ``model`` in eval mode over ``loader`` (the modules' training flags are given back as they were)."""
    losses, predictions, targets = [], [], []
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.inference_mode(), _autocast(device, precision):
            for images, labels in loader:
                images, labels = _on_device(images, labels, device)
                logits = model(images).float()
                losses.append(F.cross_entropy(logits, labels, reduction="none"))
                predictions.append(logits.argmax(1))
                targets.append(labels)
    finally:
        for module, training in modes:
            module.training = training
    predicted, target = torch.cat(predictions), torch.cat(targets)
    return Evaluation(torch.cat(losses).mean().item(), (predicted == target).float().mean().item(), predicted.cpu())


def _on_device(images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return to_device(images, device).contiguous(memory_format=MEMORY_FORMAT), to_device(labels, device)


def _autocast(device: torch.device, precision: str) -> torch.autocast:
    dtype = PRECISIONS[precision]
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def train_classifier(
    model: nn.Module,
    head_params: list[nn.Parameter],
    stages: list[list[nn.Parameter]] | None,
    split: ImageFolderSplit,
    options: TrainOptions,
    on_best: Callable[[nn.Module, EpochStats], None] | None = None,
) -> TrainResult:
    """Fine-tune ``model`` on ``split`` (see the module's docstring); return when done, stopped early or interrupted.

    ``head_params`` are the new head's parameters; ``stages`` the backbone's parameters grouped by stage, from the
    last (nearest the head) to the first, for ``options.unfreeze = N`` (None: only ``"all"`` is possible).
    ``on_best(model, stats)`` is called as soon as an epoch has the lowest validation loss so far, while ``model``
    (on the training device) holds its weights: save it then, and a crash or Ctrl-C later loses nothing. A Ctrl-C
    arriving during that call waits for it to return. The model is given back as lent (device, memory format,
    training flags, ``requires_grad``), holding the best epoch's weights.
    """
    device = resolve_device(options.device)
    precision = resolve_precision(options.precision, device.type)
    head, backbone = _trainable_parts(model, head_params, stages, options.unfreeze)
    torch.manual_seed(options.seed)
    size, mean, std = options.input_size, options.mean, options.std
    workers = resolve_workers(options.workers, device.type)

    def loader(samples: list[Sample], transform: v2.Transform, shuffle: bool) -> DataLoader:
        # Pinned host memory only serves copies to CUDA.
        return make_loader(samples, transform, options.batch, shuffle=shuffle, workers=workers, seed=options.seed,
                           pin_memory=device.type == "cuda")

    train_loader = loader(split.train, train_transform(size, mean, std), shuffle=True)
    val_loader = loader(split.val, val_transform(size, mean, std), shuffle=False)
    log.info("training on %s (%s), %d DataLoader worker(s), %d batches of %d an epoch: %s", device, precision,
             workers, len(train_loader), options.batch, _plan(options, backbone))
    loan = ModelLoan(model)
    history: list[EpochStats] = []
    best: EpochStats | None = None
    best_state: dict[str, torch.Tensor] | None = None
    interrupted = stopped_early = False
    trained = _Pass()  # the training passes so far
    started = time.perf_counter()
    try:
        model.to(device, memory_format=MEMORY_FORMAT)
        fit = _Fit(model, head, backbone, options, len(train_loader), precision, device)
        for epoch in range(1, options.epochs + 1):
            frozen = epoch <= options.frozen_epochs
            _set_trainable(model, head, [] if frozen else backbone)
            epoch_started = time.perf_counter()
            with _bar(train_loader, f"epoch {epoch}/{options.epochs}", options.progress) as bar:
                train = _train_epoch(fit, train_loader, device, bar)
            trained = _Pass(trained.images + train.images, trained.seconds + train.seconds)
            val = evaluate(model, val_loader, device, precision)
            stats = EpochStats(epoch, options.epochs, train.loss, train.accuracy, val.loss, val.accuracy, train.rate,
                               time.perf_counter() - epoch_started, frozen, best is None or val.loss < best.val_loss)
            history.append(stats)
            log.info("%s", stats.summary())
            if stats.best:
                with interrupts.deferred():  # the copy and the caller's save complete, or neither starts
                    best, best_state = stats, _cpu_copy(model.state_dict())
                    if on_best is not None:
                        on_best(model, stats)
            elif epoch - max(best.epoch if best else 0, options.frozen_epochs) >= options.patience:
                stopped_early = True
                log.info("stopping early: no lower validation loss for %d epochs", options.patience)
                break
    except KeyboardInterrupt:  # a second one, while the best state is put back, is not caught
        interrupted = True
        log.warning("interrupted: %s", f"keeping epoch {best.epoch}, the best so far" if best else "no epoch finished")
    finally:
        if best_state is not None:
            model.load_state_dict(best_state)
        loan.give_back()
    return TrainResult(best, history, interrupted, stopped_early, time.perf_counter() - started,
                       trained.rate if trained.images else 0.0)


def _plan(options: TrainOptions, backbone: list[nn.Parameter]) -> str:
    """What trains when, in words."""
    if not backbone or options.frozen_epochs >= options.epochs:
        return "the head alone"
    part = "the whole backbone" if options.unfreeze == "all" else f"the backbone's last {options.unfreeze} stage(s)"
    opened = f"the head and {part} ({sum(p.numel() for p in backbone):,} more parameters)"
    return f"the head alone for {options.frozen_epochs} epoch(s), then {opened}" if options.frozen_epochs else opened


def _trainable_parts(model: nn.Module, head_params: Iterable[nn.Parameter], stages: list[list[nn.Parameter]] | None,
                     unfreeze: str | int) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """The head's parameters, and the backbone's that ``unfreeze`` opens (no parameter twice, none of the head's)."""
    owned = {id(p) for p in model.parameters()}
    head = _unique(head_params)
    if not head or any(id(p) not in owned for p in head):
        raise ValueError("head_params must be some of the model's parameters")
    if unfreeze == "all":
        chosen: Iterable[nn.Parameter] = model.parameters()
    elif unfreeze and stages is None:
        raise InputError(f"cannot unfreeze the last {unfreeze} stages: this backbone's stages are unknown; "
                         f"unfreeze all of it, or none (0)")
    elif unfreeze > len(stages or []):
        raise InputError(f"cannot unfreeze the last {unfreeze} stages: the backbone has {len(stages)}")
    else:
        chosen = (p for stage in (stages or [])[:unfreeze] for p in stage)
    head_ids = {id(p) for p in head}
    return head, [p for p in _unique(chosen) if id(p) not in head_ids]


def _unique(params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    return list({id(p): p for p in params}.values())


def _set_trainable(model: nn.Module, head: list[nn.Parameter], backbone: list[nn.Parameter]) -> None:
    """Train ``head`` and ``backbone`` only; BatchNorm layers without a trained parameter stay in eval mode."""
    model.requires_grad_(False)
    for p in (*head, *backbone):
        p.requires_grad_(True)
    model.train()
    for module in model.modules():
        if isinstance(module, BATCH_NORMS) and not any(p.requires_grad for p in module.parameters(recurse=False)):
            module.eval()


def _param_groups(params: list[nn.Parameter], lr: float, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on weight matrices and kernels, not on biases and normalisation scales (1-D),
    which it would only pull towards 0."""
    groups = [{"params": [p for p in params if p.ndim > 1], "lr": lr, "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim <= 1], "lr": lr, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


class _Fit:
    """One optimisation step per batch: forward under autocast, (scaled) backward, AdamW step, schedule step."""

    def __init__(self, model: nn.Module, head: list[nn.Parameter], backbone: list[nn.Parameter],
                 options: TrainOptions, steps_per_epoch: int, precision: str, device: torch.device) -> None:
        self.model = model
        self.device = device
        self.precision = precision
        self.criterion = nn.CrossEntropyLoss(label_smoothing=options.label_smoothing)
        groups = _param_groups(head, options.lr, options.weight_decay)
        groups += _param_groups(backbone, options.lr * options.backbone_lr_scale, options.weight_decay)
        # Frozen parameters have no gradient: AdamW leaves them (and their decay) alone until they get one.
        self.optimizer = torch.optim.AdamW(groups)
        self.scheduler = lr_schedule(self.optimizer, options.epochs * steps_per_epoch,
                                   options.warmup_epochs * steps_per_epoch)
        # fp16's narrow range needs the loss scaled up so that small gradients do not vanish; bf16's does not.
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Train on one batch; its mean loss and its count of right answers, as tensors on the device."""
        with _autocast(self.device, self.precision):
            logits = self.model(images)
        loss = self.criterion(logits.float(), labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss.detach(), (logits.detach().argmax(1) == labels).sum()


def lr_schedule(optimizer: torch.optim.Optimizer, steps: int, warmup: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up over ``warmup`` steps, then a cosine down to 0 at ``steps``."""
    warmup = min(warmup, steps - 1)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps - warmup))
    if warmup <= 0:
        return cosine
    linear = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=WARMUP_START, total_iters=warmup)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [linear, cosine], milestones=[warmup])


def _bar(loader: DataLoader, description: str, progress: bool) -> tqdm:
    """A bar counting the images of one pass over ``loader``; drawn only on a terminal (and with ``progress``)."""
    total = len(loader) * loader.batch_size if loader.drop_last else len(loader.dataset)
    return tqdm(total=total, unit="img", desc=description, leave=False, disable=None if progress else True)


class _Pass(NamedTuple):
    """One or more training passes: images seen, seconds taken (data loading included), mean loss, accuracy."""

    images: int = 0
    seconds: float = 0.0
    loss: float = math.nan
    accuracy: float = math.nan

    @property
    def rate(self) -> float:
        return self.images / self.seconds


def _train_epoch(fit: _Fit, loader: DataLoader, device: torch.device, bar: tqdm) -> _Pass:
    """One pass over ``loader``."""
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    started = shown = time.perf_counter()
    for images, labels in loader:
        loss, right = fit.step(*_on_device(images, labels, device))
        loss_sum += loss * len(labels)
        correct += right
        seen += len(labels)
        bar.update(len(labels))
        if time.perf_counter() - shown >= POSTFIX_SECONDS:
            shown = time.perf_counter()
            bar.set_postfix_str(_progress(loss_sum.item() / seen, correct.item() / seen, seen / (shown - started)))
    return _Pass(seen, time.perf_counter() - started, loss_sum.item() / seen, correct.item() / seen)


def _progress(loss: float, accuracy: float, rate: float) -> str:
    return f"loss {loss:.3f} acc {accuracy:.1%} {rate:.0f} img/s"


def _cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy of ``state`` on the CPU (a copy even where the tensors already are on the CPU)."""
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in state.items()}
