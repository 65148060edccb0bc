"""Live controls: validated setters, and opacity and boxes changed mid-run without losing a frame."""

from __future__ import annotations

import numpy as np
import pytest

from streamcam.config import ViewOptions
from streamcam.controls import LiveControls
from streamcam.engine import annotate
from streamcam.engine.pipeline import live_controls
from streamcam.errors import InputError

from conftest import SyntheticSource, make_tiny_explainer

pytestmark = pytest.mark.timeout(120)


def controls() -> LiveControls:
    return LiveControls(["cam", "gradcam"], "cam", top_k=2, grid=False, alpha=0.5, boxes=False)


def test_setters_apply_good_values_and_refuse_bad_ones_with_one_line():
    live = controls()
    live.set_method("gradcam")
    live.set_class_index(1)
    live.set_grid(True)
    live.set_alpha(0)
    live.set_boxes(True)
    assert live.snapshot() == {"method": "gradcam", "methods": ["cam", "gradcam"], "class_index": 1, "top_k": 2,
                               "grid": True, "grid_available": True, "alpha": 0.0, "boxes": True}
    before = live.snapshot()
    for setter, value, words in [(live.set_method, "scorecam", "unknown or unavailable method 'scorecam'"),
                                 (live.set_method, None, "unknown or unavailable method"),
                                 (live.set_class_index, 2, "from 0 to 1"), (live.set_class_index, -1, "from 0 to 1"),
                                 (live.set_class_index, True, "integer"), (live.set_class_index, "1", "integer"),
                                 (live.set_grid, "yes", "true or false"), (live.set_boxes, 1, "true or false"),
                                 (live.set_alpha, 1.5, "between 0 and 1"), (live.set_alpha, "0.3", "a number")]:
        with pytest.raises(InputError, match=words) as refused:
            setter(value)
        assert "\n" not in str(refused.value)
    assert live.snapshot() == before  # nothing refused was applied


def test_the_grid_is_refused_where_there_are_no_layers_to_tile():
    live = LiveControls(["cam"], "cam", top_k=1, grid=False, grid_available=False)
    with pytest.raises(InputError, match="no layers"):
        live.set_grid(True)
    live.set_grid(False)
    assert live_controls(make_tiny_explainer()).grid_available  # the tiny net's two stages


def test_apply_takes_all_changes_or_none():
    live = controls()
    live.apply({"alpha": 0.25, "boxes": True})
    assert (live.alpha, live.boxes) == (0.25, True)
    for changes in ({"alpha": 0.9, "method": "nope"}, {"colour": "red"}, {}):
        with pytest.raises(InputError):
            live.apply(changes)
    assert (live.alpha, live.boxes, live.method) == (0.25, True, "cam")


def pattern(index: int) -> np.ndarray:
    """The same frame every time: a white block in the top-left corner of a grey field."""
    image = np.full((96, 128, 3), 90, np.uint8)
    image[30:50, 10:40] = 255
    return image


@pytest.mark.parametrize("render", ["host", "device"])
def test_opacity_and_boxes_change_mid_run_without_losing_a_frame(render):
    ex = make_tiny_explainer(seed=7)
    view = ViewOptions(alpha=0.0, draw_boxes=False, records=True, render=render)  # records: boxes always taken
    live = live_controls(ex, view)
    assert (live.alpha, live.boxes) == (0.0, False)
    seen = []
    for annotated in annotate(SyntheticSource(pattern, 60), ex, batch=2, view=view, controls=live):
        seen.append(annotated)
        if annotated.frame.index == 15:
            live.set_alpha(1.0)
        if annotated.frame.index == 35:
            live.set_boxes(True)
    assert [a.frame.index for a in seen] == list(range(60))  # nothing lost
    assert all(p.box is not None for a in seen for p in a.predictions)  # the records' boxes throughout
    bottom = (slice(70, 96), slice(0, 128))  # below the labels and the block: grey, or heat at alpha 1
    shown = [a.image[bottom] for a in seen]
    assert all(np.array_equal(s, pattern(0)[bottom]) for s in shown[:10])  # alpha 0: the frame itself
    assert all(not np.array_equal(s, pattern(0)[bottom]) for s in shown[25:])  # alpha 1: the heatmap
    # The frames are all the same, so from alpha 1 on the images differ only by the box, drawn from frame ~40
    assert all(np.array_equal(a.image, seen[25].image) for a in seen[25:30])
    x0, y0, x1, y1 = seen[-1].predictions[0].box
    outline = np.zeros(seen[-1].image.shape[:2], bool)
    outline[max(y0 - 2, 0) : y1 + 2, max(x0 - 2, 0) : x1 + 2] = True
    outline[y0 + 3 : y1 - 3, x0 + 3 : x1 - 3] = False
    for a in seen[45:]:
        differs = np.any(a.image != seen[25].image, axis=2)
        assert differs.any() and not (differs & ~outline).any()
