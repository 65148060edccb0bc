"""Batch with a deadline: up to ``size`` items, or what arrived within ``deadline_s``."""

from __future__ import annotations

import threading
import time
from typing import Any

from .buffers import END, POLL_S, Empty


def next_batch(buffer: Any, size: int, deadline_s: float, stop: threading.Event) -> tuple[list[Any], bool]:
    """Wait for a first item, then gather more until the batch is full or the deadline passes.

    Returns ``(items, ended)``; ``ended`` is True once END was seen (``items`` may
    still hold the last frames). A live source passes ``deadline_s=0``: it never
    waits for a batch to fill. Returns ``([], True)`` when ``stop`` is set.
    """
    items: list[Any] = []
    while not items:
        if stop.is_set():
            return [], True
        try:
            first = buffer.get(timeout=POLL_S)
        except Empty:
            continue
        if first is END:
            return [], True
        items.append(first)
    deadline = time.monotonic() + deadline_s
    while len(items) < size:
        remaining = deadline - time.monotonic()
        try:
            item = buffer.get(timeout=min(remaining, POLL_S)) if remaining > 0 else buffer.get_nowait()
        except Empty:
            if remaining <= 0 or stop.is_set():
                break
            continue
        if item is END:
            return items, True
        items.append(item)
    return items, False
