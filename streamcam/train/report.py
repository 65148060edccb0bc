"""The training report: one HTML page on how a classifier does on its validation images, and where it looks.

:func:`write_report` explains every validation image with an :class:`~streamcam.Explainer`
and writes ONE self-contained file (images inlined as base64 JPEG ``data:`` URIs; no
script, no style sheet or font from elsewhere: it opens from disk, offline):

- the model, the number of images and the overall accuracy;
- per class: images, accuracy (recall) and precision;
- the confusion matrix ``counts[t, p]`` (rows: true class, columns: predicted), each
  cell shaded by its share of the row;
- the images with their CAM, misclassified first (the most confident mistakes first),
  each with the map of the predicted (wrong) class beside the map of the true class;
  then correctly classified ones, up to ``max_images`` in all;
- the per-stage view: a few of those images' maps at each stage layer
  (``explainer.grid_layers``: layer1..layer4 of a ResNet, the last blocks of an EfficientNet).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from ..atomic import write_whole
from ..explainer import Explainer
from ..explaining import ClassChoice
from ..render import HeatmapOverlay

__all__ = ["ReportSample", "confusion_matrix", "jpeg_uri", "per_class_accuracy", "per_class_precision", "thumbnail",
           "write_report"]

BATCH = 16  # images per explained batch
THUMBNAIL = 192  # px, the longer side of every picture in the page
JPEG_QUALITY = 85  # with THUMBNAIL: about 10 kB a picture (measured): 48 images, all mistaken, near 1 MB
ALPHA = 0.5  # heatmap opacity in the overlays
MAX_CLASSES = 50  # classes in the tables; beyond, those with the most images and predictions


@dataclass(frozen=True, eq=False)
class ReportSample:
    """One validation image: H x W x 3 uint8 BGR, its true class (an index into the model's classes), its name."""

    image: np.ndarray
    true: int
    name: str


# --- the numbers -----------------------------------------------------------------------------------


def confusion_matrix(true: Sequence[int], predicted: Sequence[int], classes: int) -> np.ndarray:
    """``counts[t, p]`` = how many images of true class ``t`` were predicted as ``p``: (classes, classes) int64."""
    true_ids, predicted_ids = np.asarray(true, np.int64), np.asarray(predicted, np.int64)
    if true_ids.shape != predicted_ids.shape or true_ids.ndim != 1:
        raise ValueError(f"true and predicted differ in length: {len(true)} and {len(predicted)}")
    if true_ids.size and (min(true_ids.min(), predicted_ids.min()) < 0
                          or max(true_ids.max(), predicted_ids.max()) >= classes):
        raise ValueError(f"class indices must be in [0, {classes})")
    return np.bincount(true_ids * classes + predicted_ids, minlength=classes * classes).reshape(classes, classes)


def per_class_accuracy(matrix: np.ndarray) -> np.ndarray:
    """Each class's accuracy, i.e. its recall: ``counts[c, c] / sum_p counts[c, p]``; NaN for a class with no image."""
    return _diagonal_share(matrix, axis=1)


def per_class_precision(matrix: np.ndarray) -> np.ndarray:
    """How often predicting ``c`` is right: ``counts[c, c] / sum_t counts[t, c]``; NaN if ``c`` is never predicted."""
    return _diagonal_share(matrix, axis=0)


def _diagonal_share(matrix: np.ndarray, axis: int) -> np.ndarray:
    totals = matrix.sum(axis=axis)
    return np.divide(np.diag(matrix), totals, out=np.full(len(totals), np.nan), where=totals > 0)


def _shown_classes(matrix: np.ndarray, limit: int = MAX_CLASSES) -> list[int]:
    """Every class when there are at most ``limit``; else (e.g. an ImageNet model checked on a few of
    its classes) the ``limit`` with the most images and predictions, in class order."""
    if len(matrix) <= limit:
        return list(range(len(matrix)))
    weight = matrix.sum(axis=0) + matrix.sum(axis=1)
    return sorted(int(c) for c in np.argsort(-weight, kind="stable")[:limit] if weight[c] > 0)


# --- explaining -----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Explained:
    """One image explained for one class: the class, its softmax score, its map and maps at extra layers."""

    class_id: int
    score: float
    heatmap: np.ndarray  # (h, w) in [0, 1], at the explained layer
    stages: dict[str, np.ndarray] = field(default_factory=dict)  # layer -> (h_l, w_l)


@contextmanager
def _explaining(explainer: Explainer, choice: ClassChoice) -> Iterator[None]:
    """Let ``explainer`` explain ``choice``'s classes for a while, then its own again (even on an error).

    An Explainer's classes (top-k or one target) are fixed at construction; the
    report needs each image's top class and, for a mistake, its true class. Borrowing
    the one frozen value that says which classes to explain keeps the Explainer's
    whole path (preprocessing, engine, method, layers), where a second Explainer
    would load and probe the model again (and cannot share an ONNX one), and
    top_k = every class would cost one backward pass per class for gradient methods.
    """
    kept = explainer.classes
    explainer.classes = choice
    try:
        yield
    finally:
        explainer.classes = kept


def _explain(explainer: Explainer, images: Sequence[np.ndarray], choice: ClassChoice,
             layers: Sequence[str] = ()) -> list[_Explained]:
    """Explain ``images`` in batches for ``choice``'s one class each, at the explained layer and at ``layers``."""
    out = []
    with _explaining(explainer, choice):
        for start in range(0, len(images), BATCH):
            res = explainer.explain(images[start : start + BATCH], layers=list(layers)).to_host(box_masks=False)
            out += [_Explained(int(res.class_ids[i, 0]), float(res.scores[i, 0]), res.maps[i, 0],
                               {name: maps[i, 0] for name, maps in res.layer_maps.items()})
                    for i in range(len(res))]
    return out


def _true_class_maps(explainer: Explainer, samples: Sequence[ReportSample],
                     indices: Sequence[int]) -> dict[int, _Explained]:
    """The true class's score and map for the samples ``indices``: a pass per true class (one target per batch)."""
    out = {}
    for class_id in sorted({samples[i].true for i in indices}):
        group = [i for i in indices if samples[i].true == class_id]
        explained = _explain(explainer, [samples[i].image for i in group], ClassChoice(target_class=class_id))
        out.update(zip(group, explained))
    return out


# --- the page -----------------------------------------------------------------------------------


def write_report(path: Path, explainer: Explainer, samples: Sequence[ReportSample], classes: list[str],
                 stage_samples: int = 3, max_images: int = 48) -> Path:
    """Explain every sample with ``explainer`` and write the report to ``path`` as one HTML file; returns ``path``.

    ``classes`` names the model's classes (``classes[i]`` is class ``i``; a sample's
    ``true`` indexes it). The explainer's own class choice (top-k, target class) is
    set aside while the report explains: each image gets its top class, and a
    misclassified one its true class too. ``max_images`` images are shown
    (misclassified first), ``stage_samples`` of them once per stage layer. The file
    is written under a temporary name and renamed into place, replacing an older
    report only once complete.
    """
    if not samples:
        raise ValueError("no samples to report on")
    if len(classes) != len(explainer.labels):
        raise ValueError(f"{len(classes)} class names for a model of {len(explainer.labels)} classes")
    top = _explain(explainer, [s.image for s in samples], ClassChoice(top_k=1))
    matrix = confusion_matrix([s.true for s in samples], [t.class_id for t in top], len(classes))
    wrong = sorted((i for i, s in enumerate(samples) if top[i].class_id != s.true), key=lambda i: -top[i].score)
    right = [i for i, s in enumerate(samples) if top[i].class_id == s.true]
    shown = (wrong + right)[:max_images]
    truth = _true_class_maps(explainer, samples, [i for i in shown if top[i].class_id != samples[i].true])
    staged = shown[:stage_samples] if explainer.grid_layers else []
    stages = _explain(explainer, [samples[i].image for i in staged], ClassChoice(top_k=1), explainer.grid_layers)
    pictures = _Pictures(samples)
    body = [
        _header(explainer, matrix, len(wrong)),
        _class_tables(matrix, classes),
        _grid(pictures, samples, classes, shown, top, truth),
        _stage_view(pictures, explainer, samples, classes, dict(zip(staged, stages))),
    ]
    path = Path(path)
    write_whole(path, _page(f"streamcam report: {explainer.model_name}", body), replace=True)
    return path


class _Pictures:
    """Each sample's thumbnail (made once), and overlays of a heatmap on it, as JPEG ``data:`` URIs."""

    def __init__(self, samples: Sequence[ReportSample]) -> None:
        self.samples = samples
        self.overlay = HeatmapOverlay(ALPHA, torch.device("cpu"))
        self.thumbnails: dict[int, np.ndarray] = {}

    def thumbnail(self, index: int) -> np.ndarray:
        if index not in self.thumbnails:
            self.thumbnails[index] = thumbnail(self.samples[index].image)
        return self.thumbnails[index]

    def overlay_uri(self, index: int, heatmap: np.ndarray) -> str:
        return jpeg_uri(self.overlay.blend_host(self.thumbnail(index), heatmap))


def thumbnail(image: np.ndarray, size: int = THUMBNAIL) -> np.ndarray:
    """``image`` shrunk (area interpolation) to at most ``size`` px on its longer side; a smaller one as it is."""
    height, width = image.shape[:2]
    scale = size / max(height, width)
    if scale >= 1:
        return image
    shrunk = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, shrunk, interpolation=cv2.INTER_AREA)


def jpeg_uri(image: np.ndarray) -> str:
    """A BGR uint8 image as a ``data:image/jpeg;base64,...`` URI (quality ``JPEG_QUALITY``)."""
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError(f"could not encode a {image.shape} image as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")


def _text(value: object) -> str:
    """Any text for the page, HTML-escaped (class and file names come from the user's folders)."""
    return html.escape(str(value), quote=True)


def _percent(share: float) -> str:
    if np.isnan(share):
        return "–"
    return "<0.1%" if 0 < share < 0.001 else f"{100 * share:.1f}%"


def _header(explainer: Explainer, matrix: np.ndarray, mistakes: int) -> str:
    total = int(matrix.sum())
    correct = int(np.trace(matrix))
    return (
        f"<h1>{_text(explainer.model_name)}</h1>\n"
        f'<p class="summary"><b>{total}</b> validation images · accuracy <b id="accuracy">'
        f"{_percent(correct / total)}</b> ({correct} of {total}; {mistakes} misclassified) · "
        f"{_text(explainer.method.name)} at layer {_text(explainer.layer)} · "
        f"{len(explainer.labels)} classes</p>\n"
    )


def _class_tables(matrix: np.ndarray, classes: list[str]) -> str:
    """The per-class table and the confusion matrix, on the shown classes (see :func:`_shown_classes`)."""
    shown = _shown_classes(matrix)
    accuracy, precision = per_class_accuracy(matrix), per_class_precision(matrix)
    rows = "".join(
        f'<tr><th scope="row">{_text(classes[c])}</th><td>{int(matrix[c].sum())}</td>'
        f"<td>{_percent(accuracy[c])}</td><td>{_percent(precision[c])}</td></tr>\n"
        for c in shown
    )
    note = ("" if len(shown) == len(classes) else
            f"<p>Showing {len(shown)} of {len(classes)} classes: those with the most images and predictions; "
            f"<i>other</i> counts predictions of the classes left out.</p>\n")
    return (
        "<h2>Per class</h2>\n" + note
        + '<table id="per-class"><tr><th>class</th><th>images</th><th>accuracy (recall)</th><th>precision</th></tr>\n'
        + rows + "</table>\n" + _confusion_table(matrix, classes, shown)
    )


def _confusion_table(matrix: np.ndarray, classes: list[str], shown: list[int]) -> str:
    """Rows: true class; columns: predicted class (+ "other" for classes left out, if any was predicted)."""
    row_totals = matrix.sum(axis=1)
    other = row_totals[shown] - matrix[np.ix_(shown, shown)].sum(axis=1)
    heads = "".join(f'<th class="column">{_text(classes[c])}</th>' for c in shown)
    heads += '<th class="column"><i>other</i></th>' if other.any() else ""
    rows = []
    for row, t in enumerate(shown):
        cells = [(int(matrix[t, p]), p == t) for p in shown] + ([(int(other[row]), False)] if other.any() else [])
        rows.append(f'<tr><th scope="row">{_text(classes[t])}</th>'
                    + "".join(_cell(count, int(row_totals[t]), diagonal) for count, diagonal in cells) + "</tr>\n")
    return (
        "<h2>Confusion matrix</h2>\n<p>Rows: true class; columns: predicted class. Shading: the share of the row "
        '(green: right, red: mistaken).</p>\n<table id="confusion"><tr><th>true \\ predicted</th>'
        + heads + "</tr>\n" + "".join(rows) + "</table>\n"
    )


def _cell(count: int, row_total: int, diagonal: bool) -> str:
    """One matrix cell, its opacity its share of the row: green on the diagonal (right), red elsewhere."""
    share = count / row_total if row_total else 0.0
    ink = ";color:#fff" if share > 0.5 else ""
    colour = "46,125,50" if diagonal else "198,40,40"
    return f'<td style="background:rgba({colour},{share:.2f}){ink}" title="{_percent(share)} of the row">{count}</td>'


def _grid(pictures: _Pictures, samples: Sequence[ReportSample], classes: list[str], shown: Sequence[int],
          top: Sequence[_Explained], truth: dict[int, _Explained]) -> str:
    """Misclassified images (CAM of the predicted class | CAM of the true class), then correct ones."""
    figures = []
    for i in shown:
        panels = [("predicted: ", top[i]), ("true: ", truth[i])] if i in truth else [("", top[i])]
        images = "".join(
            f'<div><img src="{pictures.overlay_uri(i, explained.heatmap)}" alt="CAM of '
            f'{_text(classes[explained.class_id])}"><span class="tag">{role}{_text(classes[explained.class_id])} '
            f"{_percent(explained.score)}</span></div>"
            for role, explained in panels
        )
        kind = "wrong" if i in truth else "right"
        figures.append(f'<figure class="sample {kind}"><div class="pair">{images}</div>'
                       f"<figcaption>{_text(samples[i].name)}</figcaption></figure>\n")
    mistakes = len(truth)
    return (
        f"<h2>Validation images</h2>\n<p>{len(shown)} of {len(samples)} images, the {mistakes} misclassified ones "
        "first: each with the CAM of the predicted (wrong) class beside the CAM of its true class, with their "
        'scores. Red: strong evidence for the class named.</p>\n<div class="grid">\n' + "".join(figures) + "</div>\n"
    )


def _stage_view(pictures: _Pictures, explainer: Explainer, samples: Sequence[ReportSample], classes: list[str],
                staged: dict[int, _Explained]) -> str:
    """For a few images, a row of their top class's maps at each stage layer, from early to late."""
    if not staged:
        return ""
    rows = []
    for i, explained in staged.items():
        tiles = "".join(
            f'<figure><img src="{pictures.overlay_uri(i, heatmap)}" alt="{_text(layer)}">'
            f"<figcaption>{_text(layer)} ({_text(explainer.method_for(layer).name)})</figcaption></figure>"
            for layer, heatmap in explained.stages.items()
        )
        rows.append(f'<div class="stages"><p>{_text(samples[i].name)}: {_text(classes[explained.class_id])} '
                    f"{_percent(explained.score)}</p>{tiles}</div>\n")
    return "<h2>Per stage</h2>\n<p>Where each stage of the network finds the predicted class.</p>\n" + "".join(rows)


_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
table { border-collapse: collapse; } th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; font-weight: 600; } th[scope=row] { text-align: left; }
th.column { writing-mode: vertical-rl; transform: rotate(180deg); text-align: left; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; padding: 6px; border: 1px solid #ddd; border-radius: 4px; }
figure.wrong { border-color: #c62828; background: #fff5f5; }
img { display: block; max-width: 192px; } .pair { display: flex; gap: 6px; }
.tag, figcaption { display: block; font-size: 12px; max-width: 192px; overflow-wrap: anywhere; }
.stages { display: flex; flex-wrap: wrap; gap: 6px; align-items: flex-start; margin-bottom: 12px; }
.stages > p { width: 100%; margin: 0; }
"""


def _page(title: str, body: Sequence[str]) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{_text(title)}</title>\n'
        f"<style>{_STYLE}</style>\n</head>\n<body>\n" + "".join(body) + "</body>\n</html>\n"
    )
