"""Ctrl-C, SIGTERM and SIGHUP at any moment: a clean exit, outputs finalised, never a traceback.

The CLI calls :func:`install` as its first act. What a signal does depends on
the moment:

- **before any output is open** (imports, model loading, the first-run export):
  there is nothing to finalise, so the process leaves at once with 128 + the
  signal number, after removing its scratch files (:func:`scratch`). Raising an
  exception there could land inside ``import torch`` or a native call and end in
  a half-imported library, a native abort or a swallowed interrupt;
- **while outputs are open** (:func:`outputs_open`): it is raised in the main
  thread (:class:`KeyboardInterrupt`, or :class:`Terminated` for SIGTERM and
  SIGHUP), so every ``finally`` finalises its file; inside :func:`deferred` (a
  frame being written to every sink, a sink being closed) it waits for the block
  to end, so a recording and its records end on the same frame;
- **once a signal has been delivered** (shutting down): later ones never raise;
  they only cut the waits short (:func:`hurried`), and the exit code stays that
  of the first.

Without :func:`install` (streamcam used as a library) nothing changes: Python's
own Ctrl-C handling applies, and the context managers here cost nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

# The signals that end a run, with the word said for them.
SIGNALS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}
if hasattr(signal, "SIGHUP"):  # a closed terminal or ssh session (not on Windows)
    SIGNALS[signal.SIGHUP] = "hung up"


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread so that every ``finally`` runs as for Ctrl-C."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(SIGNALS.get(signum, "terminated"))
        self.signum = signum


class _State:
    def __init__(self) -> None:
        self.installed = False
        self.outputs_open = 0  # depth of outputs_open() blocks
        self.deferred = 0  # depth of deferred() blocks
        self.received: int | None = None  # the first signal's number
        self.held = False  # the first signal waits for a deferred() block to end
        self.hurry = threading.Event()
        self.scratch: list[Path] = []


_state = _State()


def install() -> Callable[[], None]:
    """Handle SIGINT, SIGTERM and SIGHUP as described above; returns a function restoring the old handlers.

    Outside the main thread (where Python allows no handlers), or when already installed, it does nothing.
    """
    if threading.current_thread() is not threading.main_thread() or _state.installed:
        return lambda: None
    _state.__init__()
    _state.installed = True
    previous = {signum: signal.signal(signum, _handle) for signum in SIGNALS}

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _state.__init__()

    return restore


def received() -> int | None:
    """The number of the first signal received since :func:`install`, or None."""
    return _state.received


def exit_code(signum: int) -> int:
    """What a shell reports for a process ended by ``signum``: 128 + its number (130 for Ctrl-C)."""
    return 128 + int(signum)


def hurried() -> bool:
    """Whether a second signal asked to cut the shutdown's waits short."""
    return _state.hurry.is_set()


@contextlib.contextmanager
def outputs_open() -> Iterator[None]:
    """From here until the block ends, a signal is raised (outputs get finalised) rather than ending the process."""
    _state.outputs_open += 1
    try:
        yield
    finally:
        _state.outputs_open -= 1


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A signal arriving inside waits until the block ends (a frame being written, a file being finalised)."""
    _state.deferred += 1
    try:
        yield
    finally:
        _state.deferred -= 1
        if _state.deferred == 0 and _state.held:
            _state.held = False
            _raise(_state.received)


@contextlib.contextmanager
def scratch(path: Path) -> Iterator[Path]:
    """``path`` (a file or folder) is removed if a signal ends the process before the block ends."""
    _state.scratch.append(path)
    try:
        yield path
    finally:
        with contextlib.suppress(ValueError):
            _state.scratch.remove(path)


def _handle(signum: int, _frame: object) -> None:
    if _state.received is not None:  # already shutting down: only hurry
        _state.hurry.set()
        return
    _state.received = signum
    if not _state.outputs_open:
        _leave_now(signum)
    if _state.deferred:
        _state.held = True
        return
    _raise(signum)


def _raise(signum: int | None) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum or signal.SIGTERM)


def _leave_now(signum: int) -> None:
    """Nothing to finalise: remove scratch files, say why in one line, and exit without unwinding."""
    for path in reversed(_state.scratch):
        with contextlib.suppress(OSError):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    with contextlib.suppress(OSError):
        os.write(2, f"streamcam: {SIGNALS.get(signum, 'stopped')}\n".encode())
    os._exit(exit_code(signum))
