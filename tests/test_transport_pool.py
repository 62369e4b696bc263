"""The connection pool, counted on the server side: reuse across batches, the per-address
connection cap, messages per connection, idle timeout, QUIT on close, dead idle
connections replaced, source address binding, cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import ferrymail
from smtp_peers import Fault, RawServer, ScriptedServer, drop
from transport_support import campaign, options, recipients, route, run, statuses

Scripted = Callable[..., ScriptedServer]
Raw = Callable[..., RawServer]


def test_connections_are_reused_across_batches(scripted_server: Scripted) -> None:
    server = scripted_server()

    async def main() -> list[ferrymail.Outcome]:
        async with ferrymail.Transport(options(max_connections_per_host=1)) as transport:
            first = await transport.deliver(campaign(), recipients(5), route(server))
            second = await transport.deliver(campaign(), recipients(5, "else.test"), route(server))
            return first + second

    assert statuses(run(main)) == ["delivered"] * 10
    server.wait_closed()
    (connection,) = server.connections
    assert connection.commands.count("EHLO client.test") == 1
    assert connection.commands[-1] == "QUIT"
    assert {m.connection for m in server.delivered} == {0}


def test_a_connection_carries_at_most_max_messages(scripted_server: Scripted) -> None:
    server = scripted_server()

    async def main() -> list[ferrymail.Outcome]:
        o = options(max_connections_per_host=1, max_messages_per_connection=3)
        async with ferrymail.Transport(o) as transport:
            return await transport.deliver(campaign(), recipients(7), route(server))

    assert statuses(run(main)) == ["delivered"] * 7
    server.wait_closed()
    per_connection = [
        sum(1 for m in server.delivered if m.connection == c.index) for c in server.connections
    ]
    assert per_connection == [3, 3, 1]
    assert all(c.commands[-1] == "QUIT" for c in server.connections)


def test_concurrent_batches_share_the_per_address_cap(scripted_server: Scripted) -> None:
    server = scripted_server()

    async def main() -> list[list[ferrymail.Outcome]]:
        async with ferrymail.Transport(options(max_connections_per_host=2)) as transport:
            batches = [recipients(40, f"d{i}.test") for i in range(4)]
            return await asyncio.gather(
                *(transport.deliver(campaign(), b, route(server)) for b in batches)
            )

    results = run(main)
    assert [statuses(r) for r in results] == [["delivered"] * 40] * 4
    server.wait_closed()
    # Never more than two connections at once; reuse means no more than two at all.
    assert len(server.connections) <= 2
    assert len(server.delivered) == 160


def test_idle_connections_close_with_quit_after_the_idle_timeout(scripted_server: Scripted) -> None:
    server = scripted_server()

    async def main() -> None:
        transport = ferrymail.Transport(options(idle_timeout=0.2))
        await transport.deliver(campaign(), recipients(1), route(server))
        await asyncio.sleep(1.0)
        server.wait_closed(timeout=0.1)
        await transport.close()

    run(main)
    assert [c.commands[-1] for c in server.connections] == ["QUIT"]


def test_close_sends_quit_on_idle_connections(scripted_server: Scripted) -> None:
    server = scripted_server()

    async def main() -> None:
        transport = ferrymail.Transport(options(max_connections_per_host=3, idle_timeout=60))
        await transport.deliver(campaign(), recipients(30), route(server))
        assert not any(c.closed for c in server.connections)
        await transport.close()

    run(main)
    server.wait_closed()
    assert server.connections and all(c.commands[-1] == "QUIT" for c in server.connections)


def test_an_idle_connection_the_server_closed_is_replaced(raw_server: Raw) -> None:
    # The server answers the first message, then hangs up: the pooled connection is
    # dead when the next batch comes, which must not cost that batch anything.
    server = raw_server(faults=[Fault("DOT", close=True, connection=0)])

    async def main() -> list[ferrymail.Outcome]:
        async with ferrymail.Transport(options(max_connections_per_host=1)) as transport:
            first = await transport.deliver(campaign(), recipients(1), route(server))
            server.wait_until(lambda: server.connections[0].closed)
            await asyncio.sleep(0.05)
            second = await transport.deliver(campaign(), recipients(2), route(server))
            return first + second

    assert statuses(run(main)) == ["delivered"] * 3
    assert len(server.connections) == 2


def test_a_pooled_connection_that_dies_on_use_is_retried_on_a_new_one(raw_server: Raw) -> None:
    # The race the liveness check cannot see: the connection looks fine when taken, and
    # the server drops it (or says 421) at MAIL. Nothing was accepted, so the message
    # goes again on a fresh connection instead of being deferred.
    late = campaign(sender="late@sender.test")
    busy = campaign(sender="busy@sender.test")
    server = raw_server(
        faults=[
            drop("MAIL", match="late@", connection=0),
            Fault("MAIL", reply="421 4.4.2 idle too long", close=True, match="busy@", connection=1),
        ]
    )

    async def main() -> list[ferrymail.Outcome]:
        async with ferrymail.Transport(options(max_connections_per_host=1)) as transport:
            out = await transport.deliver(campaign(), recipients(1), route(server))
            out += await transport.deliver(late, recipients(1), route(server))
            out += await transport.deliver(busy, recipients(1), route(server))
            return out

    assert statuses(run(main)) == ["delivered"] * 3
    assert len(server.connections) == 3
    assert [m.mail_from for m in server.delivered] == [
        "bounces@sender.test",
        "late@sender.test",
        "busy@sender.test",
    ]


def test_connections_leave_from_the_source_address(scripted_server: Scripted) -> None:
    server = scripted_server(host="127.0.0.2")

    async def main() -> list[ferrymail.Outcome]:
        async with ferrymail.Transport(options(source_address="127.0.0.9")) as transport:
            return await transport.deliver(campaign(), recipients(2), route(server))

    assert statuses(run(main)) == ["delivered"] * 2
    assert {c.client[0] for c in server.connections} == {"127.0.0.9"}


def test_a_cancelled_await_does_not_break_the_transport(raw_server: Raw) -> None:
    server = raw_server(faults=[Fault("DOT", delay=0.5, connection=0)])

    async def main() -> list[ferrymail.Outcome]:
        async with ferrymail.Transport(options(max_connections_per_host=1)) as transport:
            pending = asyncio.ensure_future(
                transport.deliver(campaign(), recipients(1), route(server))
            )
            await asyncio.sleep(0.1)
            pending.cancel()
            # The cancelled batch still ends its transaction properly in Rust.
            return await transport.deliver(campaign(), recipients(2, "next.test"), route(server))

    assert statuses(run(main)) == ["delivered"] * 2
    server.wait_closed()
    assert len(server.delivered) == 3
