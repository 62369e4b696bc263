"""Egress sources, pools and warm-up applied by the engine: batches leave from the
campaign's pool's sources (127.0.0.21 to .24, seen by the peer), a warming source sends
its day's allowance and no more, and a source a receiver blocks is taken out of its
pool for that site (for all the provider's sites, when a provider entry matched) while
the rest of the pool carries the traffic."""

from __future__ import annotations

import asyncio
import datetime
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import ferrymail
import pytest
from dns_peer import DnsServer
from engine_support import campaign, config, free_port_everywhere, on_uvloop, people
from ferrymail.shaping import loads
from ferrymail.spool import open_spool
from smtp_peers import ScriptedServer

Scripted = Callable[..., ScriptedServer]
SOURCES = ["127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.24"]
TODAY = datetime.datetime.now(datetime.UTC).date()
YAHOO_TS01 = (
    "421 4.7.0 [TS01] Messages from 127.0.0.21 temporarily deferred due to user "
    "complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes"
)


def sources_toml(warmup: dict[str, str] | None = None) -> str:
    lines = []
    for i, address in enumerate(SOURCES, start=1):
        lines += [f"[source.ip{i}]", f'address = "{address}"', f'ehlo = "mta{i}.sender.test"']
        if warmup and f"ip{i}" in warmup:
            lines.append(f"warmup = {warmup[f'ip{i}']}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def port() -> int:
    return free_port_everywhere(
        ["127.0.0.30", "127.0.0.31", "127.0.0.32", "127.0.0.33", "127.0.0.34"]
    )


def client_of(peer: ScriptedServer, message: int) -> tuple[str, str | None]:
    """The client address and EHLO name of the connection that carried a message."""
    connection = peer.connections[peer.delivered[message].connection]
    return connection.client[0], connection.helo


@on_uvloop
async def test_batches_leave_from_the_campaigns_pool_by_weight(
    dns_server: DnsServer, scripted_server: Scripted, port: int, tmp_path: Path, spool_at: str
) -> None:
    dns_server.add_zone("pooled.test", ["@ MX 10 mx", "mx A 127.0.0.30"])
    peer = scripted_server(host="127.0.0.30", port=port)
    shaping = sources_toml() + (
        "[pool.default]\nsources = { ip1 = 1 }\n"
        "[pool.bulk]\nsources = { ip1 = 3, ip2 = 1, ip3 = 2, ip4 = 2 }\n"
    )
    cfg = config(dns_server, port, tmp_path, shaping=loads(shaping, name="s.toml"), batch_size=10)
    async with ferrymail.Engine(spool_at, cfg) as engine:
        await engine.submit(campaign("c1", pool="bulk"), people("pooled.test", 160))
        await engine.drain()
        with pytest.raises(ferrymail.ConfigError, match=r"pool 'nope'.*pools: default, bulk"):
            await engine.submit(campaign("c2", pool="nope"), people("pooled.test", 1))

    seen = [client_of(peer, i) for i in range(len(peer.delivered))]
    by_source = Counter(address for address, _ in seen)
    # 16 batches of 10, round the 3:1:2:2 schedule twice.
    assert by_source == {"127.0.0.21": 60, "127.0.0.22": 20, "127.0.0.23": 40, "127.0.0.24": 40}
    assert all(helo == f"mta{SOURCES.index(a) + 1}.sender.test" for a, helo in seen)
    with open_spool(spool_at, read_only=True) as spool:
        assert spool.report("c1").states["delivered"] == 160


@on_uvloop
async def test_a_warming_source_sends_its_allowance_and_the_pool_carries_the_rest(
    dns_server: DnsServer, scripted_server: Scripted, port: int, tmp_path: Path, spool_at: str
) -> None:
    dns_server.add_zone("warm.test", ["@ MX 10 mx", "mx A 127.0.0.31"])
    peer = scripted_server(host="127.0.0.31", port=port)
    start = (TODAY - datetime.timedelta(days=1)).isoformat()
    warmup = {"ip1": f"{{ start = {start}, per_day = [10, 25, 50] }}"}  # day 1: 25
    shaping = sources_toml(warmup) + (
        "[pool.default]\nsources = { ip1 = 1, ip2 = 1 }\n[pool.new]\nsources = { ip1 = 1 }\n"
    )
    cfg = config(dns_server, port, tmp_path, shaping=loads(shaping, name="s.toml"), batch_size=10)
    async with ferrymail.Engine(spool_at, cfg) as engine:
        await engine.submit(campaign("c1"), people("warm.test", 100))
        await engine.drain()
        # A campaign whose pool is only the warming source: its allowance is used up
        # today, so its recipients wait (for tomorrow), and none bounces.
        await engine.submit(campaign("c2", pool="new"), people("warm.test", 5, start=100))
        running = asyncio.create_task(engine.run())
        await asyncio.sleep(1.0)
        engine.stop()
        await running
        waiting = await engine.report("c2")

    by_source = Counter(client_of(peer, i)[0] for i in range(len(peer.delivered)))
    assert by_source == {"127.0.0.21": 25, "127.0.0.22": 75}
    assert waiting.states["delivered"] == 0 and waiting.states["bounced"] == 0
    assert waiting.states["queued"] + waiting.states["deferred"] == 5
    with open_spool(spool_at, read_only=True) as spool:
        counted = spool.warmup_sent(TODAY.isoformat())
    assert list(counted.values()) == [25] and next(iter(counted))[0] == "ip1"


@on_uvloop
async def test_a_source_the_receiver_blocks_leaves_the_pool_for_that_site_only(
    dns_server: DnsServer, scripted_server: Scripted, port: int, tmp_path: Path, spool_at: str
) -> None:
    dns_server.add_zone("blocking.test", ["@ MX 10 mx", "mx A 127.0.0.32"])
    peer = scripted_server(
        host="127.0.0.32", port=port, client_rcpt_replies={"127.0.0.21": YAHOO_TS01}
    )
    shaping = sources_toml() + (
        "[pool.default]\nsources = { ip1 = 1, ip2 = 1 }\n"
        '[site."mx.blocking.test"]\n'
        '[[site."mx.blocking.test".automation]]\n'
        'name = "yahoo-deferred"\n'
        "regex = '^421 4\\.7\\.0 \\[TSS?0[124]\\]'\n"
        'trigger = "immediate"\nscope = "source"\nsuspend = true\nduration = "1h"\n'
    )
    cfg = config(dns_server, port, tmp_path, shaping=loads(shaping, name="s.toml"), batch_size=10)
    async with ferrymail.Engine(spool_at, cfg) as engine:
        await engine.submit(campaign(), people("blocking.test", 60))
        await engine.drain()
        report = await engine.report("c1")

    assert report.states["delivered"] == 60  # the deferred ones went again, from ip2
    assert {client_of(peer, i)[0] for i in range(len(peer.delivered))} == {"127.0.0.22"}
    with open_spool(spool_at, read_only=True) as spool:
        (action,) = spool.actions()
        assert spool.suspensions() == []  # the site was not suspended: only ip1 there
    assert (action.rule, action.scope, action.source) == ("yahoo-deferred", "source", "ip1")
    assert action.reply.startswith("421 4.7.0 [TS01]")


@on_uvloop
async def test_a_source_blocked_at_one_of_a_providers_sites_is_blocked_at_all_of_them(
    dns_server: DnsServer, scripted_server: Scripted, port: int, tmp_path: Path, spool_at: str
) -> None:
    # Two domains of one receiver (as gmail.com and a Workspace domain are Gmail's):
    # different MX hosts, so different sites, matched by one provider entry.
    dns_server.add_zone("first.test", ["@ MX 10 mx1.bigmail.test."])
    dns_server.add_zone("second.test", ["@ MX 10 mx2.bigmail.test."])
    dns_server.add_zone("bigmail.test", ["mx1 A 127.0.0.33", "mx2 A 127.0.0.34"])
    blocking = scripted_server(
        host="127.0.0.33", port=port, client_rcpt_replies={"127.0.0.21": YAHOO_TS01}
    )
    other = scripted_server(host="127.0.0.34", port=port)
    shaping = sources_toml() + (
        "[pool.default]\nsources = { ip1 = 1, ip2 = 1 }\n"
        '[provider.bigmail]\nmx_suffix = [".bigmail.test"]\n'
        "[[provider.bigmail.automation]]\n"
        'name = "deferred"\n'
        "regex = '^421 4\\.7\\.0 \\[TSS?0[124]\\]'\n"
        'trigger = "immediate"\nscope = "source"\nsuspend = true\nduration = "1h"\n'
    )
    cfg = config(dns_server, port, tmp_path, shaping=loads(shaping, name="s.toml"), batch_size=10)
    async with ferrymail.Engine(spool_at, cfg) as engine:
        await engine.submit(campaign(), people("first.test", 20))
        await engine.drain()
        await engine.submit(campaign(), people("second.test", 40))
        await engine.drain()
        report = await engine.report("c1")

    assert report.states["delivered"] == 60
    assert {client_of(blocking, i)[0] for i in range(len(blocking.delivered))} == {"127.0.0.22"}
    # ip1 never went to the provider's other site: the block there is the provider's.
    assert {client_of(other, i)[0] for i in range(len(other.delivered))} == {"127.0.0.22"}
    with open_spool(spool_at, read_only=True) as spool:
        (action,) = spool.actions()
    assert (action.site, action.scope, action.source) == ("provider.bigmail", "source", "ip1")
