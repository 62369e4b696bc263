"""Engine.cancel: a campaign's waiting recipients end as cancelled, each with an event that
carries the engine's node name and reaches the webhooks that want it (the outbox)."""

from __future__ import annotations

from pathlib import Path

import ferrymail
import orjson
from dns_peer import DnsServer
from engine_support import campaign, config, logged_events, on_uvloop, people
from ferrymail.spool import open_spool
from ferrymail.webhooks import Webhook

HOOK = Webhook(
    name="esp",
    url="http://127.0.0.1:9/events",  # never called: no sender runs here
    events=frozenset({"queued", "cancelled"}),
    secrets=(b"0123456789abcdef0123456789abcdef",),
)


@on_uvloop
async def test_cancelled_recipients_have_events_with_the_node_in_the_log_and_the_outbox(
    dns_server: DnsServer, tmp_path: Path
) -> None:
    cfg = config(dns_server, 2525, tmp_path, node="node-a", webhooks=(HOOK,))
    async with ferrymail.Engine(tmp_path / "spool.db", cfg) as engine:
        await engine.submit(campaign(), people("cancel.test", 5))
        assert await engine.cancel("c1") == 5
        assert (await engine.report("c1")).states["cancelled"] == 5

    logged = [e for e in logged_events(tmp_path) if e["type"] == "cancelled"]
    assert len(logged) == 5 and {e["node"] for e in logged} == {"node-a"}
    with open_spool(tmp_path / "spool.db") as spool:
        batch = spool.webhook_take("esp", 100, older_than=1e12)
    assert batch is not None
    bodies = [orjson.loads(body) for _, body in batch.events]
    assert [b["type"] for b in bodies] == ["queued"] * 5 + ["cancelled"] * 5
    assert {b["node"] for b in bodies} == {"node-a"}
    assert sorted(b["address"] for b in bodies[5:]) == sorted(b["address"] for b in bodies[:5])
