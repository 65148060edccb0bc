"""The built-in demo: a short clip made at run time from real photos that ship with scikit-image.

A cat (``skimage.data.chelsea``) and then an espresso (``skimage.data.coffee``)
slide across a plain background; streamcam explains the clip like any other.
The same helpers make the test videos.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator, Sequence
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


def write_photo_folder(root: Path, names: Sequence[str] = ("chelsea", "coffee", "astronaut"), per_class: int = 30,
                       sizes: tuple[int, int] = (64, 96), seed: int = 0) -> list[Path]:
    """An image folder for training (one subfolder per photo, named after it) of ``per_class`` images each.

    Each image, of a random size within ``sizes`` (pixels a side), is a random crop of the photo (40-100 % of
    its height) pasted at a random place and scale (45-85 % of the image's height) on a plain, noisy or graded
    background; PNG and JPEG alternate. Returns the class folders.
    """
    rng = np.random.default_rng(seed)
    folders = []
    for name in names:
        source, folder = photo(name), root / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            height, width = rng.integers(sizes[0], sizes[1] + 1, size=2)
            canvas = _background(rng, int(height), int(width))
            crop_h = int(source.shape[0] * rng.uniform(0.4, 1.0))
            crop_w = min(source.shape[1], int(crop_h * rng.uniform(0.8, 1.3)))
            y, x = rng.integers(0, source.shape[0] - crop_h + 1), rng.integers(0, source.shape[1] - crop_w + 1)
            paste_h = max(8, int(height * rng.uniform(0.45, 0.85)))
            paste_w = min(int(width), max(8, round(crop_w * paste_h / crop_h)))
            crop = cv2.resize(source[y : y + crop_h, x : x + crop_w], (paste_w, paste_h), interpolation=cv2.INTER_AREA)
            top, left = rng.integers(0, height - paste_h + 1), rng.integers(0, width - paste_w + 1)
            canvas[top : top + paste_h, left : left + paste_w] = crop
            cv2.imwrite(str(folder / f"{name}_{index:03d}.{('png', 'jpg')[index % 2]}"), canvas)
        folders.append(folder)
    return folders


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A plain colour, uniform noise around a colour, or a gradient between two colours: H x W x 3 uint8."""
    kind = rng.integers(3)
    base = rng.integers(0, 256, size=3)
    if kind == 0:
        return np.broadcast_to(base, (height, width, 3)).astype(np.uint8)
    if kind == 1:
        return np.clip(base + rng.normal(0, 40, size=(height, width, 3)), 0, 255).astype(np.uint8)
    ramp = np.linspace(0.0, 1.0, width)[None, :, None]
    return np.broadcast_to(base * (1 - ramp) + rng.integers(0, 256, size=3) * ramp, (height, width, 3)).astype(np.uint8)
