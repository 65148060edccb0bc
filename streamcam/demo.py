"""The built-in demo: a short clip made at run time from real photos that ship with scikit-image.

A cat (``skimage.data.chelsea``) and then an espresso (``skimage.data.coffee``)
slide across a plain background; streamcam explains the clip like any other.
The same helpers make the test videos.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from .phases import phase

DEMO_OUTPUT = "streamcam-demo.mp4"
DEMO_SIZE = (640, 360)  # width, height
DEMO_FPS = 25.0
BACKGROUND = 128


def photo(name: str) -> np.ndarray:
    """A photo shipped inside scikit-image (e.g. "chelsea", "coffee"), as H x W x 3 uint8 BGR."""
    from skimage import data

    return cv2.cvtColor(getattr(data, name)(), cv2.COLOR_RGB2BGR)


def pan_frames(image: np.ndarray, size: tuple[int, int], count: int, height_fraction: float = 0.7,
               reverse: bool = False) -> Iterator[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """Slide ``image`` across a plain canvas of ``size`` (w, h) in ``count`` steps.

    Yields each frame and the photo's box (x0, y0, x1, y1) in it.
    """
    width, height = size
    photo_h = max(1, round(height * height_fraction))
    photo_w = min(width, max(1, round(image.shape[1] * photo_h / image.shape[0])))
    resized = cv2.resize(image, (photo_w, photo_h), interpolation=cv2.INTER_AREA)
    y0 = (height - photo_h) // 2
    for step in range(count):
        t = step / max(1, count - 1)
        x0 = round((1 - t if reverse else t) * (width - photo_w))
        canvas = np.full((height, width, 3), BACKGROUND, np.uint8)
        canvas[y0 : y0 + photo_h, x0 : x0 + photo_w] = resized
        yield canvas, (x0, y0, x0 + photo_w, y0 + photo_h)


def write_clip(path: Path, frames: Iterable[np.ndarray], fps: float) -> int:
    """Write frames to an mp4 (mp4v) file at ``fps``; returns the number written."""
    writer = None
    count = 0
    try:
        for frame in frames:
            if writer is None:
                size = (frame.shape[1], frame.shape[0])
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), size)
            writer.write(frame)
            count += 1
    finally:
        if writer is not None:
            writer.release()
    return count


def make_demo_clip(path: Path, frames_per_photo: int = 40) -> Path:
    """The demo's input: the cat slides right, then the espresso slides back."""
    cat = (f for f, _ in pan_frames(photo("chelsea"), DEMO_SIZE, frames_per_photo))
    espresso = (f for f, _ in pan_frames(photo("coffee"), DEMO_SIZE, frames_per_photo, reverse=True))
    write_clip(path, (*cat, *espresso), DEMO_FPS)
    return path


@contextmanager
def demo_input() -> Iterator[Path]:
    """Make the demo clip in a temporary folder that is removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="streamcam-demo-") as folder:
        with phase("making the demo clip from scikit-image's photos"):
            clip = make_demo_clip(Path(folder) / "demo-input.mp4")
        yield clip
