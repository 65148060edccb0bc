"""Consecutive runs of same-sized frames: a batch tensor holds frames of one size."""

from __future__ import annotations

from collections.abc import Hashable, Sequence


def same_size_runs(sizes: Sequence[Hashable]) -> list[slice]:
    """The runs of equal consecutive ``sizes`` (shapes or (H, W)), as slices: ``[a, a, b, a]`` -> ``[0:2, 2:3, 3:4]``."""
    runs: list[slice] = []
    start = 0
    for end in range(1, len(sizes) + 1):
        if end == len(sizes) or sizes[end] != sizes[start]:
            runs.append(slice(start, end))
            start = end
    return runs
