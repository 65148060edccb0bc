"""What an exported graph says about itself, in its ONNX metadata (``streamcam.*`` keys, JSON values)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError


@dataclass(frozen=True)
class GraphMetadata:
    """What an exported graph says about itself."""

    model: str
    labels: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    layer: str
    top_k: int  # 0 when the graph has no CAM outputs
    classifier_weight: str | None  # initializer holding the classifier rows W (C, K)
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
