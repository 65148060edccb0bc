"""Benchmarks, measured side by side in one run (the machine is shared and noisy: compare ratios).

1. Model throughput: images/s of the plain forward pass vs streamcam's CAM
   (forward + fused contraction + normalisation), at batch 1 and 8, on the same
   preprocessed tensors, rounds interleaved.
1b. Methods: images/s of every streamcam method at batch 1 and 8, and of
   pytorch-grad-cam's GradCAM and GradCAM++ on the same model, batch and tensors
   (when the package is importable: it is not a streamcam dependency; install it
   beside, e.g. ``pip install --no-deps --target /tmp/gcsite grad-cam ttach`` and
   run with ``PYTHONPATH=/tmp/gcsite``).
1c. Backends: images/s of CAM on torch vs onnxruntime (an exported graph with the
   fused CAM inside), on the same batch, at batch 1 and 8.
1d. Stages (issue 7): on a 640x272 and a 1280x720 clip, ms per frame of each
   stage alone (decode, explain = preprocess + forward + CAM at the pipeline's
   batch, render, encode), the end-to-end fps of the pipeline on torch and on
   onnxruntime, and each as a fraction of the limits measured in the same run:
   the plain batched forward pass alone, decode alone, encode alone.
1e. Live: batch-1 Grad-CAM latency from capture to render on a 30 fps live source,
   in frame intervals, and N live 1280x720 30 fps streams explained at once
   (``--streams``): the fps each one gets and what it drops.
1f. Defaults (issue 8): ``streamcam in.mp4 -o out.mp4`` with every default (backend
   auto) against the plain torch forward pass at batch 8 alone, on a 640x360 and
   a 1280x720 clip; and start-up: building the default Explainer with an empty
   cache (the one-time export), with a warm cache, and on torch alone.
1g. Compile (issue 7): CAM on the torch engine eager vs ``--compile``
   (torch.compile; CUDA graphs on a GPU) at batch 1 and 8, the time the first call
   of each batch shape takes (the compile), and the pipeline on a 640x360 clip
   with and without it.
1h. Video in and out (issue 13): decode and encode ms per frame of streamcam's
   FFmpeg reader and writer (PyAV: H.264, fragmented MP4) against OpenCV's
   VideoCapture and mp4v VideoWriter, and the default pipeline end to end with
   each pair, at 640x360 and 1280x720.
2. End to end: fps of the pipeline (``streamcam in.mp4 -o out.mp4``) vs a naive
   one-frame-at-a-time read -> explain -> overlay -> write loop, on the same clip,
   written two ways: with plain torch + OpenCV as a user would without streamcam
   (the model as loaded, host preprocessing, a forward hook, CAM, cv2 overlay), and
   through ``streamcam.Explainer`` one frame at a time (same engine, no pipeline),
   which isolates what the threads and batching add.

    python scripts/bench.py [--device cpu|cuda] [--rounds 5] [--frames 200] [--streams 8]
        [--sections throughput,methods,backends,stages,live,defaults,compile,videoio,e2e]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

import streamcam
from streamcam.demo import pan_frames, photo, write_clip
from streamcam.render import draw_predictions
from streamcam.sources import Source
from streamcam.types import Prediction


def interleaved(candidates: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Run each candidate once per round, alternating, and keep each one's median rate."""
    rates: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, measure in candidates.items():
            rates[name].append(measure())
    return {name: statistics.median(values) for name, values in rates.items()}


def make_clip(folder: str | Path, size: tuple[int, int], frames: int) -> Path:
    """A clip of the cat photo panning across a grey background, 30 fps."""
    clip = Path(folder) / f"clip_{size[0]}x{size[1]}.mp4"
    write_clip(clip, (f for f, _ in pan_frames(photo("chelsea"), size, frames)), 30.0)
    return clip


def pipeline_fps(explainer: streamcam.Explainer, clip: Path, out: Path, batch: int = 8) -> float:
    """Frames per second of ``streamcam clip -o out`` with this explainer."""
    summary = streamcam.run(clip, out, display=False, batch=batch, overwrite=True, explainer=explainer)
    return summary.frames / summary.seconds


def rate(work: Callable[[], None], items: int, seconds: float, sync: Callable[[], None]) -> float:
    """Items per second of ``work``, repeated for about ``seconds`` after one warm-up."""
    work()
    sync()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        work()
        done += items
    sync()
    return done / (time.perf_counter() - started)


def model_throughput(ex: streamcam.Explainer, rounds: int, seconds: float) -> None:
    sync = torch.cuda.synchronize if ex.device.type == "cuda" else (lambda: None)
    frames = [photo("chelsea")] * 8
    print("\n## Model throughput (images/s)\n")
    print("| batch | plain forward | streamcam CAM | CAM overhead |")
    print("|---|---|---|---|")
    for batch in (1, 8):
        x = ex.preprocess(frames[:batch])

        def plain() -> None:
            with torch.inference_mode():
                ex.model(x)

        result = interleaved(
            {
                "forward": lambda: rate(plain, batch, seconds, sync),
                "cam": lambda: rate(lambda: ex.explain_tensor(x), batch, seconds, sync),
            },
            rounds,
        )
        overhead = result["forward"] / result["cam"] - 1
        print(f"| {batch} | {result['forward']:.1f} | {result['cam']:.1f} | {overhead * 100:+.1f} % |")


def method_throughput(ex: streamcam.Explainer, rounds: int, seconds: float) -> None:
    """Every streamcam method vs pytorch-grad-cam, side by side."""
    sync = torch.cuda.synchronize if ex.device.type == "cuda" else (lambda: None)
    frames = [photo("chelsea"), photo("coffee")] * 4
    methods = [m for m in ex.available_methods if m not in ("guided-backprop", "guided-gradcam")]
    methods += ["guided-gradcam"]
    reference = pytorch_grad_cam_methods(ex)
    print("\n## Methods (images/s; ratio to the plain forward pass)\n")
    if not reference:
        print("pytorch-grad-cam is not importable here: its columns are left out.\n")
    print("| method | batch 1 | batch 8 |")
    print("|---|---|---|")
    rows: dict[str, list[str]] = {}
    for batch in (1, 8):
        x = ex.preprocess(frames[:batch])

        def plain() -> None:
            with torch.inference_mode():
                ex.model(x)

        def ours(method: str) -> Callable[[], float]:
            def measure() -> float:
                ex.set_method(method)
                return rate(lambda: ex.explain_tensor(x), batch, seconds, sync)

            return measure

        def theirs(factory: Callable) -> Callable[[], float]:
            def measure() -> float:
                with factory(model=ex.model, target_layers=[ex.model.get_submodule(ex.layer)]) as cam:
                    speed = rate(lambda: cam(input_tensor=x, targets=None), batch, seconds, sync)
                ex.model.zero_grad(set_to_none=True)  # it fills every parameter's .grad
                return speed

            return measure

        candidates = {"plain forward": lambda: rate(plain, batch, seconds, sync)}
        candidates.update({f"streamcam {m}": ours(m) for m in methods})
        candidates.update({f"pytorch-grad-cam {name}": theirs(f) for name, f in reference.items()})
        result = interleaved(candidates, rounds)
        base = result["plain forward"]
        for name, value in result.items():
            rows.setdefault(name, []).append(f"{value:.1f} ({value / base:.2f}x)")
        for name in reference:
            ratio = result["streamcam " + name.lower()] / result[f"pytorch-grad-cam {name}"]
            rows.setdefault(f"**streamcam / pytorch-grad-cam, {name}**", []).append(f"**{ratio:.2f}x**")
    ex.set_method("cam" if "cam" in ex.available_methods else "gradcam")
    for name, cells in rows.items():
        print(f"| {name} | {' | '.join(cells)} |")


def backend_throughput(ex: streamcam.Explainer, rounds: int, seconds: float) -> None:
    """CAM on torch vs onnxruntime, same model, same batches."""
    import tempfile as _tempfile

    import onnxruntime

    from streamcam.export import export_onnx

    sync = torch.cuda.synchronize if ex.device.type == "cuda" else (lambda: None)
    frames = [photo("chelsea"), photo("coffee")] * 4
    with _tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        path = export_onnx(Path(folder) / "model.onnx", model=ex.model, labels=ex.labels, layer=ex.layer)
        exported = time.perf_counter() - started
        graph = streamcam.Explainer(model=path, device=ex.device)
        print(f"\n## Backends: CAM on torch vs onnxruntime {onnxruntime.__version__} "
              f"({', '.join(graph.backend.session.get_providers())}; export took {exported:.1f} s)\n")
        print("| batch | torch | onnxruntime | onnxruntime / torch |")
        print("|---|---|---|---|")
        for batch in (1, 8):
            x = ex.preprocess(frames[:batch])
            result = interleaved(
                {
                    "torch": lambda: rate(lambda: ex.explain_tensor(x), batch, seconds, sync),
                    "onnxruntime": lambda: rate(lambda: graph.explain_tensor(x), batch, seconds, sync),
                },
                rounds,
            )
            print(f"| {batch} | {result['torch']:.1f} | {result['onnxruntime']:.1f} "
                  f"| {result['onnxruntime'] / result['torch']:.2f}x |")


def stage_times(ex: streamcam.Explainer, rounds: int, seconds: float, frames: int, sizes: list[tuple[int, int]],
                batch: int) -> None:
    """Each stage alone, then the whole pipeline, as fractions of the limits."""
    from streamcam.render import HeatmapOverlay, draw_predictions as draw

    sync = torch.cuda.synchronize if ex.device.type == "cuda" else (lambda: None)
    graph_folder = tempfile.TemporaryDirectory()
    from streamcam.export import export_onnx

    graph = streamcam.Explainer(model=export_onnx(Path(graph_folder.name) / "m.onnx", model=ex.model,
                                                  labels=ex.labels, layer=ex.layer), device=ex.device)
    overlay = HeatmapOverlay(0.5, torch.device("cpu"))
    print(f"\n## Stages ({frames} frames per clip, batch {batch}; ms per frame, fps = frames per second)\n")
    print("| clip | decode | render | encode | engine | explain | forward alone fps | pipeline fps "
          "| of forward | of limit |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for size in sizes:
            clip = make_clip(folder, size, frames)
            images = []
            capture = cv2.VideoCapture(str(clip))
            while (got := capture.read())[0]:
                images.append(got[1])
            x = ex.preprocess(images[:batch])
            maps = ex.explain_tensor(x).maps[:, 0].cpu().numpy()
            out = Path(folder) / "out.mp4"

            def decode() -> float:
                return pyav_decode_fps(clip)

            def encode() -> float:
                return pyav_encode_fps(out, images)

            def render() -> float:
                started = time.perf_counter()
                for index, image in enumerate(images):
                    blended = overlay.blend_host(image, maps[index % len(maps)])
                    draw(blended, [Prediction(285, "Egyptian cat", 0.8)])
                return len(images) / (time.perf_counter() - started)

            def forward(explainer: streamcam.Explainer) -> Callable[[], float]:
                """The plain batched forward pass on this engine (onnxruntime's graph includes its tiny CAM)."""
                if explainer.engine == "torch":
                    def plain() -> None:
                        with torch.inference_mode():
                            explainer.model(x)
                else:
                    def plain() -> None:
                        explainer.explain_tensor(x)
                return lambda: rate(plain, batch, seconds, sync)

            def explain(explainer: streamcam.Explainer) -> Callable[[], float]:
                """Preprocessing from the uint8 frames + forward + CAM."""
                return lambda: rate(lambda: explainer.explain_tensor(explainer.preprocess(images[:batch])),
                                    batch, seconds, sync)

            engines = {"torch": ex, "onnxruntime": graph}
            candidates = {"decode": decode, "encode": encode, "render": render}
            for name, explainer in engines.items():
                candidates |= {f"forward {name}": forward(explainer), f"explain {name}": explain(explainer),
                               f"pipeline {name}": lambda e=explainer: pipeline_fps(e, clip, out, batch)}
            result = interleaved(candidates, rounds)
            ms = {k: 1000 / result[k] for k in ("decode", "render", "encode")}
            for name in engines:
                forward_fps, pipeline = result[f"forward {name}"], result[f"pipeline {name}"]
                limit = min(result["decode"], forward_fps, result["encode"])
                print(f"| {size[0]}x{size[1]} | {ms['decode']:.1f} | {ms['render']:.1f} | {ms['encode']:.1f} "
                      f"| {name} | {1000 / result[f'explain {name}']:.1f} | {forward_fps:.1f} | {pipeline:.1f} "
                      f"| {pipeline / forward_fps * 100:.0f} % | {pipeline / limit * 100:.0f} % |")
    graph_folder.cleanup()


class PacedLiveSource(Source):
    """A live source delivering a real photo panning at ``fps`` for ``seconds``, as a camera would."""

    def __init__(self, name: str, size: tuple[int, int], fps: float, seconds: float) -> None:
        self.info = streamcam.VideoInfo(name, size[0], size[1], fps, None, live=True)
        self.images = [f for f, _ in pan_frames(photo("chelsea"), size, 60)]
        self.count = int(fps * seconds)

    def frames(self):
        started = time.monotonic()
        for index in range(self.count):
            wait = started + index / self.info.fps - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            now = time.monotonic()
            yield streamcam.Frame(index, now - started, now, self.images[index % 60], self.info.source_id)


def live_latency(ex: streamcam.Explainer, streams: int, seconds: float) -> None:
    """Batch-1 Grad-CAM latency on one live 30 fps source; then several 720p30 streams at once."""
    method = ex.method.name
    ex.set_method("gradcam")
    one = PacedLiveSource("cam0", (1280, 720), 30.0, seconds)
    latencies = [a.latency for a in streamcam.annotate(one, ex, batch=1)]
    latencies = sorted(latencies[len(latencies) // 5 :])  # after warm-up
    median, p95 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.95)]
    print("\n## Live\n")
    print(f"- batch-1 Grad-CAM, one 1280x720 30 fps live source: latency from capture to rendered frame "
          f"median {median * 1000:.0f} ms = {median * 30:.2f} frame intervals, p95 {p95 * 1000:.0f} ms "
          f"({len(latencies)} frames after warm-up)")
    ex.set_method(method)
    sources = [PacedLiveSource(f"cam{i}", (1280, 720), 30.0, seconds) for i in range(streams)]
    delivered: dict[str, int] = {}
    dropped: dict[str, int] = {}
    started = time.monotonic()
    for item in streamcam.annotate(sources, ex, batch=streams):
        delivered[item.frame.source_id] = delivered.get(item.frame.source_id, 0) + 1
        dropped[item.frame.source_id] = item.dropped
    elapsed = time.monotonic() - started
    worst = min(delivered.values()) / elapsed
    print(f"- {streams} live 1280x720 30 fps streams, {ex.method.name}, batch {streams}: the slowest stream got "
          f"{worst:.1f} fps; {sum(dropped.values())} of {sum(delivered.values()) + sum(dropped.values())} frames "
          f"dropped in all")


def defaults(rounds: int, seconds: float, frames: int, sizes: list[tuple[int, int]]) -> None:
    """The default run (auto engine) vs the plain torch forward pass; start-up with and without the cache."""
    import os

    cold_folder = tempfile.TemporaryDirectory()
    previous = os.environ.get("STREAMCAM_CACHE_DIR")
    os.environ["STREAMCAM_CACHE_DIR"] = cold_folder.name
    try:
        started = time.perf_counter()
        auto = streamcam.Explainer(device="cpu").prepare()
        cold = time.perf_counter() - started
        warm = statistics.median(_build_seconds(dict(device="cpu")) for _ in range(3))
        torch_only = statistics.median(_build_seconds(dict(device="cpu", backend="torch")) for _ in range(3))
        # Two torch baselines: the model as loaded (NCHW, what a user's own loop runs) and the
        # channels-last copy streamcam's torch engine runs on the CPU (faster, so the stricter one).
        as_loaded = streamcam.load_model(streamcam.DEFAULT_MODEL).module.eval()
        reference = streamcam.Explainer(device="cpu", backend="torch")
        channels_last, x = reference.model, reference.preprocess([photo("chelsea")] * 8)

        def forward(model: torch.nn.Module, batch: torch.Tensor) -> Callable[[], float]:
            def run() -> None:
                with torch.inference_mode():
                    model(batch)

            return lambda: rate(run, 8, seconds, lambda: None)

        print(f"\n## Defaults: `streamcam in.mp4 -o out.mp4` (backend auto, engine {auto.engine}) "
              f"vs the plain torch forward pass at batch 8\n")
        print("| clip | torch forward b8, as loaded (NCHW) | torch forward b8, channels-last | streamcam defaults fps "
              "| vs as loaded | vs channels-last |")
        print("|---|---|---|---|---|---|")
        with tempfile.TemporaryDirectory() as folder:
            for size in sizes:
                clip, out = make_clip(folder, size, frames), Path(folder) / "out.mp4"
                result = interleaved({"nchw": forward(as_loaded, x.contiguous()),
                                      "channels_last": forward(channels_last, x),
                                      "defaults": lambda: pipeline_fps(auto, clip, out)}, rounds)
                print(f"| {size[0]}x{size[1]} | {result['nchw']:.1f} | {result['channels_last']:.1f} "
                      f"| {result['defaults']:.1f} | {result['defaults'] / result['nchw']:.2f}x "
                      f"| {result['defaults'] / result['channels_last']:.2f}x |")
        print(f"\nStart-up (building the default Explainer, model loaded and engines ready): first run with an "
              f"empty cache {cold:.1f} s (the export), later runs {warm:.1f} s; torch alone {torch_only:.1f} s.")
    finally:
        if previous is None:
            os.environ.pop("STREAMCAM_CACHE_DIR", None)
        else:
            os.environ["STREAMCAM_CACHE_DIR"] = previous
        cold_folder.cleanup()


def video_io(rounds: int, frames: int, sizes: list[tuple[int, int]]) -> None:
    """FFmpeg through PyAV (streamcam's reader and writer) vs OpenCV's VideoCapture and mp4v VideoWriter:
    decode and encode ms per frame alone, and the default pipeline end to end with each pair."""
    import queue
    import threading

    from streamcam.engine import annotate
    from streamcam.sinks import VideoFileSink
    from streamcam.sources import CaptureSource
    from streamcam.video_in import open_video_file

    auto = streamcam.Explainer(device="cpu").prepare()

    def opencv_source(clip: Path) -> CaptureSource:
        capture = cv2.VideoCapture(str(clip))
        return CaptureSource(lambda: capture, str(clip), live=False)

    def opencv_pipeline(clip: Path, out: Path) -> float:
        """The pipeline as it was: OpenCV reads, an encoder thread writes mp4v through OpenCV."""
        source = opencv_source(clip)
        writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), source.info.fps,
                                 (source.info.width, source.info.height))
        pending: queue.Queue = queue.Queue(8)

        def encode() -> None:
            while (image := pending.get()) is not None:
                writer.write(image)

        encoder = threading.Thread(target=encode)
        encoder.start()
        started, count = time.perf_counter(), 0
        for annotated in annotate(source, auto, 8):
            pending.put(annotated.image)
            count += 1
        pending.put(None)
        encoder.join()
        writer.release()
        return count / (time.perf_counter() - started)

    def pyav_pipeline(clip: Path, out: Path) -> float:
        """streamcam's: PyAV reads, the VideoFileSink writes H.264 (fragmented MP4) on its encoder thread."""
        source = open_video_file(clip)
        info = source.info
        started, count = time.perf_counter(), 0
        with VideoFileSink(out, info.fps, info.width, info.height, True, info.time_base) as sink:
            for annotated in annotate(source, auto, 8):
                sink.write(annotated)
                count += 1
        return count / (time.perf_counter() - started)

    print(f"\n## Video in and out: FFmpeg via PyAV {av_version()} (streamcam) vs OpenCV {cv2.__version__} "
          f"({frames} frames of H.264 input; ms per frame, one thread's view; end to end = defaults, fps)\n")
    print("| clip | decode OpenCV | decode PyAV | encode OpenCV mp4v (CPU) | encode PyAV H.264 (CPU) "
          "| end to end OpenCV | end to end PyAV | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for size in sizes:
            clip = Path(folder) / f"in_{size[0]}x{size[1]}.mp4"
            images = [f for f, _ in pan_frames(photo("chelsea"), size, frames)]
            pyav_encode_fps(clip, images)
            out_cv, out_av = Path(folder) / "cv.mp4", Path(folder) / "av.mp4"

            def decode_opencv() -> float:
                started, source = time.perf_counter(), opencv_source(clip)
                count = sum(1 for _ in source.frames())
                return count / (time.perf_counter() - started)

            def decode_pyav() -> float:
                return pyav_decode_fps(clip)

            def encode_opencv() -> float:
                started = time.perf_counter()
                writer = cv2.VideoWriter(str(out_cv), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, size)
                for image in images:
                    writer.write(image)
                writer.release()
                return len(images) / (time.perf_counter() - started)

            def encode_pyav() -> float:
                return pyav_encode_fps(out_av, images)

            result = interleaved({
                "decode opencv": decode_opencv, "decode pyav": decode_pyav,
                "encode opencv": encode_opencv, "encode pyav": encode_pyav,
                "e2e opencv": lambda: opencv_pipeline(clip, out_cv),
                "e2e pyav": lambda: pyav_pipeline(clip, out_av),
            }, rounds)
            ms = {k: 1000 / v for k, v in result.items()}
            cpu = {name: cpu_ms_per_frame(work, len(images)) for name, work in
                   (("opencv", encode_opencv), ("pyav", encode_pyav))}  # every thread's CPU, for the overlap
            print(f"| {size[0]}x{size[1]} | {ms['decode opencv']:.2f} | {ms['decode pyav']:.2f} "
                  f"| {ms['encode opencv']:.2f} ({cpu['opencv']:.2f} CPU) | {ms['encode pyav']:.2f} "
                  f"({cpu['pyav']:.2f} CPU) | {result['e2e opencv']:.1f} "
                  f"| {result['e2e pyav']:.1f} | {result['e2e pyav'] / result['e2e opencv']:.2f} |")


def pyav_decode_fps(clip: Path) -> float:
    """Frames per second of streamcam's reader (PyAV) over the whole clip."""
    from streamcam.video_in import open_video_file

    started, source = time.perf_counter(), open_video_file(clip)
    count = sum(1 for _ in source.frames())
    return count / (time.perf_counter() - started)


def pyav_encode_fps(path: Path, images: list[np.ndarray]) -> float:
    """Frames per second of streamcam's writer (PyAV, the default H.264) writing ``images`` at 30 fps."""
    from streamcam.video_out import VideoWriter

    started = time.perf_counter()
    writer = VideoWriter(path, images[0].shape[1], images[0].shape[0], 30.0)
    for index, image in enumerate(images):
        writer.write(image, index / 30)
    writer.close()
    return len(images) / (time.perf_counter() - started)


def cpu_ms_per_frame(work: Callable[[], float], frames: int) -> float:
    """CPU time of the whole process (all its threads) per frame while ``work`` runs."""
    started = time.process_time()
    work()
    return (time.process_time() - started) * 1000 / frames


def av_version() -> str:
    import av

    return av.__version__


def _build_seconds(options: dict) -> float:
    started = time.perf_counter()
    streamcam.Explainer(**options).prepare()
    return time.perf_counter() - started


def pytorch_grad_cam_methods(ex: streamcam.Explainer) -> dict[str, Callable]:
    try:
        from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
    except ImportError:
        return {}
    return {"GradCAM": GradCAM, "GradCAM++": GradCAMPlusPlus}


def naive_loop(explain: Callable[[np.ndarray], tuple[int, str, float, np.ndarray]], source: Path, output: Path) -> int:
    """One frame at a time, all in one thread: read -> explain -> overlay -> write."""
    capture = cv2.VideoCapture(str(source))
    fps = capture.get(cv2.CAP_PROP_FPS)
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    writer = cv2.VideoWriter(str(output), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    count = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        class_id, label, score, cam = explain(frame)
        heatmap = cv2.resize(cam, size, interpolation=cv2.INTER_LINEAR)
        heat = cv2.applyColorMap(np.clip(heatmap * 255 + 0.5, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
        image = cv2.addWeighted(frame, 0.5, heat, 0.5, 0)
        draw_predictions(image, [Prediction(class_id, label, score)])
        writer.write(image)
        count += 1
    writer.release()
    capture.release()
    return count


def explain_with_streamcam(ex: streamcam.Explainer) -> Callable:
    def explain(frame: np.ndarray) -> tuple[int, str, float, np.ndarray]:
        res = ex([frame])
        return int(res.class_ids[0, 0]), res.labels[0][0], float(res.scores[0, 0]), res.maps[0, 0].cpu().numpy()

    return explain


def explain_with_plain_torch(name: str, device: torch.device) -> Callable:
    """CAM as a user writes it without streamcam: the model as loaded (NCHW), host preprocessing, a hook."""
    loaded = streamcam.load_model(name)
    model = loaded.module.to(device)
    layer = model.get_submodule(loaded.anatomy.default_layer)
    weight = model.get_submodule(loaded.anatomy.classifier).weight
    mean, std = np.array(loaded.mean, np.float32), np.array(loaded.std, np.float32)
    captured = {}
    layer.register_forward_hook(lambda _m, _i, output: captured.update(features=output))

    def explain(frame: np.ndarray) -> tuple[int, str, float, np.ndarray]:
        rgb = cv2.cvtColor(cv2.resize(frame, (loaded.input_size,) * 2, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        x = torch.from_numpy(((rgb / np.float32(255) - mean) / std).transpose(2, 0, 1).copy())[None].to(device)
        with torch.no_grad():
            probabilities = model(x).softmax(1)[0]
            class_id = int(probabilities.argmax())
            cam = torch.einsum("k,khw->hw", weight[class_id], captured["features"][0]).relu()
            cam = (cam - cam.min()) / (cam.max() - cam.min() + 1e-7)
        return class_id, loaded.labels[class_id], float(probabilities[class_id]), cam.cpu().numpy()

    return explain


def compiled_vs_eager(ex: streamcam.Explainer, rounds: int, seconds: float, frames: int) -> None:
    """CAM on the torch engine, eager vs --compile; the first call per shape pays the compile."""
    sync = torch.cuda.synchronize if ex.device.type == "cuda" else (lambda: None)
    compiled = streamcam.Explainer(model=ex.model, device=ex.device, backend="torch", compile=True)
    batches = {b: ex.preprocess([photo("chelsea")] * b) for b in (1, 8)}
    first_call = {}
    for b, x in batches.items():
        started = time.perf_counter()
        compiled.explain_tensor(x)
        sync()
        first_call[b] = time.perf_counter() - started
    print(f"\n## Compile: CAM on torch, eager vs --compile ({compiled.engines['torch'].compiled.mode} mode)\n")
    print("| batch | eager images/s | compiled images/s | compiled / eager | first call (compiles) |")
    print("|---|---|---|---|---|")
    for b, x in batches.items():
        result = interleaved({"eager": lambda: rate(lambda: ex.explain_tensor(x), b, seconds, sync),
                              "compiled": lambda: rate(lambda: compiled.explain_tensor(x), b, seconds, sync)}, rounds)
        print(f"| {b} | {result['eager']:.1f} | {result['compiled']:.1f} | {result['compiled'] / result['eager']:.2f}x "
              f"| {first_call[b]:.1f} s |")
    with tempfile.TemporaryDirectory() as folder:
        clip, out = make_clip(folder, (640, 360), frames), Path(folder) / "out.mp4"
        pipeline_fps(compiled, clip, out)  # compiles the partial last batch's shape too
        result = interleaved({"eager": lambda: pipeline_fps(ex, clip, out),
                              "compiled": lambda: pipeline_fps(compiled, clip, out)}, rounds)
    print(f"\nPipeline on a 640x360 clip, torch engine, batch 8: eager {result['eager']:.1f} fps, "
          f"compiled {result['compiled']:.1f} fps ({result['compiled'] / result['eager']:.2f}x).")
    compiled.engines["torch"].compiled.close()


def end_to_end(ex: streamcam.Explainer, rounds: int, frames: int, sizes: list[tuple[int, int]], batch: int) -> None:
    print(f"\n## End to end: `streamcam in.mp4 -o out.mp4` vs naive loops ({frames} frames, pipeline batch {batch})\n")
    print("| clip | naive loop, plain torch | naive loop, streamcam.Explainer | streamcam pipeline | vs plain | vs Explainer |")
    print("|---|---|---|---|---|---|")
    plain = explain_with_plain_torch(ex.model_name, ex.device)
    ours = explain_with_streamcam(ex)
    with tempfile.TemporaryDirectory() as folder:
        for size in sizes:
            clip, out = make_clip(folder, size, frames), Path(folder) / "out.mp4"

            def naive(explain: Callable) -> Callable[[], float]:
                def measure() -> float:
                    started = time.perf_counter()
                    count = naive_loop(explain, clip, out)
                    return count / (time.perf_counter() - started)

                return measure

            result = interleaved({"plain": naive(plain), "explainer": naive(ours),
                                  "pipeline": lambda: pipeline_fps(ex, clip, out, batch)}, rounds)
            print(
                f"| {size[0]}x{size[1]} | {result['plain']:.1f} | {result['explainer']:.1f} | {result['pipeline']:.1f} "
                f"| {result['pipeline'] / result['plain']:.2f}x | {result['pipeline'] / result['explainer']:.2f}x |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", default=streamcam.DEFAULT_MODEL)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="per throughput measurement")
    parser.add_argument("--frames", type=int, default=150, help="frames in each end-to-end clip")
    parser.add_argument("--batch", type=int, default=8, help="pipeline batch size")
    parser.add_argument("--sizes", default="640x360,1280x720", help="clips of the e2e section")
    parser.add_argument("--stage-sizes", default="640x272,1280x720", help="clips of the stages section")
    parser.add_argument("--weights", default=None, help="for --model: a file, or 'random'")
    parser.add_argument("--sections", default="throughput,methods,backends,stages,live,defaults,compile,videoio,e2e")
    parser.add_argument("--streams", type=int, default=8, help="live streams at once in the live section")
    parser.add_argument("--live-seconds", type=float, default=10.0)
    args = parser.parse_args()
    sections = args.sections.split(",")

    ex = streamcam.Explainer(model=args.model, device=args.device, weights=args.weights, backend="torch")
    device = torch.cuda.get_device_name(ex.device) if ex.device.type == "cuda" else platform.processor() or "cpu"
    print("# streamcam benchmark\n")
    print(f"- device: {ex.device} ({device}), {torch.get_num_threads()} torch threads")
    print(f"- python {platform.python_version()}, torch {torch.__version__}, opencv {cv2.__version__}, "
          f"numpy {np.__version__}, streamcam {streamcam.__version__}")
    print(f"- model: {ex.model_name}, layer {ex.layer}, input {ex.input_size}x{ex.input_size}")
    if "throughput" in sections:
        model_throughput(ex, args.rounds, args.seconds)
    if "methods" in sections:
        method_throughput(ex, args.rounds, args.seconds)
    if "backends" in sections:
        backend_throughput(ex, args.rounds, args.seconds)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.stage_sizes.split(",")]
    if "stages" in sections:
        stage_times(ex, args.rounds, args.seconds, args.frames, sizes, args.batch)
    if "live" in sections:
        live_latency(ex, args.streams, args.live_seconds)
    if "defaults" in sections:
        defaults(args.rounds, args.seconds, args.frames, [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")])
    if "compile" in sections:
        compiled_vs_eager(ex, args.rounds, args.seconds, args.frames)
    if "videoio" in sections:
        video_io(args.rounds, args.frames, [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")])
    if "e2e" in sections:
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
        end_to_end(ex, args.rounds, args.frames, sizes, args.batch)


if __name__ == "__main__":
    main()
