"""The records that travel between pipeline stages (frozen, typed, never tuples)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from fractions import Fraction

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from .render import HeatmapOverlay


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
    ReLU'd and min-max normalised to [0, 1] per map. :meth:`to_host` brings
    everything to the host in one copy; ``boxes`` are computed on first access
    (see :mod:`streamcam.boxes`).
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
    # (B, H, W, 3) uint8 BGR frames as uploaded to the device, from Explainer.explain() when they share one size
    images: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.class_ids.shape[0])

    @functools.cached_property
    def boxes(self) -> np.ndarray:
        """(B, k, 4) int32 boxes ``x0, y0, x1, y1`` (x1, y1 exclusive) in frame pixels, one per map.

        A map with nothing distinct to box (empty, no dominant hot region, or one
        covering nearly the whole frame) gets ``(0, 0, 0, 0)``: see :mod:`streamcam.boxes`.
        """
        return self.to_host().boxes

    def to_host(self, overlay: HeatmapOverlay | None = None, explained: int = 0,
                box_masks: bool | None = None) -> HostExplanation:
        """Everything as host arrays, in one copy with one synchronisation (:func:`streamcam.device.to_host`).

        Work that needs frame-sized tensors can be finished on the device first and
        copied with the rest: ``overlay`` blends ``images`` with the maps of class
        ``explained`` (``HeatmapOverlay.blend_device``); ``box_masks`` thresholds
        the maps into frame-sized masks (:func:`streamcam.boxes.box_masks`), whose
        boxes are then taken on the host. ``box_masks=None``: on the device where
        the device type's measured default renders there (``config.AUTO_RENDER``).
        """
        from .boxes import box_masks as masks_of
        from .config import resolve_render
        from .device import to_host
        from .runs import same_size_runs

        if box_masks is None:
            box_masks = resolve_render("auto", self.maps.device.type) == "device"
        if overlay is not None and self.images is None:
            raise ValueError("no frames to blend: this Explanation did not come from frames of one size")
        tensors = [self.class_ids, self.scores, self.maps, *self.layer_maps.values()]
        overlays = [overlay.blend_device(self.images, self.maps[:, explained])] if overlay is not None else []
        masks = ([masks_of(self.maps[run], self.frame_sizes[run.start], self.box_threshold)
                  for run in same_size_runs(self.frame_sizes)] if box_masks else [])
        host = to_host([*tensors, *overlays, *masks])  # the one copy back
        extra = 3 + len(self.layer_maps)
        return HostExplanation(
            class_ids=host[0],
            scores=host[1],
            labels=self.labels,
            maps=host[2],
            method=self.method,
            layer=self.layer,
            layer_maps=dict(zip(self.layer_maps, host[3:extra])),
            layer_methods=self.layer_methods,
            frame_sizes=self.frame_sizes,
            box_threshold=self.box_threshold,
            engine=self.engine,
            overlays=host[extra] if overlays else None,
            masks=tuple(host[extra + len(overlays):]) if masks else None,
        )


@dataclass(frozen=True, eq=False)
class HostExplanation:
    """An :class:`Explanation` on the host (numpy arrays), with what the device finished for it."""

    class_ids: np.ndarray  # (B, k) int64
    scores: np.ndarray  # (B, k) float32
    labels: list[list[str]]
    maps: np.ndarray  # (B, k, h, w) float32 in [0, 1]
    method: str
    layer: str
    layer_maps: dict[str, np.ndarray]  # multi-layer grid: layer -> (B, k, h, w); empty when off
    layer_methods: dict[str, str]
    frame_sizes: tuple[tuple[int, int], ...]
    box_threshold: float
    engine: str
    overlays: np.ndarray | None = None  # (B, H, W, 3) uint8 BGR, blended on the device
    masks: tuple[np.ndarray, ...] | None = None  # (B_i, k, H, W) uint8 per run of same-sized frames, from the device

    def __len__(self) -> int:
        return int(self.class_ids.shape[0])

    @functools.cached_property
    def boxes(self) -> np.ndarray:
        """(B, k, 4) int32 boxes in frame pixels (see :attr:`Explanation.boxes`), computed here and only here:
        from the device's masks where it made them, else from the maps with OpenCV."""
        from .boxes import boxes_from_maps, boxes_from_masks
        from .runs import same_size_runs

        if self.masks is not None:
            return np.concatenate([boxes_from_masks(masks) for masks in self.masks])
        out = np.zeros((*self.class_ids.shape, 4), np.int32)
        for run in same_size_runs(self.frame_sizes):  # frames of one size share one call
            out[run] = boxes_from_maps(self.maps[run], self.frame_sizes[run.start], self.box_threshold)
        return out

    def predictions(self, index: int, boxes: bool = True) -> tuple[Prediction, ...]:
        """Frame ``index``'s explained classes as plain Python values (with their boxes, if ``boxes``)."""
        from .boxes import box_or_none

        return tuple(
            Prediction(class_id=int(class_id), label=label, score=float(score),
                       box=box_or_none(self.boxes[index, j]) if boxes else None)
            for j, (class_id, label, score) in enumerate(
                zip(self.class_ids[index], self.labels[index], self.scores[index]))
        )


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
