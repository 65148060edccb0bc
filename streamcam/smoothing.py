"""Temporal smoothing of heatmaps: an exponential moving average per source, reset where it would mislead.

``M'_t = s * M'_{t-1} + (1 - s) * M_t`` for each source and each explained
target, with ``s`` in [0, 1) (0 = off). The average starts again from the raw
map (``M'_t = M_t``) when:

- the scene cuts: the mean absolute difference between 16x16 grey thumbnails of
  consecutive frames exceeds ``CUT_THRESHOLD`` (on 0-255 pixels);
- the explained class of that target changes (a new top class, or ``c`` pressed);
- the method or the map's shape changes (maps are then not comparable).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

CUT_THRESHOLD = 25.0
THUMBNAIL = 16


@dataclass
class _Track:
    maps: torch.Tensor  # (k, h, w), the smoothed maps of the last frame
    class_ids: list[int]
    thumbnail: torch.Tensor  # (16, 16)
    method: str


class MapSmoother:
    """Keeps one running average per (source, layer); call it once per batch, frames in order."""

    def __init__(self, strength: float, cut_threshold: float = CUT_THRESHOLD) -> None:
        if not 0.0 <= strength < 1.0:
            raise ValueError(f"smoothing strength must be in [0, 1), not {strength}")
        self.strength = strength
        self.cut_threshold = cut_threshold
        self._tracks: dict[tuple[str, str], _Track] = {}
        self.resets = 0  # maps that started again (cuts, class or method changes)

    def __call__(self, maps: torch.Tensor, class_ids: Sequence[Sequence[int]], thumbnails: torch.Tensor,
                 sources: Sequence[str], method: str, layer: str = "") -> torch.Tensor:
        """Smooth (B, k, h, w) maps of consecutive frames; returns a new tensor, the input untouched."""
        if self.strength == 0.0:
            return maps
        cuts = self._cuts(thumbnails, sources, layer)
        out = []
        for b, source in enumerate(sources):  # sequential by nature: each frame follows the previous one
            key = (source, layer)
            track = self._tracks.get(key)
            current = maps[b]
            if track is None or cuts[b] or track.method != method or track.maps.shape != current.shape:
                smoothed = current
                self.resets += current.shape[0] if track is not None else 0
            else:
                same = [old == new for old, new in zip(track.class_ids, class_ids[b])]
                self.resets += same.count(False)
                keep = torch.tensor(same, device=current.device)[:, None, None]
                smoothed = torch.where(keep, self.strength * track.maps + (1.0 - self.strength) * current, current)
            self._tracks[key] = _Track(smoothed, list(class_ids[b]), thumbnails[b], method)
            out.append(smoothed)
        return torch.stack(out)

    def _cuts(self, thumbnails: torch.Tensor, sources: Sequence[str], layer: str) -> list[bool]:
        """Whether each frame cuts from the one before it in its source (one host copy per batch)."""
        previous = []
        last: dict[str, torch.Tensor] = {}
        for b, source in enumerate(sources):
            track = self._tracks.get((source, layer))
            previous.append(last.get(source, track.thumbnail if track else thumbnails[b]))
            last[source] = thumbnails[b]
        change = (thumbnails - torch.stack(previous)).abs().mean(dim=(1, 2))
        return (change > self.cut_threshold).tolist()


def thumbnails(images: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 frames -> (B, 16, 16) float grey thumbnails on 0-255, on the same device."""
    grey = images.float().mean(dim=3, keepdim=True).permute(0, 3, 1, 2)
    return F.adaptive_avg_pool2d(grey, THUMBNAIL)[:, 0]
