"""Real SMTP peers on loopback for the transport tests: a scriptable aiosmtpd server, a
hand-written misbehaving server, Postfix's smtp-sink, and a private CA for STARTTLS.

Every peer is a real TCP server in its own thread or process, so a test's event loop (or
a blocking smtplib) talks to it like to any mail server. Peers listen on 127.0.0.0/8 or
::1 only, refuse anything else, and record what they saw: connections, the command lines
of each, and the messages whose final dot arrived. They are context managers; the
conftest fixtures start them and stop them at teardown, also when a test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import os
import re
import select
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Self, cast

from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from peer_process import STARTUP_TIMEOUT, end_process

SMTP_SINK = "/usr/sbin/smtp-sink"


@dataclass
class Connection:
    """One TCP connection a peer accepted, as the peer saw it. The peer's thread fills
    it in while the test reads it: wait for `closed` before asserting on the whole."""

    index: int  # 0 for the peer's first connection
    client: tuple[str, int]  # the client's address and port
    commands: list[str] = field(default_factory=list)  # lines, verb upper-cased; no content
    helo: str | None = None  # the name of the last EHLO or HELO (ScriptedServer)
    tls: bool = False  # STARTTLS completed
    closed: bool = False
    # When the peer accepted it (time.time()): connection rates measured on the peer.
    opened_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Message:
    """One message whose final dot a peer received, accepted or not."""

    mail_from: str
    rcpt_tos: tuple[str, ...]  # the recipients the peer accepted
    content: bytes  # dot-unstuffed, CRLF line ends, without the final ".\r\n"
    connection: int  # the index of the Connection that carried it
    tls: bool  # whether that connection had done STARTTLS
    reply: str  # the peer's answer to the final dot; "" if it sent none
    # When the peer had the whole message (time.time()): rates measured on the peer.
    received_at: float = field(default_factory=time.time)

    @property
    def accepted(self) -> bool:
        return self.reply.startswith("2")


class _Recorder:
    """What every peer records; filled in on the peer's threads, read by the test."""

    def __init__(self, host: str) -> None:
        self.host = loopback(host)
        self.port = 0
        self.connections: list[Connection] = []
        self.messages: list[Message] = []
        self._lock = threading.Lock()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def delivered(self) -> list[Message]:
        """The messages the peer accepted (2xx after the final dot)."""
        return [m for m in self.messages if m.accepted]

    def _connected(self, client: tuple[str, int]) -> Connection:
        with self._lock:
            connection = Connection(len(self.connections), client)
            self.connections.append(connection)
            return connection

    def wait_until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        """Waits until `condition()` holds: the client may be done before the peer's thread
        has caught up (e.g. marked a connection closed)."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"{type(self).__name__}: condition not met in {timeout} s")
            time.sleep(0.005)

    def wait_closed(self, timeout: float = 5.0) -> None:
        """Waits until every connection so far is closed."""
        self.wait_until(lambda: all(c.closed for c in self.connections), timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


def loopback(host: str) -> str:
    """The host, if it is a loopback address: test traffic never leaves the machine."""
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"{host}: test peers listen on loopback only (127.0.0.0/8, ::1)")
    return host


# --- ScriptedServer: aiosmtpd with scripted replies ---------------------------------------

#: A scripted reply: one for every occurrence, or one per occurrence across the server's
#: life (None: aiosmtpd's own answer; after the list, aiosmtpd's own answers).
Script = str | Sequence[str | None]
SCRIPTED_STAGES = ("EHLO", "HELO", "STARTTLS", "MAIL", "RCPT", "DATA", "DOT", "RSET", "NOOP")


class ScriptedServer(_Recorder):
    """An aiosmtpd 1.4 server on its own thread and event loop, with scripted replies.

    - `banner`: replaces the greeting. A 2xx is just another text; "421 …" closes the
      connection after it; any other code (e.g. "554 5.3.2 no service") answers every
      command but QUIT with 503, as RFC 5321 §3.1 says a server does after 554.
    - `replies`: stage → Script, for EHLO, HELO, STARTTLS, MAIL, RCPT, DATA (the reply to
      the DATA command, instead of 354), DOT (the reply after the final dot), RSET, NOOP.
      EHLO refused with a 5xx, HELO then accepted: `replies={"EHLO": "502 5.5.2 no"}`.
      MAIL and RCPT scripts apply to well-formed commands (aiosmtpd checks syntax first).
    - `rcpt_replies`: recipient address → reply, e.g. {"nobody@x.test": "550 5.1.1 no
      such user", "full@x.test": "452 4.2.2 mailbox full"}; before any RCPT script.
    - `client_rcpt_replies`: client IP → the reply to every RCPT on its connections
      (a receiver that throttles one sending address); after `rcpt_replies`.
    - `size_limit`: advertised as SIZE and enforced (552), aiosmtpd's default 32 MiB;
      None: no SIZE, no limit.
    - `smtputf8`: advertise and accept SMTPUTF8.
    - `tls`: a server SSLContext: STARTTLS is offered; `require_tls`: and required (530
      to mail commands before it).

    aiosmtpd does not advertise PIPELINING (it handles a pipelining client correctly).
    Its own replies have no enhanced status codes ("250 OK").
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        hostname: str = "mx.test",
        banner: str | None = None,
        replies: Mapping[str, Script] | None = None,
        rcpt_replies: Mapping[str, str] | None = None,
        client_rcpt_replies: Mapping[str, str] | None = None,
        size_limit: int | None = 33_554_432,
        smtputf8: bool = True,
        tls: ssl.SSLContext | None = None,
        require_tls: bool = False,
    ) -> None:
        super().__init__(host)
        self._requested_port = port
        self.hostname = hostname
        self.banner = banner
        self.replies = dict(replies or {})
        unknown = set(self.replies) - set(SCRIPTED_STAGES)
        if unknown:
            raise ValueError(f"no such stage {sorted(unknown)}; stages: {SCRIPTED_STAGES}")
        self.rcpt_replies = dict(rcpt_replies or {})
        self.client_rcpt_replies = dict(client_rcpt_replies or {})
        self.size_limit = size_limit
        self.smtputf8 = smtputf8
        self.tls = tls
        self.require_tls = require_tls
        self._used = dict.fromkeys(SCRIPTED_STAGES, 0)
        self._live: set[_ScriptedSMTP] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None

    def start(self) -> Self:
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="scripted-smtp", daemon=True)
        self._thread.start()
        create = loop.create_server(
            lambda: _ScriptedSMTP(self, loop), self.host, self._requested_port
        )
        try:
            self._server = asyncio.run_coroutine_threadsafe(create, loop).result(STARTUP_TIMEOUT)
        except BaseException:
            self.stop()  # the thread and loop, when the port is taken
            raise
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(STARTUP_TIMEOUT)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(STARTUP_TIMEOUT)
            self._loop.close()
            self._loop = self._thread = None

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for smtp in list(self._live):
            smtp.raw_transport.abort()
        # aiosmtpd's per-connection tasks end with their transport; cancel any straggler
        # so that closing the loop finds nothing pending.
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def scripted(self, stage: str) -> str | None:
        """The scripted reply for this occurrence of `stage`, or None for aiosmtpd's own."""
        script = self.replies.get(stage)
        if script is None or isinstance(script, str):
            return script
        used, self._used[stage] = self._used[stage], self._used[stage] + 1
        return script[used] if used < len(script) else None


class _ScriptedSMTP(SMTP):
    """aiosmtpd's protocol for one connection, recording commands and playing the script.
    Stages that aiosmtpd answers before any handler hook (EHLO, DATA, …) are overridden
    here; MAIL, RCPT and DOT go through the hooks in _Hooks."""

    def __init__(self, peer: ScriptedServer, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(
            _Hooks(peer),
            loop=loop,
            # aiosmtpd's default is socket.getfqdn(), a DNS lookup: tests resolve nothing.
            hostname=peer.hostname,
            data_size_limit=peer.size_limit,
            enable_SMTPUTF8=peer.smtputf8,
            tls_context=peer.tls,
            require_starttls=peer.require_tls,
        )
        self.peer = peer
        self.record: Connection | None = None
        self.raw_transport: asyncio.Transport
        self._greeting: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.record is None:
            self.raw_transport = cast(asyncio.Transport, transport)
            self.record = self.peer._connected(transport.get_extra_info("peername"))
            self.peer._live.add(self)
        else:  # the TLS layer calls again once STARTTLS's handshake is done
            self.record.tls = True

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        if self.record is not None:
            self.record.closed = True
        self.peer._live.discard(self)

    async def push(self, status: Any) -> None:
        if self._greeting is not None:  # the first push of a session is the greeting
            status, self._greeting = self._greeting, None
        await super().push(status)

    # aiosmtpd's private per-connection coroutine (1.4): it sends the greeting, then reads
    # commands. A refusing banner replaces all of it.
    async def _handle_client(self) -> None:
        banner = self.peer.banner
        if banner is None or banner.startswith("2"):
            self._greeting = banner
            await super()._handle_client()
            return
        await self.push(banner)
        if banner.startswith("421"):
            self.raw_transport.close()
            return
        while (line := await self._reader.readline()).endswith(b"\n"):
            command = line.rstrip(b"\r\n").decode("utf-8", "replace")
            verb = command.partition(" ")[0].upper()
            self._recorded(verb + command[len(verb) :])
            if verb == "QUIT":
                await self.push("221 2.0.0 Bye")
                self.raw_transport.close()
                return
            await self.push("503 5.5.1 Error: no SMTP service here")

    def _recorded(self, command: str) -> str:
        assert self.record is not None
        self.record.commands.append(command)
        return command

    async def _play(self, stage: str, command: str) -> bool:
        """Records the command; answers it from the script if there is a line for it."""
        self._recorded(command)
        reply = self.peer.scripted(stage)
        if reply is not None:
            await self.push(reply)
        return reply is not None

    @staticmethod
    def _line(verb: str, arg: str | None) -> str:
        return verb if arg is None else f"{verb} {arg}"

    async def smtp_EHLO(self, hostname: str) -> None:
        assert self.record is not None
        self.record.helo = hostname
        if not await self._play("EHLO", self._line("EHLO", hostname)):
            await super().smtp_EHLO(hostname)

    async def smtp_HELO(self, hostname: str) -> None:
        assert self.record is not None
        self.record.helo = hostname
        if not await self._play("HELO", self._line("HELO", hostname)):
            await super().smtp_HELO(hostname)

    async def smtp_STARTTLS(self, arg: str) -> None:
        if not await self._play("STARTTLS", self._line("STARTTLS", arg)):
            await super().smtp_STARTTLS(arg)

    async def smtp_DATA(self, arg: str) -> None:
        if not await self._play("DATA", self._line("DATA", arg)):
            await super().smtp_DATA(arg)

    async def smtp_RSET(self, arg: str) -> None:
        if not await self._play("RSET", self._line("RSET", arg)):
            await super().smtp_RSET(arg)

    async def smtp_NOOP(self, arg: str) -> None:
        if not await self._play("NOOP", self._line("NOOP", arg)):
            await super().smtp_NOOP(arg)

    async def smtp_MAIL(self, arg: str | None) -> None:
        self._recorded(self._line("MAIL", arg))
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:
        self._recorded(self._line("RCPT", arg))
        await super().smtp_RCPT(arg)

    async def smtp_VRFY(self, arg: str) -> None:
        self._recorded(self._line("VRFY", arg))
        await super().smtp_VRFY(arg)

    async def smtp_QUIT(self, arg: str) -> None:
        self._recorded(self._line("QUIT", arg))
        await super().smtp_QUIT(arg)


class _Hooks:
    """aiosmtpd's handler: the scripted replies that change the envelope, and the record
    of each message. A positive scripted reply does what aiosmtpd's own would have."""

    def __init__(self, peer: ScriptedServer) -> None:
        self.peer = peer

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> Any:
        reply = self.peer.scripted("MAIL")
        if reply is None:
            return MISSING
        if reply.startswith("2"):
            envelope.mail_from = address
            envelope.mail_options.extend(options)
        return reply

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> Any:
        client = session.peer[0] if isinstance(session.peer, tuple) else None
        reply = (
            self.peer.rcpt_replies.get(address)
            or self.peer.client_rcpt_replies.get(client or "")
            or self.peer.scripted("RCPT")
        )
        if reply is None:
            return MISSING
        if reply.startswith("2"):
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(options)
        return reply

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = self.peer.scripted("DOT") or "250 OK"
        record = cast(_ScriptedSMTP, server).record
        assert record is not None and envelope.mail_from is not None
        content = envelope.original_content or b""
        message = Message(
            envelope.mail_from, tuple(envelope.rcpt_tos), content, record.index, record.tls, reply
        )
        self.peer.messages.append(message)
        return reply


# --- RawServer: hand-written SMTP for hostile and broken behaviour ------------------------

RAW_STAGES = (
    "BANNER",
    "EHLO",
    "HELO",
    "STARTTLS",
    "MAIL",
    "RCPT",
    "DATA",
    "DOT",
    "RSET",
    "NOOP",
    "QUIT",
)
#: Postfix's usual EHLO keywords, minus the ones a client for outbound mail ignores.
RAW_CAPABILITIES = ("PIPELINING", "SIZE 10240000", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8")
#: Stages after which RFC 2920 §3.1 wants the client to wait even with PIPELINING: EHLO,
#: HELO, STARTTLS, DATA, NOOP and QUIT end a group (and unknown commands, counted as OTHER).
_ENDS_GROUP = frozenset({"BANNER", "EHLO", "HELO", "STARTTLS", "DATA", "NOOP", "QUIT", "OTHER"})

#: Ready-made replies for Fault.reply.
GARBAGE = b"hello there\r\n"  # not an SMTP reply at all
OVERLONG = b"250 " + b"x" * 100_000 + b"\r\n"  # one 100 KB reply line
OUT_OF_RANGE = "999 9.9.9 no such reply code"


@dataclass(frozen=True)
class Fault:
    """One RawServer misbehaviour: at `stage` (one of RAW_STAGES), on command lines
    containing `match` (at DOT: the transaction's RCPT TO lines), on connection number
    `connection` (None: every connection), wait `delay` seconds, send `reply` instead of
    the normal one, then close the connection if `close`. `reply` as str is a reply
    (CRLF added); as bytes it goes out verbatim, so b"" sends nothing. The first
    matching fault of the list wins. A client that hangs up during the delay ends the
    session there, without a reply (as a server's next read would find);
    RawServer.stalls records each delay begun."""

    stage: str
    reply: str | bytes | None = None  # None: the normal reply
    delay: float = 0.0
    close: bool = False
    match: str = ""
    connection: int | None = None

    def __post_init__(self) -> None:
        if self.stage not in RAW_STAGES:
            raise ValueError(f"no such stage {self.stage!r}; stages: {RAW_STAGES}")


def drop(stage: str, **where: Any) -> Fault:
    """Close the connection at `stage` without a word (e.g. right after the final dot)."""
    return Fault(stage, reply=b"", close=True, **where)


def slow(stage: str, seconds: float, **where: Any) -> Fault:
    """Answer normally at `stage`, after `seconds`."""
    return Fault(stage, delay=seconds, **where)


def shutting_down(stage: str, **where: Any) -> Fault:
    """Answer 421 at `stage` and close, as a server going down does (RFC 5321 §3.8)."""
    return Fault(stage, reply="421 4.3.2 Service shutting down", close=True, **where)


@dataclass(frozen=True)
class Pipelined:
    """Client bytes already waiting when RawServer was about to reply: the client sent
    the next command (or the content) before this reply."""

    connection: int
    stage: str  # the stage being answered (RAW_STAGES, or OTHER)
    command: str  # the line being answered: "" for the banner, "." for the final dot
    allowed: bool  # PIPELINING was advertised and RFC 2920 lets a command follow here


class RawServer(_Recorder):
    """A small threaded SMTP server written for misbehaving on purpose (see Fault).

    It speaks enough SMTP for a correct client to deliver through it: banner, EHLO with
    `capabilities` (SIZE is enforced; without ENHANCEDSTATUSCODES its replies carry no
    enhanced codes), HELO, MAIL, RCPT, DATA and the dot, RSET, NOOP, QUIT; sequence
    errors get 503, DATA without an accepted recipient 554. No STARTTLS.

    Before every reply it looks for client bytes already waiting (its buffer, then a
    MSG_PEEK on the socket) and records each case in `pipelined`; without PIPELINING, or
    after a command that ends a group, that is a violation (`pipelining_violations`).
    Message content after 354 is not a command and is never checked.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        hostname: str = "raw.test",
        capabilities: Sequence[str] = RAW_CAPABILITIES,
        faults: Sequence[Fault] = (),
    ) -> None:
        super().__init__(host)
        self._requested_port = port
        self.hostname = hostname
        self.capabilities = tuple(capabilities)
        keywords = {c.split()[0].upper() for c in self.capabilities}
        self.pipelining = "PIPELINING" in keywords
        self.enhanced_status_codes = "ENHANCEDSTATUSCODES" in keywords
        sizes = [int(c.split()[1]) for c in self.capabilities if re.fullmatch(r"SIZE \d+", c)]
        self.size_limit = sizes[0] if sizes and sizes[0] else None
        self.faults = tuple(faults)
        self.pipelined: list[Pipelined] = []
        #: (connection, stage) of each Fault.delay begun, in order.
        self.stalls: list[tuple[int, str]] = []
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._sockets: set[socket.socket] = set()

    @property
    def pipelining_violations(self) -> list[Pipelined]:
        return [p for p in self.pipelined if not p.allowed]

    def start(self) -> Self:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = self._listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self._requested_port))
        listener.listen(64)
        # accept() polls, so that stop() needs no trick to wake it up.
        listener.settimeout(0.05)
        self.port = listener.getsockname()[1]
        self._spawn(self._accept, "raw-smtp-accept")
        return self

    def stop(self) -> None:
        self._stopping.set()  # also ends any Fault.delay at once
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):  # already closed by the client
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the session's blocking recv
        for thread in self._threads:
            thread.join(STARTUP_TIMEOUT)
        if self._listener is not None:
            self._listener.close()

    def fault(self, stage: str, command: str, connection: int) -> Fault | None:
        for f in self.faults:
            if f.stage == stage and f.match in command and f.connection in (None, connection):
                return f
        return None

    def ehlo_reply(self) -> str:
        *first, last = [self.hostname, *self.capabilities]
        return "".join(f"250-{line}\r\n" for line in first) + f"250 {last}"

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                sock, client = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            with self._lock:
                self._sockets.add(sock)
            session = _RawSession(self, sock, self._connected(client[:2]))
            self._spawn(session.serve, f"raw-smtp-{session.record.index}")


class _RawSession:
    """One RawServer connection, served on its own thread with blocking reads."""

    _MAIL = re.compile(r"FROM:\s*<([^>]*)>", re.IGNORECASE)
    _RCPT = re.compile(r"TO:\s*<([^>]+)>", re.IGNORECASE)
    _SIZE = re.compile(r"\bSIZE=(\d+)", re.IGNORECASE)
    _ENHANCED = re.compile(r"^(\d{3}[ -])\d\.\d{1,3}\.\d{1,3} ")

    def __init__(self, server: RawServer, sock: socket.socket, record: Connection) -> None:
        self.server, self.sock, self.record = server, sock, record
        self.buffer = bytearray()
        self.open = True
        self.greeted = False
        self.mail_from: str | None = None
        self.rcpt_tos: list[str] = []

    def serve(self) -> None:
        try:
            self._serve()
        except OSError:
            pass  # the client went away, or stop() shut the socket
        finally:
            self.record.closed = True
            with self.server._lock:
                self.server._sockets.discard(self.sock)
            self.sock.close()

    def _serve(self) -> None:
        self.send("BANNER", "", f"220 {self.server.hostname} ESMTP")
        while self.open and (line := self.read_line()) is not None:
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            self.record.commands.append(verb + line[len(verb) :])
            if verb == "DATA":
                self.data(line)
                continue
            normal, on_positive = self.answer(verb, arg.strip())
            sent = self.send(verb if verb in RAW_STAGES else "OTHER", line, normal)
            if on_positive is not None and sent.startswith("2"):
                on_positive()
            if verb == "QUIT":
                return

    def answer(self, verb: str, arg: str) -> tuple[str, Callable[[], None] | None]:
        """The normal reply to a command, and what a positive reply does to the session."""
        if verb in ("EHLO", "HELO"):
            hello = self.server.ehlo_reply() if verb == "EHLO" else f"250 {self.server.hostname}"
            return hello, self.greet
        if verb == "RSET":
            return "250 2.0.0 Ok", self.reset
        if verb == "NOOP":
            return "250 2.0.0 Ok", None
        if verb == "QUIT":
            return "221 2.0.0 Bye", None
        if verb == "MAIL":
            mail = self._MAIL.match(arg)
            size = self._SIZE.search(arg)
            limit = self.server.size_limit
            if not self.greeted:
                return "503 5.5.1 Error: send HELO/EHLO first", None
            if self.mail_from is not None:
                return "503 5.5.1 Error: nested MAIL command", None
            if mail is None:
                return "501 5.5.4 Syntax: MAIL FROM:<address>", None
            if size and limit and int(size[1]) > limit:
                return "552 5.3.4 Message size exceeds fixed limit", None
            return "250 2.1.0 Ok", lambda: setattr(self, "mail_from", mail[1])
        if verb == "RCPT":
            rcpt = self._RCPT.match(arg)
            if self.mail_from is None:
                return "503 5.5.1 Error: need MAIL command", None
            if rcpt is None:
                return "501 5.5.4 Syntax: RCPT TO:<address>", None
            return "250 2.1.5 Ok", lambda: self.rcpt_tos.append(rcpt[1])
        return "502 5.5.2 Error: command not recognized", None

    def greet(self) -> None:
        self.greeted = True
        self.reset()

    def reset(self) -> None:
        self.mail_from, self.rcpt_tos = None, []

    def data(self, line: str) -> None:
        normal = "354 End data with <CR><LF>.<CR><LF>"
        if self.mail_from is None:
            normal = "503 5.5.1 Error: need MAIL command"
        elif not self.rcpt_tos:
            normal = "554 5.5.1 Error: no valid recipients"
        if not self.send("DATA", line, normal).startswith("354"):
            return
        content = self.read_content()
        if content is None:
            return
        limit = self.server.size_limit
        normal = "250 2.0.0 Ok: queued"
        if limit and len(content) > limit:
            normal = "552 5.3.4 Message size exceeds fixed limit"
        recipients = " ".join(f"RCPT TO:<{r}>" for r in self.rcpt_tos)
        reply = self.send("DOT", ".", normal, about=recipients)
        assert self.mail_from is not None
        message = Message(
            self.mail_from, tuple(self.rcpt_tos), content, self.record.index, False, reply
        )
        self.server.messages.append(message)
        self.reset()

    def send(self, stage: str, command: str, normal: str, about: str = "") -> str:
        """Answers at `stage` (normally, or as a Fault says); returns the text sent. A
        fault's `match` is looked for in `about` when given, else in `command`."""
        fault = self.server.fault(stage, about or command, self.record.index)
        if fault is not None and fault.delay and not self.stall(stage, fault.delay):
            self.open = False
            return ""
        if self.waiting():
            allowed = self.server.pipelining and stage not in _ENDS_GROUP
            self.server.pipelined.append(Pipelined(self.record.index, stage, command, allowed))
        if not self.server.enhanced_status_codes:
            normal = self._ENHANCED.sub(r"\1", normal)
        reply = normal if fault is None or fault.reply is None else fault.reply
        data = reply if isinstance(reply, bytes) else reply.encode() + b"\r\n"
        self.sock.sendall(data)
        if stage == "QUIT" or (fault is not None and fault.close):
            self.open = False  # serve() closes the socket, once the message is recorded
        return data.decode("utf-8", "replace").rstrip("\r\n")

    def stall(self, stage: str, seconds: float) -> bool:
        """Waits `seconds` before a reply at `stage`; False when the server stops or the
        client hangs up meanwhile (then no reply goes out)."""
        with self.server._lock:
            self.server.stalls.append((self.record.index, stage))
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.server._stopping.wait(min(left, 0.01)) or self.hung_up():
                return False
        return True

    def hung_up(self) -> bool:
        """Whether the client closed or reset the connection, even with bytes of it
        still unread (POLLRDHUP sees the FIN behind them)."""
        poll = select.poll()
        poll.register(self.sock, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
        return bool(poll.poll(0))

    def waiting(self) -> bool:
        """Whether client bytes are already here, read or still in the kernel."""
        if self.buffer:
            return True
        try:
            return bool(self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except BlockingIOError:
            return False

    def read_raw_line(self) -> bytes | None:
        """The next line without its CRLF; None at the end of the stream."""
        while (end := self.buffer.find(b"\r\n")) < 0:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return line

    def read_line(self) -> str | None:
        line = self.read_raw_line()
        return None if line is None else line.decode("utf-8", "replace")

    def read_content(self) -> bytes | None:
        """Message content up to the lone dot, dot-unstuffed (RFC 5321 §4.5.2)."""
        lines: list[bytes] = []
        while (line := self.read_raw_line()) is not None:
            if line == b".":
                return b"".join(lines)
            lines.append((line[1:] if line.startswith(b".") else line) + b"\r\n")
        return None


# --- SmtpSink: Postfix's smtp-sink as a subprocess ---------------------------------------


_COUNTERS = re.compile(rb"sess=(\d+) quit=(\d+) mesg=(\d+)\r")


class SinkCounters(NamedTuple):
    """smtp-sink's -c counters: sessions ended, QUIT commands, final dots received."""

    sessions: int
    quits: int
    messages: int


@dataclass(frozen=True)
class SinkMessage:
    """One transaction smtp-sink dumped (-d): the MAIL and RCPT arguments as sent, and
    the content with CRLF line ends, dot-unstuffed."""

    mail_args: str  # e.g. "<a@x.test> SIZE=123"
    rcpt_args: tuple[str, ...]
    content: bytes


class SmtpSink:
    """Postfix's smtp-sink (a fast C server that discards mail) on host:port.

    Flags as in smtp-sink(1) of Postfix 3.7 (Debian 12). Always: -c, so that
    `counters()` can read "sess=N quit=N mesg=N" records from its stdout (written after
    every session end, QUIT and final dot); `-u nobody` when run as root, which it
    requires (it drops to that user after binding); `-h hostname`. On request:
    - `pipelining=False`: -p, no PIPELINING.
    - `enhanced_status_codes=False`: -E, no ENHANCEDSTATUSCODES (replies keep theirs).
    - `hard_reject`: -f CMDS, answer "500 5.3.0 Error: command failed" (implies -p).
    - `soft_reject`: -r CMDS, answer "450 4.3.0 Error: command failed" (implies -p).
    - `disconnect`: -q CMDS, hang up without a reply after the command.
    - `shutdown`: -Q CMDS, answer "421 4.0.0 Server closing connection" and hang up.
    - `dump=True`: -d, each transaction to a file, read back by `dumped()`.
    CMDS are CONNECT, HELO, EHLO, MAIL, RCPT, DATA, ".", RSET, NOOP, QUIT.

    Its EHLO advertises PIPELINING, 8BITMIME, AUTH, XCLIENT, XFORWARD,
    ENHANCEDSTATUSCODES and DSN, then ends with an empty "250 " line; no SIZE, no
    SMTPUTF8 (MAIL parameters are accepted unread). A 5xx greeting (-f CONNECT) does
    not end the session. `messages` counts final dots, rejected ones too.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        hostname: str = "sink.test",
        pipelining: bool = True,
        enhanced_status_codes: bool = True,
        hard_reject: Sequence[str] = (),
        soft_reject: Sequence[str] = (),
        disconnect: Sequence[str] = (),
        shutdown: Sequence[str] = (),
        dump: bool = False,
        backlog: int = 256,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.host = loopback(host)
        if ":" in host:
            raise ValueError("SmtpSink waits for its port in /proc/net/tcp: IPv4 only")
        self.port = port
        self.backlog = backlog
        flags = ["-c", "-h", hostname]
        if os.geteuid() == 0:
            flags += ["-u", "nobody"]
        flags += [] if pipelining else ["-p"]
        flags += [] if enhanced_status_codes else ["-E"]
        for flag, commands in (
            ("-f", hard_reject),
            ("-r", soft_reject),
            ("-q", disconnect),
            ("-Q", shutdown),
        ):
            if commands:
                flags += [flag, ",".join(commands)]
        self.flags = flags + list(extra_args)
        self.dump = dump
        self.process: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> Self:
        self._dir = Path(tempfile.mkdtemp(prefix="smtp-sink-"))
        flags = list(self.flags)
        if self.dump:
            # smtp-sink writes its dumps as nobody, after dropping root.
            self._dir.chmod(0o755)
            dumps = self._dir / "dump"
            dumps.mkdir()
            if os.geteuid() == 0:
                shutil.chown(dumps, "nobody")
            # The template goes through strftime; smtp-sink appends a random hex name.
            flags += ["-d", f"{dumps}/msg."]
        chosen = self.port
        for _ in range(5):  # another process may take a free port before smtp-sink binds it
            self.port = chosen or free_port(self.host)
            if self._launch(flags):
                return self
        errors = self.errors()
        self.stop()  # removes the temporary directory
        raise RuntimeError(f"smtp-sink did not start: {errors}")

    def _launch(self, flags: list[str]) -> bool:
        assert self._dir is not None
        with (
            open(self._dir / "counters", "wb") as out,
            open(self._dir / "stderr", "ab") as err,
        ):
            command = [SMTP_SINK, *flags, f"{self.host}:{self.port}", str(self.backlog)]
            self.process = subprocess.Popen(command, stdout=out, stderr=err)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if listening(self.host, self.port, self.process.pid):
                return True
            time.sleep(0.005)
        self.process.kill()
        self.process.wait()
        return False

    def stop(self) -> None:
        end_process(self.process)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def errors(self) -> str:
        """What smtp-sink wrote to stderr (fatal errors, warnings)."""
        assert self._dir is not None
        return (self._dir / "stderr").read_text(errors="replace")

    def counters(self) -> SinkCounters:
        assert self._dir is not None
        # One "sess=N quit=N mesg=N" record per update, each ended by a CR; the last may
        # still be being written. A benchmark writes megabytes of them: read the tail.
        with open(self._dir / "counters", "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 256))
            records = _COUNTERS.findall(f.read())
        return SinkCounters(*map(int, records[-1])) if records else SinkCounters(0, 0, 0)

    def wait_for(self, messages: int = 0, sessions: int = 0, timeout: float = 5.0) -> SinkCounters:
        """Waits until at least `messages` final dots and `sessions` ended sessions."""
        deadline = time.monotonic() + timeout
        while True:
            counters = self.counters()
            if counters.messages >= messages and counters.sessions >= sessions:
                return counters
            if time.monotonic() > deadline:
                raise AssertionError(f"smtp-sink: {counters} after {timeout} s")
            time.sleep(0.005)

    def dumped(self) -> list[SinkMessage]:
        """The dumped transactions (dump=True), oldest first."""
        assert self._dir is not None and self.dump
        files = sorted((self._dir / "dump").iterdir(), key=lambda p: p.stat().st_mtime_ns)
        return [_parse_dump(p.read_bytes()) for p in files]


def _parse_dump(data: bytes) -> SinkMessage:
    # smtp-sink writes LF line ends: its X- records, a three-line Received header, the
    # content, then one empty line.
    lines = data.split(b"\n")
    mail, rcpts = "", []
    i = 0
    while not lines[i].startswith(b"Received:"):
        name, _, value = lines[i].decode().partition(": ")
        if name == "X-Mail-Args":
            mail = value
        elif name == "X-Rcpt-Args":
            rcpts.append(value)
        i += 1
    content = lines[i + 3 : -2]
    return SinkMessage(mail, tuple(rcpts), b"".join(line + b"\r\n" for line in content))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (for servers that cannot bind port 0)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def listening(host: str, port: int, pid: int) -> bool:
    """Whether process `pid` listens on IPv4 host:port. Read from /proc: connecting to
    find out would count as a session in smtp-sink's counters."""
    # /proc/net/tcp lists local addresses as the in-memory bytes in hex (little-endian
    # here), ":", the port in hex; state 0A is LISTEN; field 9 is the socket's inode,
    # which the owner's /proc/PID/fd links to as "socket:[inode]".
    wanted = f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"
    with open("/proc/net/tcp") as f:
        inodes = {
            fields[9]
            for fields in (line.split() for line in f)
            if len(fields) > 9 and fields[1] == wanted and fields[3] == "0A"
        }
    if not inodes:
        return False
    try:
        links = {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
    except OSError:  # it exited meanwhile (or an fd closed as we read)
        return False
    return any(f"socket:[{inode}]" in links for inode in inodes)


# --- TLS material: a private CA and the peers' certificates -----------------------------


@dataclass(frozen=True)
class TlsFiles:
    """A server certificate issued by a PrivateCa, as PEM files, and an SSLContext that
    serves it (for ScriptedServer(tls=...))."""

    ca_pem: Path  # the CA certificate: what a verifying client trusts
    chain_pem: Path  # the leaf certificate, then the CA's
    key_pem: Path  # the leaf's private key (PKCS#8, unencrypted)
    names: tuple[str, ...]  # the DNS names and IP addresses the leaf is valid for
    server_context: ssl.SSLContext

    def client_context(self) -> ssl.SSLContext:
        """A client context trusting only the private CA, checking names."""
        return ssl.create_default_context(cafile=self.ca_pem)


class PrivateCa:
    """A throwaway certificate authority (ECDSA P-256) writing PEM files into a directory;
    `issue` makes leaf certificates for the test peers."""

    def __init__(self, directory: Path, name: str = "ferrymail test CA") -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        public = self.key.public_key()
        self.cert = (
            _builder(subject, subject, public)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = directory / "ca.pem"
        self.pem.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, dns_names: Sequence[str], ip_addresses: Sequence[str] = ()) -> TlsFiles:
        """A server certificate for the names (the first is also its common name)."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])])
        alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        alt_names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            _builder(subject, self.cert.subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        stem = self.directory / dns_names[0]
        chain, key_pem = stem.with_suffix(".chain.pem"), stem.with_suffix(".key.pem")
        chain.write_bytes(
            cert.public_bytes(serialization.Encoding.PEM)
            + self.cert.public_bytes(serialization.Encoding.PEM)
        )
        key_pem.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(chain, key_pem)
        names = (*dns_names, *ip_addresses)
        return TlsFiles(self.pem, chain, key_pem, names, context)


def _builder(
    subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        # An hour back, for clocks a little apart; long enough for any test session.
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
    )


def _key_usage(*, cert_sign: bool = False, digital_signature: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
