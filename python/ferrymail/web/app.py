"""The ASGI application: click redirects, the open pixel and RFC 8058 one-click unsubscribe."""

from __future__ import annotations

import email.parser
import email.policy
import logging
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ..errors import TokenError
from ..events import EventBus, feedback_event
from ..spool import Signal, Spool
from ..spooler import Spooler
from ..tracking import TokenClaims, verify
from . import pages
from .agents import Agents
from .config import WebConfig
from .writer import FeedbackWriter

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_log = logging.getLogger(__name__)

_HTML = (b"content-type", b"text/html; charset=utf-8")
# Every answer is about one recipient at one moment: no cache may keep it (a cached
# redirect or pixel would hide the next click or open), and no page is framed.
_NO_STORE = (b"cache-control", b"no-store, no-cache, must-revalidate, max-age=0")
_PAGE_HEADERS = [
    _HTML,
    _NO_STORE,
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'unsafe-inline'; "
        b"form-action 'self'; frame-ancestors 'none'",
    ),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
]
_PIXEL_HEADERS = [
    (b"content-type", b"image/gif"),
    (b"content-length", str(len(pages.PIXEL)).encode()),
    _NO_STORE,
    (b"pragma", b"no-cache"),
    (b"expires", b"0"),
]
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")
_FORM = "application/x-www-form-urlencoded"
_MULTIPART = "multipart/form-data"


class TrackingApp:
    """The ASGI callable `app()` returns. It holds no global state: the spool, a spool
    thread (Spooler), the config and the event bus are its own.

    `GET|HEAD <tracking_path>/<token>`: a click token answers 302 to the URL inside it
    (an http(s) URL by construction, checked again here), an open token the pixel.
    `GET|POST <unsubscribe_path>/<token>`: the confirmation page, or the unsubscribe.
    Anything else, and every token that does not open with the configured secrets (a
    tampered or foreign one, or of the other kind), is a plain 404 page."""

    def __init__(self, spool: Spool, config: WebConfig, events: EventBus | None) -> None:
        self.config = config
        self.events = events
        self._spooler = Spooler(spool)
        self._writer = FeedbackWriter(self._spooler, events)
        self._agents = Agents(config.scanners, config.image_proxies, config.apple_networks)
        self._tracking_secrets = [s.encode() for s in config.tracking_secrets]
        self._unsubscribe_secrets = [
            s.encode() for s in config.unsubscribe_secrets or config.tracking_secrets
        ]
        self._tracking = config.tracking_path + "/"
        self._unsubscribe = config.unsubscribe_path + "/"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith(self._tracking):
                await self._track(scope, send, path[len(self._tracking) :])
            elif path.startswith(self._unsubscribe):
                await self._unsubscribe_request(
                    scope, receive, send, path[len(self._unsubscribe) :]
                )
            else:
                await _respond(send, 404, _PAGE_HEADERS, pages.NOT_FOUND, scope)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def aclose(self) -> None:
        """Commits the signals still queued and ends the spool thread (the spool stays
        open: its owner closes it). The ASGI lifespan shutdown calls it."""
        await self._writer.flush()
        self._spooler.stop()

    async def flush(self) -> None:
        """Waits until the clicks and opens answered so far are committed."""
        await self._writer.flush()

    # ---- clicks and opens ----

    async def _track(self, scope: Scope, send: Send, token: str) -> None:
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            await _respond(
                send, 405, [*_PAGE_HEADERS, (b"allow", b"GET, HEAD")], pages.NOT_ALLOWED, scope
            )
            return
        claims = _open(token, self._tracking_secrets)
        if claims is None or claims.kind == "unsubscribe":
            await _respond(send, 404, _PAGE_HEADERS, pages.NOT_FOUND, scope)
            return
        agent = _user_agent(scope)
        key = str(claims.recipient)
        if claims.kind == "click":
            location = _location(claims.url)
            if location is None:  # never: verify returns http(s) URLs only
                await _respond(send, 404, _PAGE_HEADERS, pages.NOT_FOUND, scope)
                return
            machine = method == "HEAD" or self._agents.scanner(agent)
            signal = Signal(
                "clicked",
                claims.campaign,
                key,
                time.time(),
                machine,
                claims.link,
                claims.url,
                agent or None,
            )
            # Queued before the answer: when the queue is full (the spool cannot keep
            # up), the answer waits for room, and so does the client's next request on
            # this connection. Answered first, the requests would keep coming, each
            # task parked on the full queue, without bound.
            await self._writer.add(signal)
            headers = [
                (b"location", location),
                _NO_STORE,
                (b"referrer-policy", b"no-referrer"),
                (b"content-length", b"0"),
            ]
            await send({"type": "http.response.start", "status": 302, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
        else:
            client = scope.get("client")
            machine = method == "HEAD" or self._agents.proxy(agent, client[0] if client else None)
            await self._writer.add(
                Signal(
                    "opened", claims.campaign, key, time.time(), machine, user_agent=agent or None
                )
            )
            await _respond(send, 200, _PIXEL_HEADERS, pages.PIXEL, scope)

    # ---- unsubscribe ----

    async def _unsubscribe_request(
        self, scope: Scope, receive: Receive, send: Send, token: str
    ) -> None:
        method = scope["method"]
        if method not in ("GET", "HEAD", "POST"):
            await _respond(
                send,
                405,
                [*_PAGE_HEADERS, (b"allow", b"GET, HEAD, POST")],
                pages.NOT_ALLOWED,
                scope,
            )
            return
        claims = _open(token, self._unsubscribe_secrets)
        if claims is None or claims.kind != "unsubscribe":
            await _respond(send, 404, _PAGE_HEADERS, pages.NOT_FOUND, scope)
            return
        if method != "POST":
            # Link scanners follow every link: a GET only shows the button that posts.
            await _respond(send, 200, _PAGE_HEADERS, pages.CONFIRM, scope)
            return
        body = await _body(scope, receive, self.config.max_body)
        if body is None:
            await _respond(send, 413, _PAGE_HEADERS, pages.TOO_LARGE, scope)
            return
        if not _one_click(_header(scope, b"content-type"), body):
            await _respond(send, 400, _PAGE_HEADERS, pages.BAD_REQUEST, scope)
            return
        agent = _user_agent(scope) or None
        try:
            done = await self._spooler.call(
                self._spooler.spool.unsubscribe,
                claims.campaign,
                str(claims.recipient),
                scope=self.config.suppression_scope,
                user_agent=agent,
            )
        except Exception:
            # Not recorded: 503, so that the mail program (or the person) tries again.
            _log.exception("ferrymail web: an unsubscribe could not be recorded")
            await _respond(
                send, 503, [*_PAGE_HEADERS, (b"retry-after", b"60")], pages.UNAVAILABLE, scope
            )
            return
        if done is None:
            # A genuine token of a campaign or recipient this spool does not have.
            _log.warning(
                "ferrymail web: unsubscribe for %s of campaign %r: not in the spool",
                claims.recipient,
                claims.campaign,
            )
            await _respond(send, 404, _PAGE_HEADERS, pages.NOT_FOUND, scope)
            return
        if done.new and self.events is not None and self.events.listened:
            self.events.publish([feedback_event(done.signal, done.recorded)])
        await _respond(send, 200, _PAGE_HEADERS, pages.DONE, scope)


def _open(token: str, secrets: list[bytes]) -> TokenClaims | None:
    """The token's claims under the first secret that opens it; None if none does."""
    if not token or "/" in token:
        return None
    for secret in secrets:
        try:
            return verify(token, secret)
        except TokenError:
            continue
    return None


def _location(url: str | None) -> bytes | None:
    """The Location header for `url`, exactly it (an IRI's non-ASCII characters
    percent-encoded as UTF-8, the only way a header carries them); None unless it is
    an http(s) URL without control characters."""
    if url is None or not url[:8].lower().startswith(("http://", "https://")):
        return None
    if _CONTROL_OR_SPACE.search(url):
        return None
    if not url.isascii():
        url = urllib.parse.quote(url, safe="".join(map(chr, range(0x21, 0x7F))))
    return url.encode("ascii")


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def _user_agent(scope: Scope) -> str:
    return _header(scope, b"user-agent")[:512]


async def _body(scope: Scope, receive: Receive, limit: int) -> bytes | None:
    """The request body, or None when it is larger than `limit` (read no further)."""
    declared = _header(scope, b"content-length")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            return bytes(body)
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body", False):
            return bytes(body)


def _one_click(content_type: str, body: bytes) -> bool:
    """Whether the body is RFC 8058's `List-Unsubscribe=One-Click`, form-encoded or
    multipart (the two encodings §3.1 allows)."""
    kind = content_type.partition(";")[0].strip().lower()
    if kind == _FORM:
        try:
            fields = urllib.parse.parse_qs(body.decode("ascii"), strict_parsing=False)
        except UnicodeDecodeError:
            return False
        return fields.get("List-Unsubscribe") == ["One-Click"]
    if kind == _MULTIPART:
        # The standard library's MIME parser, on the body with its Content-Type: a form
        # is a MIME multipart (RFC 7578).
        head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1")
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        if not message.is_multipart():
            return False
        for part in message.iter_parts():
            if part.get_param("name", header="content-disposition") == "List-Unsubscribe":
                content = part.get_payload(decode=True)
                return isinstance(content, bytes) and content.strip() == b"One-Click"
        return False
    return False


async def _respond(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes, scope: Scope
) -> None:
    if headers is not _PIXEL_HEADERS:  # (the pixel's are constant, its length with them)
        headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
