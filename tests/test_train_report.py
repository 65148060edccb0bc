"""The training report, made with the real default model on real photos and read back as a browser would."""

from __future__ import annotations

import base64
import html.parser
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from streamcam.demo import pan_frames, photo
from streamcam.errors import InputError
from streamcam.explaining import ClassChoice
from streamcam.train.report import (ALPHA, ReportSample, confusion_matrix, per_class_accuracy, per_class_precision,
                                    thumbnail, write_report)

CAT, ESPRESSO = 285, 967  # ImageNet ids of "Egyptian cat" and "espresso"
HOSTILE = '<script>alert("espresso")</script>'  # class 967 renamed: it must show as text, never run


class Page(html.parser.HTMLParser):
    """What a browser makes of the page: its tags, its images' attributes, its text, and each table's cells by id."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.images: list[dict[str, str]] = []
        self.text: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._table: list[list[str]] | None = None
        self._in_cell = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs))
        elif tag == "table":
            self._table = self.tables.setdefault(dict(attrs)["id"], [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._table[-1].append("")
            self._in_cell = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag in ("td", "th"):
            self._in_cell = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_cell and self._table is not None:
            self._table[-1][-1] += data

    @property
    def all_text(self) -> str:
        return "".join(self.text)


def decode(image: dict[str, str]) -> np.ndarray:
    """An embedded image's pixels (BGR), from its ``data:image/jpeg;base64,`` URI."""
    prefix = "data:image/jpeg;base64,"
    assert image["src"].startswith(prefix)
    pixels = cv2.imdecode(np.frombuffer(base64.b64decode(image["src"][len(prefix):]), np.uint8), cv2.IMREAD_COLOR)
    assert pixels is not None and pixels.ndim == 3
    return pixels


@dataclass
class Report:
    path: Path
    text: str
    page: Page
    samples: list[ReportSample]
    predicted: list[int]  # the top class of each sample, from the explainer directly
    cat_box: tuple[int, int, int, int]  # where the cat is in samples[0]'s image
    stage_layers: list[str]
    choice_after: ClassChoice


@pytest.fixture(scope="module")
def report(default_explainer, tmp_path_factory) -> Report:
    """A cat pasted on grey (right), an espresso (right), and the cat labelled espresso (a deliberate mistake);
    the explainer set to top-3 meanwhile, to show the report sets that aside and gives it back."""
    cat = photo("chelsea")
    canvas, box = list(pan_frames(cat, (480, 240), 2))[-1]  # the photo at the right, grey on its left
    samples = [ReportSample(canvas, CAT, "cat on grey.png"), ReportSample(photo("coffee"), ESPRESSO, "coffee.jpg"),
               ReportSample(cat, ESPRESSO, "mislabelled/cat.jpg")]
    classes = list(default_explainer.labels)
    classes[ESPRESSO] = HOSTILE
    mine = ClassChoice(top_k=3)
    kept, default_explainer.classes = default_explainer.classes, mine
    try:
        predicted = default_explainer([s.image for s in samples]).class_ids[:, 0].tolist()
        path = write_report(tmp_path_factory.mktemp("report") / "report.html", default_explainer, samples, classes,
                            stage_samples=2)
        choice_after = default_explainer.classes
    finally:
        default_explainer.classes = kept
    assert choice_after is mine
    assert predicted == [CAT, ESPRESSO, CAT], "the photos' classes changed: the test's premise is gone"
    text = path.read_text(encoding="utf-8")
    return Report(path, text, Page(text), samples, predicted, box, list(default_explainer.grid_layers), choice_after)


def test_confusion_matrix_and_per_class_rates_by_hand():
    matrix = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    np.testing.assert_allclose(per_class_accuracy(matrix), [1 / 2, 1, 2 / 3])
    np.testing.assert_allclose(per_class_precision(matrix), [1 / 2, 1 / 2, 1])
    # a class with no image has no accuracy, one never predicted no precision
    empty = confusion_matrix([0, 0], [0, 0], 2)
    assert per_class_accuracy(empty)[0] == 1 and np.isnan(per_class_accuracy(empty)[1])
    assert np.isnan(per_class_precision(empty)[1])
    with pytest.raises(ValueError):
        confusion_matrix([0, 1], [0], 2)
    with pytest.raises(ValueError):
        confusion_matrix([0, 2], [0, 1], 2)


def test_the_page_is_one_self_contained_html_file(report):
    assert report.path.name == "report.html" and [p.name for p in report.path.parent.iterdir()] == ["report.html"]
    assert report.text.startswith("<!DOCTYPE html>") and report.page.tags.count("html") == 1
    assert "script" not in report.page.tags and "link" not in report.page.tags
    assert "http://" not in report.text and "https://" not in report.text  # nothing fetched from elsewhere
    assert report.path.stat().st_size < 1_000_000


def test_the_numbers_match_the_explainer(report):
    true = [s.true for s in report.samples]
    counts = {(t, p): sum(1 for a, b in zip(true, report.predicted) if (a, b) == (t, p))
              for t in (CAT, ESPRESSO) for p in (CAT, ESPRESSO)}
    assert counts == {(CAT, CAT): 1, (CAT, ESPRESSO): 0, (ESPRESSO, CAT): 1, (ESPRESSO, ESPRESSO): 1}
    # ImageNet has 1000 classes: the tables keep those with images or predictions
    assert report.page.tables["confusion"] == [
        ["true \\ predicted", "Egyptian cat", HOSTILE],
        ["Egyptian cat", str(counts[CAT, CAT]), str(counts[CAT, ESPRESSO])],
        [HOSTILE, str(counts[ESPRESSO, CAT]), str(counts[ESPRESSO, ESPRESSO])],
    ]
    assert report.page.tables["per-class"][1:] == [["Egyptian cat", "1", "100.0%", "50.0%"],
                                                   [HOSTILE, "2", "50.0%", "100.0%"]]
    assert "accuracy 66.7% (2 of 3; 1 misclassified)" in report.page.all_text
    assert "Showing 2 of 1000 classes" in report.page.all_text


def test_a_hostile_class_name_is_text(report):
    assert HOSTILE not in report.text and "<script" not in report.text
    assert "true: " + HOSTILE in report.page.all_text  # shown, unescaped, as text


def test_misclassified_first_with_both_maps_then_the_rest_then_the_stages(report):
    text = report.page.all_text
    assert text.index("mislabelled/cat.jpg") < text.index("cat on grey.png") < text.index("coffee.jpg")
    images = report.page.images
    assert len(images) == 2 + 1 + 1 + 2 * len(report.stage_layers) and len(report.stage_layers) >= 2
    assert [image["alt"] for image in images[:4]] == [
        "CAM of Egyptian cat", "CAM of " + HOSTILE, "CAM of Egyptian cat", "CAM of " + HOSTILE]
    assert [image["alt"] for image in images[4:]] == report.stage_layers * 2
    pixels = [decode(image) for image in images]
    assert all(p.shape[:2] == thumbnail(report.samples[2].image).shape[:2] for p in pixels[:2])
    # the two maps of the mistake are the two classes' own: a cat's and an espresso's evidence differ
    assert np.abs(pixels[0].astype(int) - pixels[1]).mean() > 10


def test_the_cat_map_is_hot_on_the_cat(report):
    canvas = report.samples[0].image
    small = thumbnail(canvas).astype(np.float32)
    overlay = decode(report.page.images[2]).astype(np.float32)
    heat = (overlay - (1 - ALPHA) * small) / ALPHA  # the JET colours, out of the blend
    hot = cv2.blur(heat[..., 2] - heat[..., 0], (5, 5))  # red minus blue: JET's strong end
    scale = small.shape[1] / canvas.shape[1]
    x0, y0, x1, y1 = (round(v * scale) for v in report.cat_box)
    inside = np.zeros(hot.shape, bool)
    inside[y0:y1, x0:x1] = True
    y, x = np.unravel_index(np.argmax(hot), hot.shape)
    assert inside[y, x], f"hottest at {(x, y)}, the cat is at {(x0, y0, x1, y1)}"
    assert hot[inside].mean() > hot[~inside].mean() + 200


def test_max_images_keeps_the_mistake_and_the_report_is_replaced_whole(default_explainer, report):
    classes = list(default_explainer.labels)
    write_report(report.path, default_explainer, report.samples, classes, stage_samples=0, max_images=1)
    page = Page(report.path.read_text(encoding="utf-8"))
    assert [p.name for p in report.path.parent.iterdir()] == ["report.html"]  # no temporary left beside it
    assert len(page.images) == 2 and "mislabelled/cat.jpg" in page.all_text and "coffee.jpg" not in page.all_text
    assert "Per stage" not in page.all_text and "true: espresso" in page.all_text


def test_bad_calls(default_explainer, report, tmp_path):
    with pytest.raises(ValueError, match="3 class names for a model of 1000 classes"):
        write_report(tmp_path / "r.html", default_explainer, report.samples, ["a", "b", "c"])
    with pytest.raises(ValueError, match="no samples"):
        write_report(tmp_path / "r.html", default_explainer, [], list(default_explainer.labels))
    (tmp_path / "a file").write_text("")
    with pytest.raises(InputError) as error:
        write_report(tmp_path / "a file" / "r.html", default_explainer, report.samples[:1],
                     list(default_explainer.labels))
    assert "a file" in str(error.value) and "\n" not in str(error.value)
