"""A webhook receiver for the tests: a small ASGI app under a real uvicorn on loopback, on
its own thread, that answers each POST as its schedule says (ok, 500, stall), and can be
stopped (connections refused) and started again on the same port."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable
from typing import Any

import uvicorn
from smtp_peers import free_port


class Receiver:
    """Records every POST (headers, body) and answers: "ok" 200, "fail" 500, "stall"
    (no answer for `stall_for` seconds, then 200: the sender has given up by then).
    `schedule` is consumed one POST at a time; after it, every POST is "ok"."""

    def __init__(self, schedule: Iterable[str] = (), *, stall_for: float = 2.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self.schedule = list(schedule)
        self.stall_for = stall_for
        self.always: str | None = None  # every POST answered so, when set
        #: (headers, body, answer) of every POST, in arrival order.
        self.posts: list[tuple[dict[str, str], bytes, str]] = []
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def _answer(self) -> str:
        with self._lock:
            if self.always is not None:
                return self.always
            return self.schedule.pop(0) if self.schedule else "ok"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        answer = self._answer()
        with self._lock:
            self.posts.append((headers, body, answer))
        if answer == "stall":
            await asyncio.sleep(self.stall_for)
        status = 500 if answer == "fail" else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"x" if status == 500 else b""})

    def start(self) -> None:
        config = uvicorn.Config(
            self, host="127.0.0.1", port=self.port, log_level="error", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "the receiver did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        """Stops listening: POSTs are refused until `start()`."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
            self._server = self._thread = None

    def __enter__(self) -> Receiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def answered_ok(self) -> list[tuple[dict[str, str], bytes]]:
        with self._lock:
            return [(h, b) for h, b, a in self.posts if a == "ok"]
