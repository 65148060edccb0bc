"""Batch with a deadline, across one or several sources (as NVIDIA DeepStream's stream muxer does).

A batch holds up to ``size`` frames, or what arrived within ``deadline_s`` of the
first one; live sources pass ``deadline_s=0`` and never wait for a batch to fill.
With several sources the buffers are read round-robin, one frame per source per
pass, so that a file with a full queue cannot starve a webcam.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from .buffers import END, POLL_S, Empty


class Muxer:
    """Gathers batches from several buffers (each a LatestSlot or a BoundedQueue) until all have ended."""

    def __init__(self, buffers: Sequence[Any], size: int, deadline_s: float, stop: threading.Event) -> None:
        self.buffers = list(buffers)
        self.size = size
        self.deadline_s = deadline_s
        self.stop = stop
        self.arrived = threading.Event()
        for buffer in self.buffers:
            buffer.arrived = self.arrived  # every buffer wakes this one consumer
        self._open = list(range(len(self.buffers)))
        self._turn = 0

    @property
    def ended(self) -> bool:
        return not self._open

    def next_batch(self) -> list[Any]:
        """The next batch; empty once every buffer has ended, or ``stop`` is set."""
        items: list[Any] = []
        deadline: float | None = None
        while self._open and not self.stop.is_set() and len(items) < self.size:
            self.arrived.clear()  # before the pass: a put after it wakes the wait below
            if not self._pass(items):
                if deadline is None:  # nothing yet: wait for a first frame
                    self.arrived.wait(POLL_S)
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.arrived.wait(min(remaining, POLL_S))
            if items and deadline is None:
                deadline = time.monotonic() + self.deadline_s
        return items

    def _pass(self, items: list[Any]) -> bool:
        """Take at most one item from each open buffer, starting where the last pass stopped."""
        took = False
        order = self._open[self._turn % len(self._open):] + self._open[: self._turn % len(self._open)]
        self._turn += 1
        for index in order:
            if len(items) >= self.size:
                break
            try:
                item = self.buffers[index].get_nowait()
            except Empty:
                continue
            if item is END:
                self._open.remove(index)
            else:
                items.append(item)
            took = True
        return took
