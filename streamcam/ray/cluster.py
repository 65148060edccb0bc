"""Reaching a Ray cluster, and what each explaining actor asks of it.

``connect(None)`` starts a private local cluster sized to this machine (Ray counts
its CPUs and GPUs); ``connect("auto")`` joins the cluster this machine belongs to
(``ray start``, ``RAY_ADDRESS``); ``connect("HOST:PORT")`` (or ``"ray://HOST:PORT"``,
Ray Client) joins that one. An address nobody answers at is one
:class:`~streamcam.errors.InputError` line within seconds: Ray itself retries an
unreachable address for minutes, so the port is tried first.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import ray

from ..errors import InputError, first_line

log = logging.getLogger(__name__)

AUTO = "auto"
PROBE_TIMEOUT = 5.0  # seconds to wait for the cluster's port to answer


def connect(address: str | None = None, **init_options: Any) -> str:
    """Connect this process to a Ray cluster and return the cluster's (GCS) address.

    ``address``: None starts a new local cluster (never someone else's on the same
    machine: Ray's ``address="local"``), without the dashboard; ``"auto"`` or
    ``HOST:PORT`` connects. ``init_options`` go to :func:`ray.init` (e.g.
    ``num_cpus=2`` for a smaller local cluster). Already connected: that connection
    is kept when ``address`` is None, ``"auto"`` or its own address, else refused.
    """
    if ray.is_initialized():
        current = ray.get_runtime_context().gcs_address
        if address not in (None, AUTO, current):
            raise InputError(f"already connected to the Ray cluster at {current}, not {address}: "
                             f"call ray.shutdown() first")
        return current
    if address is None:
        init_options.setdefault("include_dashboard", False)
        ray.init(address="local", **init_options)
    else:
        if address != AUTO:
            _probe(address)
        try:
            ray.init(address=address, **init_options)
        except ConnectionError as error:  # "auto" with no cluster running, or a port that is not Ray's
            raise InputError(f"cannot connect to a Ray cluster at {address}: {first_line(error)}") from None
    address_in_use = ray.get_runtime_context().gcs_address
    log.info("connected to the Ray cluster at %s: %s", address_in_use, ray.cluster_resources())
    return address_in_use


def actor_resources() -> dict[str, float]:
    """What one explaining actor reserves: ``{"num_gpus": 1}`` on a cluster with GPUs, else ``{"num_cpus": 1}``.

    Pass it to ``map_batches`` (or ``ray.remote``): one model per GPU, or per CPU core.
    """
    if not ray.is_initialized():
        raise RuntimeError("not connected to a Ray cluster: call streamcam.ray.connect() first")
    return {"num_gpus": 1} if ray.cluster_resources().get("GPU", 0) >= 1 else {"num_cpus": 1}


def _probe(address: str) -> None:
    """Refuse ``[ray://]HOST:PORT`` unless something accepts a TCP connection there."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"a Ray cluster's address is auto or HOST:PORT, not {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT).close()
    except OSError as error:
        raise InputError(f"cannot connect to a Ray cluster at {address}: {error.strerror or error}") from None

