"""``streamcam train DATA_DIR -o my_model.safetensors``: checked options -> data, backbone, new head,
training, one model file (saved at every best epoch), its report, and with ``--export`` its ONNX graph."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .. import interrupts
from ..defaults import DEFAULT_MODEL
from ..errors import InputError
from ..options import option

if TYPE_CHECKING:
    from .loop import TrainResult

log = logging.getLogger("streamcam")

REPORT_SUFFIX = ".report.html"  # my_model.safetensors -> my_model.report.html, beside it
REPORT_IMAGES = 48  # validation images shown in the report (misclassified first)


@dataclass(frozen=True)
class TrainCommand:
    """What ``streamcam train`` was asked, besides how to train (:class:`~.loop.TrainOptions`); checked on
    construction, before torch loads (:meth:`check`)."""

    data: str = option("")  # DATA_DIR, the command's positional argument
    output: str | None = option(
        None, "-o", "--output", metavar="FILE",
        help="the model file to write (`.safetensors`; default: `DATA_DIR`'s name + `.safetensors`, here); saved at "
             "every better epoch, so an interrupted run keeps the best so far. Its report goes beside it: "
             "`NAME.report.html`")
    overwrite: bool = option(False, "--overwrite", sets=True,
                             help="replace an existing model file, report or graph, each once its replacement is "
                                  "complete")
    model: str = option(
        DEFAULT_MODEL, "--model", metavar="NAME",
        help="the backbone: `efficientnet_lite0` (default; its ImageNet weights ship with streamcam, so this works "
             "offline), a torchvision classifier (`resnet18`, `resnet50`, `mobilenet_v3_large`, ...) or `timm:NAME`; "
             "its head becomes global average pooling + one linear layer for your classes, so CAM works on the result")
    weights: str | None = option(
        None, "--weights", metavar="FILE",
        help="the backbone's pretrained weights (a state dict or `.safetensors`) for a torchvision or timm backbone; "
             "without it they come from those libraries' caches, or download when online")
    val_fraction: float = option(0.2, "--val-fraction", parse=float, metavar="F",
                                 help="without `train/` and `val/` folders, the share of each class kept for "
                                      "validation (default 0.2, at least one image a class)")
    export: bool = option(False, "--export", sets=True,
                          help="also write the ONNX graph (with its in-graph CAM) beside the model: `NAME.onnx`")
    report: bool = option(True, "--no-report", sets=False, help="do not write the report")

    @property
    def model_file(self) -> Path:
        return Path(self.output) if self.output else Path(f"{Path(self.data).resolve().name or 'model'}.safetensors")

    @property
    def report_file(self) -> Path:
        return self.model_file.with_name(self.model_file.name.removesuffix(".safetensors") + REPORT_SUFFIX)

    @property
    def graph_file(self) -> Path:
        return self.model_file.with_suffix(".onnx")

    def check(self) -> None:
        """Everything that needs no torch: the folder, the backbone's name and files, each output."""
        from ..identity import identify
        from ..model_names import check_model_name
        from ..plan import check_outputs, model_files
        from ..preflight import check_model_files

        data = Path(self.data)
        if not data.is_dir():
            raise InputError(f"{data} is not a folder" if data.exists() else f"no such folder: {data}")
        if self.model_file.suffix.lower() != ".safetensors":
            raise InputError(f"streamcam train writes a .safetensors model file: give -o a name ending in "
                             f".safetensors, not {self.model_file}")
        check_model_name(self.model)
        check_model_files(self.model, self.weights)
        outputs = [self.model_file] + [self.report_file] * self.report + [self.graph_file] * self.export
        options = ["-o"] + ["the report"] * self.report + ["--export"] * self.export
        check_outputs([identify(path) for path in outputs], model_files(self.model, self.weights, None),
                      self.overwrite, options)


def run_training(command: TrainCommand, training: dict) -> TrainResult:
    """Train as ``command`` and ``training`` (the :class:`~.loop.TrainOptions` fields the user gave) say.

    The model file is written whole at every epoch with a lower validation loss, so
    a crash, Ctrl-C or SIGTERM afterwards leaves the best model so far, complete.
    """
    import torch

    from ..classifier_file import ClassifierInfo, save_classifier
    from ..head import head_parameters, with_new_head
    from ..models import load_model
    from ..phases import phase
    from .data import read_image_folder
    from .loop import TrainOptions, train_classifier
    from .stages import unfreeze_groups

    with phase(f"reading {command.data}"):
        split = read_image_folder(Path(command.data), command.val_fraction, training.get("seed", 0))
    with phase(f"loading {command.model}"):
        loaded = load_model(command.model, weights=command.weights)
    options = TrainOptions.for_model(loaded, **training)  # checked (InputError) before anything trains
    torch.manual_seed(options.seed)  # the new head's initial weights
    model, head = with_new_head(loaded.module, loaded.anatomy, len(split.classes), input_size=loaded.input_size)
    head_params = head_parameters(model, head)
    stages = unfreeze_groups(model, loaded.anatomy.stage_layers(), head_params)
    info = ClassifierInfo(architecture=loaded.name, head=head, labels=tuple(split.classes),
                          input_size=loaded.input_size, mean=loaded.mean, std=loaded.std, layer=head.layer)
    path = command.model_file
    path.parent.mkdir(parents=True, exist_ok=True)

    def save_best(trained, stats) -> None:
        record = {"epoch": stats.epoch, "val_loss": round(stats.val_loss, 5), "val_acc": round(stats.val_acc, 5),
                  "classes": len(split.classes), "train_images": len(split.train), "val_images": len(split.val),
                  "data": Path(command.data).resolve().name}
        save_classifier(path, trained, replace(info, training=record))

    with interrupts.outputs_open():  # from here a signal stops training and keeps the best epoch, saved
        result = train_classifier(model, head_params, stages, split, options, on_best=save_best)
    if result.best is None:
        log.warning("no epoch finished: nothing was saved")
        return result
    log.info("best epoch %d: validation accuracy %.1f%%, loss %.3f; saved to %s", result.best.epoch,
             100 * result.best.val_acc, result.best.val_loss, path)
    if result.interrupted:
        return result  # the file holds the best epoch; the report and graph would make the user wait
    with interrupts.outputs_open():  # a signal now leaves no half report or graph (each is written whole)
        if command.report:
            with phase(f"writing the report {command.report_file}"):
                _report(command, split, options.device)
        if command.export:
            from ..export import export_onnx

            with phase(f"exporting {path} to {command.graph_file}", long=True):
                export_onnx(command.graph_file, model=str(path), overwrite=command.overwrite)
    return result


def _report(command: TrainCommand, split, device: str) -> None:
    """The report of the saved model on the validation images."""
    import cv2

    from ..explainer import Explainer
    from .report import ReportSample, write_report

    samples = [ReportSample(cv2.imread(str(sample.path), cv2.IMREAD_COLOR), sample.label, str(sample.path))
               for sample in split.val]
    with Explainer(model=str(command.model_file), device=device, backend="torch") as explainer:
        write_report(command.report_file, explainer, samples, list(split.classes), max_images=REPORT_IMAGES)
    log.info("report: %s", command.report_file)
