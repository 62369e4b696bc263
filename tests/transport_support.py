"""Helpers the transport tests share: a small campaign, recipients, routes to test peers,
one call that runs a Transport on uvloop, delivers and closes it, and the streaming
delivery (`start`, `collect`) the engine uses."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import ferrymail
import msgspec
import uvloop
from ferrymail import _core

T = TypeVar("T")

SENDER = "bounces@sender.test"


def campaign(**overrides: Any) -> ferrymail.Campaign:
    fields: dict[str, Any] = {
        "id": "transport-test",
        "sender": SENDER,
        "from_": "Sender <news@sender.test>",
        "subject": "Hello {{ name }}",
        "text": "Hello {{ name }},\n.a line that starts with a dot\nbye\n",
    }
    fields.update(overrides)
    return ferrymail.Campaign(**fields)


def recipients(n: int, domain: str = "dest.test") -> list[ferrymail.Recipient]:
    return [ferrymail.Recipient(f"user{i}@{domain}", {"name": f"User {i}"}) for i in range(n)]


def route(*peers: Any, name: str = "mx.test") -> ferrymail.Route:
    """A route through the peers in order, each as its own MX host."""
    hosts = [
        ferrymail.MxHost(f"{name}-{i}" if len(peers) > 1 else name, [p.host], p.port)
        for i, p in enumerate(peers)
    ]
    return ferrymail.Route(hosts)


def options(**overrides: Any) -> ferrymail.SmtpOptions:
    fields: dict[str, Any] = {"helo_name": "client.test", "tls": "off", "idle_timeout": 5.0}
    fields.update(overrides)
    return ferrymail.SmtpOptions(**fields)


def run(main: Callable[[], Awaitable[T]]) -> T:
    return uvloop.run(main())  # type: ignore[no-any-return]


def deliver(
    to: ferrymail.Route,
    batch: Sequence[ferrymail.Recipient | str],
    *,
    the_campaign: ferrymail.Campaign | None = None,
    **option_overrides: Any,
) -> list[ferrymail.Outcome]:
    """Delivers one batch with a fresh transport, then closes it."""

    async def main() -> list[ferrymail.Outcome]:
        async with ferrymail.Transport(options(**option_overrides)) as transport:
            return await transport.deliver(the_campaign or campaign(), batch, to)

    return run(main)


def statuses(outcomes: Sequence[ferrymail.Outcome]) -> list[str]:
    return [o.status for o in outcomes]


_encoder = msgspec.msgpack.Encoder()
_progress = msgspec.msgpack.Decoder(list[tuple[int, ferrymail.Outcome]])
#: How long `collect` waits for the next outcomes before failing the test: far beyond
#: what a working stream needs, far below the timeouts of the stalling peers.
STREAM_LIMIT = 10.0


def start(
    transport: ferrymail.Transport,
    batch: Sequence[ferrymail.Recipient],
    to: ferrymail.Route,
    the_campaign: ferrymail.Campaign | None = None,
) -> _core.Delivery:
    """Starts a streaming delivery, as the engine does."""
    compiled = (the_campaign or campaign())._inner
    return transport._inner.start(compiled, _encoder.encode(list(batch)), _encoder.encode(to))


async def collect(
    delivery: _core.Delivery,
    into: dict[int, ferrymail.Outcome],
    until: Callable[[dict[int, ferrymail.Outcome]], bool] | None = None,
) -> bool:
    """Reads outcomes by recipient index into `into` until `until(into)` holds (True) or
    the stream ends (False); a stream silent for STREAM_LIMIT seconds fails the test."""
    while until is None or not until(into):
        ready = await asyncio.wait_for(delivery.next(), STREAM_LIMIT)
        if ready is None:
            return False
        for index, outcome in _progress.decode(ready):
            assert index not in into, f"a second outcome for recipient {index}"
            into[index] = outcome
    return True
