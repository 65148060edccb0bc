"""Headless Firefox driven over WebDriver BiDi, the W3C protocol Firefox serves itself (``--remote-debugging-port``):
no geckodriver (Debian does not package it), nothing downloaded. The few commands the page tests need, synchronous,
over aiohttp's WebSocket client (a test dependency already) on a private event loop."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import subprocess
import time
from pathlib import Path

import aiohttp
import cv2
import numpy as np


class Firefox:
    """One headless Firefox on a throwaway profile under ``home``, one tab, driven until :meth:`close`."""

    def __init__(self, binary: str, home: Path, timeout: float = 30.0) -> None:
        self.timeout = timeout
        profile = home / "profile"
        profile.mkdir(parents=True)
        self.log = home / "firefox.log"  # Firefox's chatter, read only when it will not start
        with self.log.open("wb") as log:
            # Port 0: Firefox picks a free one and writes it into the profile (no race with other tests' ports).
            self.process = subprocess.Popen(
                [binary, "--headless", "--no-remote", "--profile", str(profile), "--remote-debugging-port=0",
                 "about:blank"], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self.loop = asyncio.new_event_loop()
        self.ids = itertools.count(1)
        self.session: aiohttp.ClientSession | None = None
        self.socket: aiohttp.ClientWebSocketResponse | None = None
        try:
            port = self._port(profile / "WebDriverBiDiServer.json")
            self.socket = self.loop.run_until_complete(self._connect(f"ws://127.0.0.1:{port}/session"))
            self.command("session.new", capabilities={})
            self.context = self.command("browsingContext.getTree")["contexts"][0]["context"]
            self.command("browsingContext.setViewport", context=self.context,
                         viewport={"width": 1280, "height": 900})
        except BaseException:
            self.close()
            raise

    def _port(self, server_file: Path) -> int:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Firefox exited ({self.process.returncode}): {self.log.read_text()[-2000:]}")
            try:
                return json.loads(server_file.read_text())["ws_port"]
            except (OSError, ValueError, KeyError):  # not written yet, or half written
                time.sleep(0.1)
        raise RuntimeError(f"Firefox's WebDriver BiDi server never came up: {self.log.read_text()[-2000:]}")

    async def _connect(self, url: str) -> aiohttp.ClientWebSocketResponse:
        self.session = aiohttp.ClientSession()
        return await self.session.ws_connect(url, max_msg_size=0)  # screenshots are large

    def command(self, method: str, **params) -> dict:
        """Send one BiDi command and return its result; an error reply raises."""
        return self.loop.run_until_complete(asyncio.wait_for(self._command(method, params), self.timeout))

    async def _command(self, method: str, params: dict) -> dict:
        number = next(self.ids)
        await self.socket.send_json({"id": number, "method": method, "params": params})
        while True:
            reply = await self.socket.receive_json()
            if reply.get("id") == number:  # events and nothing else arrive between: nothing is subscribed
                if reply["type"] == "error":
                    raise RuntimeError(f"{method}: {reply['error']}: {reply['message']}")
                return reply["result"]

    def get(self, url: str) -> None:
        self.command("browsingContext.navigate", context=self.context, url=url, wait="complete")

    def evaluate(self, expression: str) -> object:
        """The value of a JavaScript expression in the page (awaited if a promise), through JSON."""
        wrapped = f"(async () => JSON.stringify(await ({expression})) ?? 'null')()"
        result = self.command("script.evaluate", expression=wrapped, target={"context": self.context},
                              awaitPromise=True)
        if result["type"] == "exception":
            raise RuntimeError(f"{expression}: {result['exceptionDetails']['text']}")
        return json.loads(result["result"]["value"])

    def texts(self, selector: str) -> list[str]:
        """The rendered text of every element matching ``selector``, found afresh."""
        return self.evaluate(f"Array.from(document.querySelectorAll({json.dumps(selector)}), e => e.innerText)")

    def choose(self, select_id: str, value: str) -> None:
        """Pick ``value`` in the <select> ``select_id`` as a user would: the value, then a change event."""
        self.evaluate(f"(s => {{ s.value = {json.dumps(value)}; s.dispatchEvent(new Event('change')); }})"
                      f"(document.getElementById({json.dumps(select_id)}))")

    def screenshot(self, selector: str) -> np.ndarray | None:
        """What the page paints in the box of the first element matching ``selector`` (BGR), None without one."""
        box = self.evaluate(f"document.querySelector({json.dumps(selector)})?.getBoundingClientRect()")
        if not box or box["width"] < 1 or box["height"] < 1:
            return None
        clip = {"type": "box", **{k: box[k] for k in ("x", "y", "width", "height")}}
        png = base64.b64decode(self.command("browsingContext.captureScreenshot", context=self.context,
                                            clip=clip)["data"])
        return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)

    def close(self) -> None:
        """End the session and the browser (killed if it will not go within 10 s); idempotent."""
        if self.loop.is_closed():
            return
        try:
            if self.socket is not None and not self.socket.closed:
                try:
                    self.command("browser.close")
                except (RuntimeError, TypeError, asyncio.TimeoutError, aiohttp.ClientError):
                    pass  # going anyway (a closed socket's message is no JSON: TypeError)
                self.loop.run_until_complete(self.socket.close())
            if self.session is not None:
                self.loop.run_until_complete(self.session.close())
        finally:
            if self.socket is None:  # it never came up: nothing to wait for
                self.process.kill()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.loop.close()
