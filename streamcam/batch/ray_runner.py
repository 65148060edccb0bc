"""``streamcam batch --ray [ADDRESS]``: the videos of a batch spread over Ray actors.

NOT IMPLEMENTED YET: :func:`run_on_ray` is the hook the batch command calls with
``--ray``; it raises :class:`NotImplementedError` until the Ray runner lands.
Its contract, which the local runner (:mod:`streamcam.batch.command`) keeps too:

- **Connect** with ``ray.init(address=...)``: ``address`` is what followed
  ``--ray`` (``auto``, ``HOST:PORT``, ``ray://HOST:10001``), or
  :data:`LOCAL_CLUSTER` for ``--ray`` alone (start a local cluster).
- **Actors**: each holds ONE Explainer, built once from ``options``
  (``streamcam.engine.pipeline.build_explainer(options)``, then ``prepare()``),
  with ``num_gpus=1`` when the cluster has GPUs, CPUs otherwise; each video is
  explained by one actor, as a stream, by calling
  :func:`streamcam.batch.video.explain_video` (``job, out_dir, explainer,
  options, progress``), which never raises for a bad video (its row says why)
  and moves its outputs to their final names only once both are complete.
  ``out_dir`` must be the same folder for every actor (a shared file system).
- **Faults**: an actor that dies is replaced and its video retried (Ray's
  ``max_restarts`` / ``max_task_retries``); a video is reported FAILED only once
  Ray gives up. A staging folder a dead actor left is removed by the next batch
  (:func:`streamcam.batch.outdir.remove_leftovers`), never counted as done.
- **Progress**: actors report their frames (a few times a second, not each
  frame) and each finished row to the driver, which feeds ``bar`` from its own
  thread: ``bar.advance(frames)``, ``bar.video_done(row)``.
- **Result**: one :class:`~streamcam.batch.video.VideoResult` per job, in
  ``jobs``' order. It is called inside :func:`streamcam.interrupts.outputs_open`,
  so Ctrl-C or SIGTERM raises :class:`KeyboardInterrupt` in the driver: kill the
  actors and re-raise (the command then writes the summary of what ended).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import RunConfig
    from .inputs import VideoJob
    from .progress import BatchProgress
    from .video import VideoResult

LOCAL_CLUSTER = "local"  # --ray without an address: a cluster started on this machine for the batch


def run_on_ray(jobs: Sequence[VideoJob], out_dir: Path, options: RunConfig, address: str,
               bar: BatchProgress) -> list[VideoResult]:
    """Explain ``jobs`` into ``out_dir`` on the Ray cluster at ``address`` (see the module docstring)."""
    raise NotImplementedError("streamcam batch --ray is not implemented yet: run the batch without --ray")
