"""Pipeline threads: each runs one stage, records the first error, and always signals the end."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..errors import StageError
from ..interrupts import hurried
from .buffers import POLL_S

log = logging.getLogger(__name__)


class Failure:
    """The first exception raised in any stage; recording it stops the whole pipeline."""

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._lock = threading.Lock()
        self.error: StageError | None = None

    def record(self, stage: str, error: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = StageError(stage, error)
                self.error.__cause__ = error
        self._stop.set()

    def raise_if_any(self) -> None:
        if self.error is not None:
            raise self.error


def start_stage(name: str, body: Callable[[], None], failure: Failure) -> threading.Thread:
    """Run ``body`` on its own thread; an exception becomes the pipeline's failure, named after the stage."""

    def guarded() -> None:
        try:
            body()
        except BaseException as error:  # noqa: BLE001 - every error must reach the caller
            log.debug("stage %s failed", name, exc_info=True)
            failure.record(name, error)

    thread = threading.Thread(target=guarded, name=f"streamcam-{name}", daemon=True)
    thread.start()
    return thread


def join_all(threads: list[threading.Thread], timeout_s: float) -> None:
    """Wait for every stage thread; warn about any that overstays (it is a daemon and dies with the process).

    A second Ctrl-C during the shutdown (:func:`~streamcam.interrupts.hurried`) stops the waiting.
    """
    for thread in threads:
        deadline = time.monotonic() + timeout_s
        while thread.is_alive() and not hurried() and time.monotonic() < deadline:
            thread.join(min(POLL_S, max(0.0, deadline - time.monotonic())))
        if thread.is_alive() and not hurried():
            log.warning("thread %s did not stop within %.1f s", thread.name, timeout_s)
