"""What only CUDA has, in one place, each with a CPU stand-in that keeps its contract.

The pipeline calls these and nothing else device-specific, so the call sequence
CI runs on the CPU is the one a GPU runs:

- :func:`host_buffer`: page-locked (pinned) host memory on CUDA, so a copy to the
  device can run ``non_blocking``; ordinary memory otherwise.
- :func:`record_event`: a point in the device's queue that can be waited for
  (``torch.cuda.Event`` on the current stream). Stand-in: an event that is already
  complete, because the CPU runs every operation in order before returning.
- :func:`to_device`: one ``non_blocking`` copy into the device's memory; on the CPU
  the host tensor itself.
- :func:`reuses_host_buffers`: whether staging buffers are kept (pinned memory, slow
  to allocate) or allocated per batch (ordinary memory: the batch is its buffer).
- :func:`to_host`: queue ``non_blocking`` copies, record one event, wait for it,
  then read: one synchronisation per batch.
- :func:`graph_step`: marks the start of a CUDA-graph replay step; nothing to mark
  without CUDA graphs.
- :func:`resize_antialiased`: the fastest antialiased bilinear resize kernel each
  device has for uint8 frames.
- :func:`resolve_device`: ``"auto"`` is the first CUDA device where there is one.
- :class:`StagingBuffer`: the host buffer frames are stacked into before their one
  copy to the device; when it is reused, it refuses to be rewritten before that copy
  completed (and a batch that would share its memory gets its own copy).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError


class Event(Protocol):
    """What the pipeline asks of an event: has it completed, and wait until it has."""

    def query(self) -> bool: ...

    def synchronize(self) -> None: ...


class CompletedEvent:
    """The CPU's stand-in for a CUDA event: the CPU finished the work before recording it."""

    def query(self) -> bool:
        return True

    def synchronize(self) -> None:
        return None


def _cuda(device: torch.device) -> bool:
    return device.type == "cuda"


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> the first CUDA device if there is one, else the CPU; a name is checked against this machine."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError):
        raise InputError(f"unknown device '{device}': use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device '{device}' asked for, but no CUDA GPU is available: use --device cpu")
    return resolved


def record_event(device: torch.device) -> Event:
    """An event recorded now on ``device``'s current stream (CPU: already complete)."""
    if not _cuda(device):
        return CompletedEvent()
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(device))
    return event


def host_buffer(numel: int, device: torch.device) -> torch.Tensor:
    """A flat uint8 host buffer for copies to ``device``: pinned on CUDA, ordinary memory otherwise."""
    return torch.empty(numel, dtype=torch.uint8, pin_memory=_cuda(device))


def reuses_host_buffers(device: torch.device) -> bool:
    """Whether staging buffers for ``device`` are kept and reused: pinned memory (CUDA) is slow to
    allocate, so it is, under the copy-done rule of :class:`StagingBuffer`; ordinary memory is
    allocated per batch (as ``np.stack`` would), and a batch for the CPU then *is* its buffer: one
    host copy per batch, not two (measured 0.96x the pipeline's fps at 720p with the second copy)."""
    return _cuda(device)


def to_device(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``host`` on ``device``: one ``non_blocking`` copy to a GPU; ``host`` itself when the device is the host."""
    return host.to(device, non_blocking=True)


def to_host(tensors: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """Copy device tensors to host arrays with one synchronisation for all of them.

    The copies are queued ``non_blocking``, one event is recorded after them and
    waited for before any is read (CPU: they are the tensors themselves, and the
    event is already complete).
    """
    copies = [t.to("cpu", non_blocking=True) for t in tensors]
    record_event(tensors[0].device).synchronize()
    return [c.numpy() for c in copies]


def graph_step(device: torch.device) -> None:
    """Mark the start of a new step for CUDA-graph replays (their outputs of the last step may be overwritten)."""
    if _cuda(device):
        torch.compiler.cudagraph_mark_step_begin()


def resize_antialiased(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) uint8 -> (B, C, *size), bilinear with antialiasing, with each device's fastest kernel.

    The CPU has a kernel for channels-last uint8 (no float copy of the full frames);
    CUDA's takes floats. The result is uint8 on the CPU and float on CUDA, on 0-255 either way.
    """
    if not _cuda(images.device):
        images = images.contiguous(memory_format=torch.channels_last)
        return F.interpolate(images, size=size, mode="bilinear", antialias=True)
    return F.interpolate(images.float(), size=size, mode="bilinear", antialias=True)


class StagingReuseError(RuntimeError):
    """A staging buffer was rewritten while the copy out of it may still be reading it."""


class StagingBuffer:
    """The host buffer batches of frames are stacked into, then copied to the device in one copy.

    ``reuse`` (default: :func:`reuses_host_buffers`) keeps one buffer for every
    batch; otherwise each batch gets a fresh one. Contract (on every device): the
    buffer is not rewritten before the copy out of it has completed. :meth:`upload` waits for the last copy's event before it
    writes; :meth:`write` alone raises :class:`StagingReuseError` if that event has
    not completed. ``events`` records the "copy done" events (a test may pass one
    whose events complete only when waited for).
    """

    def __init__(self, device: torch.device, events: Callable[[torch.device], Event] = record_event,
                 reuse: bool | None = None) -> None:
        self.device = device
        self.reuse = reuses_host_buffers(device) if reuse is None else reuse
        self._events = events
        self._buffer: torch.Tensor | None = None
        self._copied: Event | None = None  # the last copy out of the buffer

    def upload(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        """Same-sized (H, W, 3) uint8 frames -> one (B, H, W, 3) uint8 tensor on the device."""
        self.wait()
        staged = self.write(frames)
        batch = to_device(staged, self.device)
        if self.reuse and batch.data_ptr() == staged.data_ptr():  # the device is the host: keep the batch apart
            batch = torch.from_numpy(staged.numpy().copy())  # numpy's copy: 2-3x torch's clone for 22 MB here
        self._copied = self._events(self.device)
        return batch

    def wait(self) -> None:
        """Block until the last copy out of the buffer has completed."""
        if self._copied is not None:
            self._copied.synchronize()

    def write(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        """Stack ``frames`` into the buffer (one host copy) and return it as a (B, H, W, 3) view."""
        if self._copied is not None and not self._copied.query():
            raise StagingReuseError("the staging buffer was rewritten before the copy out of it completed")
        shape = (len(frames), *frames[0].shape)
        numel = int(np.prod(shape))
        if not self.reuse or self._buffer is None or self._buffer.numel() < numel:
            self._buffer = host_buffer(numel, self.device)
        view = self._buffer[:numel].view(shape)
        array = view.numpy()
        for index, frame in enumerate(frames):  # faster than np.stack(out=) here
            array[index] = frame
        return view
