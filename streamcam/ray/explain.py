"""``Explain``: a Ray Data callable class that explains batches of RGB frames with one Explainer per actor.

    ds.map_batches(Explain, fn_constructor_kwargs={"top_k": 3, "boxes": True}, batch_format="numpy",
                   compute=ray.data.ActorPoolStrategy(size=2), num_gpus=1)

Ray builds one ``Explain`` per actor (so one model per actor, on its GPU when it has
one: ``device="auto"`` sees the GPU Ray gave it) and calls it on every batch. The
CAM maths is the Explainer's (:meth:`streamcam.Explainer.explain`); this class only
turns Ray's columns into frames and the :class:`~streamcam.types.HostExplanation`
back into columns.

Channel order: Ray Data images are RGB (what PIL, ``ray.data.read_images`` and
most datasets give), while :meth:`~streamcam.Explainer.explain` takes OpenCV's BGR
(the pipeline's frames come from OpenCV/PyAV as BGR). Each frame is handed on as a
reversed-channel *view*; the Explainer's one host copy into its staging buffer
does the reversal, so it costs no extra copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..boxes import EMPTY_BOX
from ..defaults import DEFAULT_MODEL
from ..errors import InputError
from ..explainer import Explainer
from ..types import HostExplanation

IMAGE = "image"  # the input column
NO_BOX = -1  # the ``box`` column's value where there is no box (or boxes are off)
_PROBE_SIZE = 32  # the frame side of the warm-up run that learns the maps' shape


class Explain:
    """Explain the ``image`` column of Ray Data batches; one :class:`streamcam.Explainer` per instance.

    Input: column ``image``, N x H x W x 3 uint8 **RGB** (or an object array / list of
    frames of different sizes: the Explainer batches each run of same-sized frames
    together). Output: the input columns, unchanged (``image`` too unless
    ``keep_image=False``), plus, with k = ``top_k``:

    - ``class_id`` (N, k) int64 and ``score`` (N, k) float32: ``topk(softmax(logits), k)``;
    - ``label`` (N, k) str;
    - ``map`` (N, h, w) float32 in [0, 1]: the map of the explained class (the first of
      the k), at the model's feature resolution, or resized (bilinear) to ``map_size``;
    - ``box`` (N, 4) int32 ``x0, y0, x1, y1`` (x1, y1 exclusive) in image pixels around
      the explained class's map, or all ``-1`` where there is none or ``boxes=False``.

    ``explainer_options`` go to :class:`streamcam.Explainer` as they are (``weights``,
    ``labels``, ``target_class``, ``box_threshold``, ``backend``...). Bad options raise
    :class:`streamcam.InputError` (or ``TypeError`` for an unknown name) here, in
    ``__init__``, which also runs the model once on a small black frame: a model that
    cannot run fails when the actor starts, not on the first batch.
    """

    def __init__(
        self,
        model: str | Path = DEFAULT_MODEL,
        method: str = "cam",
        top_k: int = 1,
        layer: str | None = None,
        device: str = "auto",
        precision: str = "fp32",
        boxes: bool = False,
        map_size: int | tuple[int, int] | None = None,
        keep_image: bool = True,
        **explainer_options: object,
    ) -> None:
        self.map_size = _checked_map_size(map_size)
        self.boxes = boxes
        self.keep_image = keep_image
        self.explainer = Explainer(model=model, method=method, top_k=top_k, layer=layer, device=device,
                                   precision=precision, **explainer_options)
        probe = self.explainer.explain([np.zeros((_PROBE_SIZE, _PROBE_SIZE, 3), np.uint8)])
        self.map_shape: tuple[int, int] = self.map_size or tuple(probe.maps.shape[-2:])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One batch of columns -> the same columns plus ``class_id``, ``score``, ``label``, ``map`` and ``box``."""
        if IMAGE not in batch:
            raise InputError(f"Explain needs a column '{IMAGE}' of H x W x 3 uint8 RGB frames; "
                             f"the batch has {sorted(batch)}")
        frames = [_checked_frame(frame, index) for index, frame in enumerate(batch[IMAGE])]
        passed = {name: column for name, column in batch.items() if self.keep_image or name != IMAGE}
        if not frames:
            return passed | self._columns(None, 0)
        explanation = self.explainer.explain([frame[..., ::-1] for frame in frames])  # RGB -> BGR views
        # Box masks: wherever the device's default puts them (off entirely without boxes).
        return passed | self._columns(explanation.to_host(box_masks=None if self.boxes else False), len(frames))

    def _columns(self, host: HostExplanation | None, count: int) -> dict[str, np.ndarray]:
        """The output columns of ``count`` frames (``host`` None: none)."""
        k = self.explainer.classes.k
        if host is None:
            return {"class_id": np.zeros((0, k), np.int64), "score": np.zeros((0, k), np.float32),
                    "label": np.zeros((0, k), str), "map": np.zeros((0, *self.map_shape), np.float32),
                    "box": np.zeros((0, 4), np.int32)}
        boxes = np.full((count, 4), NO_BOX, np.int32)
        if self.boxes:
            explained = host.boxes[:, 0]
            found = (explained != EMPTY_BOX).any(axis=1)
            boxes[found] = explained[found]
        return {
            "class_id": host.class_ids.astype(np.int64, copy=False),
            "score": host.scores.astype(np.float32, copy=False),
            "label": np.array(host.labels, dtype=str).reshape(count, k),
            "map": self._resized(host.maps[:, 0]),
            "box": boxes,
        }

    def _resized(self, maps: np.ndarray) -> np.ndarray:
        """(N, h, w) maps -> (N, *map_shape): bilinear, which keeps them in [0, 1] (each value is a convex mix)."""
        if maps.shape[-2:] == self.map_shape:
            return np.ascontiguousarray(maps, dtype=np.float32)
        resized = F.interpolate(torch.from_numpy(maps)[:, None].float(), size=self.map_shape, mode="bilinear",
                                align_corners=False)
        return resized[:, 0].numpy()

    def __repr__(self) -> str:
        ex = self.explainer
        return f"Explain({ex.model_name}, {ex.method.name}, layer={ex.layer}, top_k={ex.top_k}, device={ex.device})"


def _checked_map_size(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """``map_size`` as (h, w): an int n is (n, n); None keeps the feature resolution."""
    if size is None:
        return None
    pair = (size, size) if isinstance(size, int) else tuple(size)
    whole = [isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair]
    if len(pair) != 2 or not all(whole) or min(pair) <= 0:
        raise InputError(f"map_size must be a positive int or (height, width), not {size!r}")
    return int(pair[0]), int(pair[1])


def _checked_frame(frame: object, index: int) -> np.ndarray:
    """One row of the ``image`` column, which must be an H x W x 3 uint8 array."""
    array = np.asarray(frame)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3 or 0 in array.shape:
        raise InputError(f"Explain: image {index} must be H x W x 3 uint8 RGB, "
                         f"not {array.dtype} of shape {array.shape}")
    return array
