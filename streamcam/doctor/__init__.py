"""``streamcam doctor``: prove, on the user's machine, every engine x device x precision and every video
encoder and decoder it offers, against the CPU torch fp32 reference.

:func:`diagnose` returns a :class:`Report`: versions, devices and one row per
check, each ``pass``, ``FAIL`` with its reason, or ``not available here`` with
its reason. :func:`rows.exit_code` turns the rows into the command's exit code.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .rows import FAIL, PASS, UNAVAILABLE, Row, exit_code

__all__ = ["FAIL", "PASS", "UNAVAILABLE", "Report", "Row", "diagnose", "exit_code"]
log = logging.getLogger(__name__)

CLIP_FRAMES, QUICK_CLIP_FRAMES = 24, 8
TIMING_S, QUICK_TIMING_S = 3.0, 0.3  # seconds of timing per engine
QUICK_TIMING_BATCH = 2  # --quick: CPU fp16 autocast takes seconds per image; batch 8 otherwise


@dataclass(frozen=True)
class Report:
    """Everything the doctor found, as the table prints it and ``--json`` writes it."""

    versions: dict[str, Any]
    devices: list[dict[str, Any]]
    rows: list[Row] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return exit_code(self.rows)

    def as_dict(self) -> dict[str, Any]:
        return {"versions": self.versions, "devices": self.devices, "rows": [row.as_dict() for row in self.rows],
                "exit_code": self.exit_code}


def diagnose(quick: bool = False) -> Report:
    """Run every check this machine offers (``quick``: two photos, a shorter clip and timing)."""
    from ..demo import photo
    from .engines import PHOTOS, QUICK_PHOTOS, REFERENCE, TIMING_BATCH, EngineSpec, build_explainer, \
        check_engine, engine_specs, reference_result
    from .environment import devices, versions
    from .pipeline import check_pipeline, make_clip, pipeline_specs

    report = Report(versions(), devices())
    names = QUICK_PHOTOS if quick else PHOTOS
    frames = [photo(name) for name in names]
    reference = reference_result(frames)
    seconds, batch = (QUICK_TIMING_S, QUICK_TIMING_BATCH) if quick else (TIMING_S, TIMING_BATCH)
    specs = engine_specs()
    report.rows.extend(check_engine(spec, frames, names, reference, seconds, batch) for spec in specs)
    # The pipeline runs on the first device whose torch fp32 row passed: a GPU's where there is one.
    passed = {row.name for row in report.rows if row.verdict == PASS}
    fp32 = [spec for spec in specs if (spec.engine, spec.precision) == ("torch", "fp32") and spec.name in passed]
    best = max(fp32, key=lambda spec: spec.device != "cpu", default=EngineSpec(*REFERENCE))
    count = QUICK_CLIP_FRAMES if quick else CLIP_FRAMES
    with tempfile.TemporaryDirectory(prefix="streamcam-doctor-") as folder:
        clip = make_clip(Path(folder) / "clip.mp4", count)
        explainer = build_explainer(best)
        report.rows.extend(check_pipeline(spec, clip, count, explainer, Path(folder))
                           for spec in pipeline_specs())
    return report
