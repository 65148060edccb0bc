"""What an exported graph says about itself, in its ONNX metadata (``streamcam.*`` keys, JSON values),
and the inputs that choose what it explains.

Graphs of earlier versions also carry ``streamcam.top_k``, the k baked into their
CAM: it is ignored (they have no :data:`TARGET_INPUTS`, and any top-k is computed
from their ``features``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

# The graph inputs (int64 scalars) that choose the explained classes, with the values the export traces
# them with: the ``top_k`` most likely classes, or ``target_class`` (>= 0) first.
TARGET_INPUTS = {"top_k": 1, "target_class": -1}
# The graph's outputs: every graph has the first two; one with TARGET_INPUTS (a GAP + linear head) all five.
OUTPUTS_WITHOUT_CAM = ("logits", "features")
OUTPUTS_WITH_CAM = (*OUTPUTS_WITHOUT_CAM, "class_ids", "scores", "cam")


@dataclass(frozen=True)
class GraphMetadata:
    """What an exported graph says about itself."""

    model: str
    labels: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    layer: str
    classifier_weight: str | None  # initializer holding the classifier rows W (C, K); None: no GAP + linear head
    precision: str

    def to_props(self) -> dict[str, str]:
        return {f"streamcam.{key}": json.dumps(value) for key, value in self.__dict__.items()}

    @classmethod
    def from_props(cls, props: dict[str, str], path: Path) -> GraphMetadata:
        try:
            values = {key: json.loads(props[f"streamcam.{key}"]) for key in cls.__dataclass_fields__}
        except (KeyError, ValueError) as error:
            raise InputError(f"{path} was not exported by streamcam (its metadata lacks {error}); "
                             f"export it with `streamcam export`") from error
        values["mean"], values["std"] = tuple(values["mean"]), tuple(values["std"])
        return cls(**values)
