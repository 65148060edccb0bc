"""``streamcam.Explainer``: a model, a layer and a method, explaining batches of frames.

A thin facade over objects with one job each: :class:`~streamcam.explained_model.ExplainedModel`
(the model, its layer, labels and input), :class:`~streamcam.backends.choice.Engines`
(which engine serves what, by capability), :class:`~streamcam.explaining.ClassChoice` and
:func:`~streamcam.explaining.explain_batch` (one batch's passes and maps),
:class:`~streamcam.preprocess.Preprocessor` (frames to the model's input) and
:class:`~streamcam.loan.ModelLoan` (a user's module given back as it was lent).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .backends import OnnxBackend, TorchBackend, choose_backend, is_onnx_file
from .backends.base import Backend
from .backends.choice import Engines, check_options, engine_kinds, engines_with
from .cache import cached_graph
from .defaults import DEFAULT_BOX_THRESHOLD, DEFAULT_MODEL
from .device import resolve_device
from .errors import ExplainerClosed, InputError
from .explained_model import ExplainedModel
from .explainers import METHODS, GradCAM, Method, make_method
from .explaining import ClassChoice, explain_batch
from .labels import class_index
from .loan import ModelLoan
from .models import load_model
from .options import check_box_threshold, check_top_k
from .preflight import check_precision
from .preprocess import Preprocessor
from .types import Explanation

__all__ = ["Explainer", "resolve_device"]


def _closed_on_error(init: Callable) -> Callable:
    """``__init__`` failed: give a lent model back (:meth:`Explainer.close`) before the error leaves."""

    @functools.wraps(init)
    def build(self: Explainer, *args, **kwargs) -> None:
        try:
            init(self, *args, **kwargs)
        except BaseException:
            self.close()
            raise

    return build


class Explainer:
    """Explain what a CNN classifier looks at, for whole batches of frames at once.

    >>> ex = Explainer()                       # EfficientNet-Lite0, ImageNet, CAM
    >>> res = ex([bgr_frame])                  # res.class_ids, .scores, .labels, .maps
    >>> ex = Explainer("resnet50", method="gradcam", layers="auto")   # + res.layer_maps per stage
    >>> with Explainer(my_module) as ex:      # close() on exit: my_module is given back as it was lent
    ...     res = ex([bgr_frame])
    """

    _closed = True  # until __init__ runs: an __init__ refused before its first line (a wrong keyword) has nothing to close

    @_closed_on_error
    def __init__(
        self,
        model: str | Path | nn.Module = DEFAULT_MODEL,
        method: str = "cam",
        layer: str | None = None,
        labels: str | Path | list[str] | None = None,
        device: str | torch.device = "auto",
        top_k: int = 1,
        backend: str = "auto",
        weights: str | Path | None = None,
        target_class: int | str | None = None,
        layers: str | Sequence[str] | None = None,
        box_threshold: float = DEFAULT_BOX_THRESHOLD,
        precision: str = "fp32",
        compile: bool = False,
        trust_model_file: bool = False,
    ) -> None:
        """``trust_model_file`` allows ``model`` or ``weights`` to be a whole pickled model, whose
        loading runs any code it holds: only for files from a source you trust (see :mod:`streamcam.models`)."""
        self._closed = False
        self._loan: ModelLoan | None = None  # a user's module, lent: given back by close()
        self._engines: Engines | None = None
        self.device = resolve_device(device)
        self.precision = check_precision(precision)
        self.compile = compile
        method_instance = make_method(method)
        self.backend_name = choose_backend(backend, is_onnx_file(model))  # what was asked: auto, torch or onnxruntime
        check_top_k(top_k)  # the same checks, in the same words, as RunConfig's
        check_box_threshold(box_threshold)
        self._engines = self._open(model, weights, labels, layer, trust_model_file)
        self.explained: ExplainedModel = self._engines.model
        self._fallback = GradCAM()
        self.method = self._checked(method_instance)
        self.layers = self._resolve_layers(layers)
        self.grid_layers = self.layers or (self.explained.stage_layers() if self._engines.has("several_layers") else [])
        if top_k > len(self.labels):
            raise InputError(f"top-k must be between 1 and {len(self.labels)} (the number of classes), not {top_k}")
        self.classes = ClassChoice(top_k, None if target_class is None else self.class_index(target_class))
        self.box_threshold = box_threshold
        self.preprocess = Preprocessor(self.input_size, self.explained.mean, self.explained.std, self.device)

    def _open(self, model: str | Path | nn.Module, weights: str | Path | None, labels: str | Path | list[str] | None,
              layer: str | None, trust_model_file: bool) -> Engines:
        """Load the model (or graph) and set up its engines. A module is lent: what streamcam changes
        on it is recorded first, for :meth:`close`."""
        graph_file = is_onnx_file(model)
        kinds = engine_kinds(self.backend_name, graph_file, self.device, self.precision, isinstance(model, nn.Module))
        check_options(kinds, self.device, self.precision, self.compile)
        if graph_file:
            graph = OnnxBackend(Path(model), self.device)
            return Engines(kinds, ExplainedModel.from_graph(graph, Path(model), labels, layer, self.precision),
                           {graph.name: graph})
        if isinstance(model, nn.Module):
            self._loan = ModelLoan(model)
        loaded = load_model(model, weights=weights, labels=labels, trust_model_file=trust_model_file)
        explained = ExplainedModel.from_loaded(loaded, layer, self.device)
        ready: dict[str, Backend] = (
            {TorchBackend.name: TorchBackend(explained.module, self.precision, compile=self.compile)}
            if TorchBackend in kinds else {}
        )

        def export() -> Backend:  # the graph, exported or found in the cache, on first use
            return OnnxBackend(cached_graph(loaded, explained.layer, fp16=self.precision == "fp16"), self.device)

        return Engines(kinds, explained, ready, export if OnnxBackend in kinds else None)

    def __enter__(self) -> Explainer:
        return self

    def __exit__(self, *_exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove every hook streamcam put on the model and give a lent model back as it was given.

        A model passed as an ``nn.Module`` gets back each module's training flag,
        each parameter's ``requires_grad``, and each parameter's and buffer's device,
        dtype and memory format (the Explainer moves it to ``self.device`` in
        channels-last); ``--compile``'s layer taps are removed. (Weights loaded into
        it with ``weights=`` stay: they were asked for.) A model streamcam loaded
        itself is just released. Idempotent; the Explainer cannot explain afterwards.
        """
        if self._closed:
            return
        self._closed = True
        if self._engines is not None:
            self._engines.close()
            self._engines = None
            # names and sizes stay readable; the model's tensors go
            self.explained = dataclasses.replace(self.explained, module=None, classifier_weight=None)
        if self._loan is not None:
            self._loan.give_back()
            self._loan = None

    def _check_open(self) -> Engines:
        if self._engines is None:
            raise ExplainerClosed("this Explainer is closed (close() or the end of its `with` block): "
                                  "make a new streamcam.Explainer to explain more frames")
        return self._engines

    def prepare(self) -> Explainer:
        """Make every engine ready: the onnxruntime graph is exported (or found in the cache) here,
        on first use, so that a bad input or output is reported before that wait."""
        self._check_open().prepare()
        return self

    # What the model is (see ExplainedModel), readable after close() too.
    model = property(lambda self: self.explained.module, doc="The PyTorch model explained (None for a graph).")
    model_name = property(lambda self: self.explained.name)
    labels = property(lambda self: self.explained.labels)
    input_size = property(lambda self: self.explained.input_size)
    layer = property(lambda self: self.explained.layer, doc="The explained layer.")
    gap_layers = property(lambda self: self.explained.gap_layers)
    classifier_weight = property(lambda self: self.explained.classifier_weight)
    anatomy = property(lambda self: self.explained.anatomy)
    top_k = property(lambda self: self.classes.top_k)
    target_class = property(lambda self: self.classes.target_class, doc="The class explained instead of the top ones.")

    @property
    def engines(self) -> dict[str, Backend]:
        """The engines built so far, by name (the onnxruntime graph comes with :meth:`prepare`)."""
        return {} if self._engines is None else self._engines.ready

    @property
    def engine(self) -> str:
        """The engine serving the current method: "torch" or "onnxruntime"."""
        return self.engine_for(self.method, self.layers)

    @property
    def backend(self) -> Backend:
        """The backend serving the current method."""
        return self._check_open().get(self._check_open().choose(type(self.method), self.layers))

    def engine_for(self, method: Method, extra_layers: Sequence[str] = ()) -> str:
        """The fastest engine that can serve ``method`` (and the extra layers of a grid)."""
        return self._check_open().choose(type(method), extra_layers).name

    @property
    def available_methods(self) -> list[str]:
        """The methods this model, layer and engines can serve (CAM only on a GAP + linear head)."""
        engines = self._check_open()
        return [name for name, cls in METHODS.items() if engines.refusal(cls) is None]

    def set_method(self, name: str) -> None:
        """Switch the explanation method (and with it, maybe, the engine); takes effect from the next batch."""
        self._check_open()
        self.method = self._checked(make_method(name))

    def class_index(self, target: int | str) -> int:
        """Resolve a class id or a label (case-insensitive) to a class id."""
        return class_index(self.labels, target)

    def explain(self, frames: Sequence[np.ndarray], layers: Sequence[str] | None = None) -> Explanation:
        """Explain H x W x 3 uint8 BGR frames (any sizes) as one batch; ``layers`` as in :meth:`explain_tensor`.

        Where the frames share one size, ``res.images`` holds them as uploaded to the
        device, for work finished there (``res.to_host(overlay=...)``).
        """
        self._check_open()
        runs = self.preprocess.upload_runs(frames)
        return self._explain(self.preprocess.normalise_runs(runs), layers, [f.shape[:2] for f in frames],
                             images=runs[0] if len(runs) == 1 else None)

    __call__ = explain

    def explain_tensor(self, x: torch.Tensor, layers: Sequence[str] | None = None,
                       frame_sizes: Sequence[tuple[int, int]] | None = None) -> Explanation:
        """Explain an already preprocessed (B, 3, S, S) batch on ``self.device``.

        ``layers`` (default: ``self.layers``) adds one map set per layer in
        ``res.layer_maps``. One forward pass serves every layer, and one backward
        pass every frame, target and layer that needs gradients. ``frame_sizes``
        (H, W) place ``res.boxes`` in frame pixels (default: the input's S x S).
        """
        return self._explain(x, layers, frame_sizes or [tuple(x.shape[-2:])] * x.shape[0])

    def _explain(self, x: torch.Tensor, layers: Sequence[str] | None, frame_sizes: Sequence[tuple[int, int]],
                 images: torch.Tensor | None = None) -> Explanation:
        engines = self._check_open()
        extra = list(self.layers if layers is None else layers)
        kind = engines.choose(type(self.method), extra)
        methods = {name: self.method_for(name) for name in dict.fromkeys([self.layer, *extra])}
        batch = explain_batch(engines.get(kind), x, methods, self.classes, self.classifier_weight)
        return Explanation(
            class_ids=batch.class_ids,
            scores=batch.scores,
            labels=[[self.labels[i] for i in row] for row in batch.class_ids.tolist()],  # one small host copy
            maps=batch.maps[self.layer],
            method=self.method.name,
            layer=self.layer,
            layer_maps={name: batch.maps[name] for name in extra},
            layer_methods={name: methods[name].name for name in extra},
            frame_sizes=tuple(tuple(size) for size in frame_sizes),
            box_threshold=self.box_threshold,
            engine=kind.name,
            images=images,
        )

    def method_for(self, layer: str) -> Method:
        """The method that explains ``layer``: the chosen one, or Grad-CAM where CAM does not apply.

        CAM is only defined at the layer that feeds a GAP + linear head; elsewhere
        Grad-CAM is its generalisation (and equals it at that layer).
        """
        if self.method.needs_gap_linear and layer not in self.gap_layers:
            return self._fallback
        return self.method

    def _checked(self, method: Method) -> Method:
        refusal = self._check_open().refusal(type(method))
        if refusal:
            raise InputError(refusal)
        return method

    def _resolve_layers(self, layers: str | Sequence[str] | None) -> list[str]:
        if not layers:
            return []
        if not self._check_open().has("several_layers"):
            raise InputError(f"the multi-layer view needs {engines_with('several_layers')} "
                             f"(an ONNX graph exposes one layer)")
        return self.explained.resolve_layers(layers)
