"""Which file a path names: two spellings, a symlink or a hard link of one file compare equal.

``FileId`` resolves a path once, before anything is created: its real path
(symlinks and ``..`` followed) and, where it exists, its device and inode (hard
links, bind mounts, case-insensitive file systems). The run's safety checks
(:mod:`streamcam.plan`) compare these, never the strings the user typed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_SPECIAL_FOLDERS = ("/dev/", "/proc/")


@dataclass(frozen=True)
class FileId:
    """A path as named, with what identifies the file or folder it names."""

    named: str  # as the user wrote it, for messages
    real: Path  # absolute, symlinks resolved (as far as the path exists)
    inode: tuple[int, int] | None  # (st_dev, st_ino) where it exists
    mode: int | None  # st_mode where it exists

    @property
    def exists(self) -> bool:
        return self.inode is not None

    @property
    def is_dir(self) -> bool:
        return self.mode is not None and stat.S_ISDIR(self.mode)

    @property
    def is_regular(self) -> bool:
        return self.mode is not None and stat.S_ISREG(self.mode)

    @property
    def is_special(self) -> bool:
        """A device, pipe or socket, or a path through ``/dev`` or ``/proc`` (``/dev/stdout`` may
        lead to the shell's redirect target): written in place, never replaced by a rename."""
        if self.named.startswith(_SPECIAL_FOLDERS):
            return True
        return self.mode is not None and not (stat.S_ISREG(self.mode) or stat.S_ISDIR(self.mode))

    @property
    def replaced_by_writing(self) -> bool:
        """Whether writing here would replace an existing file (a dangling symlink counts: its name is taken)."""
        if self.is_special:
            return False
        return self.exists or os.path.islink(self.named)

    def same(self, other: FileId) -> bool:
        """Whether both name one file or folder."""
        if self.inode is not None and self.inode == other.inode:
            return True
        return os.path.normcase(self.real) == os.path.normcase(other.real)

    def inside(self, folder: FileId) -> bool:
        """Whether this path is ``folder`` itself or lies anywhere below it."""
        if self.same(folder):
            return True
        ancestors = identify_parents(self.real)
        return any(parent.same(folder) for parent in ancestors)


def identify(path: str | os.PathLike[str]) -> FileId:
    """Resolve ``path`` (existing or not) to a :class:`FileId`."""
    named = os.fspath(path)
    real = Path(os.path.realpath(os.path.expanduser(named)))
    try:
        status = os.stat(real)
    except OSError:
        try:  # /proc/self/fd/N of a pipe resolves to a name ("pipe:[123]") that only the link itself reaches
            status = os.stat(os.path.expanduser(named))
        except OSError:
            return FileId(named, real, None, None)
    return FileId(named, real, (status.st_dev, status.st_ino), status.st_mode)


def identify_parents(real: Path) -> list[FileId]:
    """The folders above an already resolved path, nearest first."""
    return [identify(parent) for parent in real.parents]


class FileSet:
    """Files looked up by identity (real path, or device and inode) in constant time."""

    def __init__(self, files: Iterable[FileId] = ()) -> None:
        self._by_path: dict[str, FileId] = {}
        self._by_inode: dict[tuple[int, int], FileId] = {}
        for file in files:
            self.add(file)

    def add(self, file: FileId) -> None:
        self._by_path.setdefault(os.path.normcase(file.real), file)
        if file.inode is not None:
            self._by_inode.setdefault(file.inode, file)

    def find(self, file: FileId) -> FileId | None:
        """The member that is the same file as ``file``, or None."""
        found = self._by_path.get(os.path.normcase(file.real))
        if found is None and file.inode is not None:
            found = self._by_inode.get(file.inode)
        return found


def first_duplicate(files: Iterable[FileId]) -> tuple[FileId, FileId] | None:
    """The first pair of ``files`` that name one file (earlier, later), or None."""
    seen = FileSet()
    for file in files:
        earlier = seen.find(file)
        if earlier is not None:
            return earlier, file
        seen.add(file)
    return None
