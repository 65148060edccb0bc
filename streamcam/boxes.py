"""Weakly supervised localisation: a box around what a heatmap points at (CAM paper, sec. 3).

For each map: upsample (bilinear) to frame size, keep the pixels at or above
``threshold * max``, take the largest connected component (8-connected) and box
it. Boxes are ``(x0, y0, x1, y1)`` in frame pixels, x1/y1 exclusive. The CAM
paper thresholds at 20 % of the max, the Grad-CAM paper at 15 %.

A box is given only where there is something to box. A map gets no box,
``EMPTY_BOX`` ``(0, 0, 0, 0)`` in the arrays (``None`` in a :class:`Prediction`,
``null`` in the JSON records, nothing drawn), when

- it is all zeros (nothing above the threshold);
- no component dominates: the largest holds at most half
  (``MIN_DOMINANT_SHARE``) of the kept pixels, so it stands for less than what
  the map points at (several equal hot spots; two equal ones are a tie);
- the box would cover more than 90 % (``MAX_BOX_COVER``) of the frame's area:
  a (nearly) flat map, or a hot region spread over the whole frame, says
  "everywhere", and a frame-sized box says nothing.

Both mask paths (OpenCV on the host, :func:`box_masks` in torch on any device) end in
:func:`largest_component_box`, where these rules live.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

EMPTY_BOX = (0, 0, 0, 0)  # "no box" in box arrays; None in a Prediction, null in the records
MIN_DOMINANT_SHARE = 0.5  # the largest component must hold more than this share of the kept pixels
MAX_BOX_COVER = 0.9  # a box over more than this share of the frame's area is no box


def boxes_from_maps(maps: np.ndarray | torch.Tensor, frame_size: tuple[int, int], threshold: float) -> np.ndarray:
    """(B, k, h, w) host maps of frames of ``frame_size`` (H, W) -> (B, k, 4) int32 boxes, in OpenCV.

    Maps still on a device are thresholded there instead (:func:`box_masks`, then
    :func:`boxes_from_masks`): :meth:`streamcam.types.Explanation.to_host` chooses.
    """
    array = np.asarray(maps)
    return boxes_from_masks(np.stack([[_host_mask(m, frame_size, threshold) for m in row] for row in array]))


def box_masks(maps: torch.Tensor, frame_size: tuple[int, int], threshold: float) -> torch.Tensor:
    """(B, k, h, w) maps -> (B, k, H, W) uint8 masks on the maps' device, in torch operations.

    ``mask = up(M) >= threshold * max(up(M))`` (and nothing where the max is 0),
    with ``up`` bilinear upsampling to ``frame_size`` (H, W): OpenCV's host mask, on any device.
    """
    batch, targets, h, w = maps.shape
    upsampled = F.interpolate(maps.reshape(batch * targets, 1, h, w).float(), size=frame_size, mode="bilinear",
                              align_corners=False)
    peak = upsampled.amax(dim=(2, 3), keepdim=True)
    masks = (upsampled >= threshold * peak) & (peak > 0)
    return masks.to(torch.uint8).reshape(batch, targets, *frame_size)


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """(B, k, H, W) uint8 host masks -> (B, k, 4) int32 boxes (:func:`largest_component_box` of each)."""
    batch, targets = masks.shape[:2]
    boxes = np.zeros((batch, targets, 4), np.int32)
    for b in range(batch):
        for j in range(targets):
            boxes[b, j] = largest_component_box(masks[b, j])
    return boxes


def largest_component_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The box around the largest 8-connected component of a uint8 mask, or ``EMPTY_BOX``.

    ``EMPTY_BOX`` when the mask is empty, when the largest component holds at most
    ``MIN_DOMINANT_SHARE`` of the mask's pixels, or when its box covers more than
    ``MAX_BOX_COVER`` of the mask's area (see the module docstring).
    """
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return EMPTY_BOX
    areas = stats[1:, cv2.CC_STAT_AREA]
    largest = int(np.argmax(areas))
    if areas[largest] <= MIN_DOMINANT_SHARE * int(areas.sum()):
        return EMPTY_BOX
    x, y, w, h = (int(stats[1 + largest, i]) for i in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT))
    if w * h > MAX_BOX_COVER * mask.size:
        return EMPTY_BOX
    return x, y, x + w, y + h


def box_or_none(box: Sequence[int]) -> tuple[int, int, int, int] | None:
    """One box row as plain ints, or ``None`` for ``EMPTY_BOX``: how a :class:`Prediction` says "no box"."""
    x0, y0, x1, y1 = (int(v) for v in box)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


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
