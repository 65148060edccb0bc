"""Preprocessing on the device: resize, BGR -> RGB, (x / 255 - mean) / std."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from streamcam.preprocess import Preprocessor

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def reference(frame: np.ndarray, size: int) -> np.ndarray:
    rgb = cv2.cvtColor(cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    return ((rgb / 255.0 - MEAN) / STD).transpose(2, 0, 1)


def test_matches_a_host_reference_and_flips_bgr_to_rgb():
    rng = np.random.default_rng(0)
    frame = cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (0, 0), 3)
    frame[..., 2] = 250  # strong red in BGR's last channel
    x = Preprocessor(224, MEAN, STD, torch.device("cpu"))([frame])
    assert x.shape == (1, 3, 224, 224) and x.dtype == torch.float32
    expected = reference(frame, 224)
    assert np.abs(x[0].numpy() - expected).mean() < 0.02
    assert x[0, 0].mean() > x[0, 2].mean()  # red reached the R channel


def test_frames_of_different_sizes_in_one_batch():
    frames = [np.zeros((100, 200, 3), np.uint8), np.zeros((100, 200, 3), np.uint8), np.full((50, 60, 3), 255, np.uint8)]
    x = Preprocessor(32, (0.5,) * 3, (0.5,) * 3, torch.device("cpu"))(frames)
    assert x.shape == (3, 3, 32, 32)
    assert torch.allclose(x[0], torch.full_like(x[0], -1.0)) and torch.allclose(x[2], torch.ones_like(x[2]))


@pytest.mark.cuda
def test_cuda_upload_matches_the_cpu():
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (360, 640, 3), dtype=np.uint8) for _ in range(4)]
    cpu = Preprocessor(224, MEAN, STD, torch.device("cpu"))(frames)
    gpu = Preprocessor(224, MEAN, STD, torch.device("cuda"))(frames).cpu()
    assert (cpu - gpu).abs().mean() < 0.02
