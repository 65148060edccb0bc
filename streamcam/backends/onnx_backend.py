"""The onnxruntime backend: a graph exported by ``streamcam export``, on CUDA (IOBinding) or the CPU."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..onnx_metadata import OUTPUTS_WITH_CAM, OUTPUTS_WITHOUT_CAM, TARGET_INPUTS, GraphMetadata
from .torch_backend import ForwardResult

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

    On a CUDA device the CUDA execution provider reads the input from, and writes
    every output into, torch-owned device buffers through IOBinding: nothing
    round-trips through the host. Elsewhere the CPU provider runs it; the CUDA
    provider is not even asked for, so a machine without a GPU logs nothing.
    Gradients do not exist in a graph: gradient methods are served only at a
    GAP + linear layer, where ``dy_c/dA_k(x, y) = W[c, k] / (h w)`` exactly.
    """

    name = "onnxruntime"
    supports_gradients = False

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
        providers = [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"] if on_gpu \
            else ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        # Waiting threads sleep instead of spinning: the pipeline's other threads need those cores
        # (measured on 2 cores: 57 -> 74 fps end to end at 1280x720).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        self._output_types = {o.name: (_TORCH_DTYPES[o.type], o.shape) for o in self.session.get_outputs()}
        self.chooses_classes = {i.name for i in self.session.get_inputs()} >= set(TARGET_INPUTS)
        self.outputs = OUTPUTS_WITH_CAM if self.chooses_classes else OUTPUTS_WITHOUT_CAM
        missing = [name for name in self.outputs if name not in self._output_types]
        if missing:
            raise InputError(f"{path} has no output {', '.join(missing)}: re-export it with `streamcam export`")
        self._run_options = ort.RunOptions()
        # An older graph's fixed top-k CAM is neither read nor computed.
        self._run_options.only_execute_path_to_fetches = not self.chooses_classes
        if "cam" in self._output_types and not self.chooses_classes:
            log.info("%s comes from an earlier streamcam (a fixed top-k): its maps are computed outside the "
                     "graph, which is slower; `streamcam export` it again for full speed", path)
        log.debug("onnxruntime providers: %s", self.session.get_providers())

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
        x = x.float().contiguous()
        targets = self._target_feeds(top_k, target_class)
        out = self._run_bound(x, targets) if x.device.type == "cuda" else self._run_host(x, targets)
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

    def _run_host(self, x: torch.Tensor, targets: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        values = self.session.run(list(self.outputs), {"frames": x.numpy(), **targets}, self._run_options)
        return {name: torch.from_numpy(value) for name, value in zip(self.outputs, values)}

    def _run_bound(self, x: torch.Tensor, targets: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """IOBinding into torch CUDA buffers: input and outputs stay on the device."""
        binding = self.session.io_binding()
        index = x.device.index or 0
        binding.bind_input("frames", "cuda", index, np.float32, tuple(x.shape), x.data_ptr())
        for name, value in targets.items():
            binding.bind_cpu_input(name, value)
        k = int(targets["top_k"]) if targets else 0
        out = {}
        for name in self.outputs:
            dtype, shape = self._output_types[name]
            concrete = tuple(d if isinstance(d, int) else (x.shape[0] if i == 0 else k) for i, d in enumerate(shape))
            out[name] = torch.empty(concrete, dtype=dtype, device=x.device)
            binding.bind_output(name, "cuda", index, _NUMPY_DTYPES[dtype], concrete, out[name].data_ptr())
        torch.cuda.current_stream(x.device).synchronize()  # onnxruntime runs on its own stream
        self.session.run_with_iobinding(binding, self._run_options)
        return out


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
