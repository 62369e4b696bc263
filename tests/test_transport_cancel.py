"""Cutting deliveries in progress (Delivery.cancel, Transport.abort), as a prompt stop on
SIGINT or SIGTERM does: against peers that never greet, stall after the dot or stall
half-way through a batch; what each recipient's outcome says, what the peer saw, and
that the transport goes on working."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import ferrymail
from smtp_peers import RawServer, ScriptedServer, slow
from transport_support import (
    campaign,
    collect,
    options,
    recipients,
    route,
    run,
    start,
    statuses,
)

Scripted = Callable[..., ScriptedServer]
Raw = Callable[..., RawServer]
Outcomes = dict[int, ferrymail.Outcome]

#: Longer than any test waits: without a working cancel, the tests fail on
#: transport_support.STREAM_LIMIT instead of finishing.
STALL = 60.0


async def _until(server: RawServer, condition: Callable[[], bool]) -> None:
    await asyncio.to_thread(server.wait_until, condition)


def test_cancel_cuts_a_session_waiting_for_a_banner_that_never_comes(raw_server: Raw) -> None:
    server = raw_server(faults=[slow("BANNER", STALL)])

    async def main() -> Outcomes:
        # The default greeting timeout: 300 s, what a stop used to wait for.
        async with ferrymail.Transport(options()) as transport:
            delivery = start(transport, recipients(3), route(server))
            await _until(server, lambda: server.stalls == [(0, "BANNER")])
            delivery.cancel()
            got: Outcomes = {}
            assert not await collect(delivery, got)
            return got

    got = run(main)
    assert sorted(got) == [0, 1, 2]
    assert {(o.status, o.kind, o.code) for o in got.values()} == {("transient", "cancelled", None)}
    # The worker's session was cut waiting for the banner; the others never started.
    first = got[0]
    assert (first.stage, first.mx, first.address) == ("banner", "mx.test", "127.0.0.1")
    assert [(o.stage, o.mx) for o in (got[1], got[2])] == [("connect", None)] * 2
    assert all("may have been delivered" not in o.text for o in got.values())
    assert all(o.message_id is not None for o in got.values())
    server.wait_closed()
    assert server.messages == [] and len(server.connections) == 1


def test_cancel_after_the_dot_says_the_message_may_have_been_delivered(raw_server: Raw) -> None:
    server = raw_server(faults=[slow("DOT", STALL)])

    async def main() -> Outcomes:
        async with ferrymail.Transport(options()) as transport:
            delivery = start(transport, recipients(1), route(server))
            await _until(server, lambda: (0, "DOT") in server.stalls)
            delivery.cancel()
            got: Outcomes = {}
            assert not await collect(delivery, got)
            return got

    (outcome,) = run(main).values()
    assert (outcome.status, outcome.kind, outcome.stage) == ("transient", "cancelled", "dot")
    assert outcome.code is None and outcome.address == "127.0.0.1"
    assert "may have been delivered" in outcome.text
    server.wait_closed()
    # The server got the whole message and never answered it.
    (message,) = server.messages
    assert message.reply == "" and message.rcpt_tos == ("user0@dest.test",)


def test_a_batch_cut_half_way_keeps_what_was_delivered_and_the_transport_goes_on(
    raw_server: Raw,
) -> None:
    # The third message's final dot is never answered; the fourth's envelope rides
    # behind it (PIPELINING), unanswered too.
    server = raw_server(faults=[slow("DOT", STALL, match="user2@")])

    async def main() -> tuple[Outcomes, list[ferrymail.Outcome]]:
        async with ferrymail.Transport(options(max_connections_per_host=1)) as transport:
            delivery = start(transport, recipients(4), route(server))
            got: Outcomes = {}
            assert await collect(delivery, got, until=lambda got: len(got) == 2)
            await _until(server, lambda: (0, "DOT") in server.stalls)
            delivery.cancel()
            assert not await collect(delivery, got)
            after = await transport.deliver(campaign(), recipients(2, "after.test"), route(server))
            return got, after

    got, after = run(main)
    assert [(got[i].status, got[i].code, got[i].kind) for i in (0, 1)] == [
        ("delivered", 250, "reply")
    ] * 2
    assert (got[2].status, got[2].kind, got[2].stage) == ("transient", "cancelled", "dot")
    assert "may have been delivered" in got[2].text
    assert (got[3].status, got[3].kind, got[3].stage) == ("transient", "cancelled", "mail")
    assert "may have been delivered" not in got[3].text

    # The next batch went on a new connection: the cut one was never pooled.
    assert statuses(after) == ["delivered"] * 2
    server.wait_closed()
    assert len(server.connections) == 2
    assert [(m.rcpt_tos[0], m.connection) for m in server.delivered] == [
        ("user0@dest.test", 0),
        ("user1@dest.test", 0),
        ("user0@after.test", 1),
        ("user1@after.test", 1),
    ]
    assert [(m.rcpt_tos[0], m.reply) for m in server.messages if not m.accepted] == [
        ("user2@dest.test", "")
    ]


def test_cancel_cuts_only_its_own_delivery(raw_server: Raw, scripted_server: Scripted) -> None:
    silent = raw_server(host="127.0.0.2", faults=[slow("BANNER", STALL)])
    healthy = scripted_server(host="127.0.0.3")

    async def main() -> tuple[Outcomes, Outcomes]:
        async with ferrymail.Transport(options()) as transport:
            cut = start(transport, recipients(2), route(silent))
            other = start(transport, recipients(3), route(healthy))
            await _until(silent, lambda: silent.stalls == [(0, "BANNER")])
            cut.cancel()
            cut_got: Outcomes = {}
            other_got: Outcomes = {}
            assert not await collect(cut, cut_got)
            assert not await collect(other, other_got)
            # Cancelling again, or after the end, changes nothing.
            cut.cancel()
            other.cancel()
            assert await cut.next() is None and await other.next() is None
            return cut_got, other_got

    cut_got, other_got = run(main)
    assert {o.kind for o in cut_got.values()} == {"cancelled"} and len(cut_got) == 2
    assert [other_got[i].status for i in range(3)] == ["delivered"] * 3
    assert len(healthy.delivered) == 3


def test_abort_cuts_every_delivery_of_the_transport_and_later_ones_run(
    raw_server: Raw, scripted_server: Scripted
) -> None:
    silent_a = raw_server(host="127.0.0.2", faults=[slow("BANNER", STALL)])
    silent_b = raw_server(host="127.0.0.3", faults=[slow("DOT", STALL)])
    healthy = scripted_server(host="127.0.0.4")

    async def main() -> tuple[Outcomes, list[ferrymail.Outcome], list[ferrymail.Outcome]]:
        async with ferrymail.Transport(options()) as transport:
            streaming = start(transport, recipients(2), route(silent_a))
            awaited = asyncio.ensure_future(
                transport.deliver(campaign(), recipients(1), route(silent_b))
            )
            await _until(silent_a, lambda: silent_a.stalls == [(0, "BANNER")])
            await _until(silent_b, lambda: silent_b.stalls == [(0, "DOT")])
            transport.abort()
            got: Outcomes = {}
            assert not await collect(streaming, got)
            cut = await asyncio.wait_for(awaited, 10.0)
            later = await transport.deliver(campaign(), recipients(3), route(healthy))
            return got, cut, later

    got, cut, later = run(main)
    assert [(got[i].kind, got[i].stage) for i in (0, 1)] == [
        ("cancelled", "banner"),
        ("cancelled", "connect"),
    ]
    ((kind, stage, status),) = {(o.kind, o.stage, o.status) for o in cut}
    assert (kind, stage, status) == ("cancelled", "dot", "transient")
    assert "may have been delivered" in cut[0].text
    assert statuses(later) == ["delivered"] * 3 and len(healthy.delivered) == 3


def test_cancel_cuts_a_wait_for_a_place_under_the_connection_limit(raw_server: Raw) -> None:
    # One connection allowed per address, held by the first delivery (its banner never
    # comes): the second waits for a place in the pool, and its cancel ends that wait.
    server = raw_server(faults=[slow("BANNER", STALL)])

    async def main() -> tuple[Outcomes, Outcomes]:
        async with ferrymail.Transport(options(max_connections_per_host=1)) as transport:
            holder = start(transport, recipients(1), route(server))
            await _until(server, lambda: server.stalls == [(0, "BANNER")])
            waiter = start(transport, recipients(2, "else.test"), route(server))
            await asyncio.sleep(0.05)  # let it reach the pool's wait (either way it ends)
            waiter.cancel()
            waited: Outcomes = {}
            assert not await collect(waiter, waited)
            transport.abort()
            held: Outcomes = {}
            assert not await collect(holder, held)
            return waited, held

    waited, held = run(main)
    assert {(o.kind, o.stage) for o in waited.values()} == {("cancelled", "connect")}
    assert len(waited) == 2 and held[0].stage == "banner"
    # The waiting delivery never connected: one connection in all.
    server.wait_closed()
    assert len(server.connections) == 1
