"""A base for what must be released on every path out: sources and sinks."""

from __future__ import annotations

from typing import TypeVar

from .interrupts import deferred

_R = TypeVar("_R", bound="Resource")


class Resource:
    """A context manager that calls :meth:`close` however the block ends; a Ctrl-C waits for it to finish."""

    def close(self) -> None:
        """Release what is held; safe to call twice."""

    def __enter__(self: _R) -> _R:
        return self

    def __exit__(self, *exc_info: object) -> None:
        with deferred():  # a file being finalised is not cut off halfway
            self.close()
