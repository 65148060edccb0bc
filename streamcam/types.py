"""The records that travel between pipeline stages (frozen, typed, never tuples)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from fractions import Fraction

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class VideoInfo:
    """What a source is, known before its first frame is delivered."""

    source_id: str
    width: int
    height: int
    fps: float | None  # None where it has no rate (images)
    frame_count: int | None  # None where unknown (live, network)
    live: bool
    time_base: Fraction | None = None  # the tick its timestamps fall on (files), so an output can keep them exactly


@dataclass(frozen=True, eq=False)
class Frame:
    """One captured frame.

    ``timestamp`` is seconds from the source's start (files: the decoder's
    presentation time; live: capture time). ``captured_at`` is ``time.monotonic()`` at
    capture, used for latency. Image sources also give ``name``, the file's name,
    and ``path``, the file as named (``photos/cat.jpg``), which tells apart two
    images of the same name from two folders.
    """

    index: int
    timestamp: float
    captured_at: float
    image: np.ndarray  # H x W x 3, uint8, BGR
    source_id: str
    name: str | None = None
    path: str | None = None


@dataclass(frozen=True, eq=False)
class Explanation:
    """The result of explaining a batch of B frames for k classes each.

    Tensors stay on the explainer's device; ``maps`` are at feature resolution,
    ReLU'd and min-max normalised to [0, 1] per map. ``boxes`` are computed on
    first access (see :mod:`streamcam.boxes`).
    """

    class_ids: torch.Tensor  # (B, k) int64
    scores: torch.Tensor  # (B, k) float32 softmax probabilities
    labels: list[list[str]]  # B lists of k labels
    maps: torch.Tensor  # (B, k, h, w) float32 in [0, 1]
    method: str
    layer: str
    # Multi-layer view: one map set per extra layer, and the method that made it
    # (Grad-CAM stands in for CAM away from the pooling layer).
    layer_maps: dict[str, torch.Tensor] = field(default_factory=dict)
    layer_methods: dict[str, str] = field(default_factory=dict)
    frame_sizes: tuple[tuple[int, int], ...] = ()  # (H, W) of each frame, for boxes in frame pixels
    box_threshold: float = 0.2
    engine: str = "torch"  # what ran the model: "torch" or "onnxruntime"

    def __len__(self) -> int:
        return int(self.class_ids.shape[0])

    @functools.cached_property
    def boxes(self) -> np.ndarray:
        """(B, k, 4) int32 boxes ``x0, y0, x1, y1`` (x1, y1 exclusive) in frame pixels, one per map.

        A map with nothing distinct to box (empty, no dominant hot region, or one
        covering nearly the whole frame) gets ``(0, 0, 0, 0)``: see :mod:`streamcam.boxes`.
        """
        from .boxes import boxes_from_maps

        out = np.zeros((*self.class_ids.shape, 4), np.int32)
        start = 0
        for end in range(1, len(self) + 1):  # frames of one size share one call
            if end == len(self) or self.frame_sizes[end] != self.frame_sizes[start]:
                out[start:end] = boxes_from_maps(self.maps[start:end], self.frame_sizes[start], self.box_threshold)
                start = end
        return out


@dataclass(frozen=True)
class Prediction:
    """One explained class of one frame, as plain Python values."""

    class_id: int
    label: str
    score: float
    box: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 in frame pixels (x1, y1 exclusive); None: no box


@dataclass(frozen=True, eq=False)
class AnnotatedFrame:
    """A frame with its overlay drawn, ready for the sinks."""

    frame: Frame
    image: np.ndarray  # H x W x 3, uint8, BGR, same size as frame.image
    predictions: tuple[Prediction, ...]
    latency: float  # seconds from capture to the end of rendering
    dropped: int  # frames the source dropped so far (live sources)
    method: str = "cam"  # the method that made the heatmap
    engine: str = "torch"  # what ran the model
