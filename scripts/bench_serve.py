"""``--serve`` measured: the pipeline's fps with 0, 1 and 10 viewers side by side, and the latency from capture to a
browser showing the frame.

**fps**: the default model on a 640x360 clip read as fast as it decodes (``streamcam in.mp4 --serve``), once per
viewer count per round, the counts alternating; the first frame is held until every viewer is connected, and fps is
taken over the second half of the frames (steady state: what queued while held is long gone). Viewers live in another process and speak the page's protocol (``/video/0``: answer
each frame as soon as it arrives, as a browser on another machine would once shown) or read MJPEG (``--mjpeg``).
They run on this machine's cores too, so the cost they show is an upper bound of what remote browsers cost.

**latency**: a live 640x360 source at 30 fps (frames captured at their own pace, the newest kept) watched by headless
Chromium (the system's, through Selenium, when present) and by a protocol client, for ``--seconds`` each: the
server's capture-to-shown latency of every frame a viewer answered (median, p95), beside capture-to-publish; frames
captured in the first second after the viewer connected are left out (the start, not the steady state).

    python scripts/bench_serve.py [--rounds 3] [--frames 600] [--viewers 0,1,10] [--seconds 10] [--mjpeg]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import streamcam
from streamcam.demo import pan_frames, photo
from streamcam.serve.hub import FrameHub
from streamcam.sources import Source
from streamcam.types import Frame, VideoInfo

SIZE = (640, 360)
SETTLE_S = 1.0  # latencies count from frames captured this long after the first was let through


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_clip(path: Path, frames: int) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, SIZE)
    for image, _ in pan_frames(photo("chelsea"), SIZE, frames):
        writer.write(image)
    writer.release()
    return path


# --- viewers, in their own process -------------------------------------------------------------------------------


def viewers_process(port: int, count: int, mjpeg: bool, stop: multiprocessing.Event) -> None:
    asyncio.run(_viewers(port, count, mjpeg, stop))


async def _viewers(port: int, count: int, mjpeg: bool, stop: multiprocessing.Event) -> None:
    import aiohttp

    base = f"http://127.0.0.1:{port}/"

    async def protocol_viewer(session: aiohttp.ClientSession) -> None:
        async with session.ws_connect(base + "video/0", max_msg_size=0) as ws:
            async for message in ws:  # a length, that much JSON header, the JPEG: answer its sequence at once
                if message.type == aiohttp.WSMsgType.BINARY:
                    length = int.from_bytes(message.data[:4], "big")
                    await ws.send_str(str(json.loads(message.data[4:4 + length])["sequence"]))

    async def mjpeg_viewer(session: aiohttp.ClientSession) -> None:
        async with session.get(base + "stream/0.mjpg") as response:
            while await response.content.read(1 << 16):
                pass

    async with aiohttp.ClientSession() as session:
        for _ in range(600):  # the server comes up once the model is ready
            try:
                async with session.get(base + "api/state"):
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
        tasks = [asyncio.ensure_future((mjpeg_viewer if mjpeg else protocol_viewer)(session)) for _ in range(count)]
        while not stop.is_set() and not all(t.done() for t in tasks):
            await asyncio.sleep(0.1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# --- what the hub sees ---------------------------------------------------------------------------------------------


class Watch:
    """Wraps the hub: holds the first frame until ``wanted`` viewers are connected; notes when each frame is published,
    its capture-to-publish latency, and the capture-to-shown latency of each answered frame."""

    def __init__(self) -> None:
        self.reset(0)
        publish, shown = FrameHub.publish, FrameHub.shown
        watch = self

        def watched_publish(hub: FrameHub, annotated) -> None:
            if watch.opened is None:
                deadline = time.monotonic() + 60
                while hub.viewers(0) < watch.wanted and time.monotonic() < deadline:
                    time.sleep(0.01)
                if hub.viewers(0) < watch.wanted:
                    raise RuntimeError(f"only {hub.viewers(0)} of {watch.wanted} viewers connected")
                watch.opened = time.monotonic()
                watch.server = next(t.native_id for t in threading.enumerate() if t.name == "streamcam-serve")
            publish(hub, annotated)
            now = time.monotonic()
            watch.published.append(now)
            watch.cpu.append(time.process_time())
            watch.server_cpu.append(thread_cpu(watch.server))
            if annotated.frame.captured_at > watch.opened + SETTLE_S:
                watch.to_publish.append(now - annotated.frame.captured_at)

        def watched_shown(hub: FrameHub, viewer, frame) -> float:
            latency = shown(hub, viewer, frame)
            if frame.captured_at > watch.opened + SETTLE_S:
                watch.to_shown.append(latency)
            return latency

        FrameHub.publish, FrameHub.shown = watched_publish, watched_shown

    def reset(self, wanted: int) -> None:
        self.wanted = wanted
        self.opened: float | None = None  # when the first frame was let through
        self.published, self.to_publish, self.to_shown = [], [], []
        self.cpu: list[float] = []  # this process's CPU seconds at each publish (all threads)
        self.server_cpu: list[float] = []  # the web server thread's CPU seconds at each publish
        self.server: int | None = None  # the web server thread's id


def thread_cpu(native_id: int | None) -> float:
    """CPU seconds (user + system) thread ``native_id`` of this process has used (Linux: /proc)."""
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fps_with_viewers(clip: Path, explainer, viewers: int, mjpeg: bool, watch: Watch) -> tuple[float, float, float]:
    """fps, and CPU ms per frame of the whole process and of its web server thread, over the steady-state half."""
    port = free_port()
    watch.reset(viewers)
    stop = multiprocessing.Event()
    process = multiprocessing.Process(target=viewers_process, args=(port, viewers, mjpeg, stop), daemon=True)
    process.start()
    try:
        streamcam.run(str(clip), display=False, explainer=explainer, serve=f"127.0.0.1:{port}")
    finally:
        stop.set()
        process.join(10)
    half = len(watch.published) // 2  # steady state: the queues filled while held are long gone
    frames = len(watch.published) - half - 1

    def per_frame(samples: list[float]) -> float:
        return (samples[-1] - samples[half]) / frames

    return 1 / per_frame(watch.published), 1000 * per_frame(watch.cpu), 1000 * per_frame(watch.server_cpu)


# --- latency: a live source ----------------------------------------------------------------------------------------


class PacedCamera(Source):
    """A live 640x360 source at ``fps``: the cat panning, each frame captured at its own time, for ``seconds``."""

    def __init__(self, fps: float = 30.0, seconds: float = 10.0) -> None:
        self.count = round(fps * seconds)
        self.images = [image for image, _ in pan_frames(photo("chelsea"), SIZE, 60)]
        self.info = VideoInfo("camera (simulated, 30 fps)", SIZE[0], SIZE[1], fps, None, live=True)

    def frames(self) -> Iterator[Frame]:
        started = time.monotonic()
        for index in range(self.count):
            due = started + index / self.info.fps
            time.sleep(max(0.0, due - time.monotonic()))
            if self._stopping.is_set():
                return
            yield Frame(index, index / self.info.fps, time.monotonic(), self.images[index % len(self.images)],
                        self.info.source_id)


def serve_live(explainer, seconds: float, viewer, view=None) -> None:
    """Run the paced camera with --serve (drawn as ``view`` says) while ``viewer(base_url)`` watches, in a thread."""
    from streamcam.config import ViewOptions
    from streamcam.engine.pipeline import annotate, live_controls
    from streamcam.serve.sink import ServeSink

    view = view or ViewOptions()
    port = free_port()
    camera = PacedCamera(seconds=seconds)
    sink = ServeSink(f"127.0.0.1:{port}", [camera.info.source_id])
    sink.controls = live_controls(explainer, view)
    watching = threading.Thread(target=viewer, args=(f"http://127.0.0.1:{port}/",), daemon=True)
    watching.start()
    try:
        for annotated in annotate(camera, explainer, batch=1, view=view, controls=sink.controls):
            sink.write(annotated)
    finally:
        sink.close()
        watching.join(10)


def headless_chromium(width: int = 1280, height: int = 900):
    """The system's Chromium and driver, headless, through Selenium (nothing downloaded)."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={width},{height}"):
        options.add_argument(argument)
    return webdriver.Chrome(service=webdriver.ChromeService(shutil.which("chromedriver")), options=options)


def chromium_viewer(seconds: float):
    def watch(base: str) -> None:
        browser = headless_chromium()
        try:
            browser.get(base)
            time.sleep(seconds + 2)
        finally:
            browser.quit()

    return watch


def protocol_viewer(base: str) -> None:
    stop = multiprocessing.Event()
    port = int(base.rsplit(":", 1)[1].strip("/"))
    asyncio.run(_viewers(port, 1, False, stop))


def percentiles(values: list[float]) -> str:
    ms = sorted(1000 * v for v in values)
    if not ms:
        return "no frames"
    return f"median {statistics.median(ms):.0f} ms, p95 {ms[int(0.95 * (len(ms) - 1))]:.0f} ms ({len(ms)} frames)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--viewers", default="0,1,10")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--mjpeg", action="store_true", help="viewers read the MJPEG stream instead")
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()
    counts = [int(n) for n in args.viewers.split(",")]

    import torch

    print(f"streamcam {streamcam.__version__}, torch {torch.__version__}, python {sys.version.split()[0]}, "
          f"{multiprocessing.cpu_count()} cores", flush=True)
    explainer = streamcam.Explainer(device="cpu").prepare()
    watch = Watch()
    with tempfile.TemporaryDirectory() as folder:
        clip = make_clip(Path(folder) / "clip.avi", args.frames)
        fps_with_viewers(clip, explainer, 0, args.mjpeg, watch)  # warm-up
        results: dict[int, list[tuple[float, float, float]]] = {n: [] for n in counts}
        for round_ in range(args.rounds):
            for n in counts if round_ % 2 == 0 else counts[::-1]:
                results[n].append(fps_with_viewers(clip, explainer, n, args.mjpeg, watch))
                fps, cpu, server = results[n][-1]
                print(f"  round {round_ + 1}: {n} viewers {fps:.2f} fps, CPU {cpu:.2f} ms/frame "
                      f"(server thread {server:.2f})", flush=True)
    kind = "MJPEG readers" if args.mjpeg else "protocol viewers (answer each frame on arrival)"
    print(f"\n{args.frames} frames of 640x360, median of {args.rounds} rounds, {kind}; the ratio within each "
          "round (its runs are seconds apart), then the median: robust to a busy spell")
    base = results[counts[0]]
    for n in counts:
        fps_ratio = statistics.median(a[0] / b[0] for a, b in zip(results[n], base))
        cpu_ratio = statistics.median(a[1] / b[1] for a, b in zip(results[n], base))
        fps, cpu, server = (statistics.median(r[i] for r in results[n]) for i in range(3))
        print(f"  {n:>2} viewers: {fps:6.2f} fps ({fps_ratio:.3f}x of {counts[0]}), CPU {cpu:.2f} ms/frame "
              f"({cpu_ratio:.3f}x), of which the web server thread {server:.2f} ms")

    if args.skip_latency:
        return
    print(f"\nlatency, a live 640x360 source at 30 fps for {args.seconds:.0f} s:")
    viewers = [("protocol client", protocol_viewer)]
    if shutil.which("chromium") and shutil.which("chromedriver"):
        viewers.insert(0, ("headless Chromium", chromium_viewer(args.seconds)))
    for name, viewer in viewers:
        watch.reset(1)
        serve_live(explainer, args.seconds, viewer)
        print(f"  {name}: capture to shown {percentiles(watch.to_shown)}; "
              f"capture to publish {percentiles(watch.to_publish)}", flush=True)


if __name__ == "__main__":
    main()
