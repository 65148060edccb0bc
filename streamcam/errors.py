"""Errors streamcam raises on purpose, each with the exit code the CLI maps it to."""

from __future__ import annotations


class StreamcamError(Exception):
    """A failure streamcam can explain in one line."""

    exit_code = 1


class InputError(StreamcamError):
    """Bad usage or bad input: a missing file, an unknown model, a wrong layer name...

    The message names what is wrong and how to mend it.
    """

    exit_code = 2


class ExplainerClosed(StreamcamError):
    """An Explainer used after its ``close()`` (or the end of its ``with`` block)."""


class StageError(StreamcamError):
    """An exception raised inside a pipeline thread, re-raised in the caller with its stage named."""

    def __init__(self, stage: str, error: BaseException) -> None:
        super().__init__(f"{stage}: {error}")
        self.stage = stage
        self.error = error
        # A bad input found mid-run (e.g. an undecodable file) is still bad input.
        self.exit_code = getattr(error, "exit_code", 1)


class OutputClosed(StreamcamError):
    """The reader of standard output went away (``| head``): the run ends quietly, like other Unix tools."""

    exit_code = 0


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message, or its type's name when it has none: for one-line reports."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
