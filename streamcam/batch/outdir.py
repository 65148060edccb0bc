"""OUT_DIR, where a final name always means a complete output.

A video's outputs are written in a staging folder of their own inside OUT_DIR
(``.streamcam-batch-XXXX.partial/``, where the normal run's sinks write as they
always do), and only once both are complete are they moved to their final
names, each by one rename (atomic on one file system). So a crash, ``kill -9``
or Ctrl-C leaves at most a staging folder, never a partial file under a final
name; the next batch into OUT_DIR removes such leftovers before it starts.

This is the opposite of the normal run (:mod:`streamcam.atomic`), which
publishes a new video file at its first frame so that a killed recording keeps
what it wrote: a batch reruns a video instead, and must be able to tell a
finished one (resume) by its name alone.

One batch writes into an OUT_DIR at a time (:func:`batch_lock`, where the
system has ``flock``): the leftovers it removes are then surely not another
batch's work in progress.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..atomic import PARTIAL, make_folders
from ..errors import InputError
from ..interrupts import deferred, scratch

log = logging.getLogger(__name__)

STAGING_PREFIX = ".streamcam-batch-"


@contextlib.contextmanager
def batch_lock(out_dir: Path) -> Iterator[None]:
    """Create ``out_dir`` if needed, hold it for this batch alone, and remove earlier batches' leftovers."""
    make_folders(out_dir)
    with _flocked(out_dir):
        removed = remove_leftovers(out_dir)
        if removed:
            log.info("removed %d unfinished output(s) left in %s by an interrupted batch", removed, out_dir)
        yield


def remove_leftovers(out_dir: Path) -> int:
    """Remove the staging folders an interrupted or killed batch left in ``out_dir``; returns how many."""
    leftovers = [p for p in out_dir.glob(f"{STAGING_PREFIX}*{PARTIAL}") if p.is_dir()]
    for folder in leftovers:
        shutil.rmtree(folder, ignore_errors=True)
    return len(leftovers)


@contextlib.contextmanager
def staging(out_dir: Path) -> Iterator[Path]:
    """A fresh staging folder in ``out_dir`` for one video's outputs, removed with what is left in it
    (nothing, once :func:`publish` moved them) on every way out, a signal included. ``out_dir`` is made if
    missing (a Ray actor may be the first to write into it on its machine)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, suffix=PARTIAL, dir=out_dir))
    try:
        with scratch(folder):  # a signal that ends the process at once removes it too
            yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def publish(moves: list[tuple[Path, Path]]) -> None:
    """Move each complete staged file to its final name (replacing what is there: the caller decided).
    A signal waits until all are moved: a video is never left with one of its outputs published."""
    with deferred():
        for staged, final in moves:
            os.replace(staged, final)


def complete(*outputs: Path) -> bool:
    """Whether every output is there under its final name (so, complete)."""
    return all(path.is_file() for path in outputs)


@contextlib.contextmanager
def _flocked(folder: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: no flock; one batch per folder is then the user's to keep
        yield
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InputError(f"another streamcam batch is writing into {folder}: wait for it to end, or choose "
                             f"another output folder") from None
        yield
    finally:
        os.close(descriptor)  # releases the lock
