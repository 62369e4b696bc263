"""A small SMTP sink for `ferrymail demo`: accepts and counts mail on loopback, discards it.

It advertises PIPELINING and reads each connection's commands strictly in order, one
reply per command, so a pipelining client gets its replies in the order it sent the
commands. Every message is accepted; nothing is stored. It runs on its own thread and
event loop, so that the engine's loop does not pay for the sink's work.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType

#: The most a message may be (advertised as SIZE); larger ones get 552.
MAX_SIZE = 32 * 1024 * 1024
_EHLO = (
    "250-{name}\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
    f"250-SIZE {MAX_SIZE}\r\n250 ENHANCEDSTATUSCODES\r\n"
)


class DemoSink:
    """An SMTP server on 127.0.0.1 (a free port unless given) that takes every message.

    `messages` counts accepted final dots, `recipients` accepted RCPTs, `sessions`
    connections; read them from any thread. Use as a context manager, or start()/stop().
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, name: str = "sink.demo") -> None:
        self.host = host
        self.port = port
        self.name = name
        self.messages = 0
        self.recipients = 0
        self.sessions = 0
        self.bytes = 0
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> DemoSink:
        self._thread = threading.Thread(target=self._loop.run_forever, name="demo-sink")
        self._thread.daemon = True
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._session, self.host, self.port, limit=MAX_SIZE + 1024),
            self._loop,
        )
        self._server = started.result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._server is not None:
            server = self._server
            self._server = None

            async def close() -> None:
                server.close()
                await server.wait_closed()

            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=5)
        if self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._thread = None
            self._loop.close()

    def __enter__(self) -> DemoSink:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        try:
            writer.write(f"220 {self.name} ESMTP ferrymail demo sink\r\n".encode())
            await self._commands(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _commands(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        mail = False
        rcpts = 0
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                mail, rcpts = False, 0
                reply = _EHLO.format(name=self.name) if verb == b"EHLO" else f"250 {self.name}\r\n"
            elif verb == b"MAIL":
                mail, rcpts = True, 0
                reply = "250 2.1.0 OK\r\n"
            elif verb == b"RCPT":
                if mail:
                    rcpts += 1
                    reply = "250 2.1.5 OK\r\n"
                else:
                    reply = "503 5.5.1 MAIL first\r\n"
            elif verb == b"DATA":
                if not rcpts:
                    reply = "503 5.5.1 RCPT first\r\n" if mail else "503 5.5.1 MAIL first\r\n"
                else:
                    writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    await writer.drain()
                    data = await reader.readuntil(b"\r\n.\r\n")
                    self.messages += 1
                    self.recipients += rcpts
                    self.bytes += len(data) - 3
                    mail, rcpts = False, 0
                    reply = f"250 2.0.0 OK queued as {self.messages}\r\n"
            elif verb == b"RSET":
                mail, rcpts = False, 0
                reply = "250 2.0.0 OK\r\n"
            elif verb == b"NOOP":
                reply = "250 2.0.0 OK\r\n"
            elif verb == b"QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                await writer.drain()
                return
            else:
                reply = "502 5.5.2 command not recognized\r\n"
            writer.write(reply.encode())
            # Pipelined commands already read are answered in one write: drain only when
            # the client waits for us.
            if not reader._buffer:  # type: ignore[attr-defined]
                await writer.drain()
