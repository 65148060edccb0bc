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

from .atomic import OutputFile
from .backends.hooks import capture_outputs
from .errors import InputError, StreamcamError
from .explainers import CAM, MethodInput
from .identity import identify
from .interrupts import scratch
from .models import DEFAULT_MODEL, LoadedModel, load_model
from .onnx_metadata import GraphMetadata
from .plan import check_outputs, model_files

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
# Opsets written exactly as asked: 18 is torch's exporter's own (below it, a down-conversion that fails on
# these graphs and silently falls back to 18); 23 the highest torch declares (torch.onnx._constants).
OPSETS = range(18, 24)
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
    overwrite: bool = False,
    trust_model_file: bool = False,
) -> Path:
    """Export ``model`` (a name, a file, a module, or an already ``loaded`` one) to ``output``; returns the path.

    ``output`` must end in ``.onnx``, may not be one of the files read (model,
    weights, labels), and an existing file is replaced only with ``overwrite``,
    once the new graph is complete. ``opset`` must lie in :data:`OPSETS`; the
    graph written has that opset. ``extra_metadata`` adds keys to the graph's
    metadata. ``trust_model_file``: see :func:`streamcam.load_model`.
    """
    path = Path(output)
    check_opset(opset)
    if path.suffix.lower() != ".onnx":
        raise InputError(f"streamcam export writes an ONNX graph: give -o a name ending in .onnx, not {path}")
    target = identify(path)
    check_outputs([target], model_files(model, weights, labels), overwrite)
    loaded = loaded or load_model(model, weights=weights, labels=labels, trust_model_file=trust_model_file)
    file = OutputFile(path, target.replaced_by_writing)
    try:
        with scratch(file.path):
            described = write_graph(file.path, loaded, layer=layer, top_k=top_k, opset=opset, fp16=fp16,
                                    extra_metadata=extra_metadata)
    except BaseException:
        file.discard()
        raise
    file.publish()
    log.info("exported %s to %s", described, path)
    return path


def check_opset(opset: int) -> None:
    """``opset`` must be one the exporter writes as asked (see :data:`OPSETS`)."""
    if opset not in OPSETS:
        raise InputError(f"--opset {opset} is not supported: choose {OPSETS.start} to {OPSETS.stop - 1} "
                         f"(default {DEFAULT_OPSET})")


def write_graph(
    path: Path,
    loaded: LoadedModel,
    layer: str | None = None,
    top_k: int = DEFAULT_EXPORT_TOP_K,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    extra_metadata: dict[str, str] | None = None,
) -> str:
    """Write ``loaded``'s explaining graph to ``path`` (which is overwritten: callers give a temporary file).

    Returns what was written, in words, for the log.
    """
    import onnx

    check_opset(opset)
    anatomy = loaded.anatomy
    chosen = anatomy.resolve_layer(layer, loaded.name)
    if not 1 <= top_k <= len(loaded.labels):
        raise InputError(f"--top-k must be between 1 and {len(loaded.labels)}, not {top_k}")
    classifier = anatomy.classifier if chosen in anatomy.gap_layers else None
    if classifier is None:
        log.warning("%s has no GAP + linear head at %s: the graph outputs logits and features only (no CAM)",
                    loaded.name, chosen)
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
        except Exception as error:  # an op the exporter cannot translate...
            raise InputError(f"cannot export {loaded.name} to ONNX (opset {opset}): {str(error).splitlines()[0]}") from error
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if written != opset:  # the exporter falls back to its own opset when it cannot convert
        raise StreamcamError(f"the exporter wrote opset {written} instead of {opset}: use --opset {DEFAULT_OPSET}")
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
    return f"{loaded.name} (layer {chosen}, opset {opset}; outputs {', '.join(names)})"


@contextlib.contextmanager
def _quiet():
    """The exporter narrates its steps on stdout and warns freely; a CLI wants one line."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield
