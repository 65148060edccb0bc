"""ONNX export of a graph that explains itself: frames -> logits, features and, on GAP + linear nets, top-k CAM.

Inputs and outputs of the exported graph (B is dynamic):

- ``frames`` (B, 3, S, S) float32, preprocessed as the metadata says (RGB, mean/std)
- ``logits`` (B, C) and ``features`` (B, K, h, w): the explained layer's activations
- ``class_ids`` (B, k) int64 and ``scores`` (B, k) softmax probabilities of the top-k
- ``cam`` (B, k, h, w): ``bmm(W[class_ids], A.flatten(2))``, ReLU, per-map min-max,
  the very code the torch backend runs (``streamcam.explainers.CAM``)

Nets whose head is not GAP + one linear layer (MobileNetV3, ConvNeXt, VGG) get
the first two outputs only: CAM is not defined for them, and a graph cannot hold
the gradients Grad-CAM needs (``torch.export`` refuses ``torch.func.vjp``).

The graph describes itself in its metadata (``streamcam.*`` keys): labels,
mean and std, input size, explained layer, top-k and the name of the classifier
weight, so the onnxruntime backend needs no other file.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from .backends.hooks import capture_outputs
from .errors import InputError
from .explainers import CAM, MethodInput
from .models import DEFAULT_MODEL, LoadedModel, load_model
from .onnx_metadata import GraphMetadata

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
DEFAULT_EXPORT_TOP_K = 5
OUTPUTS_WITH_CAM = ("logits", "features", "class_ids", "scores", "cam")
OUTPUTS_WITHOUT_CAM = ("logits", "features")


class ExplainingGraph(nn.Module):
    """The model, its explained layer's output, and (on GAP + linear nets) the fused top-k CAM, in one forward."""

    def __init__(self, model: nn.Module, layer: str, captured: dict[str, torch.Tensor],
                 classifier: str | None, top_k: int, half: bool) -> None:
        super().__init__()
        self.model = model
        self.layer = layer
        self.captured = captured  # filled by the capture_outputs hook during the forward pass
        self.classifier = classifier
        self.top_k = top_k
        self.half = half

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = self.model(frames.half() if self.half else frames).float()
        features = self.captured[self.layer].float()
        if self.classifier is None:
            return logits, features
        scores, class_ids = logits.softmax(dim=1).topk(self.top_k, dim=1)
        weight = self.model.get_submodule(self.classifier).weight.float()
        cam = CAM()(MethodInput(features=features, class_ids=class_ids, classifier_weight=weight))
        return logits, features, class_ids, scores, cam


def export_onnx(
    output: str | Path,
    model: str | Path | nn.Module = DEFAULT_MODEL,
    weights: str | Path | None = None,
    labels: str | Path | list[str] | None = None,
    layer: str | None = None,
    top_k: int = DEFAULT_EXPORT_TOP_K,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    loaded: LoadedModel | None = None,
    extra_metadata: dict[str, str] | None = None,
) -> Path:
    """Export ``model`` (a name, a file, a module, or an already ``loaded`` one) to ``output``; returns the path.

    ``extra_metadata`` adds keys to the graph's metadata (the cache stores its key there).
    """
    import onnx

    loaded = loaded or load_model(model, weights=weights, labels=labels)
    anatomy = loaded.anatomy
    chosen = anatomy.resolve_layer(layer, loaded.name)
    if not 1 <= top_k <= len(loaded.labels):
        raise InputError(f"--top-k must be between 1 and {len(loaded.labels)}, not {top_k}")
    classifier = anatomy.classifier if chosen in anatomy.gap_layers else None
    if classifier is None:
        log.warning("%s has no GAP + linear head at %s: the graph outputs logits and features only (no CAM)",
                    loaded.name, chosen)
    path = Path(output)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot create the folder for {path}: {error.strerror or error}") from error
    # A copy: the caller's model keeps its device, layout and precision.
    module = copy.deepcopy(loaded.module).float().to("cpu", memory_format=torch.contiguous_format).eval()
    if fp16:
        module = module.half()
    example = torch.zeros(2, 3, loaded.input_size, loaded.input_size)
    names = OUTPUTS_WITH_CAM if classifier else OUTPUTS_WITHOUT_CAM
    with capture_outputs(module, [chosen]) as captured, _quiet():
        graph = ExplainingGraph(module, chosen, captured, classifier, top_k, fp16)
        try:
            torch.onnx.export(
                graph,
                (example,),
                str(path),
                input_names=["frames"],
                output_names=list(names),
                dynamic_shapes={"frames": {0: torch.export.Dim("batch", min=1, max=1024)}},
                opset_version=opset,
                dynamo=True,
                external_data=False,
            )
        except Exception as error:  # an op the exporter cannot translate, an opset it does not know...
            raise InputError(f"cannot export {loaded.name} to ONNX (opset {opset}): {str(error).splitlines()[0]}") from error
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    metadata = GraphMetadata(
        model=loaded.name,
        labels=loaded.labels,
        mean=loaded.mean,
        std=loaded.std,
        input_size=loaded.input_size,
        layer=chosen,
        top_k=top_k if classifier else 0,
        classifier_weight=f"model.{classifier}.weight" if classifier else None,
        precision="fp16" if fp16 else "fp32",
    )
    for key, value in {**metadata.to_props(), **(extra_metadata or {})}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    log.info("exported %s (layer %s, %s) to %s", loaded.name, chosen, ", ".join(names), path)
    return path


@contextlib.contextmanager
def _quiet():
    """The exporter narrates its steps on stdout and warns freely; a CLI wants one line."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield
