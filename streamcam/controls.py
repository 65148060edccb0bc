"""Live controls: what the window's keys change while the pipeline runs, without restarting it.

``m`` cycles the method, ``c`` the explained class among the top-k, ``l`` toggles
the multi-layer grid. The window sink writes; the worker and the render stage
read at the start of each batch (single attribute reads are atomic in Python).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

log = logging.getLogger(__name__)


class LiveControls:
    """The live state of a run: method, explained class index, grid on or off."""

    def __init__(self, methods: Sequence[str], method: str, top_k: int, grid: bool) -> None:
        self._lock = threading.Lock()
        self.methods = list(methods)
        self.method = method
        self.top_k = top_k
        self.class_index = 0
        self.grid = grid

    def press(self, key: str) -> bool:
        """Apply one key; returns whether it was one of ours."""
        with self._lock:
            if key == "m" and self.methods:
                position = self.methods.index(self.method) if self.method in self.methods else -1
                self.method = self.methods[(position + 1) % len(self.methods)]
                log.info("method: %s", self.method)
            elif key == "c":
                self.class_index = (self.class_index + 1) % self.top_k
                log.info("explaining class %d of the top %d", self.class_index + 1, self.top_k)
            elif key == "l":
                self.grid = not self.grid
                log.info("multi-layer grid %s", "on" if self.grid else "off")
            else:
                return False
            return True
