"""A fleet: three engine processes on one PostgreSQL spool deliver 20,000 recipients over
20 domains to loopback peers while one of them is SIGKILLed twice and restarted; and a
site suspended by one node is suspended for the others."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import ferrymail
from engine_support import on_uvloop
from ferrymail import Campaign, Engine, Recipient
from ferrymail.spool import open_spool
from ferrymail.suspensions import CHECK_EVERY
from fleet_node import start_node
from smtp_peers import ScriptedServer, SmtpSink

RECIPIENTS = int(os.environ.get("FERRYMAIL_FLEET_RECIPIENTS", "20000"))
DOMAINS = 20
SINKS = 4  # on 127.0.0.2 … 127.0.0.5, each the MX of five domains
WINDOW = 1000  # recipients each node leases at most: a kill strands no more than this
BATCH = 100
# Delivered (at the peers) when the node is killed, as shares of the whole.
KILLS = (0.25, 0.55)


def _delivered(sinks: list[SmtpSink]) -> int:
    return sum(s.counters().messages for s in sinks)


def test_three_nodes_one_killed_twice_every_recipient_final(pg_url: str, tmp_path: Path) -> None:
    sinks = [SmtpSink(f"127.0.0.{2 + i}", dump=True).start() for i in range(SINKS)]
    nodes: list[subprocess.Popen[bytes]] = []
    try:
        routes = {
            f"d{d}.test": f"{sinks[d % SINKS].host}:{sinks[d % SINKS].port}" for d in range(DOMAINS)
        }
        addresses = [f"user{i}@d{i % DOMAINS}.test" for i in range(RECIPIENTS)]
        campaign = Campaign(
            id="fleet", sender="b@news.test", from_="n@news.test", subject="Hi {{ n }}", text="x"
        )

        async def submit() -> None:
            config = ferrymail.Config(helo_name="fleet.test", routes=routes)
            async with Engine(pg_url, config) as engine:
                await engine.submit(campaign, [Recipient(a, {"n": 1}) for a in addresses])

        asyncio.run(submit())
        settings = [
            {
                "spool": pg_url,
                "node": f"node-{n}",
                "routes": routes,
                "window": WINDOW,
                "batch_size": BATCH,
                "event_log": str(tmp_path / f"node-{n}.jsonl"),
            }
            for n in range(3)
        ]
        started = time.monotonic()
        nodes = [start_node(s, tmp_path) for s in settings]
        killed_at = []
        for share in KILLS:
            while _delivered(sinks) < RECIPIENTS * share:
                assert all(p.poll() is None for p in nodes), "a node ended before the kill"
                time.sleep(0.02)
            nodes[0].send_signal(signal.SIGKILL)
            nodes[0].wait()  # reaped: its pid is gone, its leases are known dead
            killed_at.append(_delivered(sinks))
            nodes[0] = start_node(settings[0], tmp_path)
        for p in nodes:
            assert p.wait(120) == 0, (tmp_path / "node-0.stderr").read_text()[-2000:]
        took = time.monotonic() - started
        with open_spool(pg_url) as spool:
            counts = spool.counts()
        received = collections.Counter(r for s in sinks for m in s.dumped() for r in m.rcpt_args)
    finally:
        for p in nodes:
            if p.poll() is None:
                p.kill()
                p.wait()
        for s in sinks:
            s.stop()
    # Every recipient in exactly one final state: delivered, none left pending.
    assert counts.get("delivered") == RECIPIENTS, counts
    assert sum(counts.values()) == RECIPIENTS, counts
    assert set(received) == {f"<{a}>" for a in addresses}
    # Duplicates: only messages whose 250 came just before a kill (their outcome was
    # not yet recorded). Each kill can strand at most the node's window.
    duplicates = sum(n - 1 for n in received.values() if n > 1)
    print(
        f"\nfleet: {RECIPIENTS:,} recipients, 3 nodes, node-0 killed at {killed_at} "
        f"delivered; {took:.1f} s ({RECIPIENTS / took:,.0f} msg/s); duplicates: {duplicates}"
    )
    assert duplicates <= len(KILLS) * WINDOW
    # Each node kept its own event log, every event naming its node; and no recipient's
    # delivery was recorded twice (a duplicate is a 250 the killed node never recorded).
    recorded: collections.Counter[str] = collections.Counter()
    for n in range(3):
        events = [json.loads(line) for line in (tmp_path / f"node-{n}.jsonl").open()]
        assert events and {e["node"] for e in events} == {f"node-{n}"}
        recorded.update(e["address"] for e in events if e["type"] == "delivered")
    assert max(recorded.values()) == 1


@on_uvloop
async def test_a_site_suspended_by_one_node_is_suspended_for_the_other(
    pg_url: str, tmp_path: Path
) -> None:
    """Node 1's attempt gets a 421: it suspends the site, in the spool. Node 2, running
    all along and which delivered to that site before, then gets recipients of it: it
    sends none of them before the suspension ends (once it has read the table: within
    CHECK_EVERY), and delivers them after."""
    with ScriptedServer(rcpt_replies={"first@s.test": "421 4.7.0 slow down"}) as mx:

        def config(node: str) -> ferrymail.Config:
            return ferrymail.Config(
                helo_name="fleet.test",
                node=node,
                routes={"s.test": f"{mx.host}:{mx.port}"},
                smtp=ferrymail.SmtpOptions("fleet.test", tls="off", idle_timeout=1.0),
                suspend_for=4.0,
                event_log=str(tmp_path / f"{node}.jsonl"),
            )

        campaign = Campaign(
            id="s", sender="b@news.test", from_="n@news.test", subject="Hi", text="x"
        )
        async with Engine(pg_url, config("node-1")) as one, Engine(pg_url, config("node-2")) as two:
            # Node 2 delivers to the site first: it has the site in memory, unsuspended.
            running = asyncio.create_task(two.run())
            await two.submit(campaign, [Recipient("early@s.test")])
            while not mx.delivered:
                await asyncio.sleep(0.05)
            await one.submit(campaign, [Recipient("first@s.test")])
            first = asyncio.create_task(one.run())
            spooler = one._open().spooler
            while not (suspended := await spooler.call(spooler.spool.suspensions)):
                await asyncio.sleep(0.05)
            one.stop()
            await first
            # The others read the table every CHECK_EVERY: a suspension holds on them from
            # then on (no read per message).
            await asyncio.sleep(CHECK_EVERY * 1.5)
            await two.submit(campaign, [Recipient(f"later{i}@s.test") for i in range(3)])
            while len(mx.delivered) < 4:
                await asyncio.sleep(0.05)
            two.stop()
            await running
    (suspension,) = suspended
    later = [m for m in mx.delivered if "early@s.test" not in m.rcpt_tos]
    assert sorted(r for m in later for r in m.rcpt_tos) == [f"later{i}@s.test" for i in range(3)]
    # Not one before the suspension that node 1 made ended (the peer's own clock).
    assert min(m.received_at for m in later) >= suspension.until
