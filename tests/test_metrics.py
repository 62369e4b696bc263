"""`ferrymail run --metrics-listen`: /metrics scraped during a real delivery run to a
loopback SMTP peer, with a webhook endpoint that is down."""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import ferrymail
import httpx
import uvloop
from engine_support import campaign, people
from prometheus_client.parser import text_string_to_metric_families
from smtp_peers import Fault, RawServer, ScriptedServer, free_port
from webhook_receiver import Receiver

DASHBOARD = Path(__file__).parent.parent / "contrib" / "grafana" / "ferrymail.json"
SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def queue(spool: Path, n: int) -> None:
    """Queues n recipients at a.test in the spool, for a `ferrymail run` to deliver."""

    async def submit() -> None:
        config = ferrymail.Config(helo_name="engine.test")
        async with ferrymail.Engine(spool, config) as engine:
            await engine.submit(campaign(), people("a.test", n))

    uvloop.run(submit())


def test_metrics_after_a_real_delivery_run(tmp_path: Path) -> None:
    spool = tmp_path / "spool.db"

    queue(spool, 8)
    receiver = Receiver()
    receiver.always = "fail"  # the endpoint is down: its events wait in the outbox
    service = tmp_path / "service.toml"
    service.write_text(
        f'[[webhook]]\nurl = "{receiver.url}"\nevents = ["delivered", "bounced"]\n'
        f'secret = "{SECRET}"\nbatch_wait = 10\n'
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    bounce = {
        "user2@a.test": "550 5.1.1 no such user",
        "user5@a.test": "451 4.7.1 greylisted, try later",  # deferred for minutes
    }
    with ScriptedServer(rcpt_replies=bounce) as mx, receiver:
        run = subprocess.Popen(
            [
                sys.executable, "-m", "ferrymail", "run", "--spool", str(spool),
                "--smarthost", f"{mx.host}:{mx.port}", "--helo", "engine.test",
                "--metrics-listen", f"127.0.0.1:{port}", "--service-config", str(service),
            ],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while True:
                assert run.poll() is None, run.communicate()
                try:
                    got = samples(httpx.get(url, timeout=5).text)
                except httpx.TransportError:
                    got = {}
                done = got.get(("ferrymail_queue_recipients", (("state", "delivered"),)), 0)
                posted = [v for (n, _), v in got.items() if n == "ferrymail_webhook_posts_total"]
                if done == 6 and sum(posted) > 0:
                    text = httpx.get(url, timeout=5).text
                    break
                assert time.monotonic() < deadline, got
                time.sleep(0.1)
            assert httpx.get(url.replace("/metrics", "/other"), timeout=5).status_code == 404
        finally:
            run.send_signal(signal.SIGTERM)
            _, err = run.communicate(timeout=30)
    assert run.returncode == 0, err

    # The source is the local address the connections left from (no egress pool here).
    site = (("site", mx.host), ("source", "127.0.0.1"))
    assert got[("ferrymail_messages_delivered_total", site)] == 6
    assert got[("ferrymail_messages_bounced_total", site)] == 1
    assert got[("ferrymail_queue_recipients", (("state", "bounced"),))] == 1
    assert got[("ferrymail_delivery_seconds_count", (("site", mx.host),))] == 6
    assert got[("ferrymail_submit_to_final_seconds_count", (("outcome", "bounced"),))] == 1
    assert got[("ferrymail_suspensions", ())] == 0
    # The queue by state and site: the greylisted one waits for the site it tried.
    deferred = (("site", mx.host), ("state", "deferred"))
    assert got[("ferrymail_queue_pending_recipients", deferred)] == 1
    assert got[("ferrymail_messages_deferred_total", site)] == 1
    waiting = got[
        ("ferrymail_webhook_backlog_events", (("endpoint", receiver.url), ("state", "waiting")))
    ]
    assert waiting == 7  # 6 delivered + 1 bounced, the endpoint answering 500
    failed = (("endpoint", receiver.url), ("result", "failed"))
    assert got[("ferrymail_webhook_posts_total", failed)] >= 1

    # Every metric the Grafana dashboard queries is one ferrymail serves.
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"ferrymail_\w+", target["expr"])
    }
    assert len(queried) >= 10
    assert [name for name in sorted(queried) if name not in text] == []


def test_the_dashboard_takes_the_max_of_the_spool_gauges() -> None:
    # Every process on one spool (run, serve, each engine of a fleet) serves the same
    # gauges read from it: a panel that summed them would count the queue once per process.
    spool_gauges = (
        "ferrymail_queue_recipients",
        "ferrymail_suspensions",
        "ferrymail_shaping_actions",
        "ferrymail_webhook_backlog_events",
    )
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    on_gauges = [q for q in queries if any(gauge in q for gauge in spool_gauges)]
    assert len(on_gauges) == 4
    assert [q for q in on_gauges if not q.startswith("max")] == []


def test_connections_open_while_a_peer_holds_them(
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool.db"

    queue(spool, 4)
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    # The peer takes the recipients, then never answers DATA: its connections stay
    # open and busy.
    with RawServer(faults=[Fault("DATA", delay=60)]) as mx:
        run = subprocess.Popen(
            [
                sys.executable, "-m", "ferrymail", "run", "--spool", str(spool),
                "--smarthost", f"{mx.host}:{mx.port}", "--helo", "engine.test",
                "--metrics-listen", f"127.0.0.1:{port}",
            ],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            busy = ("ferrymail_connections_open", (("state", "busy"),))
            deadline = time.monotonic() + 60
            while True:
                assert run.poll() is None, run.communicate()
                try:
                    got = samples(httpx.get(url, timeout=5).text)
                except httpx.TransportError:
                    got = {}
                # Every connection the peer holds is counted busy.
                if mx.stalls and got.get(busy) == len(mx.stalls):
                    break
                assert time.monotonic() < deadline, (got, mx.stalls)
                time.sleep(0.1)
        finally:
            run.send_signal(signal.SIGTERM)
            _, err = run.communicate(timeout=30)
    assert run.returncode == 0, err
    assert got[("ferrymail_connections_open", (("state", "idle"),))] == 0
    # All four are in flight, not tried by any site yet.
    in_flight = ("ferrymail_queue_pending_recipients", (("site", "none"), ("state", "in-flight")))
    assert got[in_flight] == 4
