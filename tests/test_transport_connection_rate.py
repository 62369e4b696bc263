"""Route.connection_rates: the transport paces the new connections of batches by shared
token buckets, as the peer's own accept times show; reused connections take no token, a
cancel cuts the wait, and a rate that is not above 0 fails only its batch."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence

import ferrymail
import msgspec
import pytest
from ferrymail import ConnectionRate
from smtp_peers import Connection, ScriptedServer
from transport_support import campaign, collect, options, recipients, route, run, start, statuses

Scripted = Callable[..., ScriptedServer]
Outcomes = dict[int, ferrymail.Outcome]

RATE = 10.0
#: Most connections a bucket of RATE lets open in any one second: its burst (one
#: second's worth) and a second's worth more; one more for the peer's clock jitter.
MOST_IN_A_SECOND = 2 * int(RATE) + 1


def paced(to: ferrymail.Route, *rates: tuple[str, float], **settings: object) -> ferrymail.Route:
    buckets = [ConnectionRate(key, per_second) for key, per_second in rates]
    return msgspec.structs.replace(to, connection_rates=buckets, **settings)


def busiest_second(connections: Sequence[Connection]) -> int:
    """The most connections the peer accepted within one second of each other."""
    times = sorted(c.opened_at for c in connections)
    return max(sum(1 for t in times if start <= t < start + 1.0) for start in times)


def span(connections: Sequence[Connection]) -> float:
    times = [c.opened_at for c in connections]
    return max(times) - min(times)


def test_new_connections_keep_to_the_rate(scripted_server: Scripted) -> None:
    server = scripted_server()
    to = paced(route(server), ("dest.test", RATE))
    outcomes = run(lambda: _deliver(to, 30, max_messages_per_connection=1))
    assert statuses(outcomes) == ["delivered"] * 30
    server.wait_closed()
    assert len(server.connections) == 30
    assert busiest_second(server.connections) <= MOST_IN_A_SECOND
    # A burst of 10, then 20 more at 10 a second: at least 2 s from first to last.
    assert span(server.connections) >= 1.8


async def _deliver(
    to: ferrymail.Route, n: int, **option_overrides: object
) -> list[ferrymail.Outcome]:
    async with ferrymail.Transport(options(**option_overrides)) as transport:
        return await transport.deliver(campaign(), recipients(n), to)


def test_batches_naming_one_key_share_its_bucket_and_another_key_is_not_slowed(
    scripted_server: Scripted,
) -> None:
    # Two batches from different sources name one bucket (keyed by name, not source);
    # a third, from a source of its own, names another.
    server = scripted_server()
    first = paced(route(server), ("site", RATE), source_address="127.0.0.21")
    second = paced(route(server), ("site", RATE), source_address="127.0.0.23")
    other = paced(route(server), ("elsewhere", RATE), source_address="127.0.0.22")

    async def main() -> list[list[ferrymail.Outcome]]:
        async with ferrymail.Transport(options(max_messages_per_connection=1)) as transport:
            return list(
                await asyncio.gather(
                    transport.deliver(campaign(), recipients(15, "a.test"), first),
                    transport.deliver(campaign(), recipients(15, "b.test"), second),
                    transport.deliver(campaign(), recipients(10, "c.test"), other),
                )
            )

    batches = run(main)
    assert [statuses(b) for b in batches] == [["delivered"] * n for n in (15, 15, 10)]
    server.wait_closed()
    shared = [c for c in server.connections if c.client[0] in ("127.0.0.21", "127.0.0.23")]
    alone = [c for c in server.connections if c.client[0] == "127.0.0.22"]
    assert {c.client[0] for c in shared} == {"127.0.0.21", "127.0.0.23"}
    assert (len(shared), len(alone)) == (30, 10)
    # Together the two batches kept to the one bucket: its burst, then 10 a second.
    assert busiest_second(shared) <= MOST_IN_A_SECOND
    assert span(shared) >= 1.8
    # The other batch's 10 connections fit its own bucket's burst: all were open
    # before the shared bucket had let the two batches through (it would not be,
    # had it waited in the shared bucket or its own had been drawn down).
    assert max(c.opened_at for c in alone) < max(c.opened_at for c in shared) - 1.0


def test_a_reused_connection_takes_no_token(scripted_server: Scripted) -> None:
    # One token in 100 s: the first batch's connection takes the burst's only token,
    # and the second batch goes on that connection, pooled, without waiting for one.
    server = scripted_server()
    to = paced(route(server), ("dest.test", 0.01), max_connections=1)

    async def main() -> list[list[ferrymail.Outcome]]:
        async with ferrymail.Transport(options()) as transport:
            got = []
            for domain in ("a.test", "b.test"):
                delivery = start(transport, recipients(3, domain), to)
                outcomes: Outcomes = {}
                assert not await collect(delivery, outcomes)
                got.append([outcomes[i] for i in sorted(outcomes)])
            return got

    batches = run(main)
    assert [statuses(b) for b in batches] == [["delivered"] * 3] * 2
    assert len(server.connections) == 1 and len(server.delivered) == 6


def test_messages_waiting_for_a_token_go_on_a_connection_that_comes_back(
    scripted_server: Scripted,
) -> None:
    # One token in 100 s: the first connection takes it, the workers that join find
    # none for a second connection, and the messages they hold go on the first one
    # once it is handed back, not 100 s later (collect would fail first).
    server = scripted_server()
    to = paced(route(server), ("dest.test", 0.01))

    async def main() -> Outcomes:
        async with ferrymail.Transport(options()) as transport:
            delivery = start(transport, recipients(5), to)
            got: Outcomes = {}
            assert not await collect(delivery, got)
            return got

    got = run(main)
    assert statuses([got[i] for i in range(5)]) == ["delivered"] * 5
    assert len(server.connections) == 1


def test_a_cancel_cuts_the_wait_for_a_token(scripted_server: Scripted) -> None:
    # One token in 100 s: the first message goes on the burst's token, the others'
    # new connections wait for the next, and the cancel ends that wait at once
    # (without it, collect fails after transport_support.STREAM_LIMIT).
    server = scripted_server()
    to = paced(route(server), ("dest.test", 0.01))

    async def main() -> Outcomes:
        async with ferrymail.Transport(options(max_messages_per_connection=1)) as transport:
            delivery = start(transport, recipients(3), to)
            got: Outcomes = {}
            assert await collect(delivery, got, lambda g: len(g) == 1)
            delivery.cancel()
            assert not await collect(delivery, got)
            return got

    got = run(main)
    assert sorted(got) == [0, 1, 2]
    delivered = [o for o in got.values() if o.status == "delivered"]
    cut = [o for o in got.values() if o.status != "delivered"]
    assert len(delivered) == 1 and len(cut) == 2
    assert {(o.status, o.kind, o.stage) for o in cut} == {("transient", "cancelled", "connect")}
    server.wait_closed()
    assert len(server.connections) == 1


@pytest.mark.parametrize("per_second", [0.0, -1.0, math.nan, math.inf])
def test_a_rate_not_above_0_defers_the_batch_locally(
    scripted_server: Scripted, per_second: float
) -> None:
    server = scripted_server()
    bad = paced(route(server), ("dest.test", 10.0), ("dest.test\x00mta21", per_second))
    good = paced(route(server), ("dest.test", 10.0))

    async def main() -> list[list[ferrymail.Outcome]]:
        async with ferrymail.Transport(options()) as transport:
            return [
                await transport.deliver(campaign(), recipients(2, "a.test"), bad),
                await transport.deliver(campaign(), recipients(2, "b.test"), good),
            ]

    refused, sent = run(main)
    for o in refused:
        assert (o.status, o.kind, o.stage) == ("transient", "local", "connect")
        assert "connection_rates" in o.text and "dest.test\\0mta21" in o.text
    assert statuses(sent) == ["delivered"] * 2
    # Nothing of the refused batch reached the peer.
    assert {m.rcpt_tos[0].rsplit("@", 1)[1] for m in server.delivered} == {"b.test"}
