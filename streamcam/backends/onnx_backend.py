"""The onnxruntime backend: a graph exported by ``streamcam export``, run through IOBinding on any device."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..onnx_metadata import OUTPUTS_WITH_CAM, OUTPUTS_WITHOUT_CAM, TARGET_INPUTS, GraphMetadata
from .base import ForwardResult

log = logging.getLogger(__name__)

_TORCH_DTYPES = {"tensor(float)": torch.float32, "tensor(int64)": torch.int64, "tensor(float16)": torch.float16}
_NUMPY_DTYPES = {torch.float32: np.float32, torch.int64: np.int64, torch.float16: np.float16}


class OnnxBackend:
    """Runs an exported graph with onnxruntime; hands back logits, features and the in-graph CAM.

    The graph chooses the classes and computes their CAM from its ``top_k`` and
    ``target_class`` inputs, so one graph serves every top-k and class. A graph of
    an earlier version has a top-k baked in and no such inputs: only its path to
    ``logits`` and ``features`` runs, and the caller computes the classes and maps
    from those (with the classifier rows ``W`` read from the graph), as it does for
    every method other than CAM.

    On every device the graph reads its input from, and writes every output
    into, torch-owned buffers through IOBinding (onnxruntime binds host memory
    too), so the code CI runs on the CPU is the code a GPU runs: on CUDA nothing
    round-trips through the host. Each output's shape is read from the graph
    (:func:`output_shapes`). The CUDA provider runs on a torch stream (see
    :class:`_TorchStream`); the CPU provider needs no ordering. A machine without
    a GPU never asks for the CUDA provider, so it logs nothing.
    Gradients do not exist in a graph: gradient methods are served only at a
    GAP + linear layer, where ``dy_c/dA_k(x, y) = W[c, k] / (h w)`` exactly.
    """

    name = "onnxruntime"
    gradients_at_any_layer = False  # W[c] / (h w) at a GAP + linear layer only (gradients())
    gradients_to_input = False
    several_layers = False  # the one layer the graph exposes
    precisions = frozenset({"fp32", "fp16"})  # the graph's own, chosen at export (--fp16)
    device_types = frozenset({"cpu", "cuda"})  # the CPU and CUDA execution providers
    compiles = False

    def __init__(self, path: str | Path, device: torch.device) -> None:
        import onnx
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise InputError(f"no such file: {path}")
        try:
            proto = onnx.load(str(path))
        except Exception as error:
            raise InputError(f"cannot read {path} as an ONNX graph: {error}") from error
        self.metadata = GraphMetadata.from_props({p.key: p.value for p in proto.metadata_props}, path)
        self.classifier_weight = _initializer(proto, self.metadata.classifier_weight, device, path)
        self.device = device
        ort.set_default_logger_severity(3)  # errors only
        on_gpu = device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers()
        if device.type == "cuda" and not on_gpu:
            raise InputError("this onnxruntime has no CUDA execution provider: install onnxruntime-gpu, or use --device cpu")
        self._stream = _TorchStream(device) if on_gpu else None
        providers = [("CUDAExecutionProvider", {"device_id": device.index or 0, **self._stream.provider_options()}),
                     "CPUExecutionProvider"] if on_gpu else ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        # Waiting threads sleep instead of spinning: the pipeline's other threads need those cores
        # (measured on 2 cores: 57 -> 74 fps end to end at 1280x720).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        inputs = {i.name: i for i in self.session.get_inputs()}
        self._output_types = {o.name: (_TORCH_DTYPES[o.type], o.shape) for o in self.session.get_outputs()}
        self.chooses_classes = set(inputs) >= set(TARGET_INPUTS)
        self.outputs = OUTPUTS_WITH_CAM if self.chooses_classes else OUTPUTS_WITHOUT_CAM
        missing = [name for name in self.outputs if name not in self._output_types]
        if missing:
            raise InputError(f"{path} has no output {', '.join(missing)}: re-export it with `streamcam export`")
        self._input_dtype = _TORCH_DTYPES.get(inputs["frames"].type, torch.float32) if "frames" in inputs else torch.float32
        self._output_shapes = output_shapes({name: self._output_types[name][1] for name in self.outputs}, path)
        self._run_options = ort.RunOptions()
        # An older graph's fixed top-k CAM is neither read nor computed.
        self._run_options.only_execute_path_to_fetches = not self.chooses_classes
        if "cam" in self._output_types and not self.chooses_classes:
            log.info("%s comes from an earlier streamcam (a fixed top-k): its maps are computed outside the "
                     "graph, which is slower; `streamcam export` it again for full speed", path)
        log.debug("onnxruntime providers: %s", self.session.get_providers())

    def close(self) -> None:
        """Nothing of the caller's to give back: the graph was loaded here; the session goes with the backend."""

    @property
    def layer(self) -> str:
        return self.metadata.layer

    def forward(self, x: torch.Tensor, layers: Sequence[str], track_gradients: bool = False,
                top_k: int = 1, target_class: int | None = None) -> ForwardResult:
        """One run of the graph; ``layers`` can only be the exported layer.

        Where the graph chooses the classes: ``class_ids = topk(p + 2 [c = target_class], top_k)``,
        ``scores = p[class_ids]`` with ``p = softmax(logits)``, and their CAM (see
        :func:`streamcam.export.chosen_classes`); ``target_class`` None means -1 (the top-k).
        """
        wrong = [name for name in layers if name != self.layer]
        if wrong:
            raise InputError(f"the ONNX graph exposes layer {self.layer} only, not {', '.join(wrong)}; "
                             f"use --backend torch for other layers")
        x = x.to(self._input_dtype).contiguous()
        out = self._run_bound(x, self._target_feeds(top_k, target_class), top_k)
        return ForwardResult(logits=out["logits"], features={self.layer: out["features"]},
                             class_ids=out.get("class_ids"), scores=out.get("scores"), cam=out.get("cam"))

    def gradients(self, result: ForwardResult, class_ids: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Exact gradients at a GAP + linear layer, ``W[c] / (h w)`` at every position: (B, k, K, h, w)."""
        if self.classifier_weight is None:
            raise InputError("gradient methods need --backend torch for this net (its head is not GAP + linear)")
        features = result.features[self.layer]
        height, width = features.shape[-2:]
        rows = self.classifier_weight[class_ids] / (height * width)  # (B, k, K)
        return {self.layer: rows[..., None, None].expand(*rows.shape, height, width)}

    def input_gradients(self, x: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
        raise InputError("guided methods back-propagate to the input: they need --backend torch")

    def _target_feeds(self, top_k: int, target_class: int | None) -> dict[str, np.ndarray]:
        """The ``top_k`` and ``target_class`` inputs (int64 scalars; -1: no target), if the graph has them."""
        if not self.chooses_classes:
            return {}
        values = {"top_k": top_k, "target_class": -1 if target_class is None else target_class}
        return {name: np.array(value, np.int64) for name, value in values.items()}

    def _run_bound(self, x: torch.Tensor, targets: dict[str, np.ndarray], k: int) -> dict[str, torch.Tensor]:
        """One run through IOBinding: ``x`` is read, and every output written, in place in torch
        tensors on ``x.device``; the int64 scalars ``targets`` are bound from host memory."""
        binding = self.session.io_binding()
        kind, index = _ort_device(x.device)
        binding.bind_input("frames", kind, index, _NUMPY_DTYPES[x.dtype], tuple(x.shape), x.data_ptr())
        for name, value in targets.items():
            binding.bind_cpu_input(name, value)
        sizes = {"batch": x.shape[0], "k": k}
        out = {}
        for name in self.outputs:
            dtype = self._output_types[name][0]
            shape = tuple(sizes[d] if isinstance(d, str) else d for d in self._output_shapes[name])
            out[name] = torch.empty(shape, dtype=dtype, device=x.device)
            binding.bind_output(name, kind, index, _NUMPY_DTYPES[dtype], shape, out[name].data_ptr())
        with self._stream.ordered() if self._stream is not None else nullcontext():
            self.session.run_with_iobinding(binding, self._run_options)
        return out


def output_shapes(shapes: dict[str, list], path: Path) -> dict[str, tuple[int | str, ...]]:
    """Each output's shape as the graph declares it, its symbolic sizes named: ``"batch"`` (the first
    dimension of every output) or ``"k"`` (the second of ``class_ids``, ``scores`` and ``cam``: the
    number of classes chosen, the ``top_k`` input or 1 with a ``target_class``); the others concrete.

    A graph with any other symbolic size cannot be bound ahead of its run: it is refused here.
    """
    chosen = set(OUTPUTS_WITH_CAM) - set(OUTPUTS_WITHOUT_CAM)
    named = {}
    for name, shape in shapes.items():
        dims = []
        for position, dim in enumerate(shape):
            if isinstance(dim, int):
                dims.append(dim)
            elif position == 0:
                dims.append("batch")
            elif position == 1 and name in chosen:
                dims.append("k")
            else:
                raise InputError(f"{path}: output {name} has a size unknown before the run ({shape}); "
                                 f"re-export it with `streamcam export`")
        named[name] = tuple(dims)
    return named


def _ort_device(device: torch.device) -> tuple[str, int]:
    """onnxruntime's name and index of a torch device, for IOBinding."""
    return ("cuda", device.index or 0) if device.type == "cuda" else ("cpu", 0)


class _TorchStream:
    """The one CUDA-only spot of this backend: onnxruntime's CUDA provider runs on a torch stream.

    The stream current when the backend is made is handed to the provider as its
    ``user_compute_stream``: onnxruntime's kernels then queue behind the torch work
    that produced the input, and torch work queued after the run sees the outputs,
    with no synchronisation of the whole device. Where the caller has since moved
    to another stream, :meth:`ordered` links the two with events (``wait_stream``).
    Never made on the CPU, where onnxruntime runs synchronously in the calling thread.
    """

    def __init__(self, device: torch.device) -> None:
        self.stream = torch.cuda.current_stream(device)

    def provider_options(self) -> dict[str, str]:
        return {"has_user_compute_stream": "1", "user_compute_stream": str(self.stream.cuda_stream)}

    @contextmanager
    def ordered(self) -> Iterator[None]:
        """The run after the caller's queued work, and the caller's next work after the run."""
        current = torch.cuda.current_stream(self.stream.device)
        if current != self.stream:
            self.stream.wait_stream(current)
        yield
        if current != self.stream:
            current.wait_stream(self.stream)


def _initializer(proto, name: str | None, device: torch.device, path: Path) -> torch.Tensor | None:
    """The classifier rows ``W`` (C, K) in fp32 on ``device``: the initializer the metadata names.

    None where the graph has none (no GAP + linear head), or, in a graph of an
    earlier version, lacks the tensor it names: CAM and Grad-CAM are then refused.
    """
    if name is None:
        return None
    from onnx import numpy_helper

    for tensor in proto.graph.initializer:
        if tensor.name == name:
            return torch.from_numpy(numpy_helper.to_array(tensor).astype(np.float32)).to(device)
    log.warning("%s names its classifier weight %s but holds no such tensor: CAM and Grad-CAM need a "
                "new export (streamcam export)", path, name)
    return None
