"""The engine's own faults lose nothing: a transport stream that ends early, a stored
campaign that no longer compiles (real Knot, aiosmtpd and SQLite spool)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    reported,
    spool_sql,
)
from smtp_peers import ScriptedServer

Scripted = Callable[..., ScriptedServer]


@pytest.fixture(scope="module")
def port() -> int:
    return free_port_everywhere()


class _CutShort:
    """The Rust transport with one defect put in on purpose: the first delivery's
    outcome stream ends after its first chunk, as a bug in the stream would. (A seam,
    not a mock: every message still goes to the real peer.)"""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.cut = 0

    def start(self, *args: Any) -> Any:
        delivery = self._inner.start(*args)
        if self.cut:
            return delivery
        self.cut += 1
        return _FirstChunkOnly(delivery)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _FirstChunkOnly:
    def __init__(self, delivery: Any) -> None:
        self._delivery = delivery
        self._done = False

    async def next(self) -> bytes | None:
        if self._done:
            return None
        self._done = True
        return await self._delivery.next()


@on_uvloop
async def test_a_stream_that_ends_early_defers_the_rest_and_drain_ends(
    dns_server: DnsServer, scripted_server: Scripted, port: int, tmp_path: Path, spool_at: str
) -> None:
    dns_server.add_zone("gap.test", ["@ MX 10 mx", "mx A 127.0.0.17"])
    server = scripted_server(host="127.0.0.17", port=port)
    # One connection: the outcomes come one at a time, so the first chunk is short.
    limits = ferrymail.SiteLimits(connections=1)
    cfg = config(dns_server, port, tmp_path, site_overrides={"mx.gap.test": limits})
    async with ferrymail.Engine(spool_at, cfg) as e:
        transport = e._open().transport
        cut = transport._inner = _CutShort(transport._inner)  # type: ignore[assignment]
        await e.submit(campaign(), people("gap.test", 50))
        # Returns: no recipient is left uncounted (before, drain waited forever).
        await asyncio.wait_for(e.drain(), 30)
        report = await e.report("c1")
    assert cut.cut == 1
    assert report.states["delivered"] == 50
    gaps = [
        ev
        for ev in logged_events(tmp_path)
        if ev["type"] == "deferred" and "internal" in ev["text"]
    ]
    assert gaps, "the recipients the stream left out were never deferred"
    assert all("without an outcome" in ev["text"] for ev in gaps)
    # Those were retried: each of the 50 reached the peer (the cut stream's own
    # deliveries went on in Rust, so some arrived twice, as a lost reply would make them).
    assert {m.rcpt_tos for m in server.delivered} == {(f"user{i}@gap.test",) for i in range(50)}


@on_uvloop
async def test_a_stored_campaign_that_no_longer_compiles_keeps_the_reason(
    dns_server: DnsServer, scripted_server: Scripted, port: int, tmp_path: Path, spool_at: str
) -> None:
    dns_server.add_zone("stale.test", ["@ MX 10 mx", "mx A 127.0.0.18"])
    server = scripted_server(host="127.0.0.18", port=port)
    cfg = config(dns_server, port, tmp_path)
    path = spool_at
    async with ferrymail.Engine(path, cfg) as e:
        await e.submit(campaign(), people("stale.test", 3))
    # As after an upgrade that reads the stored spec differently: it no longer compiles.
    spool_sql(path, "UPDATE campaign SET spec = ? WHERE name = 'c1'", [bytes.fromhex("93a1781234")])
    async with ferrymail.Engine(path, cfg) as e:
        await e.drain()
        report = await e.report("c1")
    assert report.states["failed"] == 3
    assert not server.delivered
    failed = [ev for ev in logged_events(tmp_path) if ev["type"] == "failed"]
    assert len(failed) == 3
    assert all("'c1' in the spool no longer compiles" in ev["text"] for ev in failed)
    assert all("Error" in ev["text"] for ev in failed), failed[0]  # the compiler's words


@on_uvloop
async def test_a_receiver_refusing_our_helo_name_defers_and_suspends_never_bounces(
    dns_server: DnsServer, scripted_server: Scripted, port: int, tmp_path: Path, spool_at: str
) -> None:
    dns_server.add_zone("strict.test", ["@ MX 10 mx", "mx A 127.0.0.19"])
    # Postfix with reject_non_fqdn_helo_hostname, to a sender whose HELO name is "vm".
    refusal = "504 5.5.2 <vm>: Helo command rejected: need fully-qualified hostname"
    server = scripted_server(host="127.0.0.19", port=port, replies={"RCPT": refusal})
    cfg = config(
        dns_server,
        port,
        tmp_path,
        helo_name="vm",
        smtp=ferrymail.SmtpOptions("vm", tls="off"),
        batch_size=5,
        suspend_for=60.0,
    )
    async with ferrymail.Engine(spool_at, cfg) as e:
        await e.submit(campaign(), people("strict.test", 20))
        runner = asyncio.create_task(e.run())
        await reported(e, "deferred", 5)
        await asyncio.sleep(0.3)
        e.stop()
        await runner
        report = await e.report("c1")
        suppressed = await e.suppressions.list()
    # Our name is the problem, not the recipients': nobody bounced or suppressed, the
    # first batch deferred, the site suspended so that the others wait untried.
    assert report.states["bounced"] == 0 and not suppressed
    assert report.states["deferred"] == 5 and report.states["queued"] == 15
    assert not server.delivered
    ((reason,),) = spool_sql(spool_at, "SELECT reason FROM suspension")
    assert "Helo command rejected" in reason
