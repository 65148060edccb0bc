"""onnxruntime CAM images/s through IOBinding (this checkout) against an earlier backend, side by side.

    python scripts/bench_iobinding.py --before /tmp/before-ort [--rounds 7] [--seconds 2]

``--before`` is a checkout of an earlier commit (``git worktree add /tmp/before-ort 8ebdbaa``):
its ``streamcam/backends/onnx_backend.py`` is loaded into this process under another name, so
both backends run the same graph, on the same frames, alternating round by round.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import streamcam  # noqa: E402
from bench import interleaved, rate  # noqa: E402
from streamcam.demo import photo  # noqa: E402
from streamcam.export import export_onnx  # noqa: E402


def earlier_backend(checkout: Path) -> type:
    """The ``OnnxBackend`` class of another checkout, its relative imports resolved in this streamcam."""
    spec = importlib.util.spec_from_file_location("streamcam.backends._before_onnx",
                                                  checkout / "streamcam/backends/onnx_backend.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.OnnxBackend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    frames = [photo("chelsea"), photo("coffee")] * 4
    with tempfile.TemporaryDirectory() as folder:
        path = export_onnx(Path(folder) / "model.onnx")
        after = streamcam.Explainer(model=path, device="cpu")
        before = streamcam.Explainer(model=path, device="cpu")
        before.engines["onnxruntime"] = earlier_backend(args.before)(path, before.device)
        print("| batch | before (images/s) | after, IOBinding (images/s) | after / before |")
        print("|---|---|---|---|")
        for batch in (1, 8):
            x = after.preprocess(frames[:batch])
            result = interleaved({name: (lambda ex=ex: rate(lambda: ex.explain_tensor(x), batch, args.seconds,
                                                            lambda: None))
                                  for name, ex in (("before", before), ("after", after))}, args.rounds)
            print(f"| {batch} | {result['before']:.1f} | {result['after']:.1f} | {result['after'] / result['before']:.3f}x |",
                  flush=True)


if __name__ == "__main__":
    main()
