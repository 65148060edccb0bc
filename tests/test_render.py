"""Render: OpenCV's JET colours, the blend formula, and agreement between the GPU kernel and the host path."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from streamcam.render import HeatmapOverlay, draw_hud, draw_predictions, jet_table
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
    device = overlay(torch.from_numpy(images).cuda(), torch.from_numpy(maps).cuda()).cpu().numpy()
    host = np.stack([overlay.blend_host(i, m) for i, m in zip(images, maps)])
    assert np.abs(device.astype(int) - host).max() <= 2


def test_text_is_drawn_in_place_at_the_expected_corners():
    image = np.full((240, 320, 3), 128, np.uint8)
    draw_predictions(image, [Prediction(285, "Egyptian cat", 0.78)])
    assert (image[:30, :150] != 128).any() and (image[-30:] == 128).all()
    draw_hud(image, 29.9, 0.04, 3)
    assert (image[-30:, :150] != 128).any()
