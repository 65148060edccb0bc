"""The doctor's report as text: versions, devices, then one line per row with its verdict."""

from __future__ import annotations

from typing import Any

from . import Report
from .rows import Row


def format_report(report: Report) -> str:
    """The whole report, for a terminal or a bug report."""
    v = report.versions
    ort = f"{v['onnxruntime']} ({', '.join(v['onnxruntime_providers'])})" if v["onnxruntime"] else "not installed"
    hw = v["ffmpeg_hardware"]
    present = [name for group in ("encoders", "decoders") for name, has in hw[group].items() if has]
    lines = [
        f"streamcam {v['streamcam']}, Python {v['python']} on {v['platform']}",
        f"torch {v['torch']}, CUDA {v['cuda'] or 'none'}, cuDNN {v['cudnn'] or 'none'}",
        f"onnxruntime {ort}, TensorRT {v['tensorrt'] or 'not installed'}",
        f"PyAV {v['pyav']}, FFmpeg libavcodec {v['ffmpeg'].get('libavcodec', '?')}; hardware codecs: "
        f"{', '.join(present) or 'none'}; hardware devices: {', '.join(hw['hwaccel_devices']) or 'none'}",
        f"OpenCV {v['opencv']}, NumPy {v['numpy']}",
        "devices: " + "; ".join(_device(d) for d in report.devices),
        "",
    ]
    width = max(len(row.name) for row in report.rows) + 2
    for check in ("engine", "pipeline"):
        lines.append(f"{check} checks:")
        lines += [f"  {row.name:<{width}}{_verdict(row)}" for row in report.rows if row.check == check]
    failed = sum(row.verdict == "FAIL" for row in report.rows)
    lines += ["", f"{'FAIL: ' + str(failed) + ' check(s) failed' if report.exit_code else 'all available checks pass'}"]
    return "\n".join(lines)


def _device(device: dict[str, Any]) -> str:
    if device["device"] == "cpu":
        return f"cpu ({device['name']}, {device['cores']} cores)"
    return f"{device['device']} ({device['name']}, {device['memory_gb']} GB, capability {device['capability']})"


def _verdict(row: Row) -> str:
    m = row.measured
    numbers = [f"{label} {m[key]:.3g}" for key, label in (("max_score_diff", "score diff"),
                                                           ("min_map_correlation", "map corr"))
               if m.get(key) is not None]
    if "images_per_s" in m:
        numbers.append(f"{m['images_per_s']:.1f} images/s at batch {m['timing_batch']}")
    if "frames" in m:
        numbers.append(f"{m['frames']} frames in {m['seconds']} s")
    text = row.verdict + (f": {row.reason}" if row.reason else "")
    return text + (f" ({', '.join(numbers)})" if numbers else "")
