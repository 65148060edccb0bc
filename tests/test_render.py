"""Render: OpenCV's JET colours, the blend formula, and agreement between the GPU kernel and the host path."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from streamcam.render import (HeatmapOverlay, Tile, draw_hud, draw_predictions, jet_table, layer_grid, prediction_lines,
                              tile_labels)
from streamcam.text import ascii_text, plan_block
from streamcam.types import Prediction


def test_jet_table_is_opencvs_colormap():
    table = jet_table()
    for value in (0, 1, 64, 128, 200, 255):
        pixel = cv2.applyColorMap(np.full((1, 1), value, np.uint8), cv2.COLORMAP_JET)[0, 0]
        assert np.array_equal(table[value], pixel)
    assert table[255][2] > 100 and table[255][0] == 0  # strong evidence is red (BGR)
    assert table[0][0] > 100 and table[0][2] == 0  # none is blue


def random_case(seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (3, 90, 160, 3), dtype=np.uint8)
    maps = rng.random((3, 7, 7), dtype=np.float32)
    return images, maps


def test_blend_formula_on_the_host():
    images, maps = random_case()
    overlay = HeatmapOverlay(0.5, torch.device("cpu"))
    out = overlay.blend_host(images[0], maps[0])
    upsampled = cv2.resize(maps[0], (160, 90), interpolation=cv2.INTER_LINEAR)
    heat = jet_table()[np.clip(np.round(upsampled * 255), 0, 255).astype(np.uint8)]
    expected = 0.5 * images[0].astype(np.float64) + 0.5 * heat
    assert np.abs(out.astype(np.float64) - expected).max() <= 1.0


def test_alpha_zero_keeps_the_frame_and_alpha_one_shows_only_the_heatmap():
    images, maps = random_case(1)
    assert np.array_equal(HeatmapOverlay(0.0, torch.device("cpu")).blend_host(images[0], maps[0]), images[0])
    only_heat = HeatmapOverlay(1.0, torch.device("cpu")).blend_host(images[0], maps[0])
    assert np.array_equal(only_heat, HeatmapOverlay(1.0, torch.device("cpu")).blend_host(images[1], maps[0]))


def test_device_kernel_agrees_with_the_host_path():
    images, maps = random_case(2)
    overlay = HeatmapOverlay(0.4, torch.device("cpu"))
    device = overlay.blend_device(torch.from_numpy(images), torch.from_numpy(maps)).numpy()
    host = np.stack([overlay.blend_host(i, m) for i, m in zip(images, maps)])
    assert device.shape == host.shape and device.dtype == np.uint8
    assert np.abs(device.astype(int) - host).max() <= 2


@pytest.mark.cuda
def test_device_kernel_on_cuda_agrees_with_the_host_path():
    images, maps = random_case(3)
    overlay = HeatmapOverlay(0.5, torch.device("cuda"))
    device = overlay.blend_device(torch.from_numpy(images).cuda(), torch.from_numpy(maps).cuda()).cpu().numpy()
    host = np.stack([overlay.blend_host(i, m) for i, m in zip(images, maps)])
    assert np.abs(device.astype(int) - host).max() <= 2


def test_text_is_drawn_in_place_at_the_expected_corners():
    image = np.full((240, 320, 3), 128, np.uint8)
    draw_predictions(image, [Prediction(285, "Egyptian cat", 0.78)])
    assert (image[:30, :150] != 128).any() and (image[-30:] == 128).all()
    draw_hud(image, 29.9, 0.04, 3)
    assert (image[-30:, :150] != 128).any()


# --- labels that fit: grid tiles and the predictions, at any size ----------------

LONG = [Prediction(1, "German short-haired pointer", 0.873), Prediction(2, "bow tie", 0.0912),
        Prediction(3, "crêpe ≥ Gruyère", 0.0213), Prediction(4, "tabby", 0.004), Prediction(5, "Egyptian cat", 0.001)]
TILES = [Tile("blocks.2", np.zeros((7, 7), np.float32), "gradcam"), Tile("bn2", np.zeros((7, 7), np.float32)),
         Tile("features.denseblock4.denselayer16.conv2", np.zeros((7, 7), np.float32), "gradcam++")]
# (height, width) of grid tiles: 176x144 in 2x2 (the issue's clip), ..., 1920x1080 in 2x2 and 3x3
TILE_SIZES = [(72, 88), (90, 120), (120, 160), (180, 320), (240, 213), (360, 640), (540, 960), (360, 640)]


def ink_box(placed) -> tuple[int, int, int, int]:
    """Where OpenCV draws ``placed.text``: measured with cv2.getTextSize at the planned origin."""
    (width, height), baseline = cv2.getTextSize(placed.text, cv2.FONT_HERSHEY_SIMPLEX, placed.scale, placed.thickness)
    x, y = placed.origin
    return x, y - height, x + width, y + baseline


def inside(box, height: int, width: int) -> bool:
    return 0 <= box[0] <= box[2] <= width and 0 <= box[1] <= box[3] <= height


def overlap(a, b) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def check_layout(placements, height: int, width: int) -> None:
    """Every text and its dark box inside the space, no two overlapping, ASCII only, at most half the height."""
    for placed in placements:
        assert placed.text.isascii() and placed.text.isprintable()
        assert inside(ink_box(placed), height, width), (placed, height, width)
        assert inside(placed.box, height, width), (placed, height, width)
        x0, y0, x1, y1 = placed.box
        ink = ink_box(placed)
        assert x0 <= ink[0] and y0 <= ink[1] and ink[2] <= x1 and ink[3] <= y1  # the text is on its dark box
    for i, a in enumerate(placements):
        for b in placements[i + 1 :]:
            assert not overlap(a.box, b.box) and not overlap(ink_box(a), ink_box(b))
    if len(placements) > 1:
        assert max(p.box[3] for p in placements) <= height / 2


@pytest.mark.parametrize("size", TILE_SIZES, ids=lambda s: f"{s[1]}x{s[0]}")
def test_tile_labels_fit_their_tile_and_never_overlap(size):
    height, width = size
    for tile in TILES:
        for count in (0, 1, 3, 5):
            for explained in range(max(1, count)):
                placements = tile_labels(height, width, tile, LONG[:count], explained)
                check_layout(placements, height, width)
                # the layer's name is always there, first: whole, or its end after "..."
                name = placements[0].text.split(" (")[0]
                assert tile.layer.endswith(name.removeprefix("...")) and len(name) >= min(8, len(tile.layer))
                texts = [p.text for p in placements]
                if count:  # the explained class is there, marked, whatever was left out
                    assert any(t.startswith(">" if count > 1 else LONG[explained].label[0]) for t in texts), texts


def test_labels_grow_with_the_tile_and_stay_readable():
    scales = [tile_labels(h, w, TILES[0], LONG[:1])[0].scale for h, w in sorted(TILE_SIZES)]
    assert scales == sorted(scales) and scales[-1] > scales[0]
    for height, width in TILE_SIZES:
        placed = tile_labels(height, width, TILES[0], LONG[:1])[0]
        (_, cap), _ = cv2.getTextSize("H", cv2.FONT_HERSHEY_SIMPLEX, placed.scale, placed.thickness)
        assert cap >= 10  # capitals at least 10 px tall


def test_the_issues_small_grid_keeps_the_layer_and_the_class():
    # 176x144 in a 2x2 grid: 88x72 tiles; was "bow tie 87.0% c≥blocks.2 (gradca", cut and overlapping
    placements = tile_labels(72, 88, Tile("blocks.2", np.zeros((7, 7)), "gradcam"),
                             [Prediction(1, "bow tie", 0.87), Prediction(2, "Windsor tie", 0.05)], 0)
    texts = [p.text for p in placements]
    assert texts == ["blocks.2", "> bow tie  87.0%"]  # the method's line gives way to the class
    wide = tile_labels(540, 960, Tile("blocks.2", np.zeros((7, 7)), "gradcam"), [Prediction(1, "bow tie", 0.87)])
    assert [p.text for p in wide] == ["blocks.2 (gradcam)", "bow tie  87.0%"]  # room enough: nothing shortened


def test_a_real_grid_has_its_text_inside_the_planned_boxes():
    image = np.full((144, 176, 3), 90, np.uint8)
    maps = [Tile(t.layer, t.heatmap, t.method) for t in TILES] + [Tile("layer4", np.zeros((7, 7), np.float32))]
    grid = layer_grid(image, maps, HeatmapOverlay(0.0, torch.device("cpu")), LONG[:3], 1)  # alpha 0: grey tiles
    assert grid.shape == image.shape
    touched = np.zeros(image.shape[:2], bool)
    for index, tile in enumerate(maps):  # 2x2 tiles of 88x72
        top, left = 72 * (index // 2), 88 * (index % 2)
        placements = tile_labels(72, 88, tile, LONG[:3] if index == 0 else (), 1)
        for placed in placements:
            x0, y0, x1, y1 = placed.box
            area = grid[top + y0 : top + y1, left + x0 : left + x1]
            assert (area.min(axis=2) > 200).sum() >= 5 * len(placed.text.replace(" ", ""))  # white text on it
            assert (area.max(axis=2) < 30).any()  # its dark box
            touched[top + y0 : top + y1, left + x0 : left + x1] = True
    assert (grid[~touched] == 90).all()  # nothing drawn outside the planned boxes


def test_predictions_stay_inside_a_small_frame_with_top_3():
    image = np.full((144, 176, 3), 90, np.uint8)
    placements = plan_block(prediction_lines(LONG[:3], 0), 144, 176)
    check_layout(placements, 144, 176)
    assert len(placements) == 3 and placements[0].text.startswith("> German") and "..." in placements[0].text
    assert placements[2].text.startswith("crepe ? Gruyere")  # ASCII: accents dropped, the rest "?"
    draw_predictions(image, LONG[:3], 0)
    touched = np.zeros(image.shape[:2], bool)
    for placed in placements:
        x0, y0, x1, y1 = placed.box
        touched[y0:y1, x0:x1] = True
        assert (image[y0:y1, x0:x1].min(axis=2) > 200).sum() >= 5 * len(placed.text.replace(" ", ""))
    assert (image[~touched] == 90).all()


def test_ascii_text():
    assert ascii_text("crêpe ≥ Gruyère\tx") == "crepe ? Gruyere x"
    assert ascii_text("bow tie") == "bow tie"
