"""``streamcam.Explainer``: a model, a layer and a method, explaining batches of frames."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .backends import OnnxBackend, TorchBackend, choose_backend, is_onnx_file
from .errors import ExplainerClosed, InputError
from .explainers import CAM, METHODS, GradCAM, Method, MethodInput, make_method
from .cache import cached_graph
from .defaults import DEFAULT_BOX_THRESHOLD, DEFAULT_MODEL
from .labels import class_index
from .loan import ModelLoan
from .models import load_model, resolve_labels
from .preflight import check_precision
from .preprocess import Preprocessor
from .types import Explanation


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
        self.engines: dict[str, TorchBackend | OnnxBackend] = {}
        self.device = resolve_device(device)
        self.precision = check_precision(precision)
        self.compile = compile
        method_instance = make_method(method)
        onnx_file = is_onnx_file(model)
        self.backend_name = choose_backend(backend, onnx_file)  # what was asked: auto, torch or onnxruntime
        if not 1 <= top_k:
            raise InputError(f"top-k must be at least 1, not {top_k}")
        if onnx_file:
            mean, std = self._from_graph(Path(model), labels, layer)
        else:
            mean, std = self._from_torch(model, weights, labels, layer, trust_model_file)
        self.method = self._checked(method_instance)
        self.layers = self._resolve_layers(layers)
        self.grid_layers = self.layers or (self.anatomy.stage_layers() if "torch" in self.engines else [])
        if top_k > len(self.labels):
            raise InputError(f"top-k must be between 1 and {len(self.labels)} (the number of classes), not {top_k}")
        self.top_k = top_k
        self.target_class = None if target_class is None else self.class_index(target_class)
        if not 0.0 < box_threshold <= 1.0:
            raise InputError(f"the box threshold is a fraction of the map's maximum, in (0, 1], not {box_threshold}")
        self.box_threshold = box_threshold
        self.preprocess = Preprocessor(self.input_size, mean, std, self.device)
        self._fallback = GradCAM()
        if compile and "torch" not in self._engine_names:
            raise InputError("--compile compiles the torch engine: it does nothing with --backend onnxruntime "
                             "or an .onnx model")
        if "onnxruntime" in self._engine_names and self.precision == "bf16":
            raise InputError("onnxruntime runs fp32 or fp16 graphs: use --precision fp16, or --backend torch")

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
        for engine in self.engines.values():
            engine.close()
        self.engines = {}
        if self._loan is not None:
            self._loan.give_back()
            self._loan = None
        self.model = self.classifier_weight = self._loaded = None

    def _check_open(self) -> None:
        if self._closed:
            raise ExplainerClosed("this Explainer is closed (close() or the end of its `with` block): "
                                  "make a new streamcam.Explainer to explain more frames")

    def prepare(self) -> Explainer:
        """Make every engine ready: the onnxruntime graph is exported (or found in the cache) here,
        on first use, so that a bad input or output is reported before that wait."""
        self._check_open()
        if self._loaded is not None and "onnxruntime" not in self.engines:
            path = cached_graph(self._loaded, self.layer, fp16=self.precision == "fp16")  # says if it exports
            self.engines["onnxruntime"] = OnnxBackend(path, self.device)
            self._loaded = None
        return self

    def _from_torch(self, model, weights, labels, layer, trust_model_file) -> tuple[tuple, tuple]:
        """A PyTorch model by name, file or module; with onnxruntime, also its graph from the cache.
        A module is lent: what streamcam changes on it is recorded first, for :meth:`close`."""
        if isinstance(model, nn.Module):
            self._loan = ModelLoan(model)
        loaded = load_model(model, weights=weights, labels=labels, trust_model_file=trust_model_file)
        self.model_name = loaded.name
        self.anatomy = loaded.anatomy
        # Channels-last convolutions run 1.2-1.6x faster on the CPU (scripts/bench.py); results are unchanged.
        self.model = loaded.module.to(self.device, memory_format=torch.channels_last)
        self.labels = loaded.labels
        self.input_size = loaded.input_size
        self.layer = self.anatomy.resolve_layer(layer, loaded.name)
        self.gap_layers = self.anatomy.gap_layers
        # The classifier rows CAM reads; None where the layer does not feed a GAP + linear head.
        self.classifier_weight = (
            self.model.get_submodule(self.anatomy.classifier).weight.detach()
            if self.layer in self.gap_layers
            else None
        )
        if self.backend_name != "onnxruntime":
            self.engines["torch"] = TorchBackend(self.model, self.precision, compile=self.compile)
        onnx_too = self.backend_name == "onnxruntime" or (self.backend_name == "auto" and self._auto_wants_onnx(model))
        self._engine_names = [*self.engines, *(["onnxruntime"] if onnx_too else [])]
        self._loaded = loaded if onnx_too else None  # exported (or found in the cache) by prepare()
        return loaded.mean, loaded.std

    def _auto_wants_onnx(self, model: object) -> bool:
        """Where onnxruntime joins torch under --backend auto.

        On the CPU it serves CAM, Eigen-CAM and Grad-CAM at a GAP + linear layer
        2-3x faster than torch (BENCHMARKS.md). Not on CUDA, where the torch path
        keeps frames, maps and overlays on the device and no comparison has been
        measured yet; not in reduced precision; and not for a live ``nn.Module``,
        whose weights may change after the graph was exported.
        """
        return self.device.type == "cpu" and self.precision == "fp32" and not isinstance(model, nn.Module)

    def _from_graph(self, path: Path, labels, layer) -> tuple[tuple, tuple]:
        """An ONNX graph exported by streamcam: everything else comes from its metadata."""
        graph = self.engines["onnxruntime"] = OnnxBackend(path, self.device)
        self._engine_names, self._loaded = ["onnxruntime"], None
        meta = graph.metadata
        if self.precision != "fp32" and self.precision != meta.precision:
            raise InputError(f"{path} is an {meta.precision} graph; export another for {self.precision}")
        self.model_name = meta.model
        self.anatomy = None
        self.model = None
        self.labels = meta.labels if labels is None else resolve_labels(labels, len(meta.labels))
        self.input_size = meta.input_size
        if layer not in (None, meta.layer):
            raise InputError(f"{path} explains layer {meta.layer}; export another graph (--layer) or use --backend torch")
        self.layer = meta.layer
        self.gap_layers = frozenset({meta.layer}) if meta.classifier_weight else frozenset()
        self.classifier_weight = graph.classifier_weight
        return meta.mean, meta.std

    @property
    def engine(self) -> str:
        """The engine serving the current method: "torch" or "onnxruntime"."""
        return self.engine_for(self.method, self.layers)

    @property
    def backend(self) -> TorchBackend | OnnxBackend:
        """The backend serving the current method."""
        return self.prepare().engines[self.engine]

    def engine_for(self, method: Method, extra_layers: Sequence[str] = ()) -> str:
        """The fastest engine that can serve ``method`` (and the extra layers of a grid)."""
        names = self._engine_names
        if "onnxruntime" in names and self._refusal_on("onnxruntime", type(method), extra_layers) is None:
            return "onnxruntime"
        return "torch" if "torch" in names else "onnxruntime"

    @property
    def available_methods(self) -> list[str]:
        """The methods this model, layer and engines can serve (CAM only on a GAP + linear head)."""
        return [name for name, cls in METHODS.items() if self._refusal(cls) is None]

    def set_method(self, name: str) -> None:
        """Switch the explanation method (and with it, maybe, the engine); takes effect from the next batch."""
        self._check_open()
        self.method = self._checked(make_method(name))

    def class_index(self, target: int | str) -> int:
        """Resolve a class id or a label (case-insensitive) to a class id."""
        return class_index(self.labels, target)

    def explain(self, frames: Sequence[np.ndarray]) -> Explanation:
        """Explain H x W x 3 uint8 BGR frames (any sizes) as one batch."""
        self._check_open()
        return self.explain_tensor(self.preprocess(frames), frame_sizes=[f.shape[:2] for f in frames])

    __call__ = explain

    def explain_tensor(self, x: torch.Tensor, layers: Sequence[str] | None = None,
                       frame_sizes: Sequence[tuple[int, int]] | None = None) -> Explanation:
        """Explain an already preprocessed (B, 3, S, S) batch on ``self.device``.

        ``layers`` (default: ``self.layers``) adds one map set per layer in
        ``res.layer_maps``. One forward pass serves every layer, and one backward
        pass every frame, target and layer that needs gradients. ``frame_sizes``
        (H, W) place ``res.boxes`` in frame pixels (default: the input's S x S).
        """
        self._check_open()
        extra = list(self.layers if layers is None else layers)
        every = list(dict.fromkeys([self.layer, *extra]))
        engine = self.engine_for(self.method, extra)
        backend = self.prepare().engines[engine]
        method_of = {name: self.method_for(name) for name in every}
        needs_grad = [name for name in every if method_of[name].needs_grad]
        result = backend.forward(x, every, track_gradients=bool(needs_grad), top_k=self._k,
                                 target_class=self.target_class)
        class_ids, scores = (
            (result.class_ids, result.scores) if result.class_ids is not None else self._targets(result.logits.detach())
        )
        gradients = backend.gradients(result, class_ids, needs_grad) if needs_grad else {}
        input_gradients = (
            backend.input_gradients(x, class_ids)
            if any(method_of[name].needs_input_grad for name in every)
            else None
        )
        # The graph's own CAM, where it computed one: the same code on the same classes (CAM class).
        maps = {self.layer: result.cam} if result.cam is not None and type(method_of[self.layer]) is CAM else {}
        maps |= {
            name: method_of[name](
                MethodInput(  # the maps' maths in fp32, whatever precision the model ran in
                    features=result.features[name].detach().float(),
                    class_ids=class_ids,
                    classifier_weight=self.classifier_weight,
                    gradients=_float(gradients.get(name)),
                    input_gradients=_float(input_gradients),
                )
            )
            for name in every
            if name not in maps
        }
        ids = class_ids.tolist()  # the one small host copy the labels need
        return Explanation(
            class_ids=class_ids,
            scores=scores,
            labels=[[self.labels[i] for i in row] for row in ids],
            maps=maps[self.layer],
            method=self.method.name,
            layer=self.layer,
            layer_maps={name: maps[name] for name in extra},
            layer_methods={name: method_of[name].name for name in extra},
            frame_sizes=tuple(tuple(size) for size in frame_sizes or [tuple(x.shape[-2:])] * x.shape[0]),
            box_threshold=self.box_threshold,
            engine=engine,
        )

    def method_for(self, layer: str) -> Method:
        """The method that explains ``layer``: the chosen one, or Grad-CAM where CAM does not apply.

        CAM is only defined at the layer that feeds a GAP + linear head; elsewhere
        Grad-CAM is its generalisation (and equals it at that layer).
        """
        if self.method.needs_gap_linear and layer not in self.gap_layers:
            return self._fallback
        return self.method

    @property
    def _k(self) -> int:
        """How many classes each frame explains: ``top_k``, or 1 with a target class."""
        return 1 if self.target_class is not None else self.top_k

    def _targets(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The classes to explain and their softmax scores, (B, k) each: ``topk(softmax(logits), k)``,
        or the ``target_class`` with ``softmax(logits)[:, c]``."""
        probabilities = logits.float().softmax(dim=1)
        if self.target_class is None:
            scores, class_ids = probabilities.topk(self.top_k, dim=1)
            return class_ids, scores
        class_ids = torch.full((logits.shape[0], 1), self.target_class, dtype=torch.int64, device=logits.device)
        return class_ids, probabilities.gather(1, class_ids)

    def _checked(self, method: Method) -> Method:
        refusal = self._refusal(type(method))
        if refusal:
            raise InputError(refusal)
        return method

    def _refusal(self, method: type[Method]) -> str | None:
        """Why no engine of this explainer can serve ``method``, or None."""
        refusals = [self._refusal_on(engine, method) for engine in self._engine_names]
        return None if None in refusals else refusals[0]

    def _refusal_on(self, engine: str, method: type[Method], extra_layers: Sequence[str] = ()) -> str | None:
        """Why ``engine`` cannot serve ``method`` (with a grid of ``extra_layers``), or None."""
        if method.needs_gap_linear and self.classifier_weight is None:
            where = (
                f"layer '{self.layer}' does not feed the classifier through global average pooling"
                if self.gap_layers
                else f"{self.model_name}'s head is not global average pooling + one linear layer"
            )
            return f"{method.name} needs a GAP + linear head, but {where}; use --method gradcam"
        if engine == "torch":
            return None
        if extra_layers:
            return "the multi-layer view needs --backend torch (an ONNX graph exposes one layer)"
        if method.needs_input_grad:
            return f"{method.name} back-propagates to the input: it needs --backend torch"
        if method.needs_grad and self.classifier_weight is None:
            return (f"{method.name} needs gradients, which an ONNX graph has only at a GAP + linear layer "
                    f"(where Grad-CAM equals CAM); use --backend torch")
        return None

    def _resolve_layers(self, layers: str | Sequence[str] | None) -> list[str]:
        if not layers:
            return []
        if "torch" not in self._engine_names:
            raise InputError("the multi-layer view needs --backend torch (an ONNX graph exposes one layer)")
        if isinstance(layers, str):
            if layers == "auto":
                return self.anatomy.stage_layers()
            layers = [name.strip() for name in layers.split(",") if name.strip()]
        return [self.anatomy.resolve_layer(name, self.model_name) for name in layers]


def _float(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.float()


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> the first CUDA device if there is one, else the CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError):
        raise InputError(f"unknown device '{device}': use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device '{device}' asked for, but no CUDA GPU is available: use --device cpu")
    return resolved
