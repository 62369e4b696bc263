"""The engine end to end against real peers: Knot serving the test zones, aiosmtpd and a
misbehaving server on loopback MX addresses, an SQLite spool file."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import ferrymail
import pytest
from dns_peer import DnsServer
from engine_support import (
    campaign,
    config,
    free_port_everywhere,
    logged_events,
    on_uvloop,
    people,
    quick_retry,
    reported,
)
from ferrymail.spool import Leased, open_spool
from smtp_peers import RawServer, ScriptedServer

Scripted = Callable[..., ScriptedServer]
Raw = Callable[..., RawServer]


@pytest.fixture(scope="module")
def port() -> int:
    return free_port_everywhere()


@on_uvloop
async def test_plain_delivery_with_events_and_report(
    dns_server: DnsServer, scripted_server: Scripted, port: int, tmp_path: Path, spool_at: str
) -> None:
    dns_server.add_zone("plain.test", ["@ MX 10 mx", "mx A 127.0.0.2"])
    server = scripted_server(host="127.0.0.2", port=port)
    async with ferrymail.Engine(spool_at, config(dns_server, port, tmp_path)) as e:
        result = await e.submit(campaign(), people("plain.test", 20))
        await e.drain()
        report = await e.report("c1")

    assert result == ferrymail.SubmitResult(accepted=20, rejected=0, suppressed=0)
    assert report.states["delivered"] == 20
    assert report.domains == {"plain.test": {"delivered": 20}}
    assert sorted(m.rcpt_tos[0] for m in server.delivered) == sorted(
        f"user{i}@plain.test" for i in range(20)
    )
    events = logged_events(tmp_path)
    assert [e["type"] for e in events].count("queued") == 20
    delivered = [e for e in events if e["type"] == "delivered"]
    assert len(delivered) == 20
    first = delivered[0]
    assert first["mx"] == "mx.plain.test" and first["ip"] == "127.0.0.2"
    assert first["code"] == 250 and first["attempt"] == 1 and first["campaign"] == "c1"
    assert str(first["recipient"]).startswith("plain.test-")
    assert isinstance(first["since_submit"], float) and first["since_submit"] >= 0


@on_uvloop
async def test_greylisting_is_retried_and_delivered(
    dns_server: DnsServer, scripted_server: Scripted, port: int, tmp_path: Path, spool_at: str
) -> None:
    dns_server.add_zone("grey.test", ["@ MX 10 mx", "mx A 127.0.0.3"])
    greylisted = "451 4.7.1 Greylisted, please try again later"
    server = scripted_server(host="127.0.0.3", port=port, replies={"RCPT": [greylisted] * 3})
    cfg = config(dns_server, port, tmp_path)
    async with ferrymail.Engine(spool_at, cfg) as e:
        await e.submit(campaign(), people("grey.test", 3))
        await e.drain()
        report = await e.report("c1")

    assert report.states["delivered"] == 3
    assert len(server.delivered) == 3
    kinds = [
        (ev["type"], ev["attempt"]) for ev in logged_events(tmp_path) if ev["type"] != "queued"
    ]
    assert kinds.count(("deferred", 1)) == 3 and kinds.count(("delivered", 2)) == 3
    deferred = next(ev for ev in logged_events(tmp_path) if ev["type"] == "deferred")
    assert deferred["code"] == 451 and deferred["enhanced"] == "4.7.1"


@on_uvloop
async def test_mixed_replies_bounce_and_suppress_bad_mailboxes(
    dns_server: DnsServer, scripted_server: Scripted, port: int, tmp_path: Path, spool_at: str
) -> None:
    dns_server.add_zone("mixed.test", ["@ MX 10 mx", "mx A 127.0.0.4"])
    scripted_server(
        host="127.0.0.4",
        port=port,
        rcpt_replies={
            "user1@mixed.test": "550 5.1.1 The email account that you tried to reach does "
            "not exist",
            "user2@mixed.test": "552 5.2.2 Mailbox full",
        },
    )
    async with ferrymail.Engine(spool_at, config(dns_server, port, tmp_path)) as e:
        await e.submit(campaign(), people("mixed.test", 4))
        await e.drain()
        report = await e.report("c1")
        assert await e.suppressions.contains("user1@mixed.test")
        assert not await e.suppressions.contains("user2@mixed.test")
        # Suppressed from now on: a new campaign does not send to it.
        result = await e.submit(campaign("c2"), people("mixed.test", 2))
        assert result == ferrymail.SubmitResult(accepted=1, rejected=0, suppressed=1)
        await e.drain()

    assert report.states["delivered"] == 2 and report.states["bounced"] == 2
    assert report.categories == {"bad-mailbox": 1, "quota": 1}


@on_uvloop
async def test_dns_answers_decide_bounces_and_implicit_mx(
    dns_server: DnsServer, scripted_server: Scripted, port: int, tmp_path: Path, spool_at: str
) -> None:
    dns_server.add_zone("nullmx.test", ["@ MX 0 ."])
    dns_server.add_zone("implicit.test", ["@ A 127.0.0.5"])
    dns_server.add_zone("exists.test", ["@ MX 10 mx", "mx A 127.0.0.5"])
    server = scripted_server(host="127.0.0.5", port=port)
    batch = [
        *people("nullmx.test", 2),
        *people("implicit.test", 2),
        *people("nowhere.exists.test", 2),
    ]
    async with ferrymail.Engine(spool_at, config(dns_server, port, tmp_path)) as e:
        await e.submit(campaign(), batch)
        await e.drain()
        report = await e.report("c1")

    assert report.domains["nullmx.test"] == {"bounced": 2}
    assert report.domains["implicit.test"] == {"delivered": 2}
    assert report.domains["nowhere.exists.test"] == {"bounced": 2}
    assert report.categories["bad-domain"] == 4
    assert {m.rcpt_tos[0].split("@")[1] for m in server.delivered} == {"implicit.test"}
    by_domain = {ev["domain"]: ev for ev in logged_events(tmp_path) if ev["type"] == "bounced"}
    assert (by_domain["nullmx.test"]["code"], by_domain["nullmx.test"]["enhanced"]) == (
        556,
        "5.1.10",
    )
    assert by_domain["nowhere.exists.test"]["enhanced"] == "5.1.2"


@on_uvloop
async def test_servfail_defers_then_recovers(
    dns_server: DnsServer, scripted_server: Scripted, port: int, tmp_path: Path, spool_at: str
) -> None:
    dns_server.set_servfail("flaky.test")
    server = scripted_server(host="127.0.0.6", port=port)
    cfg = config(
        dns_server, port, tmp_path, retry=quick_retry(first_retry=60, max_interval=60, max_age=600)
    )
    async with ferrymail.Engine(spool_at, cfg) as e:
        await e.submit(campaign(), people("flaky.test", 3))
        runner = asyncio.create_task(e.run())
        await reported(e, "deferred", 3)
        deferred = [ev for ev in logged_events(tmp_path) if ev["type"] == "deferred"]
        assert {(ev["code"], ev["enhanced"]) for ev in deferred} == {(451, "4.4.3")}
        dns_server.add_zone("flaky.test", ["@ MX 10 mx", "mx A 127.0.0.6"])
        assert await e.flush("flaky.test") == 3
        await reported(e, "delivered", 3)
        e.stop()
        await runner
    assert len(server.delivered) == 3


@on_uvloop
async def test_first_mx_dead_second_alive(
    dns_server: DnsServer, scripted_server: Scripted, port: int, tmp_path: Path, spool_at: str
) -> None:
    dns_server.add_zone(
        "failover.test", ["@ MX 10 a", "@ MX 20 b", "a A 127.0.0.7", "b A 127.0.0.8"]
    )
    server = scripted_server(host="127.0.0.8", port=port)
    async with ferrymail.Engine(spool_at, config(dns_server, port, tmp_path)) as e:
        await e.submit(campaign(), people("failover.test", 5))
        await e.drain()
        report = await e.report("c1")
    assert report.states["delivered"] == 5 and len(server.delivered) == 5
    assert {ev["mx"] for ev in logged_events(tmp_path) if ev["type"] == "delivered"} == {
        "b.failover.test"
    }


@on_uvloop
async def test_a_site_answering_421_is_suspended_and_the_rest_wait(
    dns_server: DnsServer, scripted_server: Scripted, port: int, tmp_path: Path, spool_at: str
) -> None:
    dns_server.add_zone("busy.test", ["@ MX 10 mx", "mx A 127.0.0.9"])
    dns_server.add_zone("busy2.test", ["@ MX 10 mx.busy.test."])
    server = scripted_server(host="127.0.0.9", port=port, banner="421 4.7.0 Too many connections")
    cfg = config(dns_server, port, tmp_path, batch_size=5, suspend_for=60.0)
    async with ferrymail.Engine(spool_at, cfg) as e:
        await e.submit(campaign(), [*people("busy.test", 20), *people("busy2.test", 20)])
        runner = asyncio.create_task(e.run())
        await reported(e, "deferred", 5)
        await asyncio.sleep(0.5)
        e.stop()
        await runner
        report = await e.report("c1")

    # One batch was tried and deferred; the other 35 recipients of the site (busy2.test
    # included: same MX) wait for the suspension to end without an attempt of their own.
    assert report.states["deferred"] == 5 and report.states["queued"] == 35
    assert [ev["type"] for ev in logged_events(tmp_path)].count("deferred") == 5
    assert len(server.connections) == 1


@on_uvloop
async def test_a_suspension_is_in_the_spool_survives_a_restart_and_flush_lifts_it(
    dns_server: DnsServer, scripted_server: Scripted, port: int, tmp_path: Path, spool_at: str
) -> None:
    dns_server.add_zone("held.test", ["@ MX 10 mx", "mx A 127.0.0.13"])
    dns_server.add_zone("held2.test", ["@ MX 10 mx.held.test."])
    server = scripted_server(host="127.0.0.13", port=port, banner="421 4.7.0 Try again soon")
    cfg = config(dns_server, port, tmp_path, batch_size=5, suspend_for=600.0)
    path = spool_at
    async with ferrymail.Engine(path, cfg) as e:
        await e.submit(campaign(), [*people("held.test", 10), *people("held2.test", 10)])
        runner = asyncio.create_task(e.run())
        await reported(e, "deferred", 5)
        e.stop()
        await runner

    # What `ferrymail status` shows, read as another process would.
    with open_spool(path) as spool:
        (held,) = spool.status().suspended
    assert held.site == f"mx.held.test:{port}"
    assert "421 4.7.0 Try again soon" in held.reason
    assert held.domains == ["held.test", "held2.test"]
    assert 590 < held.until - time.time() <= 600

    # A restart keeps the site suspended: nobody connects, nobody is attempted.
    async with ferrymail.Engine(path, cfg) as e:
        runner = asyncio.create_task(e.run())
        await asyncio.sleep(1.0)
        assert len(server.connections) == 1
        assert (await e.report("c1")).states["deferred"] == 5

        # The site is well again and `ferrymail flush held2.test` runs in another
        # process: the running engine notices within a second and delivers everything.
        server.banner = None
        with open_spool(path) as spool:
            assert spool.lift("held2.test") == [held.site]
            assert spool.flush("held2.test") == 10
            spool.flush()  # the deferred ones of held.test too
        await reported(e, "delivered", 20)
        e.stop()
        await runner
    assert len(server.delivered) == 20
    with open_spool(path) as spool:
        assert spool.status().suspended == []


@on_uvloop
async def test_recipients_expire_after_max_age(
    dns_server: DnsServer, scripted_server: Scripted, port: int, tmp_path: Path, spool_at: str
) -> None:
    dns_server.add_zone("never.test", ["@ MX 10 mx", "mx A 127.0.0.10"])
    scripted_server(
        host="127.0.0.10", port=port, rcpt_replies={"user0@never.test": "450 4.2.1 later"}
    )
    cfg = config(
        dns_server,
        port,
        tmp_path,
        retry=quick_retry(first_retry=0.1, max_interval=0.2, max_age=0.8),
    )
    async with ferrymail.Engine(spool_at, cfg) as e:
        await e.submit(campaign(), people("never.test", 2))
        await e.drain()
        report = await e.report("c1")
    assert report.states["expired"] == 1 and report.states["delivered"] == 1
    expired = [ev for ev in logged_events(tmp_path) if ev["type"] == "expired"]
    assert len(expired) == 1 and expired[0]["category"] == "message-expired"
    assert int(expired[0]["attempt"]) >= 3


@on_uvloop
async def test_invalid_and_suppressed_recipients_are_final_at_submit(
    dns_server: DnsServer, port: int, tmp_path: Path, spool_at: str
) -> None:
    async with ferrymail.Engine(spool_at, config(dns_server, port, tmp_path)) as e:
        await e.suppressions.add("Blocked@Example.test", "complained")
        result = await e.submit(
            campaign(),
            ["not-an-address", "blocked@example.test", "a@@b", ferrymail.Recipient("")],
        )
        report = await e.report("c1")
        assert [s[0] for s in (await e.suppressions.list())] == ["blocked@example.test"]
        assert await e.suppressions.remove("blocked@example.test")
    assert result == ferrymail.SubmitResult(accepted=0, rejected=3, suppressed=1)
    assert report.states["rejected"] == 3 and report.states["suppressed"] == 1
    rejected = [ev for ev in logged_events(tmp_path) if ev["type"] == "rejected"]
    assert "missing '@'" in str(rejected[0]["text"]) and rejected[0]["enhanced"] == "5.1.3"


@on_uvloop
async def test_a_restart_mid_campaign_delivers_each_recipient_once(
    dns_server: DnsServer, scripted_server: Scripted, port: int, tmp_path: Path, spool_at: str
) -> None:
    dns_server.add_zone("restart.test", ["@ MX 10 mx", "mx A 127.0.0.11"])
    server = scripted_server(host="127.0.0.11", port=port)
    cfg = config(dns_server, port, tmp_path, batch_size=10)
    spool = spool_at

    async def generate() -> AsyncIterator[ferrymail.Recipient]:
        for r in people("restart.test", 300):
            yield r

    async with ferrymail.Engine(spool, cfg) as first:
        await first.submit(campaign(), generate())
        runner = asyncio.create_task(first.run())
        await reported(first, "delivered", 50)
        first.stop()
        await runner
        part = (await first.report("c1")).states["delivered"]
    assert 50 <= part < 300

    async with ferrymail.Engine(spool, cfg) as second:
        # The ESP, not sure how far its submit got, submits the whole list again.
        again = await second.submit(campaign(), generate())
        assert again == ferrymail.SubmitResult(0, 0, 0, duplicates=300)
        await second.drain()
        report = await second.report("c1")
    assert report.states["delivered"] == 300
    delivered = [m.rcpt_tos[0] for m in server.delivered]
    assert len(delivered) == len(set(delivered)) == 300


@on_uvloop
async def test_a_recipient_the_process_keeps_dying_with_backs_off_and_expires(
    dns_server: DnsServer, scripted_server: Scripted, port: int, tmp_path: Path, spool_at: str
) -> None:
    dns_server.add_zone("calm.test", ["@ MX 10 mx", "mx A 127.0.0.14"])
    dns_server.add_zone("poison.test", ["@ MX 10 mx.calm.test."])
    server = scripted_server(host="127.0.0.14", port=port)
    cfg = config(dns_server, port, tmp_path, retry=quick_retry(first_retry=0.3))
    path = spool_at
    async with ferrymail.Engine(path, cfg) as e:
        await e.submit(campaign(), [*people("calm.test", 4), *people("poison.test", 1)])

    def die_with_it() -> Leased:
        """A process that leases the poison.test recipient and dies while delivering to
        it: its lease ends with no outcome."""
        with open_spool(path) as spool:
            (leased,) = spool.lease(1, "doomed", 0.05, domains=["poison.test"])
            spool.started([leased.id])
        time.sleep(0.1)
        return leased

    assert die_with_it().interrupted == 0
    assert die_with_it().interrupted == 1  # once is chance: due again at once
    async with ferrymail.Engine(path, cfg) as e:
        # Twice in a row: deferred like a failed attempt, on the retry schedule.
        runner = asyncio.create_task(e.drain())
        await reported(e, "delivered", 4)
        assert (await e.report("c1")).states["deferred"] == 1
        e.stop()
        await runner
    deferred = [ev for ev in logged_events(tmp_path) if ev["type"] == "deferred"]
    assert deferred[0]["address"] == "user0@poison.test"
    assert "stopped 2 times in a row" in str(deferred[0]["text"])

    # Back on the retry schedule (here 0.3 s), like any deferral: it expires after
    # max_age if it keeps killing the process; this time it does not.
    async with ferrymail.Engine(path, cfg) as e:
        await e.drain()
        assert (await e.report("c1")).states["delivered"] == 5
    assert len(server.delivered) == 5


def test_send_is_one_synchronous_call(
    dns_server: DnsServer, scripted_server: Scripted, port: int, tmp_path: Path, spool_at: str
) -> None:
    dns_server.add_zone("sync.test", ["@ MX 10 mx", "mx A 127.0.0.12"])
    server = scripted_server(host="127.0.0.12", port=port)
    report = ferrymail.send(
        campaign(),
        people("sync.test", 7),
        spool=spool_at,
        helo_name="engine.test",
        dns_servers=[dns_server.address],
        mx_port=port,
        smtp=ferrymail.SmtpOptions("engine.test", tls="off"),
    )
    assert report.states["delivered"] == 7 and len(server.delivered) == 7


@on_uvloop
async def test_a_route_override_and_the_event_stream(
    dns_server: DnsServer, scripted_server: Scripted, port: int, tmp_path: Path, spool_at: str
) -> None:
    # No zone for routed.test at all: the override is used, DNS is never asked.
    server = scripted_server(host="127.0.0.13")
    cfg = config(dns_server, port, tmp_path, routes={"routed.test": f"127.0.0.13:{server.port}"})
    async with ferrymail.Engine(spool_at, cfg) as e:
        seen: list[ferrymail.Event] = []

        async def listen() -> None:
            async for event in e.events():
                seen.append(event)
                if sum(ev.type == "delivered" for ev in seen) == 4:
                    return

        listener = asyncio.create_task(listen())
        await asyncio.sleep(0)
        await e.submit(campaign(), people("routed.test", 4))
        await e.drain()
        await asyncio.wait_for(listener, 5)
    assert len(server.delivered) == 4
    assert [ev.type for ev in seen].count("queued") == 4
    assert {ev.mx for ev in seen if ev.type == "delivered"} == {"127.0.0.13"}


@on_uvloop
async def test_a_site_rate_limit_spaces_the_messages(
    dns_server: DnsServer, scripted_server: Scripted, port: int, tmp_path: Path, spool_at: str
) -> None:
    dns_server.add_zone("slow.test", ["@ MX 10 mx", "mx A 127.0.0.14"])
    server = scripted_server(host="127.0.0.14", port=port)
    limits = ferrymail.SiteLimits(messages_per_second=20)
    cfg = config(dns_server, port, tmp_path, site_overrides={"mx.slow.test": limits})
    async with ferrymail.Engine(spool_at, cfg) as e:
        await e.submit(campaign(), people("slow.test", 60))
        await e.drain()
    assert len(server.delivered) == 60
    times = sorted(m.received_at for m in server.delivered)  # the peer's own clock
    # 20 a second with one second's worth saved up: 20 at once, then 20 a second, so
    # the 60 take 2 s. Never more than 20 + 20 in any one second (the limit holds), and
    # not much slower than the limit allows (the limiter does not over-throttle).
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert busiest <= 41, f"{busiest} messages in one second at a limit of 20/s"
    assert 1.8 <= times[-1] - times[0] <= 6.0, times[-1] - times[0]


@on_uvloop
async def test_drain_may_run_while_submit_streams(
    dns_server: DnsServer, scripted_server: Scripted, port: int, tmp_path: Path, spool_at: str
) -> None:
    dns_server.add_zone("overlap.test", ["@ MX 10 mx", "mx A 127.0.0.15"])
    server = scripted_server(host="127.0.0.15", port=port)
    first_sent = asyncio.Event()

    async def slowly() -> AsyncIterator[ferrymail.Recipient]:
        for i, r in enumerate(people("overlap.test", 30)):
            if i == 15:
                # The second half waits until the first half has been delivered: only
                # a drain running beside the submit can do that.
                await asyncio.wait_for(first_sent.wait(), 10)
            yield r

    cfg = config(dns_server, port, tmp_path)
    async with ferrymail.Engine(spool_at, cfg) as e:

        async def watch() -> None:
            async for event in e.events():
                if event.type == "delivered":
                    first_sent.set()
                    return

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0)
        draining = asyncio.create_task(e.drain())
        # The source pauses after 15: submit queues those 15 at once, not after 10,000.
        await e.submit(campaign(), slowly())
        await draining
        await watcher
        report = await e.report("c1")
    assert report.states["delivered"] == 30 and len(server.delivered) == 30
