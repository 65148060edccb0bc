"""One row of the doctor's report: what was checked, its verdict and what was measured."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger(__name__)

PASS, FAIL, UNAVAILABLE = "pass", "FAIL", "not available here"


@dataclass(frozen=True)
class Row:
    """A verdict: ``pass``, ``FAIL`` (``reason`` says why) or ``not available here`` (``reason`` says why not)."""

    check: str  # "engine" or "pipeline"
    name: str  # e.g. "torch cuda:0 fp16", "libx264 + software decoding"
    verdict: str
    reason: str = ""
    measured: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def guarded(check: str, name: str, unavailable: str | None,
            run: Callable[[], tuple[list[str], dict[str, Any]]]) -> Row:
    """The row of one check: not run where ``unavailable`` gives a reason; otherwise ``run`` returns the
    problems it found (none: pass) and what it measured. An exception is a FAIL with its message."""
    if unavailable:
        return Row(check, name, UNAVAILABLE, unavailable)
    log.info("checking %s: %s", check, name)
    try:
        problems, measured = run()
    except Exception as error:  # noqa: BLE001 - any failure of a check is its row's verdict
        log.debug("%s %s failed", check, name, exc_info=True)
        return Row(check, name, FAIL, f"{type(error).__name__}: {error}")
    return Row(check, name, FAIL if problems else PASS, "; ".join(problems), measured)


def exit_code(rows: Sequence[Row]) -> int:
    """0 when every row that could run here passed, 1 otherwise (also when nothing could run)."""
    ran = [row for row in rows if row.verdict != UNAVAILABLE]
    return 0 if ran and all(row.verdict == PASS for row in ran) else 1
