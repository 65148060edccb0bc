"""Label text that fits: ASCII only, sized from the space it has, shortened before it overflows.

OpenCV's Hershey fonts draw ASCII only, so every string passes through
:func:`ascii_text`. The font scale follows the smaller side of the space the text
lives in (a frame, or a tile of the multi-layer grid), never below
``MIN_SCALE``, which stays readable. Each line offers candidates, longest first
(e.g. the score with one decimal, then none, then the class name cut short with
``...``); the first that fits the width is drawn, and a line with none that fits
is left out. A block of lines never takes more than half the height (the rest
is for the heatmap, at least one line where one fits); when lines must go, the
lowest priority goes first. :func:`plan_block` returns the layout, so tests can
check it; :func:`draw_block` draws it.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX
MIN_SCALE = 0.4  # about 11 px capitals: the smallest text that stays readable
ELLIPSIS = "..."
_WHITE = (255, 255, 255)
_BLACK = (0, 0, 0)
_METRICS_SAMPLE = "Ag|()[]_jpqy"  # tallest and deepest glyphs: one line height for every text


@dataclass(frozen=True)
class Line:
    """One line to place: its candidate texts, preferred first, and its priority (lower stays longer)."""

    candidates: tuple[str, ...]
    priority: int = 0


@dataclass(frozen=True)
class TextPlacement:
    """One line as drawn: ``cv2.putText(image, text, origin, FONT, scale, white, thickness)`` on a dark box."""

    text: str
    origin: tuple[int, int]  # putText's origin: left end of the baseline, in the image's pixels
    scale: float
    thickness: int
    box: tuple[int, int, int, int]  # the dark background x0, y0, x1, y1 (exclusive); the text lies inside


def ascii_text(text: str) -> str:
    """``text`` in printable ASCII: accents dropped (é -> e), anything else becomes ``?``."""
    out = []
    for char in unicodedata.normalize("NFKD", text):
        if " " <= char <= "~":
            out.append(char)
        elif char in "\t\n\r":
            out.append(" ")
        elif not unicodedata.combining(char):
            out.append("?")
    return "".join(out)


def text_style(height: int, width: int) -> tuple[float, int]:
    """Font scale and thickness for text in a ``height`` x ``width`` space: 1.0 at 720 px, never below MIN_SCALE."""
    scale = max(MIN_SCALE, min(height, width) / 720)
    return scale, max(1, round(scale * 1.5))


def line_height(scale: float, thickness: int) -> int:
    """Height of one line with its dark box (text, descenders and padding)."""
    (_, ascent), descent = cv2.getTextSize(_METRICS_SAMPLE, FONT, scale, thickness)
    return ascent + descent + 2 * _padding(scale)


def fit(candidates: Sequence[str], width: int, scale: float, thickness: int) -> str | None:
    """The first candidate (made ASCII) whose dark box fits in ``width`` pixels, or None."""
    room = width - 2 * _padding(scale)
    for candidate in candidates:
        text = ascii_text(candidate)
        if text and cv2.getTextSize(text, FONT, scale, thickness)[0][0] <= room:
            return text
    return None


def cut_end(text: str) -> Iterator[str]:
    """``text`` cut ever shorter at its end, with an ellipsis: "bow ti...", "bow t...", ..., "b..."."""
    for keep in range(len(text) - 1, 0, -1):
        yield text[:keep].rstrip() + ELLIPSIS


def cut_start(text: str) -> Iterator[str]:
    """``text`` cut ever shorter at its start, with an ellipsis, keeping the end: "...cks.2", "...ks.2", ..."""
    for keep in range(len(text) - 1, 0, -1):
        yield ELLIPSIS + text[-keep:].lstrip()


def prediction_line(label: str, score: float, mark: str = "", priority: int = 0) -> Line:
    """A class and its score: "label  87.3%", then "label 87%", then the label cut short."""
    percent = f"{score * 100:.0f}%"
    return Line(
        (f"{mark}{label}  {score * 100:.1f}%", f"{mark}{label} {percent}",
         *(f"{mark}{short} {percent}" for short in cut_end(label))),
        priority,
    )


def name_line(name: str, priority: int = 0) -> Line:
    """A layer's name, cut at its start when it must be (the end tells stages apart: "...blocks.5")."""
    return Line((name, *cut_start(name)), priority)


def plan_block(lines: Sequence[Line], height: int, width: int, right: bool = False,
               top: int | None = None) -> list[TextPlacement]:
    """Where each line goes in a ``height`` x ``width`` space: stacked from ``top`` (default 0), left or right aligned.

    Lines keep their order; those that fit no candidate are left out, then the
    lowest priorities until the block takes at most half the height (or one
    line, where one fits in the space at all).
    """
    scale, thickness = text_style(height, width)
    step = line_height(scale, thickness)
    start = 0 if top is None else max(0, top)
    room = min(height - start, max(height // 2, step)) // step
    fitted = [(line.priority, index, text) for index, line in enumerate(lines)
              if (text := fit(line.candidates, width, scale, thickness)) is not None]
    kept = sorted(sorted(fitted)[: max(0, room)], key=lambda item: item[1])
    return [_place(text, start + row * step, width, scale, thickness, right) for row, (_, _, text) in enumerate(kept)]


def draw_block(image: np.ndarray, placements: Sequence[TextPlacement]) -> None:
    """Draw planned lines in place, white on their dark boxes."""
    for placed in placements:
        x0, y0, x1, y1 = placed.box
        cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), _BLACK, cv2.FILLED)
        cv2.putText(image, placed.text, placed.origin, FONT, placed.scale, _WHITE, placed.thickness, cv2.LINE_AA)


def _padding(scale: float) -> int:
    return max(2, round(4 * scale))


def _place(text: str, top: int, width: int, scale: float, thickness: int, right: bool) -> TextPlacement:
    (text_w, _), _ = cv2.getTextSize(text, FONT, scale, thickness)
    (_, ascent), _ = cv2.getTextSize(_METRICS_SAMPLE, FONT, scale, thickness)
    pad = _padding(scale)
    left = width - text_w - 2 * pad if right else 0
    box = (left, top, left + text_w + 2 * pad, top + line_height(scale, thickness))
    return TextPlacement(text, (left + pad, top + pad + ascent), scale, thickness, box)
