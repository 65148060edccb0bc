"""One progress bar for a whole batch: frames explained, with videos done / total beside them.

Whoever explains the frames feeds it: the local runner through
:func:`~streamcam.batch.video.explain_video`'s ``progress``, the Ray runner from
its actors' reports (:meth:`BatchProgress.advance`, :meth:`BatchProgress.video_done`,
from one thread). Its total is the sum of the frame counts the videos' headers
announce, where known; it is corrected as each video ends (a header may be
wrong, a video may fail), so it is exact once the last one is done.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .inputs import FILE, VideoJob
from .video import FAILED, VideoResult

log = logging.getLogger(__name__)


class BatchProgress:
    """A tqdm bar over frames (only when ``enabled``: a terminal), with the videos' count in its postfix.

    ``expected``: each video still to explain (by input) -> the frames its header announces, or None.
    Use it as a context manager (the bar is closed at the end).
    """

    def __init__(self, expected: Mapping[str, int | None], enabled: bool = True) -> None:
        self._pending = dict(expected)
        self.videos = len(expected)
        self.done = 0
        self.failed = 0
        self.frames = 0
        self.ended: dict[str, VideoResult] = {}  # the rows of the videos that ended, by input
        self._bar: Any = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=self._remaining(), unit="frame", desc="streamcam batch", dynamic_ncols=True)
            self._show_videos()

    @property
    def total(self) -> int:
        """The frames the bar expects in all: those explained so far, and those announced by the videos still
        to end (a video being explained counts whole until it ends)."""
        return self.frames + self._remaining()

    def advance(self, frames: int = 1) -> None:
        """``frames`` more frames were explained (of any video)."""
        self.frames += frames
        if self._bar is not None:
            self._bar.update(frames)

    def video_done(self, row: VideoResult) -> None:
        """One video ended (done or failed): count it, keep its row and correct the total."""
        self._pending.pop(row.input, None)
        self.ended[row.input] = row
        self.done += 1
        self.failed += row.status == FAILED
        if row.status == FAILED:
            log.warning("%s failed: %s", row.input, row.error)
        else:
            log.info("%s: %d frames in %.1f s -> %s", row.input, row.frames, row.seconds, row.video)
        if self._bar is not None:
            self._bar.total = self.total
            self._show_videos()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> BatchProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _remaining(self) -> int:
        return sum(count or 0 for count in self._pending.values())

    def _show_videos(self) -> None:
        failed = f", {self.failed} failed" if self.failed else ""
        self._bar.set_postfix_str(f"videos {self.done}/{self.videos}{failed}")


def announced_frames(job: VideoJob) -> int | None:
    """The frame count a local video file's header announces (None if unknown, or not a local file):
    only the header is read, so asking every video of a batch up front costs little."""
    if job.kind != FILE:
        return None
    import av

    try:
        with av.open(job.target) as container:
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            if container.duration and stream.average_rate:
                return round(container.duration / 1e6 * float(stream.average_rate))
    except (av.error.FFmpegError, OSError, IndexError, ValueError) as error:
        log.debug("%s: no frame count (%s)", job.target, error)
    return None
