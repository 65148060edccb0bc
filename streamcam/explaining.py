"""One batch explained: the classes to explain, one forward pass, at most one backward pass, then each layer's maps."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .backends.base import Backend
from .explainers import CAM, Method, MethodInput


@dataclass(frozen=True)
class ClassChoice:
    """Which classes each frame explains: its ``top_k`` most likely, or the one ``target_class``."""

    top_k: int = 1
    target_class: int | None = None

    @property
    def k(self) -> int:
        """How many classes each frame explains: ``top_k``, or 1 with a target class."""
        return 1 if self.target_class is not None else self.top_k

    def __call__(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The classes and their softmax scores, (B, k) each: ``topk(softmax(logits), k)``, or the
        ``target_class`` with ``softmax(logits)[:, c]``."""
        probabilities = logits.float().softmax(dim=1)
        if self.target_class is None:
            scores, class_ids = probabilities.topk(self.top_k, dim=1)
            return class_ids, scores
        class_ids = torch.full((logits.shape[0], 1), self.target_class, dtype=torch.int64, device=logits.device)
        return class_ids, probabilities.gather(1, class_ids)


@dataclass(frozen=True, eq=False)
class BatchMaps:
    """The chosen classes of a batch, their scores, and one map set per explained layer, on the device."""

    class_ids: torch.Tensor  # (B, k) int64
    scores: torch.Tensor  # (B, k) float32
    maps: dict[str, torch.Tensor]  # layer -> (B, k, h, w) float32 in [0, 1]


def explain_batch(backend: Backend, x: torch.Tensor, methods: Mapping[str, Method], classes: ClassChoice,
                  classifier_weight: torch.Tensor | None) -> BatchMaps:
    """Explain a preprocessed (B, 3, S, S) batch at each layer of ``methods`` (layer -> its method).

    One forward pass serves every layer; one backward pass serves every frame,
    class and layer whose method needs ``dy_c/dA``; guided methods add one pass
    back to the input. The graph's own CAM is used where it computed one for the
    first layer (the same formula on the same classes). The maps' maths runs in
    fp32, whatever precision the model ran in.
    """
    layers = list(methods)
    needs_grad = [name for name in layers if methods[name].needs_grad]
    result = backend.forward(x, layers, track_gradients=bool(needs_grad), top_k=classes.k,
                             target_class=classes.target_class)
    class_ids, scores = (
        (result.class_ids, result.scores) if result.class_ids is not None else classes(result.logits.detach())
    )
    gradients = backend.gradients(result, class_ids, needs_grad) if needs_grad else {}
    input_gradients = (
        backend.input_gradients(x, class_ids) if any(m.needs_input_grad for m in methods.values()) else None
    )
    first = layers[0]
    maps = {first: result.cam} if result.cam is not None and type(methods[first]) is CAM else {}
    maps |= {
        name: methods[name](
            MethodInput(
                features=result.features[name].detach().float(),
                class_ids=class_ids,
                classifier_weight=classifier_weight,
                gradients=_float(gradients.get(name)),
                input_gradients=_float(input_gradients),
            )
        )
        for name in layers
        if name not in maps
    }
    return BatchMaps(class_ids, scores, maps)


def _float(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.float()
