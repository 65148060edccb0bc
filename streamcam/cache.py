"""Exported graphs, made once and kept in the user's cache directory.

An entry is keyed by everything that shapes the graph: model name, a hash of its
weights' content, input size, labels, explained layer, precision, opset, and the
versions of streamcam, torch, onnx and onnxruntime. Not the top-k nor the
explained class: they are inputs of the graph, so one entry serves them all.
The key is also written into the graph's own metadata; an entry is used only if it loads, passes
``onnx.checker`` and carries the same key, otherwise it is rebuilt (a corrupt or
stale entry is never trusted). A new entry is exported to a temporary file and
renamed into place, which is atomic: concurrent runs cannot leave a half-written
graph behind, at worst they export twice.

Where: ``$STREAMCAM_CACHE_DIR`` if set; else ``$XDG_CACHE_HOME/streamcam`` or
``~/.cache/streamcam`` (Linux and others), ``~/Library/Caches/streamcam`` (macOS),
``%LOCALAPPDATA%\\streamcam\\Cache`` (Windows).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import tempfile
from pathlib import Path

import torch

from .errors import InputError
from .defaults import DEFAULT_OPSET
from .export import write_graph
from .interrupts import scratch
from .phases import phase
from .models import LoadedModel

log = logging.getLogger(__name__)

CACHE_ENV = "STREAMCAM_CACHE_DIR"
KEY_PROP = "streamcam.cache_key"


def cache_dir() -> Path:
    """The folder streamcam caches graphs in (see the module docstring)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "streamcam" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "streamcam"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "streamcam"


def private_folder(folder: Path) -> None:
    """Create ``folder`` for its owner only (and its parent, if missing), or make it so if it is ours.

    Cached graphs are used without a second look at who wrote them (their key is
    checked, not their author): nobody else may put one there.
    """
    folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.mkdir(exist_ok=True, mode=0o700)
    status = folder.stat()
    if hasattr(os, "getuid") and status.st_uid != os.getuid():
        raise InputError(f"the cache folder {folder} belongs to another user: set {CACHE_ENV} to a folder of yours")
    if status.st_mode & 0o077:
        os.chmod(folder, 0o700)


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer, names and bytes, in order."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        value = tensor.detach().to("cpu").contiguous()
        digest.update((value.float() if value.dtype == torch.bfloat16 else value).numpy().tobytes())
    return digest.hexdigest()


def cached_graph(loaded: LoadedModel, layer: str, fp16: bool = False, opset: int = DEFAULT_OPSET) -> Path:
    """The path of a valid exported graph for this model and layer, exporting it first if needed."""
    key = _key(loaded, layer, fp16, opset)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    folder = cache_dir() / "graphs"
    try:
        private_folder(folder)  # before an entry is trusted
    except OSError as error:
        raise _unwritable(folder, error) from error
    path = folder / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', loaded.name)[-40:]}-{digest}.onnx"
    if path.exists():
        problem = _entry_problem(path, key)
        if problem is None:
            log.debug("using the cached graph %s", path)
            return path
        log.warning("rebuilding the cached graph %s: %s", path.name, problem)
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=folder)
        os.close(handle)
    except OSError as error:
        raise _unwritable(folder, error) from error
    try:
        with phase(f"exporting {loaded.name} for onnxruntime (the first run only; later runs start from the cache)",
                   long=True), scratch(Path(temporary)):
            write_graph(Path(temporary), loaded, layer=layer, fp16=fp16, opset=opset,
                        extra_metadata={KEY_PROP: json.dumps(key, sort_keys=True)}, final=path)
            os.replace(temporary, path)  # atomic: readers see the old entry or the whole new one
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def _unwritable(folder: Path, error: OSError) -> InputError:
    return InputError(f"cannot write to the cache folder {folder} ({error.strerror or error}); "
                      f"set {CACHE_ENV} to a writable folder, or use --backend torch")


def _key(loaded: LoadedModel, layer: str, fp16: bool, opset: int) -> dict[str, object]:
    """What shapes the graph: two settings with the same key get the same graph."""
    import onnx
    import onnxruntime

    from . import __version__

    return {
        "model": loaded.name,
        "weights": weights_digest(loaded.module),
        "input_size": loaded.input_size,
        "labels": hashlib.sha256("\n".join(loaded.labels).encode()).hexdigest(),
        "layer": layer,
        "precision": "fp16" if fp16 else "fp32",
        "opset": opset,
        "versions": {"streamcam": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__},
    }


def _entry_problem(path: Path, key: dict[str, object]) -> str | None:
    """Why a cache entry cannot be trusted, or None."""
    import onnx

    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as error:  # noqa: BLE001 - any failure to read means corrupt
        return f"corrupt ({type(error).__name__})"
    stored = {p.key: p.value for p in proto.metadata_props}.get(KEY_PROP)
    if stored != json.dumps(key, sort_keys=True):
        return "made for another model, version or setting"
    return None
