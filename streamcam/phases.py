"""Say what the user is waiting for: never more than a second of silence on stderr.

``with phase("loading resnet50"):`` around every wait a user sits through
(loading the model, the first-run export, compiling, opening a stream). A phase
shorter than :data:`QUIET_S` says nothing. A longer one, on a terminal (the
command line turns this on with :func:`use_terminal`), shows a line with its
name and elapsed time, redrawn by tqdm until it ends; otherwise (logs, pipes, the
Python API) it logs ``streamcam: loading resnet50...`` once. Either way its end
is logged with its duration. Phases may nest: the innermost is shown.

Log lines written while a phase's line (or any tqdm bar) is on the terminal go
through :func:`log_write`, which clears the line first and redraws it after.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger("streamcam")

QUIET_S = 1.0  # a phase shorter than this is not announced
REDRAW_S = 0.2  # the terminal line's refresh period

_terminal = False
_lock = threading.Lock()
_shown: list[Any] = []  # the tqdm lines on screen, innermost phase last


def use_terminal(enabled: bool) -> None:
    """Draw phases as live lines on stderr (the command line, on a terminal) rather than log lines."""
    global _terminal
    _terminal = enabled


@contextlib.contextmanager
def phase(what: str, long: bool = False) -> Iterator[None]:
    """Announce ``what`` (e.g. ``"exporting resnet50 for onnxruntime"``) if it lasts over :data:`QUIET_S`,
    or at once if it is known to be ``long`` (so that what it logs meanwhile comes after its name)."""
    started = time.monotonic()
    done = threading.Event()
    announced = threading.Event()
    if long:
        _announce(what, announced)
    watcher = threading.Thread(target=_watch, args=(what, started, long, done, announced), name="streamcam-phase",
                               daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
        if announced.is_set():
            log.info("%s: %.1f s", what, time.monotonic() - started)


def _announce(what: str, announced: threading.Event) -> None:
    announced.set()
    if not _terminal:
        log.info("%s...", what)


def _watch(what: str, started: float, long: bool, done: threading.Event, announced: threading.Event) -> None:
    """After :data:`QUIET_S` (at once if ``long``), announce the phase; on a terminal, keep its line live.
    Saying what is going on must never disturb it: a failure here ends the announcement, nothing else."""
    try:
        _show(what, started, long, done, announced)
    except Exception:  # noqa: BLE001 - e.g. a closed stderr
        pass


def _show(what: str, started: float, long: bool, done: threading.Event, announced: threading.Event) -> None:
    if not long:
        if done.wait(QUIET_S):
            return
        _announce(what, announced)
    if not _terminal:
        return
    from tqdm import tqdm

    line = tqdm(desc=f"streamcam: {what}", bar_format="{desc}... {elapsed}", file=sys.stderr, leave=False,
                total=None)
    line.start_t -= time.monotonic() - started  # elapsed from the phase's start (tqdm's clock is time.time)
    with _lock:
        _shown.append(line)
    try:
        while not done.wait(REDRAW_S):
            with _lock:
                if _shown and _shown[-1] is line:
                    line.refresh()
    finally:
        with _lock:
            _shown.remove(line)
        line.close()


def log_write(write: Callable[[], None]) -> None:
    """Run ``write`` (a log handler's emit) with tqdm's lines, if any are on screen, out of its way."""
    # Never imported just for this (the start must stay fast). Another thread may be importing tqdm right
    # now: its module is then in sys.modules without its names yet, and no bar can be on screen.
    bar_class = getattr(sys.modules.get("tqdm"), "tqdm", None)
    external_write_mode = getattr(bar_class, "external_write_mode", None)
    if external_write_mode is None:
        write()
        return
    with external_write_mode(file=sys.stderr):
        write()
