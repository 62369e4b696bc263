"""Cancel through the API while an engine (another process's spool connection: this test's)
keeps running: queued and deferred recipients end as cancelled, delivered ones stay, no
message of the campaign leaves after the cancel, and other campaigns go on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import ferrymail
import httpx
import pytest
from api_support import CAMPAIGN, jsonl, serve
from dns_peer import DnsServer
from engine_support import config, free_port_everywhere, logged_events, on_uvloop, quick_retry
from ferrymail.spool import SqliteSpool
from smtp_peers import Fault, RawServer, ScriptedServer

GREYLISTED = "451 4.7.1 Greylisted, please try again later"


@pytest.fixture(scope="module")
def port() -> int:
    return free_port_everywhere()


async def until(engine: ferrymail.Engine, campaign: str, state: str, n: int) -> None:
    for _ in range(1500):
        if (await engine.report(campaign)).states[state] >= n:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{campaign}: never {n} {state}: {await engine.report(campaign)}")


@on_uvloop
async def test_cancel_ends_waiting_recipients_while_the_engine_runs(
    dns_server: DnsServer, scripted_server: Callable[..., ScriptedServer], port: int, tmp_path: Path
) -> None:
    dns_server.add_zone("cancel.test", ["@ MX 10 mx", "mx A 127.0.0.9"])
    # The first 6 recipients are greylisted (deferred for a minute), the 4 others delivered.
    server = scripted_server(host="127.0.0.9", port=port, replies={"RCPT": [GREYLISTED] * 6})
    cfg = config(
        dns_server, port, tmp_path, retry=quick_retry(first_retry=60, max_interval=60, max_age=600)
    )
    with serve(tmp_path) as served:
        async with (
            httpx.AsyncClient(base_url=served.url, headers=served.auth(), timeout=30) as api,
            ferrymail.Engine(served.spool, cfg) as engine,
        ):
            runner = asyncio.create_task(engine.run())
            for campaign in ("c1", "c2"):
                assert (
                    await api.put(f"/v1/campaigns/{campaign}", json=CAMPAIGN)
                ).status_code == 200
            submitted = await api.post(
                "/v1/campaigns/c1/recipients", content=jsonl("cancel.test", 10)
            )
            assert submitted.json()["accepted"] == 10
            await until(engine, "c1", "deferred", 6)
            await until(engine, "c1", "delivered", 4)

            # Sent from: another spec under its id is refused.
            changed = await api.put("/v1/campaigns/c1", json={**CAMPAIGN, "subject": "Hi"})
            assert changed.status_code == 409 and "attempted" in changed.json()["detail"]

            cancelled = await api.post("/v1/campaigns/c1/cancel")
            assert cancelled.json() == {"id": "c1", "cancelled": 6}
            report = (await api.get("/v1/campaigns/c1")).json()
            assert report["states"]["cancelled"] == 6 and report["states"]["delivered"] == 4
            assert report["states"]["deferred"] == 0 and report["states"]["queued"] == 0

            # The engine keeps running: a flush makes nothing of c1 due again, and c2
            # is delivered.
            assert (await api.post("/v1/flush")).status_code == 200
            more = await api.post("/v1/campaigns/c2/recipients", content=jsonl("cancel.test", 3))
            assert more.json()["accepted"] == 3
            await until(engine, "c2", "delivered", 3)
            assert not runner.done()
            # A cancelled campaign takes no more recipients.
            refused = await api.post("/v1/campaigns/c1/recipients", content=jsonl("x.test", 1))
            assert refused.status_code == 409 and refused.json()["error"] == "cancelled"
            status = (await api.get("/v1/status")).json()
            assert status["states"]["cancelled"] == 6
            engine.stop()
            await runner

    delivered = [m.rcpt_tos[0] for m in server.delivered]
    assert len(delivered) == 4 + 3  # nothing of c1 after the cancel
    with SqliteSpool(served.spool, read_only=True) as spool:
        report_c1 = spool.report("c1")
    assert report_c1.states["delivered"] == 4 and report_c1.states["cancelled"] == 6
    types = [e["type"] for e in logged_events(tmp_path) if e.get("campaign") == "c1"]
    assert types.count("deferred") == 6 and types.count("delivered") == 4
    assert types.count("cancelled") == 6  # written by the server's engine, one each


@on_uvloop
async def test_recipients_in_a_session_at_the_cancel_finish_then_end_cancelled(
    dns_server: DnsServer, raw_server: Callable[..., RawServer], port: int, tmp_path: Path
) -> None:
    dns_server.add_zone("slow.test", ["@ MX 10 mx", "mx A 127.0.0.10"])
    # Every RCPT waits a second, then is greylisted: the session is under way when the
    # cancel commits, and its recipients are deferred after it.
    server = raw_server(
        host="127.0.0.10", port=port, faults=[Fault("RCPT", reply=GREYLISTED, delay=1.0)]
    )
    cfg = config(
        dns_server, port, tmp_path, retry=quick_retry(first_retry=60, max_interval=60, max_age=600)
    )
    with serve(tmp_path) as served:
        async with (
            httpx.AsyncClient(base_url=served.url, headers=served.auth(), timeout=30) as api,
            ferrymail.Engine(served.spool, cfg) as engine,
        ):
            runner = asyncio.create_task(engine.run())
            assert (await api.put("/v1/campaigns/c1", json=CAMPAIGN)).status_code == 200
            await api.post("/v1/campaigns/c1/recipients", content=jsonl("slow.test", 3))
            for _ in range(500):  # until the first RCPT's wait has begun
                if server.stalls:
                    break
                await asyncio.sleep(0.02)
            assert server.stalls, "the session never reached RCPT"
            await api.post("/v1/campaigns/c1/cancel")
            await until(engine, "c1", "cancelled", 3)
            engine.stop()
            await runner
    assert server.delivered == []
    by_recipient: dict[str, list[str]] = {}
    for event in logged_events(tmp_path):
        if event.get("campaign") == "c1":
            by_recipient.setdefault(event["recipient"], []).append(event["type"])
    assert len(by_recipient) == 3
    for recipient, types in by_recipient.items():
        # Each ends with one "cancelled" event, after its deferral if its attempt began.
        assert types[-1] == "cancelled" and types.count("cancelled") == 1, (recipient, types)
    assert any("deferred" in types for types in by_recipient.values())
