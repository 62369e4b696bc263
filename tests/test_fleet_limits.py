"""A site's limits are the fleet's: three engine processes on one PostgreSQL spool, sending
to one site whose shaping gives it a message rate and a connection limit, hold the rate
within 10% and never open more connections than the limit, as the receiver itself
measures them."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import subprocess
from pathlib import Path

import ferrymail
from ferrymail import Campaign, Engine, Recipient
from fleet_node import start_node
from smtp_peers import ScriptedServer

# The site's max_message_rate: messages a second, for the whole fleet.
RATE = float(os.environ.get("FERRYMAIL_FLEET_RATE", "40"))
CONNECTIONS = 4  # the site's connection_limit, for the whole fleet
RECIPIENTS = int(RATE * 12)  # twelve seconds' worth
DOMAINS = 6  # all at the one site (its MX is the one peer)


def test_three_nodes_hold_a_sites_rate_and_connection_limit(pg_url: str, tmp_path: Path) -> None:
    nodes: list[subprocess.Popen[bytes]] = []
    with ScriptedServer() as peer:
        site = f"{peer.host}:{peer.port}"
        routes = {f"r{d}.test": site for d in range(DOMAINS)}
        shaping = tmp_path / "shaping.toml"
        shaping.write_text(
            f'[site."{site}"]\nmax_message_rate = "{RATE:g}/s"\nconnection_limit = {CONNECTIONS}\n'
        )
        addresses = [f"user{i}@r{i % DOMAINS}.test" for i in range(RECIPIENTS)]
        campaign = Campaign(
            id="limits", sender="b@news.test", from_="n@news.test", subject="Hi", text="x"
        )

        async def submit() -> None:
            config = ferrymail.Config(helo_name="fleet.test", routes=routes)
            async with Engine(pg_url, config) as engine:
                await engine.submit(campaign, [Recipient(a) for a in addresses])

        asyncio.run(submit())
        try:
            nodes = [
                start_node(
                    {
                        "spool": pg_url,
                        "node": f"node-{n}",
                        "routes": routes,
                        "window": 200,
                        "batch_size": 50,
                        "event_log": str(tmp_path / f"node-{n}.jsonl"),
                        "shaping": str(shaping),
                    },
                    tmp_path,
                )
                for n in range(3)
            ]
            for n, p in enumerate(nodes):
                assert p.wait(120) == 0, (tmp_path / f"node-{n}.stderr").read_text()[-2000:]
        finally:
            for p in nodes:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        peer.wait_closed()
        delivered = peer.delivered
        most_open = peer.most_open_at_once()

    assert sorted(r for m in delivered for r in m.rcpt_tos) == sorted(addresses)
    # Every node sent its part: the limits held for a fleet, not for one busy node.
    sent_by: collections.Counter[str] = collections.Counter()
    for n in range(3):
        for line in (tmp_path / f"node-{n}.jsonl").open():
            event = json.loads(line)
            sent_by[event["node"]] += event["type"] == "delivered"
    assert len(sent_by) == 3 and min(sent_by.values()) > 0, sent_by
    # The rate, from the peer's own clock: the site's bucket starts with one second's
    # worth (as one engine's does), so the steady part is after the first RATE messages.
    times = sorted(m.received_at for m in delivered)
    steady = times[int(RATE) :]
    rate = (len(steady) - 1) / (steady[-1] - steady[0])
    per_second = collections.Counter(int(t - times[0]) for t in times)
    print(
        f"\nfleet limits: {RATE:g}/s and {CONNECTIONS} connections for 3 nodes: "
        f"{rate:.1f} msg/s over the steady part ({len(steady)} messages), "
        f"messages by second {[per_second[s] for s in sorted(per_second)]}, "
        f"at most {most_open} connections open at once; sent by {dict(sent_by)}"
    )
    assert abs(rate - RATE) <= 0.1 * RATE
    assert most_open <= CONNECTIONS
