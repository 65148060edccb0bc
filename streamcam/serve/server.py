"""The web server of ``--serve``: the page, one MJPEG stream per source, PNG snapshots, the state, and a
WebSocket that pushes records and takes live controls.

Built on aiohttp: one well-kept library gives the HTTP server, streaming
responses and WebSockets, with no separate ASGI server to run and configure.
Its event loop runs in a background thread; the pipeline only ever touches the
:class:`~streamcam.serve.hub.FrameHub`, whose publishing never waits for a viewer.

Routes (every one needs the token when there is one: ``?token=`` or ``Authorization: Bearer``;
missing 401, wrong 403; without a token, the Host header must be a loopback name; a WebSocket's Origin,
when sent, must be this server):

- ``GET /``: the page; ``GET /static/NAME``: a file of the package's ``serve/static`` folder, nothing else.
- ``/video/I``: source I over a WebSocket, the page's own transport. Each frame is one binary message: a 4-byte
  big-endian length, that many bytes of JSON ``{"sequence": N, "latency_ms": x, "skipped": n, "caption": {...}}``
  (this browser's capture-to-browser latency for the last frame it showed, the frames it skipped, and what this
  frame says: its index, method and predictions, so the page lists what it shows), then the JPEG. The next
  frame goes only once the browser has answered ``N`` (a text message, sent when the frame is shown). So a browser
  holds at most one frame in flight, never a queue, and its answer gives the true capture-to-browser latency on
  the server's own clock.
- ``GET /stream/I.mjpg``: source I as ``multipart/x-mixed-replace`` JPEG parts, from the viewer's own slot
  (for ``<img>``, VLC, ffplay: no acknowledgement, so TCP's buffers are its only flow control).
- ``GET /snapshot/I.png``: source I's latest annotated frame.
- ``GET /api/state``: ``{"sources": [HUD values...], "controls": {...} | null}``.
- ``/ws``: pushes ``{"type": "state", ...}`` on connect, then ``{"type": "record", "source": I, ...HUD values}``
  at most ``RECORDS_PER_S`` times a second per source; takes ``{"method": "gradcam"}``, ``{"class_index": 1}``,
  ``{"grid": true}``, ``{"alpha": 0.3}``, ``{"boxes": false}`` (or several keys at once), answered with
  ``{"type": "controls", ...}`` to every client, or ``{"type": "error", "message": ...}`` (nothing applied).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import ipaddress
import json
import logging
import re
import secrets
import threading
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from importlib import resources
from socket import gethostname
from typing import Any

import cv2
from aiohttp import WSMsgType, web

from ..controls import LiveControls
from ..errors import InputError
from .address import cannot_serve
from .hub import FrameHub, Published, Viewer

log = logging.getLogger(__name__)

BOUNDARY = "streamcamframe"
RECORDS_PER_S = 10
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
CLOSE_GRACE_S = 0.5  # when the run ends, how long a viewer has to answer the close before it is cut off
STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".png": "image/png",
                ".svg": "image/svg+xml", ".ico": "image/x-icon"}
_STATIC_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")  # no "/", no leading ".": nothing outside the folder


def is_loopback(host: str) -> bool:
    """Whether ``host`` only reaches this machine (``localhost``, 127.0.0.0/8, ::1); any other name: no."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _hostname(host: str) -> str:
    """``127.0.0.1:8080`` -> ``127.0.0.1``, ``[::1]:8080`` -> ``::1``."""
    return urllib.parse.urlsplit("//" + host).hostname or ""


def _gone() -> web.Response:
    """What a handler returns when its viewer left before the response began: aiohttp wants a response it can still
    begin (this one goes nowhere, quietly); an unbegun stream or socket would be logged as an error."""
    return web.Response(status=499, reason="Client Closed Request")


def static_files() -> dict[str, bytes]:
    """The page's files, by name, read once from the package (``streamcam/serve/static``)."""
    folder = resources.files("streamcam.serve") / "static"
    return {item.name: item.read_bytes() for item in folder.iterdir()
            if item.is_file() and _STATIC_NAME.fullmatch(item.name)}


class Server:
    """The web server on ``host``:``port`` (port 0: a free one), serving ``hub`` and ``controls``.

    ``token``: what every request must carry; None on loopback means none, and off
    loopback a token is generated (:attr:`token`). :meth:`start` binds (a busy port
    raises :class:`InputError`) and returns once it listens; :meth:`stop` closes
    every connection and ends the thread.
    """

    def __init__(self, hub: FrameHub, host: str = "127.0.0.1", port: int = 8080, token: str | None = None,
                 controls: LiveControls | None = None) -> None:
        self.hub = hub
        self.host = host
        self.port = port
        self.token = token if token is not None or is_loopback(host) else secrets.token_urlsafe(24)
        self.controls = controls
        self.files = static_files()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._sockets: set[web.WebSocketResponse] = set()  # the /ws sockets: each control change goes to all
        # every open stream and socket and its connection, to close (or cut off, if stalled) when the run ends
        self._connections: dict[web.StreamResponse, asyncio.BaseTransport | None] = {}
        self._closing: asyncio.Event | None = None

    @property
    def url(self) -> str:
        """Where to browse: on every address (0.0.0.0, ::), by this machine's name, which others can reach."""
        host = gethostname() if self.host in ("0.0.0.0", "::", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    def start(self) -> None:
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = self._loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(self._open())
            except BaseException as error:  # noqa: BLE001 - raised in start()
                failure.append(error)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._close())
                loop.close()

        self._thread = threading.Thread(target=serve, name="streamcam-serve", daemon=True)
        self._thread.start()
        if not started.wait(START_TIMEOUT_S):
            raise InputError(f"--serve {self.host}:{self.port}: the server did not start")
        if failure:
            error = failure[0]
            if isinstance(error, OSError):
                raise cannot_serve(self.host, self.port, error) from error
            raise error

    def stop(self) -> None:
        """Close every stream and socket, stop listening, end the thread; safe to call twice."""
        if self._thread is None or self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # a loop already closed
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(STOP_TIMEOUT_S)
        self._thread = None

    async def _open(self) -> None:
        self._closing = asyncio.Event()
        app = web.Application(middlewares=[self._authorised])
        app.router.add_get("/", self._page)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get(r"/video/{source:\d+}", self._video)
        app.router.add_get(r"/stream/{source:\d+}.mjpg", self._stream)
        app.router.add_get(r"/snapshot/{source:\d+}.png", self._snapshot)
        app.router.add_get("/api/state", self._state)
        app.router.add_get("/ws", self._websocket)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:  # the free port the system chose
            self.port = self._runner.addresses[0][1]

    async def _close(self) -> None:
        assert self._closing is not None and self._runner is not None
        self._closing.set()  # streams end their loops
        sockets = [c for c in self._connections if isinstance(c, web.WebSocketResponse)]
        if sockets:  # a polite close, a short wait for the answers...
            await asyncio.wait([asyncio.ensure_future(socket.close()) for socket in sockets], timeout=CLOSE_GRACE_S)
        for transport in list(self._connections.values()):  # ...then cut off whoever stalled (a full socket)
            if transport is not None:
                transport.abort()
        await self._runner.cleanup()

    @web.middleware
    async def _authorised(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Every route needs the token, when there is one: 401 without it, 403 with a wrong one.

        Without one (loopback), the request must name a loopback host (a DNS-rebinding page names its own),
        and a WebSocket must come from this server's own page (another site's script would send its Origin).
        """
        if self.token is None and not is_loopback(_hostname(request.host)):
            raise web.HTTPForbidden(text="ask for this server as 127.0.0.1 or localhost")
        origin = request.headers.get("Origin")
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if upgrade and origin is not None and urllib.parse.urlsplit(origin).netloc != request.host:
            raise web.HTTPForbidden(text="a WebSocket from another site's page")
        if self.token is not None:
            given = request.query.get("token")
            header = request.headers.get("Authorization", "")
            if given is None and header.startswith("Bearer "):
                given = header.removeprefix("Bearer ").strip()
            if given is None:
                raise web.HTTPUnauthorized(text="this server needs its token: ?token=... or Authorization: Bearer")
            if not secrets.compare_digest(given.encode(), self.token.encode()):
                raise web.HTTPForbidden(text="wrong token")
        response = await handler(request)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    async def _page(self, request: web.Request) -> web.Response:
        page = self.files["index.html"]
        if self.token is not None:  # the script's own request carries the token too (the page's JS adds it to the rest)
            query = html.escape("?token=" + urllib.parse.quote(self.token, safe=""))
            page = page.replace(b'src="static/app.js"', f'src="static/app.js{query}"'.encode())
        return web.Response(body=page, content_type="text/html", charset="utf-8")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.files:  # only the folder's own files, by exact name: no listing, no "..", no other path
            raise web.HTTPNotFound()
        suffix = name[name.rfind("."):] if "." in name else ""
        return web.Response(body=self.files[name], content_type=STATIC_TYPES.get(suffix, "application/octet-stream"))

    def _source(self, request: web.Request) -> int:
        source = int(request.match_info["source"])
        if source >= len(self.hub.source_ids):
            raise web.HTTPNotFound(text=f"no source {source}: there are {len(self.hub.source_ids)}")
        return source

    @contextlib.contextmanager
    def _connected(self, response: web.StreamResponse, request: web.Request) -> Iterator[None]:
        """Known as open (with its connection) while the body runs: closed, or cut off, when the server stops."""
        self._connections[response] = request.transport
        try:
            yield
        finally:
            self._connections.pop(response, None)

    async def _frames(self, source: int) -> AsyncIterator[tuple[Viewer, Published]]:
        """The frames of ``source`` for one viewer, from its own slot, each when it is ready for one
        (what it missed meanwhile is skipped); ends when the server closes. Subscribed for as long as it runs."""
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        viewer = self.hub.subscribe(source, lambda: loop.call_soon_threadsafe(ready.set))
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            while not self._closing.is_set():
                waiting = asyncio.ensure_future(ready.wait())
                await asyncio.wait([waiting, closing], return_when=asyncio.FIRST_COMPLETED)
                waiting.cancel()
                ready.clear()
                frame = viewer.take()
                if frame is not None:
                    yield viewer, frame
        finally:
            closing.cancel()
            self.hub.unsubscribe(viewer)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        """MJPEG: each frame this viewer's slot holds when it is ready for one; what it missed is skipped."""
        source = self._source(request)
        response = web.StreamResponse(headers={
            "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}", "Cache-Control": "no-store"})
        frames = self._frames(source)
        try:
            await response.prepare(request)
            with self._connected(response, request):
                async for _, frame in frames:
                    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(frame.jpeg)}\r\n\r\n"
                    await response.write(head.encode() + frame.jpeg + b"\r\n")  # waits for this viewer only
        except ConnectionError:
            pass  # the viewer left, or the server cut it off
        finally:
            await frames.aclose()
        return response if response.prepared else _gone()

    async def _video(self, request: web.Request) -> web.WebSocketResponse:
        """Frames as binary WebSocket messages, the next one only once the browser has shown the last."""
        source = self._source(request)
        socket = web.WebSocketResponse(max_msg_size=1 << 16)  # no heartbeat: a paused source sends nothing for long
        frames = self._frames(source)
        try:
            await socket.prepare(request)
            with self._connected(socket, request):
                await self._send_frames(socket, frames)
        except ConnectionError:
            pass  # the viewer left, or the server cut it off
        finally:
            await frames.aclose()
            if socket.prepared:
                with contextlib.suppress(ConnectionError):
                    await socket.close()
        return socket if socket.prepared else _gone()

    async def _send_frames(self, socket: web.WebSocketResponse,
                           frames: AsyncIterator[tuple[Viewer, Published]]) -> None:
        """Each frame (its header and JPEG, one message), then the browser's answer, before the next; a wrong answer
        ends it."""
        async for viewer, frame in frames:
            latency_ms = None if viewer.latency is None else round(viewer.latency * 1000, 1)
            # this viewer's fields, then the frame's caption spliced in as it was encoded once for every viewer
            header = json.dumps({"sequence": frame.sequence, "latency_ms": latency_ms,
                                 "skipped": viewer.skipped}).encode()[:-1] + b', "caption": ' + frame.caption + b"}"
            await socket.send_bytes(len(header).to_bytes(4, "big") + header + frame.jpeg)
            answer = await socket.receive()  # the browser's acknowledgement, or its leaving
            if answer.type != WSMsgType.TEXT or answer.data.strip() != str(frame.sequence):
                break  # closed, or not speaking this protocol
            self.hub.shown(viewer, frame)

    async def _snapshot(self, request: web.Request) -> web.Response:
        source = self._source(request)
        latest = self.hub.latest(source)
        if latest is None:
            raise web.HTTPNotFound(text="no frame yet")
        ok, data = await asyncio.get_running_loop().run_in_executor(None, cv2.imencode, ".png", latest.image)
        if not ok:
            raise web.HTTPInternalServerError(text="cannot encode the frame as PNG")
        name = f"streamcam-{source}-{latest.sequence}.png"
        return web.Response(body=data.tobytes(), content_type="image/png",
                            headers={"Content-Disposition": f'inline; filename="{name}"'})

    def state(self) -> dict[str, Any]:
        """``{"sources": [...], "controls": {...} | None}``: what ``/api/state`` and the WebSocket's first message say."""
        return {"sources": self.hub.stats(), "controls": self.controls.snapshot() if self.controls else None}

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(heartbeat=20.0)
        await socket.prepare(request)
        self._sockets.add(socket)
        pusher = asyncio.ensure_future(self._push_records(socket))
        try:
            with self._connected(socket, request):
                await socket.send_json({"type": "state", **self.state()})
                async for message in socket:
                    if message.type != WSMsgType.TEXT:
                        continue
                    await self._control(socket, message.data)
        finally:
            pusher.cancel()
            self._sockets.discard(socket)
        return socket

    async def _control(self, socket: web.WebSocketResponse, text: str) -> None:
        """Apply one control message through the live controls' validated setters, or say why not."""
        try:
            try:
                changes = json.loads(text)
            except ValueError:
                raise InputError("a control message is a JSON object, e.g. {\"method\": \"gradcam\"}") from None
            if not isinstance(changes, dict):
                raise InputError("a control message is a JSON object, e.g. {\"method\": \"gradcam\"}")
            if self.controls is None:
                raise InputError("this run has no live controls")
            self.controls.apply(changes)
        except InputError as error:
            await socket.send_json({"type": "error", "message": str(error)})
            return
        log.info("controls from the browser: %s", changes)
        update = {"type": "controls", **self.controls.snapshot()}
        for other in list(self._sockets):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await other.send_json(update)

    async def _push_records(self, socket: web.WebSocketResponse) -> None:
        """Each source's HUD values when it has a new frame, at most RECORDS_PER_S times a second."""
        sent = [0] * len(self.hub.source_ids)
        with contextlib.suppress(ConnectionError, RuntimeError):
            while not socket.closed:
                for index, stats in enumerate(self.hub.stats()):
                    if stats["frames"] != sent[index]:
                        sent[index] = stats["frames"]
                        await socket.send_json({"type": "record", "source": index, **stats})
                await asyncio.sleep(1.0 / RECORDS_PER_S)
