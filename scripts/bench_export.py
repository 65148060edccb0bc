"""One export per model (issue 14): where should the top-k CAM be computed? Measured side by side in one run.

Three graphs of the same model, run by onnxruntime on the same preprocessed batch
of real photos, rounds interleaved, each one's median kept:

- **fixed k in the graph** (streamcam up to 0.1): ``softmax -> topk(k) -> CAM``
  inside the graph, k baked in at export: one export per k (and a ``--class``
  needs yet another path);
- **k and class as graph inputs** (what streamcam ships, ``streamcam export``):
  the same, with ``top_k`` and ``target_class`` tensor inputs: one export serves
  every k and class;
- **CAM outside the graph**: the graph outputs ``logits`` and ``features`` only;
  softmax, top-k and ``normalise(ReLU(bmm(W[ids], A)))`` run in torch, the very
  code the torch engine runs. One export also serves every k and class.

Also timed: the outside part alone (softmax, top-k and CAM on the graph's
outputs, torch), and each export. The graphs' answers are checked to agree first.

    python scripts/bench_export.py [--model efficientnet_lite0] [--batch 8] [--rounds 7] [--seconds 2]
"""

from __future__ import annotations

import argparse
import copy
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

import streamcam
from streamcam.backends.hooks import capture_outputs
from streamcam.demo import photo
from streamcam.explainers import CAM, MethodInput
from streamcam.export import DEFAULT_OPSET, export_onnx
from streamcam.models import LoadedModel
from streamcam.preprocess import Preprocessor

from bench import interleaved, rate

KS = (1, 3)


class FixedTopK(nn.Module):
    """``frames -> logits, A, ids, scores, CAM`` with ``ids, scores = topk(softmax(logits), k)``, k fixed:
    the graph streamcam exported up to 0.1. With ``k=None``: ``frames -> logits, A`` only."""

    def __init__(self, model: nn.Module, layer: str, classifier: str, captured: dict, k: int | None) -> None:
        super().__init__()
        self.model, self.layer, self.classifier, self.captured, self.k = model, layer, classifier, captured, k

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``M = normalise(ReLU(bmm(W[ids], A.flatten(2))))`` for the top-k classes of each frame."""
        logits = self.model(frames)
        features = self.captured[self.layer]
        if self.k is None:
            return logits, features
        scores, ids = logits.softmax(dim=1).topk(self.k, dim=1)
        weight = self.model.get_submodule(self.classifier).weight
        cam = CAM()(MethodInput(features=features, class_ids=ids, classifier_weight=weight))
        return logits, features, ids, scores, cam


def export_variant(loaded: LoadedModel, layer: str, path: Path, k: int | None) -> float:
    """Export a :class:`FixedTopK` variant to ``path``; returns the seconds it took."""
    started = time.perf_counter()
    module = copy.deepcopy(loaded.module).float().to(memory_format=torch.contiguous_format).eval()
    names = ["logits", "features"] + (["class_ids", "scores", "cam"] if k else [])
    with capture_outputs(module, [layer]) as captured:
        torch.onnx.export(FixedTopK(module, layer, loaded.anatomy.classifier, captured, k).eval(),
                          (torch.zeros(2, 3, loaded.input_size, loaded.input_size),), str(path),
                          input_names=["frames"], output_names=names,
                          dynamic_shapes={"frames": {0: torch.export.Dim("batch", min=1, max=1024)}},
                          opset_version=DEFAULT_OPSET, dynamo=True, external_data=False, verbose=False)
    return time.perf_counter() - started


def session(path: Path) -> ort.InferenceSession:
    """The CPU session streamcam's onnxruntime backend makes (waiting threads sleep)."""
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def outside(logits: np.ndarray, features: np.ndarray, weight: torch.Tensor, k: int,
            target: int | None = None) -> tuple[torch.Tensor, ...]:
    """The backend's part: ``ids, scores = topk(softmax(logits), k)`` (or the target class),
    ``M = normalise(ReLU(bmm(W[ids], A.flatten(2))))``."""
    probabilities = torch.from_numpy(logits).softmax(dim=1)
    if target is None:
        scores, ids = probabilities.topk(k, dim=1)
    else:
        ids = torch.full((logits.shape[0], 1), target, dtype=torch.int64)
        scores = probabilities.gather(1, ids)
    cam = CAM()(MethodInput(features=torch.from_numpy(features), class_ids=ids, classifier_weight=weight))
    return ids, scores, cam


def check_agreement(answers: dict[str, tuple[torch.Tensor, ...]]) -> None:
    """Every variant names the same classes, scores and maps (else the timing compares different work)."""
    (first_name, first), *others = answers.items()
    for name, (ids, scores, cam) in others:
        assert torch.equal(ids, first[0]), (name, first_name)
        assert torch.allclose(scores, first[1], atol=1e-5), (name, first_name)
        assert torch.allclose(cam, first[2], atol=1e-4), (name, first_name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=streamcam.DEFAULT_MODEL)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    args = parser.parse_args()

    loaded = streamcam.load_model(args.model, weights=args.weights)
    layer = loaded.anatomy.default_layer
    preprocess = Preprocessor(loaded.input_size, loaded.mean, loaded.std, torch.device("cpu"))
    frames = [photo("chelsea"), photo("coffee")] * (args.batch // 2 + 1)
    x = preprocess(frames[: args.batch]).contiguous().numpy()
    weight = loaded.module.get_submodule(loaded.anatomy.classifier).weight.detach().float()
    target = loaded.labels.index("espresso") if "espresso" in loaded.labels else 0
    folder = Path(tempfile.mkdtemp(prefix="bench-export-"))

    started = time.perf_counter()
    shipped = export_onnx(folder / "shipped.onnx", loaded=loaded, layer=layer)
    export_seconds = {"k and class as inputs": time.perf_counter() - started}
    export_seconds["features only"] = export_variant(loaded, layer, folder / "features.onnx", None)
    for k in KS:
        export_seconds[f"fixed k={k}"] = export_variant(loaded, layer, folder / f"fixed_{k}.onnx", k)
    sessions = {"inputs": session(shipped), "outside": session(folder / "features.onnx")}
    sessions |= {f"fixed {k}": session(folder / f"fixed_{k}.onnx") for k in KS}

    def as_torch(values: list[np.ndarray]) -> tuple[torch.Tensor, ...]:
        return tuple(torch.from_numpy(value) for value in values[2:])  # class_ids, scores, cam

    def run_fixed(k: int) -> tuple[torch.Tensor, ...]:
        return as_torch(sessions[f"fixed {k}"].run(None, {"frames": x}))

    def run_inputs(k: int, target: int = -1) -> tuple[torch.Tensor, ...]:
        feeds = {"frames": x, "top_k": np.array(k, np.int64), "target_class": np.array(target, np.int64)}
        return as_torch(sessions["inputs"].run(None, feeds))

    def run_outside(k: int, target: int | None = None) -> tuple[torch.Tensor, ...]:
        logits, features = sessions["outside"].run(None, {"frames": x})
        return outside(logits, features, weight, k, target)

    def images_per_second(work: Callable[[], object]) -> Callable[[], float]:
        return lambda: rate(work, args.batch, args.seconds, lambda: None)

    logits, features = sessions["outside"].run(None, {"frames": x})
    print("# One export per model: where the top-k CAM is computed\n")
    print(f"- {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads; python "
          f"{platform.python_version()}, torch {torch.__version__}, onnxruntime {ort.__version__}, "
          f"streamcam {streamcam.__version__}")
    print(f"- {loaded.name}, layer {layer}, batch {args.batch}, {loaded.input_size}x{loaded.input_size}, CPU; "
          f"{args.rounds} rounds of {args.seconds:g} s, interleaved, medians")
    print("- exports: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in export_seconds.items()))
    print("\n| explained | fixed k in the graph | k and class as inputs (shipped) | CAM outside the graph "
          "| inputs / fixed | outside / fixed | outside part alone, ms per batch |")
    print("|---|---|---|---|---|---|---|")
    for k in KS:
        check_agreement({"fixed": run_fixed(k), "inputs": run_inputs(k), "outside": run_outside(k)})
        result = interleaved({
            "fixed": images_per_second(lambda k=k: run_fixed(k)),
            "inputs": images_per_second(lambda k=k: run_inputs(k)),
            "outside": images_per_second(lambda k=k: run_outside(k)),
            "outside part": lambda k=k: rate(lambda: outside(logits, features, weight, k), 1, args.seconds / 4,
                                             lambda: None),
        }, args.rounds)
        print(f"| top-{k} | {result['fixed']:.1f} | {result['inputs']:.1f} | {result['outside']:.1f} "
              f"| {result['inputs'] / result['fixed']:.3f} | {result['outside'] / result['fixed']:.3f} "
              f"| {1000 / result['outside part']:.2f} |")
    check_agreement({"inputs": run_inputs(1, target), "outside": run_outside(1, target)})
    assert bool((run_inputs(1, target)[0] == target).all())
    result = interleaved({"fixed": images_per_second(lambda: run_fixed(1)),
                          "inputs": images_per_second(lambda: run_inputs(1, target)),
                          "outside": images_per_second(lambda: run_outside(1, target))}, args.rounds)
    print(f"| --class {loaded.labels[target]} | {result['fixed']:.1f} (top-1) | {result['inputs']:.1f} "
          f"| {result['outside']:.1f} | {result['inputs'] / result['fixed']:.3f} "
          f"| {result['outside'] / result['fixed']:.3f} | |")


if __name__ == "__main__":
    main()
