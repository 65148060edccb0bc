"""``OUT_DIR/summary.parquet``: one row per video of a batch, in a fixed schema; and its one-line summary.

The table is written whole under a temporary name, then renamed into place
(:func:`streamcam.atomic.write_whole`'s way), so it is never seen half-written.
The next batch into the same folder reads it back (:func:`read_summary`) to
fill in the rows of the videos it skips. pyarrow is an optional extra
(``pip install 'streamcam[batch]'``), imported only here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from ..atomic import OutputFile
from .inputs import SUMMARY_NAME
from .video import DONE, FAILED, SKIPPED, VideoResult

log = logging.getLogger(__name__)


def schema() -> Any:
    """The table's columns, in :class:`VideoResult`'s order (what each holds: see its fields)."""
    import pyarrow as pa

    return pa.schema([
        pa.field("input", pa.string(), nullable=False),
        pa.field("video", pa.string()),
        pa.field("records", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("frames", pa.int64(), nullable=False),
        pa.field("duration_s", pa.float64()),
        pa.field("classes_seen", pa.list_(pa.string()), nullable=False),
        pa.field("seconds", pa.float64(), nullable=False),
        pa.field("error", pa.string()),
    ])


def write_summary(out_dir: Path, rows: Sequence[VideoResult]) -> Path:
    """Write ``rows`` as ``out_dir/summary.parquet`` (replacing the earlier batch's), atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([{**asdict(row), "classes_seen": list(row.classes_seen)} for row in rows],
                                 schema=schema())
    path = out_dir / SUMMARY_NAME
    file = OutputFile(path, replace=True)
    try:
        pq.write_table(table, file.path)
    except BaseException:
        file.discard()
        raise
    file.publish()
    return path


def read_summary(out_dir: Path) -> dict[str, VideoResult]:
    """The rows of the summary an earlier batch left in ``out_dir``, by input; none if there is none or it
    cannot be read (then the records files tell what is needed)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = out_dir / SUMMARY_NAME
    if not path.is_file():
        return {}
    try:
        table = pq.read_table(path, columns=[f.name for f in fields(VideoResult)])
    except (pa.ArrowException, OSError, KeyError) as error:
        log.warning("warning: the earlier summary %s cannot be read (%s); using the records files", path, error)
        return {}
    rows = [VideoResult(**{**row, "classes_seen": tuple(row["classes_seen"] or ())}) for row in table.to_pylist()]
    return {row.input: row for row in rows}


def summary_line(rows: Sequence[VideoResult], seconds: float) -> str:
    """``12 videos: 9 done, 2 skipped (complete already), 1 failed; 5400 frames explained in 81.2 s``."""
    count = {status: sum(row.status == status for row in rows) for status in (DONE, SKIPPED, FAILED)}
    frames = sum(row.frames for row in rows if row.status == DONE)
    return (f"{len(rows)} video{'s' * (len(rows) != 1)}: {count[DONE]} done, {count[SKIPPED]} skipped (complete "
            f"already), {count[FAILED]} failed; {frames} frames explained in {seconds:.1f} s")
