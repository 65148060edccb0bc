"""Weakly supervised localisation: a box around what a heatmap points at (CAM paper, sec. 3).

For each map: upsample (bilinear) to frame size, keep the pixels at or above
``threshold * max``, take the largest connected component (8-connected) and box
it. Boxes are ``(x0, y0, x1, y1)`` in frame pixels, x1/y1 exclusive; a map with
nothing in it (all zeros) gets ``(0, 0, 0, 0)``. The CAM paper thresholds at
20 % of the max, the Grad-CAM paper at 15 %.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

EMPTY_BOX = (0, 0, 0, 0)


def boxes_from_maps(maps: torch.Tensor | np.ndarray, frame_size: tuple[int, int], threshold: float) -> np.ndarray:
    """(B, k, h, w) maps of frames of ``frame_size`` (H, W) -> (B, k, 4) int32 boxes.

    On a GPU the upsampling and thresholding run there and one uint8 mask per
    batch comes back; on the host OpenCV does it all. The connected components
    always run in OpenCV.
    """
    if isinstance(maps, torch.Tensor) and maps.device.type != "cpu":
        masks = _device_masks(maps, frame_size, threshold)
    else:
        array = maps.numpy() if isinstance(maps, torch.Tensor) else maps
        masks = np.stack([[_host_mask(m, frame_size, threshold) for m in row] for row in array])
    batch, targets = masks.shape[:2]
    boxes = np.zeros((batch, targets, 4), np.int32)
    for b in range(batch):
        for j in range(targets):
            boxes[b, j] = largest_component_box(masks[b, j])
    return boxes


def largest_component_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The box around the largest 8-connected component of a uint8 mask."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return EMPTY_BOX
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h = (int(stats[largest, i]) for i in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT))
    return x, y, x + w, y + h


def box_iou(a: Sequence[int], b: Sequence[int]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes with exclusive x1/y1."""
    width = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _host_mask(heatmap: np.ndarray, frame_size: tuple[int, int], threshold: float) -> np.ndarray:
    height, width = frame_size
    upsampled = cv2.resize(heatmap.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    peak = float(upsampled.max())
    if peak <= 0:
        return np.zeros((height, width), np.uint8)
    return (upsampled >= threshold * peak).astype(np.uint8)


def _device_masks(maps: torch.Tensor, frame_size: tuple[int, int], threshold: float) -> np.ndarray:
    batch, targets, h, w = maps.shape
    upsampled = F.interpolate(maps.reshape(batch * targets, 1, h, w).float(), size=frame_size, mode="bilinear",
                              align_corners=False)
    peak = upsampled.amax(dim=(2, 3), keepdim=True)
    masks = (upsampled >= threshold * peak) & (peak > 0)
    return masks.to(torch.uint8).reshape(batch, targets, *frame_size).cpu().numpy()
