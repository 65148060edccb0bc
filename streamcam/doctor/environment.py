"""What this machine has: library versions, devices, onnxruntime providers, FFmpeg's hardware codecs.

Every answer is a plain value (for the table and for ``--json``); every "no"
comes with its reason, which the checks reuse for their "not available here" rows.
"""

from __future__ import annotations

import importlib
import os
import platform
from typing import Any

# FFmpeg's NVIDIA encoders (NVENC) and decoders (NVDEC through cuvid), looked up in this PyAV's FFmpeg.
HARDWARE_ENCODERS = ("h264_nvenc", "hevc_nvenc", "av1_nvenc")
HARDWARE_DECODERS = ("h264_cuvid", "hevc_cuvid", "av1_cuvid")


def versions() -> dict[str, Any]:
    """streamcam, Python and every library the GPU path goes through (None: not installed)."""
    import av
    import cv2
    import numpy
    import torch

    from .. import __version__

    ort = _optional("onnxruntime")
    tensorrt = _optional("tensorrt")
    return {
        "streamcam": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,  # the CUDA torch was built with; None for a CPU-only build
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "onnxruntime": ort.__version__ if ort else None,
        "onnxruntime_providers": list(ort.get_available_providers()) if ort else [],
        "tensorrt": tensorrt.__version__ if tensorrt else None,
        "pyav": av.__version__,
        "ffmpeg": {name: ".".join(map(str, version)) for name, version in av.library_versions.items()},
        "ffmpeg_hardware": hardware_codecs(),
        "opencv": cv2.__version__,
        "numpy": numpy.__version__,
    }


def hardware_codecs() -> dict[str, Any]:
    """Which NVIDIA encoders and decoders this PyAV's FFmpeg was built with, and its hardware device types."""
    import av

    try:
        from av.codec.hwaccel import hwdevices_available

        devices = sorted(hwdevices_available())
    except ImportError:  # an older PyAV without hardware acceleration
        devices = []
    return {
        "encoders": {name: name in av.codecs_available for name in HARDWARE_ENCODERS},
        "decoders": {name: name in av.codecs_available for name in HARDWARE_DECODERS},
        "hwaccel_devices": devices,
    }


def devices() -> list[dict[str, Any]]:
    """The CPU, then each CUDA device torch sees, with name, memory and compute capability."""
    import torch

    found: list[dict[str, Any]] = [{"device": "cpu", "name": platform.processor() or platform.machine(),
                                    "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}]
    for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        props = torch.cuda.get_device_properties(index)
        found.append({"device": f"cuda:{index}", "name": props.name,
                      "memory_gb": round(props.total_memory / 2**30, 1),
                      "capability": f"{props.major}.{props.minor}"})
    return found


def no_cuda_reason() -> str | None:
    """Why torch cannot use a CUDA device here, or None when it can."""
    import torch

    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is built without CUDA"
    if not torch.cuda.is_available():
        return f"no CUDA device found (torch {torch.__version__} is built for CUDA {torch.version.cuda})"
    return None


def missing_provider_reason(provider: str) -> str | None:
    """Why onnxruntime cannot offer ``provider`` here, or None when it can."""
    ort = _optional("onnxruntime")
    if ort is None:
        return "onnxruntime is not installed"
    if provider not in ort.get_available_providers():
        return f"this onnxruntime ({ort.__version__}) has no {provider} (install onnxruntime-gpu)"
    return None


def _optional(name: str) -> Any:
    """The module, or None where it is not installed (or fails to import)."""
    try:
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001 - a broken optional install counts as missing
        return None
