"""--serve: a real server on 127.0.0.1 and real clients (aiohttp's, and a raw socket that never reads)."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import socket
import threading
import time
from pathlib import Path

import aiohttp
import cv2
import numpy as np
import pytest
from conftest import make_pan_video, make_tiny_explainer

import streamcam
from streamcam.cli import build_parser
from streamcam.config import RunConfig
from streamcam.options import parsed
from streamcam.serve.hub import FrameHub
from streamcam.serve.server import CLOSE_GRACE_S, Server, is_loopback
from streamcam.serve.sink import ServeSink

pytestmark = pytest.mark.timeout(120)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def jpeg_parts(data: bytes) -> list[np.ndarray]:
    """The images of a multipart/x-mixed-replace body (whole parts only)."""
    images = []
    for part in data.split(b"--streamcamframe\r\n")[1:]:
        head, _, body = part.partition(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        if len(body) >= length:
            images.append(cv2.imdecode(np.frombuffer(body[:length], np.uint8), cv2.IMREAD_COLOR))
    return images


class Gate:
    """Holds the run's first published frame until the test's clients are connected; then lets it run on,
    one frame every ``pace`` seconds, so that what the clients do lands mid-run."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, pace: float = 0.0) -> None:
        self.open = threading.Event()
        publish = FrameHub.publish
        gate = self

        def gated(hub: FrameHub, annotated) -> None:
            gate.open.wait(60)
            time.sleep(pace)
            publish(hub, annotated)

        monkeypatch.setattr(FrameHub, "publish", gated)


def run_in_thread(**kwargs) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def body() -> None:
        try:
            out["summary"] = streamcam.run(**kwargs)
        except BaseException as error:  # noqa: BLE001 - re-raised by the test
            out["error"] = error

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, out


async def wait_for_server(session: aiohttp.ClientSession, base: str, params: dict | None = None) -> None:
    for _ in range(600):
        try:
            async with session.get(base + "api/state", params=params) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("the server never came up")


def test_the_page_streams_names_the_class_and_takes_controls(tmp_path, default_explainer, monkeypatch):
    clip = make_pan_video(tmp_path / "in.mp4", count=48, size=(320, 240))
    port, records = free_port(), tmp_path / "records.jsonl"
    gate = Gate(monkeypatch, pace=0.04)  # 2 s at least: the clients' messages land mid-run
    thread, out = run_in_thread(source=clip, display=False, explainer=default_explainer, batch=2, json=records,
                                serve=f"127.0.0.1:{port}")
    base = f"http://127.0.0.1:{port}/"
    seen: dict = {}

    async def client() -> None:
        async with aiohttp.ClientSession() as session:
            await wait_for_server(session, base)
            async with session.get(base) as page:
                assert page.status == 200 and "app.js" in await page.text()
            stream = await session.get(base + "stream/0.mjpg")
            assert stream.headers["Content-Type"].startswith("multipart/x-mixed-replace")
            async with session.ws_connect(base + "ws") as ws:
                first = await ws.receive_json()
                assert first["type"] == "state" and first["controls"]["method"] == "cam"
                assert first["sources"][0]["name"] == str(clip)
                gate.open.set()
                record = await next_record(ws)
                seen["before"] = record
                body = b""
                while len(jpeg_parts(body)) < 4 and (chunk := await stream.content.read(65536)):
                    body += chunk
                seen["parts"] = jpeg_parts(body)
                stream.close()
                await ws.send_json({"method": "no-such-method"})
                refusal = await next_of(ws, "error")
                seen["refusal"] = refusal["message"]
                await ws.send_json({"method": "gradcam"})
                seen["controls"] = await next_of(ws, "controls")
                seen["methods"] = [(await next_record(ws))["method"] for _ in range(6)]
            async with session.get(base + "api/state") as state:
                seen["state"] = await state.json()
            async with session.get(base + "snapshot/0.png") as snapshot:
                assert snapshot.headers["Content-Type"] == "image/png"
                seen["snapshot"] = cv2.imdecode(np.frombuffer(await snapshot.read(), np.uint8), cv2.IMREAD_COLOR)

    asyncio.run(asyncio.wait_for(client(), 90))
    thread.join(60)
    assert "error" not in out and out["summary"].frames == 48
    before = seen["before"]
    assert before["predictions"][0]["label"] == "Egyptian cat" and before["predictions"][0]["class_id"] == 285
    assert before["method"] == "cam" and before["fps"] >= 0 and before["latency_ms"] > 0
    assert "no-such-method" in seen["refusal"] and "gradcam" in seen["refusal"]
    assert seen["controls"]["method"] == "gradcam"
    assert seen["methods"][-1] == "gradcam"  # the running pipeline switched, without a restart
    assert seen["state"]["controls"]["method"] == "gradcam"
    assert seen["state"]["sources"][0]["predictions"][0]["label"] == "Egyptian cat"
    assert seen["snapshot"].shape == (240, 320, 3)
    parts = seen["parts"]
    assert len(parts) >= 4 and all(p.shape == (240, 320, 3) for p in parts)
    assert any(np.abs(a.astype(int) - b).mean() > 1 for a, b in itertools.pairwise(parts))  # the video moves
    methods = [json.loads(line)["method"] for line in records.read_text().splitlines()]
    assert len(methods) == 48 and methods[0] == "cam" and methods[-1] == "gradcam"
    assert methods == sorted(methods, key=lambda m: m == "gradcam")  # one switch, in frame order
    assert default_explainer.method.name == "cam"  # the switch was the run's: the lent explainer comes back as it was


def test_the_video_socket_holds_one_frame_in_flight_and_measures_capture_to_browser(tmp_path, monkeypatch):
    """The page's transport: a frame, then nothing until the browser answers it; the answer gives the latency."""
    clip = make_pan_video(tmp_path / "in.mp4", count=80, size=(320, 240))
    port = free_port()
    gate = Gate(monkeypatch, pace=0.05)  # 4 s of frames: the client's steps land mid-run
    thread, out = run_in_thread(source=clip, display=False, explainer=make_tiny_explainer(), batch=2,
                                serve=f"127.0.0.1:{port}")
    base = f"http://127.0.0.1:{port}/"
    seen: dict = {}

    async def frame(ws) -> tuple[dict, np.ndarray]:
        """One message: a 4-byte big-endian length, that much JSON, the JPEG."""
        message = await ws.receive_bytes(timeout=30)
        length = int.from_bytes(message[:4], "big")
        head = json.loads(message[4:4 + length])
        return head, cv2.imdecode(np.frombuffer(message[4 + length:], np.uint8), cv2.IMREAD_COLOR)

    async def client() -> None:
        async with aiohttp.ClientSession() as session:
            await wait_for_server(session, base)
            async with session.ws_connect(base + "video/0") as ws:
                gate.open.set()
                head, image = await frame(ws)
                seen["first"] = head, image.shape
                await asyncio.sleep(0.5)  # about 25 frames published meanwhile: none may be sent unanswered
                with pytest.raises(asyncio.TimeoutError):
                    await ws.receive(timeout=0.3)
                await ws.send_str(str(head["sequence"]))
                seen["second"] = (await frame(ws))[0]
                await ws.send_str("12345678")  # a wrong answer: the server hangs up
                seen["closed"] = (await ws.receive(timeout=10)).type
            async with session.get(base + "api/state") as state:
                seen["state"] = (await state.json())["sources"][0]

    asyncio.run(asyncio.wait_for(client(), 60))
    thread.join(60)
    assert "error" not in out and out["summary"].frames == 80
    (first, shape), second = seen["first"], seen["second"]
    assert first["latency_ms"] is None and shape == (240, 320, 3)
    caption = first["caption"]  # what this frame says, sent with it
    assert caption["method"] == "cam" and caption["frame"] >= 0 and len(caption["predictions"]) == 1
    assert second["caption"]["frame"] > caption["frame"]
    assert second["sequence"] > first["sequence"] + 10 and second["skipped"] >= 10  # the stalled wait skipped them
    assert 500 <= second["latency_ms"] < 5000  # captured before the 0.5 s wait, answered after it
    assert seen["state"]["browser_latency_ms"] == second["latency_ms"] and seen["state"]["viewers"] == 0
    assert seen["closed"] in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)


async def next_of(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict:
    while True:
        message = await ws.receive_json(timeout=30)
        if message["type"] == kind:
            return message


async def next_record(ws: aiohttp.ClientWebSocketResponse) -> dict:
    return await next_of(ws, "record")


def stalled_client(port: int, target: str, headers: str = "") -> socket.socket:
    """A raw socket that asks for ``target`` and then never reads (a small receive window, so the server's
    sending side fills up at once)."""
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: kept for the connection
    for _ in range(600):
        if stalled.connect_ex(("127.0.0.1", port)) == 0:
            break
        time.sleep(0.1)
    stalled.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}\r\n".encode())
    return stalled


WEBSOCKET_UPGRADE = ("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")


def test_stalled_clients_cost_the_pipeline_nothing(tmp_path, monkeypatch):
    """Raw sockets that ask for the MJPEG stream and the page's video socket and never read: the run delivers every
    frame, its server stops at once (a stalled viewer is cut off, not waited for), and its fps is that of the same
    run without them (runs alternated, best of three each: the machine is shared)."""
    count = 90
    noise = np.random.default_rng(1).integers(0, 255, (720, 1280, 3), np.uint8)  # large JPEGs: buffers fill
    clip = make_pan_video(tmp_path / "noise.avi", count=count, size=(1280, 720), image=noise)
    explainer = make_tiny_explainer()
    left = []  # the viewers as they leave: how many frames each took and skipped
    unsubscribe = FrameHub.unsubscribe
    monkeypatch.setattr(FrameHub, "unsubscribe", lambda hub, viewer: left.append(viewer) or unsubscribe(hub, viewer))
    stops = []  # how long each server took to stop
    stop = Server.stop
    monkeypatch.setattr(Server, "stop", lambda server: stops.append(timed(lambda: stop(server))))
    gate = Gate(monkeypatch)
    stalled_viewers, stalled_stops = [], []

    def fps(stall: bool) -> float:
        left.clear()
        port = free_port()
        gate.open.clear()
        thread, out = run_in_thread(source=clip, display=False, explainer=explainer, serve=f"127.0.0.1:{port}")
        stalled = [stalled_client(port, "/stream/0.mjpg"), stalled_client(port, "/video/0", WEBSOCKET_UPGRADE)]
        if not stall:
            for client in stalled:
                client.close()
        time.sleep(0.3)  # the server has subscribed them (or seen them go)
        try:
            seconds = timed(lambda: (gate.open.set(), thread.join(60)))
            assert not thread.is_alive() and "error" not in out and out["summary"].frames == count
        finally:
            for client in stalled:
                client.close()
        if stall:
            stalled_viewers.extend(left)  # freed when their run's server closed
            stalled_stops.append(stops[-1])
        return count / seconds

    runs = {False: [], True: []}
    for stall in (False, True) * 3:
        runs[stall].append(fps(stall))
    assert len(stalled_viewers) == 6  # three stalled runs, two clients each
    assert all(v.taken + v.skipped in (count - 1, count) for v in stalled_viewers)  # (the last may wait in its slot)
    assert all(v.skipped > count // 3 for v in stalled_viewers)  # they stalled, the runs did not
    assert sum(v.taken == 1 for v in stalled_viewers) >= 3  # the video sockets: one frame in flight, never answered
    assert max(stalled_stops) < CLOSE_GRACE_S + 1.0, stalled_stops  # cut off, not waited for
    ratio = max(runs[True]) / max(runs[False])
    assert ratio > 0.7, f"fps with stalled clients / without: {ratio:.2f} ({runs})"


def timed(body) -> float:
    started = time.monotonic()
    body()
    return time.monotonic() - started


def raw_get(port: int, target: str, headers: str = "") -> tuple[int, bytes]:
    """GET ``target`` exactly as written (no client normalising ``..``): the status and the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n".encode())
        data = b""
        while chunk := raw.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), data.partition(b"\r\n\r\n")[2]


@pytest.fixture
def server():
    """A server with no frames yet, on a free loopback port, with a token."""
    hub = FrameHub(["a"])
    serving = Server(hub, "127.0.0.1", 0, token="right-token-123")
    serving.start()
    yield serving
    serving.stop()


def test_only_the_static_folders_own_files_are_served(server):
    port, token = server.port, "?token=right-token-123"
    status, body = raw_get(port, "/static/app.js" + token)
    assert status == 200 and b"WebSocket" in body
    config_source = (Path(streamcam.__file__).parent / "config.py").read_bytes()[:200]
    for target in ("/static/../config.py", "/static/..%2fconfig.py", "/static/%2e%2e/config.py",
                   "/static/..%2F..%2Fconfig.py", "/static/", "/static/.hidden", "/static/../../serve/hub.py"):
        status, body = raw_get(port, target + token)
        assert status in (403, 404), target
        assert config_source not in body and b"FrameHub" not in body, target


def test_every_route_needs_the_token_when_there_is_one(server):
    port = server.port
    for target in ("/", "/static/app.js", "/stream/0.mjpg", "/video/0", "/snapshot/0.png", "/api/state", "/ws"):
        assert raw_get(port, target)[0] == 401, target
        assert raw_get(port, target + "?token=wrong-token-000")[0] == 403, target
        assert raw_get(port, target, "Authorization: Bearer wrong-token-000\r\n")[0] == 403, target
    status, page = raw_get(port, "/?token=right-token-123")
    assert status == 200 and b'src="static/app.js?token=right-token-123"' in page  # the page's script gets it too
    assert raw_get(port, "/api/state?token=right-token-123")[0] == 200
    assert raw_get(port, "/api/state", "Authorization: Bearer right-token-123\r\n")[0] == 200
    assert raw_get(port, "/snapshot/0.png?token=right-token-123")[0] == 404  # no frame yet
    assert raw_get(port, "/stream/3.mjpg?token=right-token-123")[0] == 404  # no such source


def test_without_a_token_only_loopback_names_and_this_pages_websocket_are_served():
    serving = Server(FrameHub(["a"]), "127.0.0.1", 0)
    serving.start()
    port = serving.port

    def status(target: str, host: str, headers: str = "Connection: close\r\n") -> int:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n".encode())
            return int(raw.recv(65536).split(b" ", 2)[1])

    upgrade = ("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")
    try:
        assert status("/api/state", f"127.0.0.1:{port}") == 200 and status("/api/state", f"localhost:{port}") == 200
        assert status("/api/state", "evil.example:8080") == 403  # a DNS-rebinding page names its own host
        assert status("/ws", f"127.0.0.1:{port}", upgrade + f"Origin: http://127.0.0.1:{port}\r\n") == 101
        assert status("/ws", f"127.0.0.1:{port}", upgrade + "Origin: https://evil.example\r\n") == 403
    finally:
        serving.stop()


def test_binding_off_loopback_generates_a_token():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("gpu-box")
    assert Server(FrameHub(["a"]), "127.0.0.1", 0).token is None
    generated = Server(FrameHub(["a"]), "0.0.0.0", 0).token
    assert generated and len(generated) >= 16 and generated != Server(FrameHub(["a"]), "0.0.0.0", 0).token
    assert Server(FrameHub(["a"]), "0.0.0.0", 0, token="mine-12345").token == "mine-12345"
    on_all = Server(FrameHub(["a"]), "0.0.0.0", 8080, token="mine-12345").url  # what another machine can browse
    assert on_all == f"http://{socket.gethostname()}:8080/?token=mine-12345"


def test_the_websocket_refuses_bad_control_messages(server):
    from streamcam.controls import LiveControls

    server.controls = LiveControls(["cam", "gradcam"], "cam", top_k=1, grid=False)
    replies = []

    async def client() -> None:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{server.port}/ws?token=right-token-123"
            async with session.ws_connect(url) as ws:
                assert (await ws.receive_json())["type"] == "state"
                for message in ('{"class_index": 1}', '{"alpha": 2}', '{"boxes": "yes"}', "[1]", "nonsense",
                                '{"colour": 1}', '{"alpha": 0.3, "method": "nope"}', '{"alpha": 0.3}'):
                    await ws.send_str(message)
                    replies.append(await ws.receive_json(timeout=10))

    asyncio.run(asyncio.wait_for(client(), 30))
    assert [r["type"] for r in replies] == ["error"] * 7 + ["controls"]
    assert all(r["message"] and "\n" not in r["message"] for r in replies[:7])
    assert replies[-1]["alpha"] == 0.3 and server.controls.method == "cam"


def test_serve_on_the_command_line_and_in_run(tmp_path):
    parser = build_parser()
    assert parsed(parser.parse_args(["in.mp4", "--serve"]), RunConfig)["serve"] == "127.0.0.1:8080"
    assert parsed(parser.parse_args(["in.mp4", "--serve", "0.0.0.0:9000", "--token", "abcdefgh1"]),
                  RunConfig)["serve"] == "0.0.0.0:9000"
    assert parsed(parser.parse_args(["in.mp4"]), RunConfig)["serve"] is None
    for bad, words in [({"serve": "nonsense"}, "HOST:PORT"), ({"serve": "h:99999"}, "HOST:PORT"),
                       ({"token": "abcdefgh1"}, "goes with --serve"), ({"serve": "8080", "token": "short"}, "8")]:
        with pytest.raises(streamcam.InputError, match=words):
            RunConfig(inputs=("in.mp4",), **bad)
    assert RunConfig(inputs=("in.mp4",), serve="9000").serve == "9000"


def test_a_busy_port_is_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(streamcam.InputError, match="cannot serve on 127.0.0.1"):
            ServeSink(f"127.0.0.1:{busy.getsockname()[1]}", ["a"])


@pytest.mark.usefixtures("headless")
def test_the_command_line_serves_beside_the_other_outputs(capsys, tmp_path, monkeypatch):
    from conftest import assert_one_line_error, run_cli

    clip = make_pan_video(tmp_path / "in.mp4", count=6)
    tiny = ("--model", "resnet18", "--weights", "random", "--backend", "torch", "--no-display")
    out, records = tmp_path / "out.mp4", tmp_path / "records.jsonl"
    code, err = run_cli(capsys, str(clip), "--serve", "127.0.0.1:0", "-o", str(out), "--json", str(records),
                        *tiny)
    assert code == 0, err
    assert "watch it at http://127.0.0.1:" in err and "token" not in err  # loopback: no token needed
    assert len(records.read_text().splitlines()) == 6 and out.exists()
    def no_model(config):
        raise AssertionError("the model was loaded before the address was checked")

    monkeypatch.setattr("streamcam.engine.pipeline.build_explainer", no_model)
    tiny = (*tiny, "-o", str(tmp_path / "refused.mp4"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert_one_line_error(*run_cli(capsys, str(clip), "--serve", f"127.0.0.1:{busy.getsockname()[1]}", *tiny),
                              "cannot serve on")
    assert_one_line_error(*run_cli(capsys, str(clip), "--serve", "no-such-host.invalid:8080", *tiny),
                          "cannot serve on no-such-host.invalid:8080")
    assert_one_line_error(*run_cli(capsys, str(clip), "--serve", "192.0.2.1:8080", *tiny),  # not this machine's
                          "cannot serve on 192.0.2.1:8080")
    assert_one_line_error(*run_cli(capsys, str(clip), "--serve", "nowhere"), "HOST:PORT")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.mp4", "records.jsonl"]  # no refused.mp4


def test_several_sources_each_get_a_stream(tmp_path, monkeypatch):
    a = make_pan_video(tmp_path / "a.mp4", count=10, size=(320, 240))
    b = make_pan_video(tmp_path / "b.mp4", count=10, size=(256, 144))
    port = free_port()
    gate = Gate(monkeypatch, pace=0.02)
    thread, out = run_in_thread(source=[a, b], display=False, explainer=make_tiny_explainer(),
                                serve=f"127.0.0.1:{port}")
    base = f"http://127.0.0.1:{port}/"
    seen = {}

    async def client() -> None:
        async with aiohttp.ClientSession() as session:
            await wait_for_server(session, base)
            async with session.get(base + "api/state") as state:
                seen["names"] = [s["name"] for s in (await state.json())["sources"]]
            streams = [await session.get(base + f"stream/{i}.mjpg") for i in (0, 1)]
            gate.open.set()
            for index, stream in enumerate(streams):
                body = b""
                while not jpeg_parts(body) and (chunk := await stream.content.read(65536)):
                    body += chunk
                seen[index] = jpeg_parts(body)[0].shape
                stream.close()

    asyncio.run(asyncio.wait_for(client(), 60))
    thread.join(60)
    assert "error" not in out and out["summary"].frames == 20
    assert seen["names"] == [str(a), str(b)] and seen[0] == (240, 320, 3) and seen[1] == (144, 256, 3)


def test_serve_without_its_extra_is_one_line(monkeypatch):
    import importlib.util

    from streamcam.config import RunConfig

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "aiohttp" else real(name, *a))
    with pytest.raises(streamcam.InputError, match=r"pip install 'streamcam\[serve\]'"):
        RunConfig(inputs=("in.mp4",), serve="127.0.0.1:8080")
    RunConfig(inputs=("in.mp4",))  # the core needs no web server


# --- the page in real browsers: Debian's chromium + chromium-driver (Selenium), and firefox-esr (WebDriver BiDi) ---


@pytest.fixture
def chromium():
    """Headless Chromium (the system's binary and driver; nothing downloaded)."""
    import shutil

    webdriver = pytest.importorskip("selenium.webdriver")
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.skip("needs Debian's chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,900"):
        options.add_argument(argument)
    browser = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver), options=options)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture
def firefox(tmp_path_factory):
    """Headless Firefox on a throwaway profile, over the WebDriver BiDi it serves itself (Debian packages no
    geckodriver; nothing downloaded)."""
    import shutil

    from bidi import Firefox

    binary = shutil.which("firefox-esr") or shutil.which("firefox")
    if binary is None:
        pytest.skip("needs Firefox (Debian: apt-get install firefox-esr)")
    browser = Firefox(binary, tmp_path_factory.mktemp("firefox"))
    try:
        yield browser
    finally:
        browser.close()


class SeleniumPage:
    """A Selenium-driven browser seen through the few calls the page checks make (those of ``bidi.Firefox``).
    The page rebuilds its tiles on each "state" message: elements are found afresh on every look."""

    def __init__(self, driver) -> None:
        self.driver = driver

    def get(self, url: str) -> None:
        self.driver.get(url)

    def evaluate(self, expression: str) -> object:
        return self.driver.execute_script(f"return {expression}")

    def texts(self, selector: str) -> list[str]:
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.common.by import By

        try:
            return [e.text for e in self.driver.find_elements(By.CSS_SELECTOR, selector)]
        except StaleElementReferenceException:
            return []

    def choose(self, select_id: str, value: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select

        Select(self.driver.find_element(By.ID, select_id)).select_by_value(value)

    def screenshot(self, selector: str) -> np.ndarray | None:
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
        from selenium.webdriver.common.by import By

        try:
            png = self.driver.find_element(By.CSS_SELECTOR, selector).screenshot_as_png
        except (NoSuchElementException, StaleElementReferenceException):
            return None
        return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)


def wait_until(condition, seconds: float = 60.0, what: str = "") -> object:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def serving(base: str, params: str = "") -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(base + "api/state" + params, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def shows_live_frames_the_class_and_switches_the_method(page, tmp_path, explainer, monkeypatch) -> None:
    """The page in a real browser, mid-run: frames that change, the class, this browser's capture-to-shown
    latency, and a method picked in the page reaching the running pipeline (its HUD and its --json records)."""
    clip = make_pan_video(tmp_path / "in.mp4", count=60, size=(320, 240))
    port, records = free_port(), tmp_path / "records.jsonl"
    gate = Gate(monkeypatch, pace=0.1)  # about 6 s of frames: the browser acts mid-run
    thread, out = run_in_thread(source=clip, display=False, explainer=explainer, batch=2, json=records,
                                serve=f"127.0.0.1:{port}")
    base = f"http://127.0.0.1:{port}/"
    wait_until(lambda: serving(base), what="the server")
    page.get(base)
    wait_until(lambda: page.evaluate("document.querySelectorAll('.source img.video').length"), what="the video tile")
    gate.open.set()
    predictions = wait_until(lambda: page.texts(".predictions li"), what="the predictions")
    assert predictions[0].startswith("Egyptian cat"), predictions

    def shot() -> np.ndarray | None:  # a frame from the video socket, decoded and painted
        decoded = page.evaluate("document.querySelector('.source img.video')?.naturalWidth") == 320
        return page.screenshot(".source img.video") if decoded else None

    first = wait_until(lambda: (s := shot()) is not None and (s,), what="a decoded frame")[0]
    assert first.std() > 10  # a picture, not a blank box
    assert wait_until(lambda: (s := shot()) is not None and s.shape == first.shape
                      and np.abs(s.astype(int) - first).mean() > 1, seconds=20, what="the video to change")

    def delivery() -> str:
        return "".join(page.texts(".source .delivery")).strip()

    # The browser answers each frame once shown: the server measures capture to this browser on its own clock.
    shown = wait_until(lambda: re.fullmatch(r"(\d+) ms from capture to this browser · (\d+) skipped here", delivery()),
                       seconds=20, what="the capture-to-browser latency")
    assert 0 < int(shown[1]) < 5000

    page.choose("method", "gradcam")
    wait_until(lambda: (page.texts(".source .hud") or [""])[0].startswith("gradcam"), seconds=30,
               what="gradcam in the page's HUD")
    thread.join(120)
    assert "error" not in out, out.get("error")
    methods = [json.loads(line)["method"] for line in records.read_text().splitlines()]
    assert methods[0] == "cam" and methods[-1] == "gradcam" and len(methods) == 60


def test_headless_chromium_shows_live_frames_the_class_and_switches_the_method(tmp_path, default_explainer,
                                                                               monkeypatch, chromium):
    shows_live_frames_the_class_and_switches_the_method(SeleniumPage(chromium), tmp_path, default_explainer,
                                                        monkeypatch)


def test_headless_firefox_shows_live_frames_the_class_and_switches_the_method(tmp_path, default_explainer,
                                                                              monkeypatch, firefox):
    shows_live_frames_the_class_and_switches_the_method(firefox, tmp_path, default_explainer, monkeypatch)


def gets_nothing_without_the_token(page) -> None:
    """A served page with a token: nothing without it or with a wrong one; with it, the page and its socket."""
    hub = FrameHub(["a"])
    server = Server(hub, "127.0.0.1", 0, token="secret-token")
    server.start()
    has_controls = "document.getElementById('controls') !== null"
    try:
        base = server.url.split("?")[0]
        base = base if base.endswith("/") else base + "/"
        page.get(base)
        assert page.evaluate("document.title") != "streamcam" and not page.evaluate(has_controls)
        page.get(base + "?token=wrong")
        assert not page.evaluate(has_controls)
        page.get(base + "?token=secret-token")
        assert page.evaluate("document.title") == "streamcam" and page.evaluate(has_controls)
        wait_until(lambda: page.texts("#status") == ["live"], seconds=10, what="the page's socket, with the token")
    finally:
        server.stop()


def test_headless_chromium_gets_nothing_without_the_token(chromium):
    gets_nothing_without_the_token(SeleniumPage(chromium))


def test_headless_firefox_gets_nothing_without_the_token(firefox):
    gets_nothing_without_the_token(firefox)
