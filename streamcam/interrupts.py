"""Ctrl-C and SIGTERM that wait for the frame being written: every sink ends on the same frame.

The CLI installs :func:`install`; the pipeline wraps the writing of one frame to
all its sinks in :func:`frame_being_written`. A signal that arrives inside is
held and raised as soon as the frame is complete, so a recording and its JSON
lines always end on the same frame. Elsewhere it is raised at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that every ``finally`` runs as for Ctrl-C."""


_held: list[type[BaseException]] = []
_depth = 0


@contextmanager
def frame_being_written() -> Iterator[None]:
    """Hold SIGINT/SIGTERM (as installed by :func:`install`) until the block ends."""
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _held:
            raise _held.pop()()


def _handler(exception: type[BaseException]) -> Callable[[int, object], None]:
    def handle(_signum: int, _frame: object) -> None:
        if _depth and threading.current_thread() is threading.main_thread():
            _held[:] = [exception]
            return
        raise exception

    return handle


def install() -> Callable[[], None]:
    """Route SIGINT to KeyboardInterrupt and SIGTERM to :class:`Terminated`; returns a function restoring the old handlers.

    Outside the main thread (where Python allows no handlers) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, _handler(KeyboardInterrupt)),
        signal.SIGTERM: signal.signal(signal.SIGTERM, _handler(Terminated)),
    }

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _held.clear()

    return restore
