"""Videos on remote storage (``s3://``, ``gs://``, ``hdfs://``, ``abfs://``, ``file://``), read through
pyarrow's file systems: FFmpeg reads a random-access file that fetches the byte ranges it asks for, so a
video is never held whole in memory (an MP4 whose index sits at its end needs the seeks)."""

from __future__ import annotations

import contextlib
from typing import Any

from ..errors import InputError, first_line
from ..video_in import AvSource


def remote_file_system(uri: str) -> tuple[Any, str]:
    """``pyarrow.fs.FileSystem.from_uri(uri)``: the file system and the path in it; one line if it fails
    (a scheme this pyarrow was built without, missing credentials, a bad bucket name)."""
    from pyarrow import ArrowException, fs

    try:
        return fs.FileSystem.from_uri(uri)
    except (ArrowException, OSError, ValueError) as error:
        raise InputError(f"cannot reach {uri}: {first_line(error)}") from error


class RemoteVideoSource(AvSource):
    """A video file behind a pyarrow file system URI, decoded by FFmpeg as a local file would be."""

    def __init__(self, uri: str) -> None:
        self._file_system, self._path = remote_file_system(uri)
        self._file: Any = None
        super().__init__(uri, uri, network=False)
        self.files = ()  # nothing local that an output could replace

    def _readable(self) -> Any:
        from pyarrow import ArrowException

        self._close_file()
        try:
            self._file = self._file_system.open_input_file(self._path)
        except FileNotFoundError:
            raise InputError(f"no such file: {self._target}") from None
        except (ArrowException, OSError) as error:
            raise InputError(f"cannot read {self._target}: {first_line(error)}") from error
        return self._file

    def close(self) -> None:
        super().close()
        self._close_file()

    def _close_file(self) -> None:
        file = self.__dict__.get("_file")
        if file is not None:
            with contextlib.suppress(Exception):  # noqa: BLE001 - a remote file that will not close is gone anyway
                file.close()
            self._file = None

