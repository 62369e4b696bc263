"""The engine never waits on one domain's DNS: domains whose name servers never answer
hold only their own recipients, while the other sites keep delivering (real Knot behind
a forwarding nameserver that drops some domains' queries, real aiosmtpd, real spool)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from pathlib import Path

import ferrymail
import pytest
from dns_peer import DnsForwarder, DnsServer
from engine_support import campaign, config, free_port_everywhere, on_uvloop, people
from smtp_peers import ScriptedServer

DARK = [f"dark{i}.test" for i in range(40)]
HEALTHY = 1500
RATE = 250.0  # messages/s to the healthy site: about 6 s of steady flow
DNS_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def port() -> int:
    return free_port_everywhere()


@on_uvloop
async def test_a_blackholed_domain_never_stalls_the_other_sites(
    dns_server: DnsServer,
    scripted_server: Callable[..., ScriptedServer],
    port: int,
    tmp_path: Path,
    spool_at: str,
) -> None:
    dns_server.add_zone("healthy.test", ["@ MX 10 mx", "mx A 127.0.0.16"])
    server = scripted_server(host="127.0.0.16", port=port)
    healthy = people("healthy.test", HEALTHY)
    # One recipient of a new blackholed domain every ~37 healthy ones: each lease of the
    # small window brings a domain whose look-up times out, again and again (and the
    # dark recipients, deferred, come back every 0.2 s).
    mixed: list[ferrymail.Recipient] = []
    step = HEALTHY // len(DARK)
    for i, r in enumerate(healthy):
        mixed.append(r)
        if i % step == step - 1 and i // step < len(DARK):
            mixed.append(ferrymail.Recipient(f"someone@{DARK[i // step]}", {"name": "D"}))
    limits = ferrymail.SiteLimits(messages_per_second=RATE)
    times: list[float] = []
    with DnsForwarder(dns_server, blackholed=DARK) as forwarder:
        cfg = config(
            dns_server,
            port,
            tmp_path,
            dns_servers=[forwarder.address],
            dns_timeout=DNS_TIMEOUT,
            window=100,
            batch_size=20,
            site_overrides={"mx.healthy.test": limits},
        )
        async with ferrymail.Engine(spool_at, cfg) as e:
            events = e.events()
            await e.submit(campaign(), mixed)

            async def watch() -> None:
                async for event in events:
                    if event.type == "delivered":
                        times.append(event.timestamp)
                        if len(times) == HEALTHY:
                            e.stop()
                            return

            watcher = asyncio.create_task(watch())
            await asyncio.wait_for(e.run(), 60)
            await watcher
            report = await e.report("c1")
    assert len(server.delivered) == HEALTHY
    assert report.states["delivered"] == HEALTHY
    # The blackholed domains were looked up all through the run (each a DNS timeout).
    dark_asked = {name.split(".")[-3] for name in forwarder.dropped}
    assert len(dark_asked) >= len(DARK) // 2, forwarder.dropped
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # At RATE a batch of 20 leaves every 80 ms; a pump that waited on DNS would stand
    # still for DNS_TIMEOUT (2 s) each time a lease brought a blackholed domain.
    assert max(gaps) < DNS_TIMEOUT / 2, sorted(gaps)[-5:]
