"""Helpers the transport tests share: a small campaign, recipients, routes to test peers,
and one call that runs a Transport on uvloop, delivers and closes it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import ferrymail
import uvloop

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
