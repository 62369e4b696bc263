"""Webhooks end to end: an engine delivers to a loopback SMTP peer, its events reach a real
HTTP receiver (uvicorn) that refuses, fails and stalls on a schedule, signed as Standard
Webhooks says, in order per recipient, across a restart of the sender; dead letters
after retry_for, and `ferrymail webhooks replay` sends them."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import ferrymail
import httpx
import msgspec
import pytest
from engine_support import campaign, on_uvloop, people
from ferrymail.spool import open_spool
from ferrymail.webhooks import Webhook, WebhookConfigError, WebhookSender, loads
from smtp_peers import ScriptedServer, free_port
from standardwebhooks.webhooks import Webhook as Verifier
from webhook_receiver import Receiver

SECRET_OLD = "whsec_" + base64.b64encode(b"o" * 32).decode()
SECRET_NEW = "whsec_" + base64.b64encode(b"n" * 32).decode()


def hook(receiver: Receiver, **overrides: Any) -> Webhook:
    text = f"""
[[webhook]]
url = "{receiver.url}"
events = ["queued", "delivered", "bounced"]
secrets = ["{SECRET_OLD}", "{SECRET_NEW}"]
batch_size = 4
batch_wait = 50
timeout = "500ms"
retry_for = "1m"
"""
    [webhook] = loads(text, name="service.toml")
    return msgspec.structs.replace(webhook, **overrides) if overrides else webhook


def engine_config(mx: ScriptedServer, tmp_path: Path, webhook: Webhook) -> ferrymail.Config:
    return ferrymail.Config(
        helo_name="engine.test",
        smarthost=f"{mx.host}:{mx.port}",
        smtp=ferrymail.SmtpOptions("engine.test", tls="off"),
        event_log=str(tmp_path / "events.jsonl"),
        webhooks=(webhook,),
    )


async def send(
    spool: Path, config: ferrymail.Config, recipients: list[ferrymail.Recipient]
) -> None:
    async with ferrymail.Engine(spool, config) as engine:
        await engine.submit(campaign(), recipients)
        await engine.drain()


async def sent_until_empty(sender: WebhookSender, spool: Path, *, timeout: float = 60) -> None:
    """Runs `sender` until the outbox has nothing waiting (dead letters aside)."""
    task = asyncio.create_task(sender.run())
    deadline = time.monotonic() + timeout
    try:
        while True:
            with open_spool(spool) as s:
                if all(b.pending == 0 for b in s.webhook_backlog()):
                    return
            assert time.monotonic() < deadline, "the outbox never emptied"
            assert not task.done(), task
            await asyncio.sleep(0.05)
    finally:
        sender.stop()
        await task


def verified(receiver: Receiver) -> list[dict[str, Any]]:
    """The events of every POST the receiver took, each POST verified with either
    secret by the Standard Webhooks reference library, deduplicated by event id."""
    events: dict[str, dict[str, Any]] = {}
    for headers, body in receiver.answered_ok():
        for secret in (SECRET_OLD, SECRET_NEW):
            batch = Verifier(secret).verify(body, headers)
        for event in batch:
            events.setdefault(event["id"], event)
    return list(events.values())


def logged(tmp_path: Path, types: set[str]) -> list[dict[str, Any]]:
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["type"] in types]


@on_uvloop
async def test_every_event_arrives_signed_and_in_order_through_faults(tmp_path: Path) -> None:
    spool = tmp_path / "spool.db"
    receiver = Receiver(["fail", "ok", "stall", "fail", "ok", "ok", "fail"], stall_for=1.0)
    bounce = {"user3@a.test": "550 5.1.1 no such user", "user7@a.test": "550 5.1.1 gone"}
    with ScriptedServer(rcpt_replies=bounce) as mx:
        await send(spool, engine_config(mx, tmp_path, hook(receiver)), people("a.test", 30))
    # Refused first: nobody listens yet.
    first = WebhookSender(spool, [hook(receiver)])
    running = asyncio.create_task(first.run())
    await asyncio.sleep(1.5)
    assert first.failures[receiver.url] >= 1 and not receiver.posts
    receiver.start()
    try:
        while len(receiver.answered_ok()) < 2:  # some batches through, then a restart
            await asyncio.sleep(0.02)
        first.stop()
        await running
        await sent_until_empty(WebhookSender(spool, [hook(receiver)]), spool)
    finally:
        receiver.stop()

    answers = [a for _, _, a in receiver.posts]
    assert {"fail", "stall", "ok"} <= set(answers)
    expected = logged(tmp_path, {"queued", "delivered", "bounced"})
    arrived = verified(receiver)
    key = lambda e: (e["recipient"], e["type"])  # noqa: E731
    assert sorted(map(key, arrived)) == sorted(map(key, expected))
    assert len(expected) == 60
    assert sum(e["type"] == "bounced" for e in arrived) == 2
    # Per recipient, the order they were first received in is the order they happened.
    for person in {e["recipient"] for e in expected}:
        assert [e["type"] for e in arrived if e["recipient"] == person] == [
            e["type"] for e in expected if e["recipient"] == person
        ]
    # A batch retried is the same batch: one webhook-id, one body.
    by_id: dict[str, set[bytes]] = {}
    for headers, body, _ in receiver.posts:
        by_id.setdefault(headers["webhook-id"], set()).add(body)
    assert all(len(bodies) == 1 for bodies in by_id.values())
    assert len(by_id) < len(receiver.posts)


@on_uvloop
async def test_dead_letters_after_retry_for_and_replay_sends_them(tmp_path: Path) -> None:
    spool = tmp_path / "spool.db"
    receiver = Receiver()
    receiver.always = "fail"
    webhook = hook(receiver, retry_for=1.5)
    with ScriptedServer() as mx:
        await send(spool, engine_config(mx, tmp_path, webhook), people("a.test", 3))
    with receiver:
        await sent_until_empty(WebhookSender(spool, [webhook]), spool)
        status = cli("webhooks", "status", "--spool", str(spool))
        assert receiver.url in status and "HTTP 500" in status
        with open_spool(spool) as s:
            [backlog] = s.webhook_backlog()
        assert (backlog.pending, backlog.dead) == (0, 6)  # 3 queued + 3 delivered
        tries = len(receiver.posts)
        assert tries >= 2  # retried before it gave up

        receiver.always = None
        assert "6 events back in the outbox" in cli("webhooks", "replay", "--spool", str(spool))
        await sent_until_empty(WebhookSender(spool, [webhook]), spool)
    assert len(verified(receiver)) == 6
    with open_spool(spool) as s:
        assert s.webhook_backlog() == []


def cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "ferrymail", *args], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_bad_service_config_names_file_line_and_key() -> None:
    text = '[[webhook]]\nurl = "https://esp.test/h"\nsecret = "whsec_c2hvcnQ="\n'
    with pytest.raises(WebhookConfigError) as caught:
        loads(text, name="service.toml")
    assert str(caught.value).startswith("service.toml:3: webhook[0].secret: ")
    text = '[[webhook]]\nurl = "https://esp.test/h"\nevents = ["sent"]\nsecret = "x"\n'
    with pytest.raises(WebhookConfigError, match=r"service.toml:3: webhook\[0\].events: unknown"):
        loads(text, name="service.toml")


def test_serve_sends_clicks_and_opens_to_its_webhooks(tmp_path: Path) -> None:
    from peer_process import STARTUP_TIMEOUT, end_process
    from web_support import BROWSER, SECRET, links, spool_with
    from web_support import campaign as web_campaign

    news = web_campaign("news-1")
    ann = ferrymail.Recipient("ann@a.test", id="ann")
    spool = tmp_path / "spool.db"
    spool_with(spool, [news], [ann]).close()
    receiver = Receiver(["fail"])  # the first POST fails: retried
    service = tmp_path / "service.toml"
    service.write_text(
        f'[[webhook]]\nurl = "{receiver.url}"\nevents = ["clicked", "opened"]\n'
        f'secrets = ["{SECRET_OLD}", "{SECRET_NEW}"]\nbatch_wait = 20\n'
    )
    metrics_port = free_port()
    with receiver:
        process = subprocess.Popen(
            [sys.executable, "-m", "ferrymail", "serve", "--listen", "127.0.0.1:0",
             "--spool", str(spool), "--service-config", str(service), "--no-delivery",
             "--metrics-listen", f"127.0.0.1:{metrics_port}"],
            stdout=subprocess.PIPE, env={**os.environ, "FERRYMAIL_TRACKING_SECRET": SECRET,
                                         "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        try:
            assert process.stdout is not None
            ready, _, _ = select.select([process.stdout], [], [], STARTUP_TIMEOUT)
            assert ready, "ferrymail serve did not start"
            base = "http://" + process.stdout.readline().decode().rsplit(" ", 1)[1].strip()
            mine = links(news, ann)
            browser = {"user-agent": BROWSER}
            assert httpx.get(base + mine.clicks[0], headers=browser).status_code == 302
            assert httpx.get(base + mine.open, headers=browser).status_code == 200
            deadline = time.monotonic() + 30
            while len(verified(receiver)) < 2:
                assert time.monotonic() < deadline, receiver.posts
                time.sleep(0.05)
            # serve's /metrics counts the feedback it published.
            scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
            assert 'ferrymail_feedback_total{type="clicked"} 1.0' in scraped
            assert 'ferrymail_feedback_total{type="opened"} 1.0' in scraped
        finally:
            end_process(process)
    assert process.returncode == 0
    assert sorted(e["type"] for e in verified(receiver)) == ["clicked", "opened"]
    assert {e["recipient"] for e in verified(receiver)} == {"ann"}
    assert receiver.posts[0][2] == "fail"
