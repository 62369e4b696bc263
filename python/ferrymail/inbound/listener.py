"""InboundServer: the bounce domain's SMTP listener (aiosmtpd) that turns mail into feedback.

It receives for its domains only (RCPT TO elsewhere: 550, no relay), at most
`max_connections` sessions (more get 421), `max_recipients` per message and
`max_message_size` bytes (aiosmtpd answers 552 past it). Each message is parsed
(`ferrymail.feedback.parse`, on a worker thread: a hostile message may take a while),
acted on (inbound/act.py) in one spool transaction, and only then answered 250: a
crash or a spool failure before makes the sending MTA try again (451), so nothing it
handed over is lost. What cannot be read, or matches no recipient, is logged and
answered 250 too: sending it again would not make it readable.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable
from typing import cast

import msgspec
from aiosmtpd.smtp import SMTP, Envelope, Session

from ..events import EventBus
from ..feedback import Feedback, parse
from ..feedback.addresses import verp_token
from ..spool import Spool
from ..spooler import Spooler
from .act import Handled, Handler
from .config import InboundConfig

_log = logging.getLogger(__name__)

#: Seconds `stop` waits for the messages being recorded.
STOP_GRACE = 5.0


class InboundServer:
    """Serves the listener on a socket until `stop`; counts what it received."""

    def __init__(
        self,
        spool: Spool,
        config: InboundConfig,
        events: EventBus | None = None,
        *,
        hostname: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._spooler = Spooler(spool)
        self._handler = Handler(spool, config, clock)
        self._events = events
        self._hostname = hostname or socket.getfqdn()
        self._server: asyncio.Server | None = None
        self._sessions: set[_Session] = set()
        self._receiving = 0
        #: Messages received by kind ("bounce", "complaint" …, "unknown").
        self.received: Counter[str] = Counter()
        #: Addresses messages spoke of that matched no recipient of the spool.
        self.unmatched = 0
        #: Connections refused for the connection limit, and RCPT TOs refused.
        self.refused_connections = 0
        self.refused_recipients = 0

    async def start(
        self, host: str = "127.0.0.1", port: int = 25, *, sock: socket.socket | None = None
    ) -> tuple[str, int]:
        """Listens on (host, port), or on `sock` (already bound); returns the address."""
        loop = asyncio.get_running_loop()
        if sock is not None:
            self._server = await loop.create_server(self._session, sock=sock)
        else:
            self._server = await loop.create_server(self._session, host, port)
        bound = self._server.sockets[0].getsockname()
        return bound[0], bound[1]

    async def stop(self) -> None:
        """Stops listening, lets the messages being recorded finish (STOP_GRACE at
        most) and ends the sessions; the spool stays the caller's."""
        if self._server is not None:
            self._server.close()
            # Messages being acted on are finished and answered first: cut, their
            # senders would send them again.
            deadline = time.monotonic() + STOP_GRACE
            while self._receiving and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            for session in list(self._sessions):
                if session.transport is not None:
                    session.transport.close()
            await self._server.wait_closed()
        await asyncio.get_running_loop().run_in_executor(None, self._spooler.stop)

    def _session(self) -> asyncio.Protocol:
        if len(self._sessions) >= self.config.max_connections:
            self.refused_connections += 1
            return _Busy()
        session = _Session(
            _Hooks(self),
            data_size_limit=self.config.max_message_size,
            enable_SMTPUTF8=True,
            hostname=self._hostname,
            ident="ferrymail inbound",
            timeout=self.config.timeout,
        )
        session.server_ = self
        self._sessions.add(session)
        return session

    async def receive(self, content: bytes, rcpt_tos: list[str]) -> str:
        """Acts on one message to `rcpt_tos`; the reply to its final dot."""
        first: Feedback | None = None
        self._receiving += 1
        try:
            first = await asyncio.to_thread(parse, content, envelope_to=rcpt_tos[0])
            done: list[Handled] = []
            for rcpt in rcpt_tos:
                # One parse serves every recipient: only the VERP token differs.
                feedback = msgspec.structs.replace(first, verp_token=verp_token(rcpt))
                done.append(await self._spooler.call(self._handler, feedback))
        except Exception:
            _log.exception(
                "ferrymail inbound: could not record a message to %s", ", ".join(rcpt_tos)
            )
            return "451 4.3.0 Could not record the message now; try again later"
        finally:
            self._receiving -= 1
        for handled in done:
            self.received[handled.kind] += 1
            self.unmatched += len(handled.unmatched)
            if self._events is not None and handled.events:
                self._events.publish(handled.events)
            _log.info(
                "ferrymail inbound: %s to %s: %d recorded, %d suppressed%s%s",
                handled.kind,
                ", ".join(rcpt_tos),
                len(handled.events),
                len(handled.suppressed),
                f", unmatched: {', '.join(handled.unmatched)}" if handled.unmatched else "",
                f" ({first.problem})" if first.problem else "",
            )
        return f"250 2.0.0 OK: {first.kind}"

    def refuse_recipient(self, address: str, count: int) -> str | None:
        """The reply refusing RCPT TO `address` (the message has `count` already), or
        None to accept it."""
        if not self.config.receives(address):
            self.refused_recipients += 1
            return "550 5.7.1 Relaying denied: this server receives mail for its domains only"
        if count >= self.config.max_recipients:
            self.refused_recipients += 1
            return "452 4.5.3 Too many recipients"
        return None

    def closed(self, session: _Session) -> None:
        self._sessions.discard(session)


class _Hooks:
    """aiosmtpd's handler hooks, for one server."""

    def __init__(self, server: InboundServer) -> None:
        self._server = server

    async def handle_RCPT(
        self, smtp: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        refused = self._server.refuse_recipient(address, len(envelope.rcpt_tos))
        if refused is not None:
            return refused
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        return await self._server.receive(content, list(envelope.rcpt_tos))


class _Session(SMTP):
    """One client's session; tells its server when it ends (for the connection limit)."""

    server_: InboundServer

    def connection_lost(self, error: Exception | None) -> None:
        self.server_.closed(self)
        super().connection_lost(error)


class _Busy(asyncio.Protocol):
    """A connection past the limit: 421 (RFC 5321 §3.8) and closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.WriteTransport, transport)  # (uvloop's is not a subclass)
        transport.write(b"421 4.7.0 Too many connections; try again later\r\n")
        transport.close()
