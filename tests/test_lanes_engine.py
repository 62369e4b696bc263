"""A site's sources send at once: one ready queue (lane) per source at the site, the
site's rate shared by them, each source's own rate (`per_source`), a weighted pool split
message by message, and a blocked source that comes back when its block ends. Rates are
measured from the peers' own timestamps (127.0.0.21 to .24 are the sources)."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import ferrymail
import pytest
from dns_peer import DnsServer
from engine_support import campaign, config, free_port_everywhere, on_uvloop, people
from ferrymail.shaping import loads
from smtp_peers import RawServer, ScriptedServer, slow

SOURCES = ["127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.24"]
YAHOO_TS01 = "421 4.7.0 [TS01] Messages from 127.0.0.21 temporarily deferred due to complaints"


def sources_toml(pools: str) -> str:
    lines = []
    for i, address in enumerate(SOURCES, start=1):
        lines += [f"[source.ip{i}]", f'address = "{address}"', f'ehlo = "mta{i}.sender.test"']
    return "\n".join(lines) + "\n" + pools


@pytest.fixture(scope="module")
def port() -> int:
    return free_port_everywhere(
        ["127.0.0.40", "127.0.0.41", "127.0.0.42", "127.0.0.43", "127.0.0.44", "127.0.0.45"]
    )


def by_source(peer: ScriptedServer | RawServer) -> dict[str, list[float]]:
    """When the peer received each message, by the client address that sent it."""
    seen: dict[str, list[float]] = {}
    for m in peer.delivered:
        seen.setdefault(peer.connections[m.connection].client[0], []).append(m.received_at)
    return {source: sorted(times) for source, times in seen.items()}


def busiest_second(times: list[float]) -> int:
    """The most of `times` within one second of each other."""
    return max(sum(1 for t in times if start <= t < start + 1.0) for start in times)


def steady_rate(times: list[float], burst: int) -> float:
    """Messages per second after the bucket's first `burst` (it starts full)."""
    return (len(times) - burst) / (times[-1] - times[0])


@on_uvloop
async def test_a_sites_sources_send_at_once(
    dns_server: DnsServer, port: int, tmp_path: Path
) -> None:
    # Each message takes the peer 50 ms: one batch in flight per site would send ip1's
    # ten, then ip2's ten; lanes interleave them.
    dns_server.add_zone("lanes.test", ["@ MX 10 mx", "mx A 127.0.0.40"])
    with RawServer(host="127.0.0.40", port=port, faults=[slow("DOT", 0.05)]) as peer:
        shaping = sources_toml(
            '[pool.default]\nsources = { ip1 = 1, ip2 = 1 }\n[site."mx.lanes.test"]\n'
            "connection_limit = 4\n"
        )
        cfg = config(
            dns_server, port, tmp_path, shaping=loads(shaping, name="s.toml"), batch_size=10
        )
        async with ferrymail.Engine(tmp_path / "spool.db", cfg) as engine:
            await engine.submit(campaign(), people("lanes.test", 80))
            await engine.drain()
            assert (await engine.report("c1")).states["delivered"] == 80

    order = [peer.connections[m.connection].client[0] for m in peer.delivered]
    assert Counter(order) == {"127.0.0.21": 40, "127.0.0.22": 40}
    runs = 1 + sum(a != b for a, b in itertools.pairwise(order))
    assert runs > 16, f"the sources took turns batch by batch: {runs} runs"
    assert peer.most_open_at_once() <= 4, "the site's connection limit is both sources'"


@on_uvloop
async def test_per_source_rate_and_the_sites_rate_both_hold(
    dns_server: DnsServer, scripted_server: Callable[..., ScriptedServer], port: int, tmp_path: Path
) -> None:
    dns_server.add_zone("persource.test", ["@ MX 10 mx", "mx A 127.0.0.41"])
    dns_server.add_zone("sitewide.test", ["@ MX 10 mx", "mx A 127.0.0.42"])
    each = scripted_server(host="127.0.0.41", port=port)
    whole = scripted_server(host="127.0.0.42", port=port)
    shaping = sources_toml(
        "[pool.default]\nsources = { ip1 = 1, ip2 = 1 }\n"
        '[site."mx.persource.test".per_source]\nmax_message_rate = "10/s"\n'
        '[site."mx.sitewide.test"]\nmax_message_rate = "20/s"\n'
    )
    cfg = config(dns_server, port, tmp_path, shaping=loads(shaping, name="s.toml"), batch_size=10)
    async with ferrymail.Engine(tmp_path / "spool.db", cfg) as engine:
        await engine.submit(campaign(), people("persource.test", 60) + people("sitewide.test", 80))
        await engine.drain()

    # Each source at 10/s, both at once: 20/s for the site.
    per_source = by_source(each)
    assert sorted(per_source) == ["127.0.0.21", "127.0.0.22"]
    for times in per_source.values():
        assert len(times) == 30
        assert 8.0 <= steady_rate(times, burst=10) <= 11.0
    together = sorted(t for times in per_source.values() for t in times)
    assert steady_rate(together, burst=20) >= 15.0  # they did not take turns
    # The site's 20/s holds over both sources together.
    site = sorted(t for times in by_source(whole).values() for t in times)
    assert len(site) == 80
    assert 16.0 <= steady_rate(site, burst=20) <= 22.0


@on_uvloop
async def test_a_weighted_pool_splits_ten_thousand_messages_by_weight(
    dns_server: DnsServer, scripted_server: Callable[..., ScriptedServer], port: int, tmp_path: Path
) -> None:
    dns_server.add_zone("split.test", ["@ MX 10 mx", "mx A 127.0.0.43"])
    peer = scripted_server(host="127.0.0.43", port=port)
    shaping = sources_toml("[pool.default]\nsources = { ip1 = 3, ip2 = 1 }\n")
    cfg = config(dns_server, port, tmp_path, shaping=loads(shaping, name="s.toml"))
    async with ferrymail.Engine(tmp_path / "spool.db", cfg) as engine:
        await engine.submit(campaign(), people("split.test", 10_000))
        await engine.drain()
        assert (await engine.report("c1")).states["delivered"] == 10_000

    counts = {source: len(times) for source, times in by_source(peer).items()}
    assert sorted(counts) == ["127.0.0.21", "127.0.0.22"]
    assert abs(counts["127.0.0.21"] - 7_500) <= 375  # ±5% of the 3:1 share
    assert abs(counts["127.0.0.22"] - 2_500) <= 125


@on_uvloop
async def test_a_blocked_source_leaves_the_pool_and_comes_back_when_the_block_ends(
    dns_server: DnsServer, scripted_server: Callable[..., ScriptedServer], port: int, tmp_path: Path
) -> None:
    dns_server.add_zone("comeback.test", ["@ MX 10 mx", "mx A 127.0.0.40"])
    peer = scripted_server(
        host="127.0.0.40", port=port, client_rcpt_replies={"127.0.0.21": YAHOO_TS01}
    )
    shaping = sources_toml(
        "[pool.default]\nsources = { ip1 = 1, ip2 = 1 }\n"
        '[[site."mx.comeback.test".automation]]\n'
        'name = "yahoo-deferred"\n'
        "regex = '^421 4\\.7\\.0 \\[TS01\\]'\n"
        'trigger = "immediate"\nscope = "source"\nsuspend = true\nduration = "2s"\n'
        'restore = "1s"\n'
    )
    cfg = config(dns_server, port, tmp_path, shaping=loads(shaping, name="s.toml"), batch_size=10)
    async with ferrymail.Engine(tmp_path / "spool.db", cfg) as engine:
        await engine.submit(campaign(), people("comeback.test", 40))
        await engine.drain()
        blocked_wave = by_source(peer)
        peer.client_rcpt_replies.clear()  # the receiver takes ip1's mail again
        await asyncio.sleep(2.2)  # the block's end
        await engine.submit(campaign("c2"), people("comeback.test", 40, start=40))
        await engine.drain()
        assert (await engine.report("c1")).states["delivered"] == 40
        assert (await engine.report("c2")).states["delivered"] == 40

    assert sorted(blocked_wave) == ["127.0.0.22"]
    assert len(blocked_wave["127.0.0.22"]) == 40
    after = Counter(peer.connections[m.connection].client[0] for m in peer.delivered[40:])
    assert after == {"127.0.0.21": 20, "127.0.0.22": 20}


@on_uvloop
async def test_max_connection_rate_paces_new_connections_at_the_site_and_per_source(
    dns_server: DnsServer, scripted_server: Callable[..., ScriptedServer], port: int, tmp_path: Path
) -> None:
    # One message per connection, so every message needs a new connection: the
    # connection rates are what pace them, not the message rates (none set).
    dns_server.add_zone("connrate.test", ["@ MX 10 mx", "mx A 127.0.0.44"])
    dns_server.add_zone("srcrate.test", ["@ MX 10 mx", "mx A 127.0.0.45"])
    site = scripted_server(host="127.0.0.44", port=port)
    each = scripted_server(host="127.0.0.45", port=port)
    shaping = sources_toml(
        "[pool.default]\nsources = { ip1 = 1, ip2 = 1 }\n"
        '[site."mx.connrate.test"]\nmax_connection_rate = "5/s"\n'
        "max_deliveries_per_connection = 1\nconnection_limit = 10\n"
        '[site."mx.srcrate.test"]\nmax_deliveries_per_connection = 1\nconnection_limit = 10\n'
        '[site."mx.srcrate.test".per_source]\nmax_connection_rate = "4/s"\n'
    )
    cfg = config(dns_server, port, tmp_path, shaping=loads(shaping, name="s.toml"), batch_size=10)
    async with ferrymail.Engine(tmp_path / "spool.db", cfg) as engine:
        await engine.submit(campaign(), people("connrate.test", 30) + people("srcrate.test", 40))
        await engine.drain()
        assert (await engine.report("c1")).states["delivered"] == 70
    site.wait_closed()
    each.wait_closed()

    # The site's 5/s is both sources' together: a burst of 5, then 25 more at 5 a second.
    opened = sorted(c.opened_at for c in site.connections)
    assert len(opened) == 30
    assert busiest_second(opened) <= 2 * 5 + 1
    assert opened[-1] - opened[0] >= 4.5
    # Each source at its own 4/s, both at once (so the site sees up to 8 a second).
    per_source: dict[str, list[float]] = {}
    for c in each.connections:
        per_source.setdefault(c.client[0], []).append(c.opened_at)
    assert sorted(per_source) == ["127.0.0.21", "127.0.0.22"]
    for times in per_source.values():
        times.sort()
        assert len(times) == 20
        assert busiest_second(times) <= 2 * 4 + 1
        assert times[-1] - times[0] >= 3.5  # a burst of 4, then 16 more at 4 a second
    first, second = sorted(per_source.values())
    assert second[0] < first[-1], "the sources' connections were paced apart, not in turn"
