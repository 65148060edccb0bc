"""Output files that never destroy what was there: written under a temporary name, published by a rename.

An :class:`OutputFile` is written at ``.NAME.XXXX.partial.EXT`` beside its final
path and becomes the final file by one rename (atomic on one file system):

- a **new** file is published as soon as its first data is written
  (:meth:`OutputFile.publish_early`), so that even ``kill -9`` leaves what was
  written where the user asked; POSIX renames an open file, elsewhere it waits
  for :meth:`OutputFile.publish`;
- a file that **replaces** an existing one is published only at the end, so the
  old file stays whole until its replacement is complete;
- nothing written: :meth:`OutputFile.discard` removes the temporary file and any
  folder made for it, so an interrupted or refused run leaves nothing behind.

Devices and pipes (``/dev/null``, ``/dev/stdout``, a FIFO) are written in place:
there is nothing to replace, and renaming over them would destroy the device.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import shutil
from pathlib import Path

from .errors import InputError, StreamcamError
from .identity import identify

log = logging.getLogger(__name__)

PARTIAL = ".partial"  # in every temporary name, so that a leftover is recognisable


class OutputFile:
    """One output file: ``path`` is where to write, ``final`` where it ends up."""

    def __init__(self, final: Path, replace: bool = False) -> None:
        self.final = final
        self.replace = replace  # an existing file is being replaced (--overwrite)
        self.published = False
        self.in_place = identify(final).is_special
        self._made_folders = [] if self.in_place else make_folders(final.parent)
        if self.in_place:
            self.path = final
            return
        try:
            self.path = _new_file_beside(final)
        except OSError as error:
            remove_folders(self._made_folders)
            raise InputError(f"cannot write {final}: {error.strerror or error}") from error

    def publish_early(self) -> None:
        """Give a new file its final name now (the writer keeps writing to it); a replacement waits."""
        if self.replace or self.published or self.in_place:
            return
        try:
            self._rename(no_clobber=True)
        except OSError as error:  # e.g. Windows, which cannot rename an open file: publish() will
            log.debug("%s stays under its temporary name until it is closed (%s)", self.final, error)

    def publish(self) -> None:
        """The file is complete: move it to its final name (replacing the old file, if one was there)."""
        if self.published or self.in_place:
            return
        try:
            self._rename(no_clobber=not self.replace)
        except OSError as error:
            raise StreamcamError(f"could not move the finished {self.final} into place ({error.strerror or error}); "
                                 f"it is kept as {self.path}") from error

    def finish(self, written: bool, failed: bool) -> bool:
        """Publish what was written, unless nothing was, or it failed while replacing an old file
        (then the old one stays whole). Returns whether it was published."""
        if not written or (failed and self.replace):
            self.discard()
            return False
        self.publish()
        return True

    def discard(self) -> None:
        """Nothing worth keeping was written: remove it, and the folders made for it."""
        if self.in_place:
            return
        with contextlib.suppress(FileNotFoundError):
            (self.final if self.published else self.path).unlink()
        self.published = False
        remove_folders(self._made_folders)

    def _rename(self, no_clobber: bool) -> None:
        if no_clobber:
            # A file that appeared at the final name since the run was checked is not replaced.
            try:
                os.link(self.path, self.final)
            except FileExistsError:
                raise OSError(errno.EEXIST, f"{self.final} appeared meanwhile") from None
            except OSError:  # a file system without hard links
                if os.path.lexists(self.final):
                    raise
                os.replace(self.path, self.final)
            else:
                os.unlink(self.path)
        else:
            with contextlib.suppress(OSError):  # the replacement keeps the old file's permissions
                shutil.copymode(self.final, self.path)
            os.replace(self.path, self.final)
        self.path = self.final
        self.published = True


def write_whole(path: Path, text: str, replace: bool) -> None:
    """Write ``text`` (UTF-8) under a temporary name beside ``path``, then move it into place.

    ``replace``: an existing file at ``path`` may be replaced, once the new one is
    complete; without it, one that is there stays untouched (and the caller, who
    checked beforehand, hears of it: :meth:`OutputFile.publish`).
    """
    file = OutputFile(path, replace and identify(path).replaced_by_writing)
    try:
        file.path.write_text(text, encoding="utf-8")
    except BaseException:
        file.discard()
        raise
    file.publish()


def _new_file_beside(final: Path) -> Path:
    """An empty file of a fresh name in ``final``'s folder, with the permissions a new file gets there."""
    while True:
        # (the stem shortened, so that a name near the file system's limit still fits)
        path = final.with_name(f".{final.stem[:80]}.{secrets.token_hex(4)}{PARTIAL}{final.suffix}")
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask applies
            return path
        except FileExistsError:
            continue


def make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns the ones created, deepest first."""
    missing = []
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot create the folder {folder}: {error.strerror or error}") from error
    return missing


def remove_folders(folders: list[Path]) -> None:
    """Remove folders this run made, deepest first, where they are still empty."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()
