"""The onnxruntime backend: a graph exported by ``streamcam export``, on CUDA (IOBinding) or the CPU."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..onnx_metadata import GraphMetadata
from .torch_backend import ForwardResult

log = logging.getLogger(__name__)

_TORCH_DTYPES = {"tensor(float)": torch.float32, "tensor(int64)": torch.int64, "tensor(float16)": torch.float16}
_NUMPY_DTYPES = {torch.float32: np.float32, torch.int64: np.int64, torch.float16: np.float16}


class OnnxBackend:
    """Runs an exported graph with onnxruntime; hands back logits, features and the in-graph CAM.

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
        self.classifier_weight = _initializer(proto, self.metadata.classifier_weight, device)
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
        self.outputs = [o.name for o in self.session.get_outputs()]
        self._output_types = {o.name: (_TORCH_DTYPES[o.type], o.shape) for o in self.session.get_outputs()}
        log.debug("onnxruntime providers: %s", self.session.get_providers())

    @property
    def layer(self) -> str:
        return self.metadata.layer

    def forward(self, x: torch.Tensor, layers: Sequence[str], track_gradients: bool = False) -> ForwardResult:
        """One run of the graph; ``layers`` can only be the exported layer."""
        wrong = [name for name in layers if name != self.layer]
        if wrong:
            raise InputError(f"the ONNX graph exposes layer {self.layer} only, not {', '.join(wrong)}; "
                             f"use --backend torch for other layers")
        x = x.float().contiguous()
        out = self._run_bound(x) if x.device.type == "cuda" else self._run_host(x)
        return ForwardResult(
            logits=out["logits"],
            features={self.layer: out["features"]},
            class_ids=out.get("class_ids"),
            scores=out.get("scores"),
            cam=out.get("cam"),
        )

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

    def _run_host(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        values = self.session.run(None, {"frames": x.numpy()})
        return {name: torch.from_numpy(value) for name, value in zip(self.outputs, values)}

    def _run_bound(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """IOBinding into torch CUDA buffers: input and outputs stay on the device."""
        binding = self.session.io_binding()
        index = x.device.index or 0
        binding.bind_input("frames", "cuda", index, np.float32, tuple(x.shape), x.data_ptr())
        out = {}
        for name in self.outputs:
            dtype, shape = self._output_types[name]
            concrete = tuple(x.shape[0] if not isinstance(d, int) else d for d in shape)
            out[name] = torch.empty(concrete, dtype=dtype, device=x.device)
            binding.bind_output(name, "cuda", index, _NUMPY_DTYPES[dtype], concrete, out[name].data_ptr())
        torch.cuda.current_stream(x.device).synchronize()  # onnxruntime runs on its own stream
        self.session.run_with_iobinding(binding)
        return out


def _initializer(proto, name: str | None, device: torch.device) -> torch.Tensor | None:
    if name is None:
        return None
    from onnx import numpy_helper

    for tensor in proto.graph.initializer:
        if tensor.name == name:
            return torch.from_numpy(numpy_helper.to_array(tensor).astype(np.float32)).to(device)
    return None
