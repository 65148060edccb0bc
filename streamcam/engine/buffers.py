"""Hand-over buffers between threads, one per drop policy.

- :class:`LatestSlot` (policy ``keep-latest``, live sources): holds one item; a new
  one replaces the old, which is counted as dropped. The producer never waits.
- :class:`BoundedQueue` (policy ``keep-all``, files): holds up to ``maxsize`` items;
  a full queue makes the producer wait (back-pressure), so memory stays bounded.

Both end with :data:`END`, and every wait has a timeout and watches a stop event.
Both set ``arrived`` (an event shared by the buffers one consumer reads) on
every put and close, so that the consumer can wait on several at once.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

END: Any = type("EndOfStream", (), {"__repr__": lambda self: "END"})()
POLL_S = 0.05  # how often blocked threads look at the stop event


class Empty(Exception):
    """Nothing arrived within the timeout."""


class LatestSlot:
    """Keep only the newest item; count what it replaced (policy ``keep-latest``)."""

    policy = "keep-latest"

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._item: Any = None
        self._full = False
        self._ended = False
        self.dropped = 0
        self.arrived = threading.Event()

    def put(self, item: Any, stop: threading.Event) -> bool:
        with self._condition:
            if self._full:
                self.dropped += 1
            self._item, self._full = item, True
            self._condition.notify()
        self.arrived.set()
        return True

    def close(self, stop: threading.Event) -> None:
        with self._condition:
            self._ended = True
            self._condition.notify()
        self.arrived.set()

    def get(self, timeout: float) -> Any:
        with self._condition:
            if not self._condition.wait_for(lambda: self._full or self._ended, timeout):
                raise Empty
            if not self._full:
                return END
            item, self._item, self._full = self._item, None, False
            return item

    def get_nowait(self) -> Any:
        return self.get(0.0)


class BoundedQueue:
    """A FIFO of at most ``maxsize`` items; the producer waits when it is full (policy ``keep-all``)."""

    policy = "keep-all"
    dropped = 0  # never drops

    def __init__(self, maxsize: int) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize)
        self.arrived = threading.Event()

    def put(self, item: Any, stop: threading.Event) -> bool:
        """Wait for room; give up (returning False) once ``stop`` is set."""
        while not stop.is_set():
            try:
                self._queue.put(item, timeout=POLL_S)
                self.arrived.set()
                return True
            except queue.Full:
                continue
        return False

    def close(self, stop: threading.Event) -> None:
        self.put(END, stop)

    def get(self, timeout: float) -> Any:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            raise Empty from None

    def get_nowait(self) -> Any:
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            raise Empty from None
