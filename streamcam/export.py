"""ONNX export of a graph that explains itself: frames -> logits, features and, on GAP + linear nets, CAM.

Inputs and outputs of the exported graph (B is dynamic):

- ``frames`` (B, 3, S, S) float32, preprocessed as the metadata says (RGB, mean/std)
- ``top_k`` and ``target_class``, int64 scalars (GAP + linear nets only): explain
  the ``top_k`` most likely classes (``target_class`` = -1), or the class
  ``target_class`` first (with ``top_k`` = 1: that class alone)
- ``logits`` (B, C) and ``features`` (B, K, h, w): the explained layer's activations
- ``class_ids`` (B, k) int64 and ``scores`` (B, k) their softmax probabilities
- ``cam`` (B, k, h, w): ``bmm(W[class_ids], A.flatten(2))``, ReLU, per-map min-max,
  the very code the torch backend runs (``streamcam.explainers.CAM``)

So one export serves every top-k and every explained class. Measured against
the alternatives (a fixed k baked into the graph; the contraction computed
outside it, in torch, from ``features``) by ``scripts/bench_export.py``: see
BENCHMARKS.md.

Nets whose head is not GAP + one linear layer (MobileNetV3, ConvNeXt, VGG) get
``frames`` in and the first two outputs only: CAM is not defined for them, and a
graph cannot hold the gradients Grad-CAM needs (``torch.export`` refuses
``torch.func.vjp``).

The graph describes itself in its metadata (``streamcam.*`` keys): labels,
mean and std, input size, explained layer and the name of the classifier
weight, so the onnxruntime backend needs no other file. Graphs of earlier
versions, with a top-k baked in and no ``top_k`` input, still run: the backend
then reads their ``logits`` and ``features`` only, and the CAM of any top-k or
class is computed from those (see ``streamcam.backends.onnx_backend``).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .atomic import OutputFile
from .backends.hooks import capture_outputs
from .errors import InputError, StreamcamError
from .explainers import CAM, MethodInput
from .identity import identify
from .interrupts import scratch
from .defaults import DEFAULT_MODEL, DEFAULT_OPSET, OPSETS  # noqa: F401 - OPSETS: public here too
from .models import LoadedModel, load_model
from .onnx_metadata import OUTPUTS_WITH_CAM, OUTPUTS_WITHOUT_CAM, TARGET_INPUTS, GraphMetadata
from .preflight import check_export, check_opset

log = logging.getLogger(__name__)



class ExplainingGraph(nn.Module):
    """The model, its explained layer's output, and (on GAP + linear nets) the CAM of the chosen classes."""

    def __init__(self, model: nn.Module, layer: str, captured: dict[str, torch.Tensor],
                 classifier: str | None, half: bool) -> None:
        super().__init__()
        self.model = model
        self.layer = layer
        self.captured = captured  # filled by the capture_outputs hook during the forward pass
        self.classifier = classifier
        self.half = half

    def forward(self, frames: torch.Tensor, top_k: torch.Tensor | None = None,
                target_class: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """``logits = f(frames)``, ``A`` = the layer's activations; on GAP + linear nets also
        ``class_ids, scores = topk(p + 2 [c = target_class], top_k)`` with ``p = softmax(logits)``
        (scores read from ``p``) and ``cam = normalise(ReLU(bmm(W[class_ids], A.flatten(2))))``."""
        logits = self.model(frames.half() if self.half else frames).float()
        features = self.captured[self.layer].float()
        if self.classifier is None:
            return logits, features
        class_ids, scores = chosen_classes(logits, top_k, target_class)
        weight = self.model.get_submodule(self.classifier).weight.float()
        cam = CAM()(MethodInput(features=features, class_ids=class_ids, classifier_weight=weight))
        return logits, features, class_ids, scores, cam


def chosen_classes(logits: torch.Tensor, top_k: torch.Tensor,
                   target_class: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``ids = topk(p + 2 [c = target_class], k)``, ``scores = p[ids]``, ``p = softmax(logits)``: (B, k) each.

    Probabilities are at most 1, so adding 2 puts the target class first; with
    ``target_class`` = -1 nothing is added and these are the top-k. One graph, no
    branch, for both.
    """
    count = top_k.item()
    torch._check(count >= 1)
    torch._check(count <= logits.shape[1])
    probabilities = logits.softmax(dim=1)
    lifted = (torch.arange(logits.shape[1], device=logits.device) == target_class).to(probabilities.dtype) * 2
    class_ids = (probabilities + lifted).topk(count, dim=1).indices
    return class_ids, probabilities.gather(1, class_ids)


def export_onnx(
    output: str | Path,
    model: str | Path | nn.Module = DEFAULT_MODEL,
    weights: str | Path | None = None,
    labels: str | Path | list[str] | None = None,
    layer: str | None = None,
    top_k: int | None = None,
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
    metadata. ``trust_model_file``: see :func:`streamcam.load_model`. ``top_k``
    is ignored (deprecated): the graph serves every top-k; choose it when running.
    """
    if top_k is not None:
        warnings.warn("export_onnx(top_k=...) is ignored: the graph serves every top-k, chosen when it runs",
                      DeprecationWarning, stacklevel=2)
    path = Path(output)
    check_export(path, model, weights, labels, opset, overwrite)
    target = identify(path)
    loaded = loaded or load_model(model, weights=weights, labels=labels, trust_model_file=trust_model_file)
    file = OutputFile(path, target.replaced_by_writing)
    try:
        with scratch(file.path):
            described = write_graph(file.path, loaded, layer=layer, opset=opset, fp16=fp16,
                                    extra_metadata=extra_metadata, final=path)
    except BaseException:
        file.discard()
        raise
    file.publish()
    log.info("exported %s to %s", described, path)
    return path


def write_graph(
    path: Path,
    loaded: LoadedModel,
    layer: str | None = None,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    extra_metadata: dict[str, str] | None = None,
    final: Path | None = None,
) -> str:
    """Write ``loaded``'s explaining graph to ``path`` (which is overwritten: callers give a temporary file).

    ``final`` is the file ``path`` becomes: the one the log and errors name (the
    temporary name means nothing to a user). Each stage is logged at INFO as it
    starts. Returns what was written, in words, for the log.
    """
    check_opset(opset)
    shown = final or path
    chosen = loaded.anatomy.resolve_layer(layer, loaded.name)
    classifier = loaded.anatomy.classifier if chosen in loaded.anatomy.gap_layers else None
    if classifier is None:
        log.warning("%s has no GAP + linear head at %s: its graph serves Eigen-CAM only (CAM and Grad-CAM "
                    "need --backend torch)", loaded.name, chosen)
    log.info("exporting %s to ONNX: tracing...", loaded.name)
    _trace(path, loaded, chosen, classifier, opset, fp16, shown)
    log.info("checking the graph...")
    proto = _checked(path, opset)
    metadata = GraphMetadata(
        model=loaded.name,
        labels=loaded.labels,
        mean=loaded.mean,
        std=loaded.std,
        input_size=loaded.input_size,
        layer=chosen,
        classifier_weight=_classifier_initializer(proto, loaded, classifier) if classifier else None,
        precision="fp16" if fp16 else "fp32",
    )
    for key, value in {**metadata.to_props(), **(extra_metadata or {})}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    log.info("writing %s", shown)
    _save(proto, path, shown)
    outputs = OUTPUTS_WITH_CAM if classifier else OUTPUTS_WITHOUT_CAM
    return f"{loaded.name} (layer {chosen}, opset {opset}; outputs {', '.join(outputs)})"


def _trace(path: Path, loaded: LoadedModel, layer: str, classifier: str | None, opset: int, fp16: bool,
           shown: Path) -> None:
    """Trace :class:`ExplainingGraph` on a CPU copy of the model (dynamic batch) into ``path``."""
    # A copy: the caller's model keeps its device, layout and precision.
    module = copy.deepcopy(loaded.module).float().to("cpu", memory_format=torch.contiguous_format).eval()
    if fp16:
        module = module.half()
    frames = torch.zeros(2, 3, loaded.input_size, loaded.input_size)
    dynamic = {"frames": {0: torch.export.Dim("batch", min=1, max=1024)}}
    inputs, outputs = {"frames": frames}, OUTPUTS_WITHOUT_CAM
    if classifier:  # the chosen classes: 0-d tensors, their values read at run time
        inputs |= {name: torch.tensor(value) for name, value in TARGET_INPUTS.items()}
        dynamic |= {name: None for name in TARGET_INPUTS}
        outputs = OUTPUTS_WITH_CAM
    with capture_outputs(module, [layer]) as captured, _quiet():
        try:
            torch.onnx.export(
                ExplainingGraph(module, layer, captured, classifier, fp16).eval(),
                tuple(inputs.values()),
                str(path),
                input_names=list(inputs),
                output_names=list(outputs),
                dynamic_shapes=dynamic,
                opset_version=opset,
                dynamo=True,
                external_data=False,
            )
        except Exception as error:  # an op the exporter cannot translate...
            first_line = str(error).splitlines()[0].replace(str(path), str(shown))
            raise InputError(f"cannot export {loaded.name} to ONNX (opset {opset}): {first_line}") from error


def _checked(path: Path, opset: int):
    """The graph at ``path``, loaded and passed through ``onnx.checker``, with exactly ``opset``."""
    import onnx

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if written != opset:  # the exporter falls back to its own opset when it cannot convert
        raise StreamcamError(f"the exporter wrote opset {written} instead of {opset}: use --opset {DEFAULT_OPSET}")
    return proto


def _classifier_initializer(proto, loaded: LoadedModel, classifier: str) -> str:
    """The name of the initializer holding the classifier rows ``W`` (C, K), which the CAM reads at run time.

    The exporter keeps the module's name (``model.<classifier>.weight``); should an
    optimisation rename it, the tensor is found by its values instead.
    """
    from onnx import numpy_helper

    weight = loaded.module.get_submodule(classifier).weight.detach().float().cpu().numpy()
    candidates = [t for t in proto.graph.initializer if tuple(t.dims) == weight.shape]
    for tensor in sorted(candidates, key=lambda t: t.name != f"model.{classifier}.weight"):
        if np.allclose(numpy_helper.to_array(tensor).astype(np.float32), weight, rtol=1e-3, atol=1e-4):
            return tensor.name
    raise StreamcamError(f"the exported graph of {loaded.name} does not hold the classifier weight "
                         f"{classifier}.weight as one tensor: CAM could not read it; use --backend torch")


def _save(proto, path: Path, shown: Path) -> None:
    """Save ``proto`` to ``path``; a failure names ``shown``, the file the user asked for."""
    import onnx

    try:
        onnx.save(proto, str(path))
    except OSError as error:
        raise StreamcamError(f"cannot write {shown}: {error.strerror or error}") from error


@contextlib.contextmanager
def _quiet():
    """The exporter narrates its steps on stdout and warns freely; a CLI wants one line."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield
