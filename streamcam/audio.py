"""A source's sound, handed to the video file its frames are written to.

The source's demuxer (its capture thread) puts each audio packet on the track,
with its time on the source's clock (the one the frames' timestamps use); the
writer (its encoder thread) takes the packets up to the time of the frame it is
writing, so sound and picture stay in sync and a recording cut short has sound
up to its last frame only. A track keeps little until a writer claims it, and
then at most what the decoder is ahead of the writer.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import Any

UNCLAIMED_PACKETS = 256  # about 5 s of AAC at 48 kHz

@dataclass(frozen=True, eq=False)
class AudioPacket:
    """One compressed audio packet and its start, in seconds on the source's clock."""

    packet: Any  # av.Packet
    time: float


class AudioTrack:
    """The audio packets of one source, from its demuxer to one writer."""

    def __init__(self, stream: Any, origin: float) -> None:
        self.stream = stream  # the input's av.AudioStream: codec and parameters, for the writer's own stream
        self.origin = origin  # seconds: the source's time 0 on this stream's clock
        self.claimed = False
        self._packets: collections.deque[AudioPacket] = collections.deque()
        self._lock = threading.Lock()

    @property
    def codec(self) -> str:
        return self.stream.codec_context.name

    def claim(self) -> AudioTrack:
        """A writer takes the sound: from now on packets are kept for it."""
        self.claimed = True
        return self

    def put(self, packet: Any) -> None:
        """A packet from the demuxer. Until a writer claims the track only the latest
        :data:`UNCLAIMED_PACKETS` are kept (the writer opens after the source has read ahead)."""
        if packet.pts is None or packet.time_base is None:
            return
        with self._lock:
            self._packets.append(AudioPacket(packet, float(packet.pts * packet.time_base) - self.origin))
            if not self.claimed and len(self._packets) > UNCLAIMED_PACKETS:
                self._packets.popleft()

    def take_until(self, time: float) -> list[AudioPacket]:
        """The packets that start before ``time`` (seconds), oldest first."""
        with self._lock:
            taken = []
            while self._packets and self._packets[0].time < time:
                taken.append(self._packets.popleft())
            return taken
