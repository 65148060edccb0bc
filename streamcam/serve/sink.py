"""The sink that feeds the browser view: every annotated frame to the :class:`FrameHub`, served by :class:`Server`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ..controls import LiveControls
from ..options import parse_address
from ..sinks import Sink
from ..types import AnnotatedFrame
from .hub import FrameHub


class ServeSink(Sink):
    """Serves the run at ``address`` (``HOST:PORT``): one video tile per source of ``source_ids``, in that order.

    Opens eagerly: the server listens (or a busy port fails) before frame 1, and the
    URL (with the token, if any) is printed. ``write`` encodes the frame once in the
    caller's thread and never waits for a viewer. The run hands it its live controls
    (:attr:`controls`), as it does the window's.
    """

    def __init__(self, address: str, source_ids: Sequence[str], token: str | None = None,
                 controls: LiveControls | None = None) -> None:
        from .server import Server  # aiohttp: only for --serve

        host, port = parse_address(address)
        self.hub = FrameHub(source_ids)
        self.server = Server(self.hub, host, port, token, controls)
        self.server.start()
        print(f"streamcam: watch it at {self.server.url}", file=sys.stderr, flush=True)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def controls(self) -> LiveControls | None:
        return self.server.controls

    @controls.setter
    def controls(self, controls: LiveControls | None) -> None:
        self.server.controls = controls

    def write(self, annotated: AnnotatedFrame) -> None:
        self.hub.publish(annotated)

    def close(self) -> None:
        self.server.stop()
