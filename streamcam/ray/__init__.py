"""Ray pieces: explain frames in a Ray Data pipeline (:class:`Explain`) and reach a cluster (:mod:`.cluster`).

>>> import ray, streamcam.ray
>>> ds = ray.data.from_numpy(rgb_frames).rename_columns({"data": "image"})   # N x H x W x 3 uint8 RGB
>>> ds.map_batches(streamcam.ray.Explain, fn_constructor_kwargs={"top_k": 3}, batch_format="numpy",
...                compute=ray.data.ActorPoolStrategy(size=2), **streamcam.ray.actor_resources())

Ray is an optional extra: ``import streamcam`` never imports it, and this package
says in one line how to install it when it is missing.
"""

from __future__ import annotations

import importlib.util

from ..errors import InputError

if importlib.util.find_spec("ray") is None:
    raise InputError("streamcam.ray needs Ray: pip install 'streamcam[ray]'")

from .cluster import actor_resources, connect  # noqa: E402  (after the check: they import ray)
from .explain import Explain  # noqa: E402

__all__ = ["Explain", "actor_resources", "connect"]
