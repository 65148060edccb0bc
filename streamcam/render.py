"""Drawing: heatmap overlay (torch, on whatever device the frames are), labels, boxes, grid and HUD (OpenCV, on the host).

The overlay is ``out = (1 - alpha) * frame + alpha * JET[round(255 * up(M))]`` where
``up`` is bilinear upsampling of the feature-resolution map to frame size and
``JET`` is OpenCV's own 256-entry colormap (red = strong evidence).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .text import Line, TextPlacement, cut_end, draw_block, fit, line_height, name_line, plan_block, prediction_line, text_style
from .types import Prediction


@functools.cache
def jet_table() -> np.ndarray:
    """OpenCV's JET colormap as a (256, 3) uint8 BGR table, read from ``cv2.applyColorMap``."""
    ramp = np.arange(256, dtype=np.uint8).reshape(256, 1)
    return cv2.applyColorMap(ramp, cv2.COLORMAP_JET).reshape(256, 3)


class HeatmapOverlay:
    """Blends JET heatmaps into frames: batched in torch on any device, or one frame at a time with OpenCV.

    Which one runs is the caller's named choice (``render="device"|"host"``, see
    :mod:`streamcam.config`), never the device's type: both compute the same formula.
    """

    def __init__(self, alpha: float, device: torch.device, table: torch.Tensor | None = None) -> None:
        self.alpha = alpha
        self.table = torch.from_numpy(jet_table()).to(device) if table is None else table

    def at(self, alpha: float) -> HeatmapOverlay:
        """This overlay with opacity ``alpha`` (itself when unchanged; else sharing its colour table)."""
        return self if alpha == self.alpha else HeatmapOverlay(alpha, self.table.device, self.table)

    def blend_device(self, images: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 frames and (B, h, w) maps in [0, 1] -> (B, H, W, 3) uint8 overlays, on their device.

        The batched torch kernel: upsample ``255 * M`` (as :meth:`blend_host` does), round to the JET
        index, look the colour up, blend, round.
        """
        height, width = images.shape[1:3]
        upsampled = F.interpolate(maps[:, None].float() * 255, size=(height, width), mode="bilinear",
                                  align_corners=False)
        index = upsampled[:, 0].round_().clamp_(0, 255).long()
        heat = self.table[index]  # (B, H, W, 3)
        blended = images.float() * (1.0 - self.alpha) + heat.float() * self.alpha
        return blended.round_().to(torch.uint8)

    def blend_host(self, image: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
        """One H x W x 3 uint8 frame and its (h, w) map, with OpenCV: the same formula as the torch kernel."""
        height, width = image.shape[:2]
        # Scaling by 255 commutes with the linear upsampling, so it is done on the small map, and
        # convertScaleAbs rounds and saturates to uint8 in one pass (maps are >= 0): about 1 ms less at 720p.
        upsampled = cv2.resize(heatmap.astype(np.float32) * 255, (width, height), interpolation=cv2.INTER_LINEAR)
        index = cv2.convertScaleAbs(upsampled)
        heat = cv2.applyColorMap(index, cv2.COLORMAP_JET)
        return cv2.addWeighted(image, 1.0 - self.alpha, heat, self.alpha, 0.0)


def draw_predictions(image: np.ndarray, predictions: Sequence[Prediction], explained: int = 0) -> None:
    """Write "label  score%" lines at the top left, in place; with several, mark the explained one.

    Lines are shortened to fit the frame's width and take at most half its height
    (the explained class stays longest): see :mod:`streamcam.text`.
    """
    height, width = image.shape[:2]
    draw_block(image, plan_block(prediction_lines(predictions, explained), height, width))


def prediction_lines(predictions: Sequence[Prediction], explained: int = 0, priority: int = 0) -> list[Line]:
    """One line per prediction, best first; the explained one (marked "> " among several) gets ``priority``."""
    several = len(predictions) > 1
    return [
        prediction_line(p.label, p.score, "> " if several and index == explained else "",
                        priority if index == explained else priority + 2 + index)
        for index, p in enumerate(predictions)
    ]


# One colour per explained class (BGR): green, magenta, cyan, orange, white.
BOX_COLOURS = ((0, 255, 0), (255, 0, 255), (255, 255, 0), (0, 165, 255), (255, 255, 255))


def draw_boxes(image: np.ndarray, predictions: Sequence[Prediction]) -> None:
    """Draw each prediction's box (x1, y1 exclusive) with its label, in place; the last drawn is the top class."""
    _, thickness = text_style(*image.shape[:2])
    for index in reversed(range(len(predictions))):
        box = predictions[index].box
        if box is None or box[2] <= box[0] or box[3] <= box[1]:
            continue
        colour = BOX_COLOURS[index % len(BOX_COLOURS)]
        cv2.rectangle(image, (box[0], box[1]), (box[2] - 1, box[3] - 1), colour, max(2, thickness + 1))


def draw_hud(image: np.ndarray, fps: float, latency: float, dropped: int, method: str = "") -> None:
    """Write "method | fps | latency | drops" at the bottom left, in place (shorter where the frame is narrow)."""
    height, width = image.shape[:2]
    numbers = f"{fps:.1f} fps  {latency * 1000:.0f} ms  {dropped} dropped"
    line = Line((f"{method}  {numbers}" if method else numbers, numbers,
                 f"{fps:.0f} fps {latency * 1000:.0f} ms {dropped} drop"))
    scale, thickness = text_style(height, width)
    draw_block(image, plan_block([line], height, width, top=height - line_height(scale, thickness) - 8))


@dataclass(frozen=True, eq=False)
class Tile:
    """One tile of the multi-layer grid: a layer, its map, and its method when not the chosen one."""

    layer: str
    heatmap: np.ndarray  # (h, w) in [0, 1]
    method: str | None = None  # e.g. "gradcam" standing in for CAM away from the pooling layer


def layer_grid(image: np.ndarray, tiles: Sequence[Tile], overlay: HeatmapOverlay,
               predictions: Sequence[Prediction] = (), explained: int = 0) -> np.ndarray:
    """The frame once per tile, each with its layer's heatmap and name, tiled into the frame's size.

    The first tile also lists the predictions (see :func:`tile_labels`).
    """
    columns = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    height, width = image.shape[:2]
    tile_h, tile_w = max(1, height // rows), max(1, width // columns)
    small = cv2.resize(image, (tile_w, tile_h), interpolation=cv2.INTER_AREA)
    canvas = np.zeros_like(image)
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        blended = overlay.blend_host(small, tile.heatmap)
        draw_block(blended, tile_labels(tile_h, tile_w, tile, predictions if index == 0 else (), explained))
        canvas[row * tile_h : (row + 1) * tile_h, column * tile_w : (column + 1) * tile_w] = blended
    return canvas


def tile_labels(height: int, width: int, tile: Tile, predictions: Sequence[Prediction] = (),
                explained: int = 0) -> list[TextPlacement]:
    """The planned labels of one ``height`` x ``width`` tile, in tile pixels, stacked at its top left.

    The layer's name (kept longest), its method when not the chosen one (on the
    same line where it fits, else on the next), then the predictions. Each line is
    shortened to the tile's width; the block takes at most half the tile's height.
    """
    lines = [name_line(tile.layer)]
    if tile.method:
        scale, thickness = text_style(height, width)
        joined = f"{tile.layer} ({tile.method})"
        if fit([joined], width, scale, thickness):
            lines = [Line((joined,))]
        else:
            lines.append(Line((f"({tile.method})", tile.method, *cut_end(tile.method)), priority=2))
    return plan_block([*lines, *prediction_lines(predictions, explained, priority=1)], height, width)


