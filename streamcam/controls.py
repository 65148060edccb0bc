"""Live controls: what the window's keys and the browser page change while the pipeline runs, without restarting it.

``m`` cycles the method, ``c`` the explained class among the top-k, ``l`` toggles
the multi-layer grid; the page (:mod:`streamcam.serve`) sets those and the heatmap's
opacity and the boxes through the validated setters, which refuse a bad value with
an :class:`InputError` and leave the state as it was. The window sink and the
server write; the inference worker reads at the start of each batch (single
attribute reads are atomic in Python) and carries what it read with the batch, so
that one batch is drawn with one state.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from .errors import InputError
from .options import check_alpha

log = logging.getLogger(__name__)


class LiveControls:
    """The live state of a run: method, explained class index, grid, heatmap opacity, boxes on or off."""

    def __init__(self, methods: Sequence[str], method: str, top_k: int, grid: bool, alpha: float = 0.5,
                 boxes: bool = False, grid_available: bool = True) -> None:
        self._lock = threading.Lock()
        self.grid_available = grid_available  # whether the run has layers to tile
        self.methods = list(methods)
        self.method = method
        self.top_k = top_k
        self.class_index = 0
        self.grid = grid
        self.alpha = alpha
        self.boxes = boxes

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

    def set_method(self, name: Any) -> None:
        """Explain with ``name``, one of :attr:`methods` (those this model and its engines can serve)."""
        if not isinstance(name, str) or name not in self.methods:
            raise InputError(f"unknown or unavailable method {name!r}: choose one of {', '.join(self.methods)}")
        with self._lock:
            self.method = name

    def set_class_index(self, index: Any) -> None:
        """Explain the ``index``-th most likely class (0 = the top one), below ``top_k``."""
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < self.top_k:
            raise InputError(f"class index must be an integer from 0 to {self.top_k - 1} (the top {self.top_k}), "
                             f"not {index!r}")
        with self._lock:
            self.class_index = index

    def set_grid(self, on: Any) -> None:
        """Show the multi-layer grid (when the run has layers to show) or the single heatmap."""
        on = _switch("grid", on)
        if on and not self.grid_available:
            raise InputError("this run has no layers to show in a grid (see --layers)")
        with self._lock:
            self.grid = on

    def set_alpha(self, alpha: Any) -> None:
        """The heatmap's opacity, 0 (the frame alone) to 1 (the heatmap alone)."""
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            raise InputError(f"alpha must be a number between 0 and 1, not {alpha!r}")
        check_alpha(float(alpha))
        with self._lock:
            self.alpha = float(alpha)

    def set_boxes(self, on: Any) -> None:
        """Draw each explained class's box, or not (records keep their boxes either way)."""
        with self._lock:
            self.boxes = _switch("boxes", on)

    def apply(self, changes: dict[str, Any]) -> None:
        """Apply ``{"method": ..., "class_index": ..., "grid": ..., "alpha": ..., "boxes": ...}`` (any subset):
        all of them, or, if any is refused (unknown key or bad value), none."""
        setters = {"method": self.set_method, "class_index": self.set_class_index, "grid": self.set_grid,
                   "alpha": self.set_alpha, "boxes": self.set_boxes}
        unknown = sorted(set(changes) - set(setters))
        if unknown or not changes:
            raise InputError(f"unknown control {', '.join(map(repr, unknown)) or '(none given)'}: "
                             f"the controls are {', '.join(setters)}")
        trial = LiveControls(self.methods, self.method, self.top_k, self.grid, self.alpha, self.boxes,
                             self.grid_available)
        for name, value in changes.items():  # a copy first: a refused change leaves nothing half-applied
            setters[name].__func__(trial, value)  # type: ignore[attr-defined]
        for name, value in changes.items():
            setters[name](value)

    def snapshot(self) -> dict[str, Any]:
        """The state as plain values: ``{"method", "methods", "class_index", "top_k", "grid", "grid_available",
        "alpha", "boxes"}``."""
        with self._lock:
            return {"method": self.method, "methods": list(self.methods), "class_index": self.class_index,
                    "top_k": self.top_k, "grid": self.grid, "grid_available": self.grid_available,
                    "alpha": self.alpha, "boxes": self.boxes}


def _switch(name: str, on: Any) -> bool:
    if not isinstance(on, bool):
        raise InputError(f"{name} is true or false, not {on!r}")
    return on
