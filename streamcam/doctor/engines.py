"""Engine rows: every engine x device x precision explains real photos and is compared with the CPU
torch fp32 reference, then timed.

Only :func:`engine_specs` knows about GPUs (which rows this machine offers, and
why not the others); the explaining, the comparison and the timing are the same
code for every row, so the CPU rows run it in CI.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .environment import devices, missing_provider_reason, no_cuda_reason
from .rows import Row, guarded

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")  # scikit-image's photos, through streamcam.demo.photo
QUICK_PHOTOS = PHOTOS[:2]
EXPECTED = {"chelsea": "Egyptian cat", "coffee": "espresso"}  # what the reference must say (DESIGN.md, sec. 5)
TIMING_BATCH = 8
REFERENCE = ("torch", "cpu", "fp32")


@dataclass(frozen=True)
class Bounds:
    """How far a row may be from the reference: top-1 score (softmax probability) and map correlation."""

    score: float
    correlation: float


# Measured on the development CPU (EfficientNet-Lite0, the four PHOTOS, torch autocast), largest score
# difference / smallest map correlation against fp32: fp16 4.6e-3 / 0.99998, bf16 4.3e-2 / 0.9991,
# onnxruntime fp32 1.1e-6 / 1.0000. bf16 keeps 8 mantissa bits (fp16: 11), so its bound is the loosest.
BOUNDS = {"fp32": Bounds(1e-3, 0.99), "fp16": Bounds(2e-2, 0.99), "bf16": Bounds(1e-1, 0.99)}


@dataclass(frozen=True)
class EngineSpec:
    """One engine x device x precision; ``unavailable`` says why this machine cannot run it."""

    engine: str
    device: str
    precision: str
    unavailable: str | None = None

    @property
    def name(self) -> str:
        return f"{self.engine} {self.device} {self.precision}"


def engine_specs() -> list[EngineSpec]:
    """Every row, the reference (torch cpu fp32) first; GPU rows where this machine has none say why."""
    import torch

    specs = [EngineSpec("torch", "cpu", precision) for precision in BOUNDS]
    specs += [EngineSpec("onnxruntime", "cpu", precision, missing_provider_reason("CPUExecutionProvider"))
              for precision in ("fp32", "fp16")]  # bf16: OnnxBackend.precisions
    no_cuda = no_cuda_reason()
    for device in [d["device"] for d in devices()[1:]] or ["cuda"]:
        no_bf16 = None if no_cuda or torch.cuda.get_device_capability(device) >= (8, 0) else \
            f"{device} computes bf16 natively from compute capability 8.0 (Ampere) on"
        specs += [EngineSpec("torch", device, "fp32", no_cuda), EngineSpec("torch", device, "fp16", no_cuda),
                  EngineSpec("torch", device, "bf16", no_cuda or no_bf16)]
        no_provider = no_cuda or missing_provider_reason("CUDAExecutionProvider")
        specs += [EngineSpec("onnxruntime", device, precision, no_provider) for precision in ("fp32", "fp16")]
        no_trt = no_cuda or missing_provider_reason("TensorrtExecutionProvider") or \
            "streamcam's onnxruntime engine runs the CUDA provider; TensorRT is not wired in yet"
        specs.append(EngineSpec("onnxruntime+TensorRT", device, "fp16", no_trt))
    return specs


def build_explainer(spec: EngineSpec) -> Any:
    """The default model on ``spec``'s engine, device and precision."""
    from ..explainer import Explainer

    return Explainer(device=spec.device, backend=spec.engine, precision=spec.precision)


def reference_result(frames: Sequence[np.ndarray]) -> Any:
    """What every row is compared with: the default model, torch, CPU, fp32."""
    return build_explainer(EngineSpec(*REFERENCE))(list(frames))


def check_engine(spec: EngineSpec, frames: Sequence[np.ndarray], names: Sequence[str], reference: Any,
                 seconds: float, batch_size: int = TIMING_BATCH) -> Row:
    """Explain ``frames`` on ``spec``, compare with ``reference`` within ``BOUNDS``, time it."""

    def run() -> tuple[list[str], dict[str, Any]]:
        explainer = build_explainer(spec)
        result = explainer(list(frames))
        problems, measured = compare(result, reference, BOUNDS[spec.precision], names)
        if result.engine != spec.engine.split("+")[0]:
            problems.append(f"ran on {result.engine}, not {spec.engine}")
        if (spec.engine, spec.device, spec.precision) == REFERENCE:
            problems += expected_classes(result, names)
        measured["images_per_s"] = round(images_per_second(explainer, frames, seconds, batch_size), 2)
        measured["timing_batch"] = batch_size
        return problems, measured

    return guarded("engine", spec.name, spec.unavailable, run)


def compare(result: Any, reference: Any, bounds: Bounds, names: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """Problems of ``result`` against ``reference`` (same top-1 class, top-1 score and map close enough),
    and the measured worst score difference and map correlation."""
    problems = []
    ids, ref_ids = result.class_ids[:, 0].cpu(), reference.class_ids[:, 0].cpu()
    for i, name in enumerate(names):
        if ids[i] != ref_ids[i]:
            problems.append(f"{name}: top-1 is {result.labels[i][0]!r}, the reference says {reference.labels[i][0]!r}")
    same = (ids == ref_ids).numpy()
    gaps = (result.scores[:, 0].float().cpu() - reference.scores[:, 0].cpu()).abs().numpy()[same]
    correlations = [correlation(result.maps[i, 0], reference.maps[i, 0]) for i in range(len(names)) if same[i]]
    worst_gap = float(gaps.max()) if gaps.size else None
    worst_corr = min(correlations) if correlations else None
    if worst_gap is not None and worst_gap > bounds.score:
        problems.append(f"top-1 scores differ by up to {worst_gap:.2g} (bound {bounds.score:g})")
    if worst_corr is not None and worst_corr < bounds.correlation:
        problems.append(f"map correlation down to {worst_corr:.4f} (bound {bounds.correlation:g})")
    measured = {"classes": [labels[0] for labels in result.labels], "max_score_diff": worst_gap,
                "min_map_correlation": worst_corr, "bounds": {"score": bounds.score, "correlation": bounds.correlation}}
    return problems, measured


def expected_classes(result: Any, names: Sequence[str]) -> list[str]:
    """The reference's own check: the photos whose class is known get it."""
    return [f"{name}: top-1 is {labels[0]!r}, expected {EXPECTED[name]!r}"
            for name, labels in zip(names, result.labels) if name in EXPECTED and labels[0] != EXPECTED[name]]


def correlation(a: Any, b: Any) -> float:
    """Pearson correlation of two maps (any device, any float type); two equal flat maps correlate 1, a flat
    map and a varied one 0."""
    x, y = (np.asarray(m.detach().float().cpu(), dtype=np.float64).ravel() for m in (a, b))
    if x.std() == 0 or y.std() == 0:
        return 1.0 if np.array_equal(x, y) else 0.0
    return float(np.corrcoef(x, y)[0, 1])


def images_per_second(explainer: Any, frames: Sequence[np.ndarray], seconds: float, batch_size: int) -> float:
    """Explained images per second at ``batch_size`` over about ``seconds``. A first batch faster than that
    is a warm-up (first-call allocations, an onnxruntime session's first run) and is not counted; a slower
    one is the measurement (at least one batch is timed). Each batch ends with its scores on the host, so
    queued device work is counted."""
    batch = [frames[i % len(frames)] for i in range(batch_size)]
    done, start, warm = 0, time.perf_counter(), False
    while True:
        explainer(batch).scores.cpu()
        done += len(batch)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed
        if not warm:
            done, start, warm = 0, time.perf_counter(), True
