"""The training loop on real photos: it learns, keeps the best epoch, freezes then unfreezes, stops early,
reproduces a seeded run, and gives the best weights back on Ctrl-C."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TinyGapNet
from torch import nn

from streamcam.demo import write_photo_folder
from streamcam.errors import InputError
from streamcam.models import load_model
from streamcam.train.data import (
    ImageFolderSplit,
    make_loader,
    read_image_folder,
    val_transform,
)
from streamcam.train.loop import (
    AUTO_PRECISION,
    AUTO_WORKERS,
    EpochStats,
    TrainOptions,
    evaluate,
    lr_schedule,
    resolve_precision,
    resolve_workers,
    train_classifier,
)

CLASSES = ("chelsea", "coffee", "astronaut")
TINY = {"input_size": 32, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> ImageFolderSplit:
    """Three classes of real photos, 30 images each (64-96 px), with a corrupt file and a text file."""
    root = tmp_path_factory.mktemp("photos")
    write_photo_folder(root, CLASSES, per_class=30)
    (root / "coffee" / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (root / "astronaut" / "README.txt").write_text("not an image")
    split = read_image_folder(root)
    assert split.skipped_count == 2
    return split


def tiny_options(**changes) -> TrainOptions:
    settings = {"epochs": 3, "batch": 16, "lr": 1e-2, "frozen_epochs": 0, "warmup_epochs": 0, "workers": 0,
                "device": "cpu", "patience": 10, **TINY, **changes}
    return TrainOptions(**settings)


class SpyNet(nn.Module):
    """A small CNN with BatchNorm and a GAP + linear head, which notes on each training forward pass which
    parameters train and which BatchNorm layers are in training mode, and can raise Ctrl-C at a given pass."""

    def __init__(self, classes: int = 3, interrupt_at: int | None = None) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        )
        self.fc = nn.Linear(16, classes)
        self.interrupt_at = interrupt_at
        self.passes: list[tuple[set[str], set[str]]] = []  # per training pass: trained params, training BNs
        self.state_at_interrupt: dict[str, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            trained = {name for name, p in self.named_parameters() if p.requires_grad}
            batch_norms = {name for name, m in self.named_modules() if isinstance(m, nn.BatchNorm2d) and m.training}
            self.passes.append((trained, batch_norms))
            if len(self.passes) == self.interrupt_at:
                self.state_at_interrupt = {k: v.clone() for k, v in self.state_dict().items()}
                raise KeyboardInterrupt
        return self.fc(self.features(x).mean((2, 3)))

    def stages(self) -> list[list[nn.Parameter]]:
        """The backbone's stages, last first."""
        return [[*self.features[3].parameters(), *self.features[4].parameters()],
                [*self.features[0].parameters(), *self.features[1].parameters()]]


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_the_default_model_learns_the_photos_with_its_backbone_frozen(split, caplog):
    loaded = load_model()  # EfficientNet-Lite0 with its ImageNet weights, offline
    model = loaded.module
    torch.manual_seed(0)
    model.classifier = nn.Linear(model.classifier.in_features, len(split.classes))
    before = snapshot(model)
    options = TrainOptions.for_model(loaded, input_size=128, epochs=3, frozen_epochs=3, batch=16, lr=3e-3,
                                     workers=0, device="cpu")
    with caplog.at_level(logging.INFO, logger="streamcam"):
        result = train_classifier(model, list(model.classifier.parameters()), None, split, options)
    assert not result.interrupted and not result.stopped_early and len(result.history) == 3
    assert result.best_val_acc >= 0.9, [h.summary() for h in result.history]
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert result.history[-1].val_loss < result.history[0].val_loss
    # Head only: every backbone weight and BatchNorm statistic is as it was; the head changed.
    after = snapshot(model)
    assert same_state({k: v for k, v in before.items() if not k.startswith("classifier.")},
                      {k: v for k, v in after.items() if not k.startswith("classifier.")})
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])
    # Given back as lent: eval mode, every parameter trainable again, in contiguous memory (trained channels-last).
    assert not model.training and all(p.requires_grad and p.is_contiguous() for p in model.parameters())
    # One summary line per epoch, through the streamcam logger.
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(lines) == 3 and lines[0].startswith("epoch 1/3: train loss ") and " img/s | head only" in lines[0]
    # The predictions evaluate() reports are the model's, in the validation samples' order.
    loader = make_loader(split.val, val_transform(128, loaded.mean, loaded.std), 16, shuffle=False, workers=0, seed=0)
    evaluation = evaluate(model, loader, torch.device("cpu"))
    labels = torch.tensor([s.label for s in split.val])
    assert evaluation.predictions.shape == labels.shape
    assert evaluation.accuracy == pytest.approx((evaluation.predictions == labels).float().mean().item())
    assert evaluation.loss == pytest.approx(result.best_val_loss, rel=1e-4)


def test_fine_tuning_the_whole_default_model_keeps_it_right(split):
    loaded = load_model()
    model = loaded.module
    torch.manual_seed(0)
    model.classifier = nn.Linear(model.classifier.in_features, len(split.classes))
    before = snapshot(model)
    options = TrainOptions.for_model(loaded, input_size=128, epochs=3, frozen_epochs=1, batch=16, lr=3e-3,
                                     device="cpu")
    result = train_classifier(model, list(model.classifier.parameters()), None, split, options)
    assert [h.frozen for h in result.history] == [True, False, False]
    assert result.best_val_acc >= 0.9, [h.summary() for h in result.history]
    # Fine-tuning beat the head alone, so the kept epoch is one in which the backbone trained, and its
    # BatchNorm statistics followed the new images.
    assert result.best_epoch > 1 and result.best_val_loss < result.history[0].val_loss
    after = snapshot(model)
    assert not torch.equal(before["conv_stem.weight"], after["conv_stem.weight"])
    assert not torch.equal(before["bn1.running_mean"], after["bn1.running_mean"])


def test_the_best_epoch_is_kept_and_handed_over(split):
    torch.manual_seed(0)
    model = TinyGapNet(classes=3)
    saved: list[tuple[int, dict[str, torch.Tensor]]] = []

    def on_best(trained: nn.Module, stats: EpochStats) -> None:
        assert trained is model and stats.best
        saved.append((stats.epoch, snapshot(trained)))

    result = train_classifier(model, list(model.fc.parameters()), None, split, tiny_options(epochs=5, lr=3e-2),
                              on_best)
    losses = [h.val_loss for h in result.history]
    assert len(result.history) == 5 and [h.epoch for h in result.history] == [1, 2, 3, 4, 5]
    assert result.best_val_loss == min(losses) and result.best_epoch == 1 + losses.index(min(losses))
    assert [h.epoch for h in result.history if h.best] == [epoch for epoch, _ in saved]
    assert saved[-1][0] == result.best_epoch and same_state(saved[-1][1], snapshot(model))
    loader = make_loader(split.val, val_transform(32, TINY["mean"], TINY["std"]), 16, shuffle=False, workers=0,
                         seed=0)
    assert evaluate(model, loader, torch.device("cpu")).loss == pytest.approx(result.best_val_loss, rel=1e-5)
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert result.images_per_second > 0 and result.seconds > 0


@pytest.mark.parametrize("workers", [0, 2])
def test_a_seeded_run_reproduces_its_first_epoch(split, workers):
    def first_epoch(seed: int) -> float:
        torch.manual_seed(123)  # the same initial weights each time
        model = TinyGapNet(classes=3)
        options = tiny_options(epochs=1, seed=seed, workers=workers)
        return train_classifier(model, list(model.fc.parameters()), None, split, options).history[0].train_loss

    assert first_epoch(0) == first_epoch(0)
    assert first_epoch(0) != first_epoch(1)


def test_the_backbone_stays_frozen_then_its_last_stages_open(split):
    torch.manual_seed(0)
    model = SpyNet()
    before = snapshot(model)
    options = tiny_options(epochs=3, frozen_epochs=1, unfreeze=1, batch=24)  # 3 batches an epoch
    train_classifier(model, list(model.fc.parameters()), model.stages(), split, options)
    trained = [sorted(names) for names, _ in model.passes]
    batch_norms = [sorted(names) for _, names in model.passes]
    head = ["fc.bias", "fc.weight"]
    last_stage = sorted([*head, "features.3.bias", "features.3.weight", "features.4.bias", "features.4.weight"])
    assert trained[:3] == [head] * 3 and trained[3:] == [last_stage] * 6
    assert batch_norms[:3] == [[]] * 3 and batch_norms[3:] == [["features.4"]] * 6
    after = snapshot(model)
    for name in ("features.0.weight", "features.1.weight", "features.1.running_mean", "features.1.running_var"):
        assert torch.equal(before[name], after[name]), name  # never opened
    assert not torch.equal(before["features.3.weight"], after["features.3.weight"])


def test_unfreeze_all_trains_every_parameter_and_batchnorm(split):
    torch.manual_seed(0)
    model = SpyNet()
    train_classifier(model, list(model.fc.parameters()), None, split, tiny_options(epochs=1))
    assert all(names == {n for n, _ in model.named_parameters()} for names, _ in model.passes)
    assert all(norms == {"features.1", "features.4"} for _, norms in model.passes)


@pytest.mark.parametrize(("frozen_epochs", "expected_epochs"), [(0, 3), (4, 6)])
def test_training_stops_early_when_the_validation_loss_stalls(split, frozen_epochs, expected_epochs):
    torch.manual_seed(0)
    model = TinyGapNet(classes=3)
    # A learning rate too small to move any weight: the validation loss never improves after epoch 1.
    options = tiny_options(epochs=10, lr=1e-30, patience=2, frozen_epochs=frozen_epochs)
    result = train_classifier(model, list(model.fc.parameters()), None, split, options)
    # Patience counts from the unfreezing: the head-only epochs never end the run.
    assert result.stopped_early and len(result.history) == expected_epochs < options.epochs
    assert result.best_epoch == 1


def test_ctrl_c_keeps_the_best_epoch(split):
    torch.manual_seed(0)
    model = SpyNet(interrupt_at=2 * 4 + 2)  # the 2nd batch of epoch 3 (4 batches an epoch)
    saved: list[dict[str, torch.Tensor]] = []
    result = train_classifier(model, list(model.fc.parameters()), None, split,
                              tiny_options(epochs=5, batch=16, lr=3e-2), lambda m, s: saved.append(snapshot(m)))
    assert result.interrupted and len(result.history) == 2 and result.best_epoch in (1, 2)
    assert same_state(saved[-1], snapshot(model))
    assert not same_state(model.state_at_interrupt, snapshot(model))  # epoch 3's first step was undone


def test_ctrl_c_before_the_first_epoch_ends_keeps_nothing(split):
    model = SpyNet(interrupt_at=1)
    result = train_classifier(model, list(model.fc.parameters()), None, split, tiny_options())
    assert result.interrupted and result.best is None and result.history == []


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains(split, precision):
    torch.manual_seed(0)
    model = TinyGapNet(classes=3)
    result = train_classifier(model, list(model.fc.parameters()), None, split,
                              tiny_options(epochs=2, precision=precision))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert result.history[-1].train_loss < result.history[0].train_loss


def test_auto_precision_and_workers_are_each_device_types_measured_defaults():
    assert resolve_precision("auto", "cpu") == AUTO_PRECISION["cpu"] == "fp32"
    assert resolve_precision("auto", "cuda") == AUTO_PRECISION["cuda"] == "fp16"
    assert resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_workers(None, "cpu") == AUTO_WORKERS["cpu"] == 0
    assert resolve_workers(None, "cuda") == min(4, os.cpu_count())
    assert resolve_workers(3, "cpu") == 3


@pytest.mark.parametrize(("changes", "words"), [
    ({"epochs": 0}, "epochs must be a whole number >= 1"),
    ({"unfreeze": "some"}, "unfreeze must be 'all' or a whole number >= 0"),
    ({"precision": "fp8"}, "precision must be one of auto, fp32, fp16, bf16"),
    ({"lr": 0}, "lr must be a number above 0"),
    ({"label_smoothing": 1.0}, "label_smoothing must lie in [0, 1)"),
])
def test_bad_options_are_refused(changes, words):
    with pytest.raises(InputError) as refused:
        tiny_options(**changes)
    assert words in str(refused.value)


@pytest.mark.parametrize(("stages", "unfreeze", "words"), [
    (None, 1, "stages are unknown"),
    ("two", 3, "the backbone has 2"),
])
def test_unfreezing_more_stages_than_there_are_is_refused(split, stages, unfreeze, words):
    model = SpyNet()
    with pytest.raises(InputError, match=words):
        train_classifier(model, list(model.fc.parameters()), model.stages() if stages else None, split,
                         tiny_options(unfreeze=unfreeze))


def test_the_learning_rate_warms_up_then_follows_a_cosine():
    optimizer = torch.optim.AdamW([{"params": [nn.Parameter(torch.zeros(2))], "lr": 1.0},
                                   {"params": [nn.Parameter(torch.zeros(2))], "lr": 0.1}])  # head, backbone
    schedule = lr_schedule(optimizer, steps=20, warmup=5)
    rates = []
    for _ in range(20):
        rates.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        schedule.step()
    head = [rate[0] for rate in rates]
    assert head[0] == pytest.approx(0.01) and head[5] == pytest.approx(1.0)  # linear from 1 % to the peak
    assert head[:6] == pytest.approx([0.01 + i * 0.99 / 5 for i in range(6)])
    assert head[5:] == pytest.approx([(1 + math.cos(math.pi * t / 15)) / 2 for t in range(15)])  # then the cosine
    assert [rate[1] for rate in rates] == pytest.approx([0.1 * rate for rate in head])  # the backbone's, scaled


def test_the_epoch_summary_is_one_line():
    stats = EpochStats(3, 15, 0.41, 0.912, 0.22, 0.975, 212.4, 12.0, frozen=False, best=True)
    assert stats.summary() == "epoch 3/15: train loss 0.410 acc 91.2% | val loss 0.220 acc 97.5% | 212 img/s | best"


# Trains in a process of its own, as the command will: streamcam's signal handling installed, outputs open,
# DataLoader workers running; while epoch 2 is being saved the whole process group gets Ctrl-C, as from a
# terminal, and the save goes on to its end.
CTRL_C_RUN = """
import json, os, signal, sys
from pathlib import Path
import torch
from conftest import TinyGapNet
from streamcam import interrupts
from streamcam.train.data import read_image_folder
from streamcam.train.loop import TrainOptions, train_classifier

def on_best(model, stats):
    if stats.epoch == 2:
        os.killpg(os.getpgrp(), signal.SIGINT)
    Path(sys.argv[2]).write_text(str(stats.epoch))  # "saved"

interrupts.install()
torch.manual_seed(0)
model = TinyGapNet(classes=3)
options = TrainOptions(input_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, epochs=6, batch=16, lr=3e-2, workers=2,
                       frozen_epochs=0, device="cpu", patience=10)
with interrupts.outputs_open():
    result = train_classifier(model, list(model.fc.parameters()), None, read_image_folder(Path(sys.argv[1])), options,
                              on_best)
print(json.dumps({"interrupted": result.interrupted, "epochs": len(result.history), "best": result.best_epoch}))
"""


def test_ctrl_c_from_the_terminal_waits_for_the_save_then_keeps_the_best_epoch(split, tmp_path):
    saved = tmp_path / "saved"
    tests = str(Path(__file__).parent)
    done = subprocess.run([sys.executable, "-c", CTRL_C_RUN, str(split.root), str(saved)], capture_output=True,
                          text=True, timeout=120, check=False, start_new_session=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"interrupted": True, "epochs": 2, "best": 2}
    assert saved.read_text() == "2"  # the interrupt waited for on_best to return
    assert "Traceback" not in done.stderr
