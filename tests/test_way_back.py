"""The way back end to end on loopback: a VERP campaign delivered through a real Postfix;
a click, an open and a one-click unsubscribe through `ferrymail serve`; Postfix's late
bounce and an ARF complaint through `ferrymail inbound`; `ferrymail report` and the
event logs show each; a second campaign suppresses all three at submit."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import ferrymail
import httpx
import pytest
from dns_peer import DnsServer
from engine_support import config, on_uvloop
from ferrymail.spool import open_spool
from inbound_support import arf, send
from peer_process import STARTUP_TIMEOUT, end_process
from postfix_peer import PostfixPeer, available
from smtp_peers import ScriptedServer, free_port
from web_support import BROWSER, SECRET, UNSUBSCRIBE_SECRET

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))

DOMAIN = "late.test"  # the recipients' domain: Postfix relays it to the scripted peer
BOUNCES = "bounces.test"  # the bounce domain: Postfix mails it to `ferrymail inbound`
TRACK, UNSUB = "https://t.example.com/t", "https://t.example.com/u"
HTML = (
    '<p><a href="https://shop.example.com/boots">Boots</a></p>'
    '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
)
NAMES = ("ann", "bob", "carol", "dora")
PEOPLE = [ferrymail.Recipient(f"{name}@{DOMAIN}", {}, id=name) for name in NAMES]
UNKNOWN_USER = f"550 5.1.1 <bob@{DOMAIN}>: Recipient address rejected: User unknown"
# Postfix tries once (maximal_queue_lifetime = 0), then bounces it as expired.
MAILBOX_BUSY = "451 4.3.0 mailbox busy, try again later"
VERP_SENDER = re.compile(rf"bounces\+[a-z2-7]{{39}}@{re.escape(BOUNCES)}")


def news(campaign_id: str) -> ferrymail.Campaign:
    return ferrymail.Campaign(
        id=campaign_id,
        sender=f"bounces@{BOUNCES}",
        from_="News <news@example.com>",
        subject="News",
        html=HTML,
        headers={"List-Id": "Weekly news <news.example.com>"},
        tracking=ferrymail.Tracking(base_url=TRACK, secret=SECRET),
        unsubscribe=ferrymail.Unsubscribe(url=UNSUB, secret=UNSUBSCRIBE_SECRET),
        verp=True,
    )


@contextmanager
def ferrymail_process(*args: str, ready: str, cwd: Path) -> Iterator[str]:
    """`ferrymail ARGS` in `cwd` (where a process on a PostgreSQL spool keeps its event
    logs) until the end of the block; yields its listening address."""
    process = subprocess.Popen(
        [sys.executable, "-m", "ferrymail", *args],
        stdout=subprocess.PIPE,
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        readable, _, _ = select.select([process.stdout], [], [], STARTUP_TIMEOUT)
        assert readable, f"ferrymail {args[0]} did not start"
        line = process.stdout.readline().decode()
        assert line.startswith(ready), line
        yield line.split(" on ", 1)[1].split()[0]
    finally:
        end_process(process)
    assert process.returncode == 0, f"ferrymail {args[0]} exited {process.returncode}"


def wait_for_signal(spool_path: str, kind: str, key: str, postfix: PostfixPeer) -> None:
    deadline = time.monotonic() + 30
    with open_spool(spool_path, read_only=True) as spool:
        while not any(k == kind and who == key for k, who, *_ in spool.feedback("c1")):
            assert time.monotonic() < deadline, f"no {kind} for {key}:\n{postfix.log()}"
            time.sleep(0.1)


def tokens(message: bytes, base: str) -> list[str]:
    text = message.decode().replace("=\r\n", "")
    return list(dict.fromkeys(re.findall(re.escape(base) + r"/([A-Za-z0-9_-]+)", text)))


@on_uvloop
async def test_clicks_opens_unsubscribes_late_bounces_and_complaints_come_back(
    dns_server: DnsServer, tmp_path: Path, spool_at: str
) -> None:
    spool_path = spool_at
    open_spool(spool_path).close()
    (tmp_path / "web.toml").write_text(
        f'tracking_secrets = ["{SECRET}"]\nunsubscribe_secrets = ["{UNSUBSCRIBE_SECRET}"]\n'
    )
    (tmp_path / "inbound.toml").write_text(
        f'domains = ["{BOUNCES}"]\ntracking_secrets = ["{SECRET}"]\n'
        f'unsubscribe_secrets = ["{UNSUBSCRIBE_SECRET}"]\n'
    )
    inbound_port = free_port()
    with (
        ScriptedServer(
            rcpt_replies={f"bob@{DOMAIN}": UNKNOWN_USER, f"dora@{DOMAIN}": MAILBOX_BUSY}
        ) as mailbox,
        ferrymail_process(
            "inbound", "--listen", f"127.0.0.1:{inbound_port}", "--spool", str(spool_path),
            "--config", str(tmp_path / "inbound.toml"),
            "--event-log", str(tmp_path / "inbound-events.jsonl"),
            ready="ferrymail inbound: listening",
            cwd=tmp_path,
        ),
        ferrymail_process(
            "serve", "--listen", "127.0.0.1:0", "--spool", str(spool_path),
            "--config", str(tmp_path / "web.toml"), "--no-delivery",
            "--event-log", str(tmp_path / "web-events.jsonl"),
            ready="ferrymail serve: listening",
            cwd=tmp_path,
        ) as web,
        PostfixPeer(
            relay_to=("127.0.0.1", mailbox.port),
            bounces_to=("127.0.0.1", inbound_port),
            relay_domain=DOMAIN,
            bounce_domain=BOUNCES,
        ) as postfix,
    ):  # fmt: skip
        # The campaign goes out: Postfix (the recipients' MX) accepts all four.
        dns_server.add_zone(DOMAIN, ["@ MX 10 mx", "mx A 127.0.0.1"])
        engine_config = config(dns_server, postfix.port, tmp_path)
        async with ferrymail.Engine(spool_path, engine_config) as engine:
            await engine.submit(news("c1"), PEOPLE)
            await engine.drain()
            assert (await engine.report("c1")).states["delivered"] == 4

        # Postfix relays them: bob's mailbox does not exist, dora's stays busy until
        # Postfix gives up; both bounces come back to their VERP addresses, late.
        wait_for_signal(spool_path, "bounced-late", "bob", postfix)
        wait_for_signal(spool_path, "bounced-late", "dora", postfix)
        delivered = {m.rcpt_tos[0]: m for m in mailbox.delivered}
        assert sorted(delivered) == [f"ann@{DOMAIN}", f"carol@{DOMAIN}"]
        senders = {m.mail_from for m in mailbox.delivered}
        assert len(senders) == 2 and all(VERP_SENDER.fullmatch(s) for s in senders), senders

        # Ann clicks, opens and unsubscribes (one click, as Gmail's button does).
        ann = delivered[f"ann@{DOMAIN}"].content
        clicks_and_pixel, (unsubscribe,) = tokens(ann, TRACK), tokens(ann, UNSUB)
        async with httpx.AsyncClient(base_url=f"http://{web}") as http:
            statuses = [
                (await http.get(f"/t/{t}", headers={"user-agent": BROWSER})).status_code
                for t in clicks_and_pixel
            ]
            assert sorted(statuses) == [200, 302]  # the pixel, the click
            answer = await http.post(
                f"/u/{unsubscribe}",
                content=b"List-Unsubscribe=One-Click",
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
            assert answer.status_code == 200

        # Carol's mailbox provider sends her complaint, her address removed (as
        # Microsoft's JMRP does): the VERP sender it quotes names her.
        carol = delivered[f"carol@{DOMAIN}"]
        complaint = arf(
            carol.content, f"carol@{DOMAIN}", user_agent="Microsoft JMRP", redact=True,
            mail_from=carol.mail_from,
        )  # fmt: skip
        assert b"carol@" not in complaint
        code, _ = send(inbound_port, complaint, to=f"fbl@{BOUNCES}")
        assert code == 250

    # `ferrymail report` (the web's and the listener's writes are committed: both ended).
    shown = subprocess.run(
        [sys.executable, "-m", "ferrymail", "report", "c1", "--json", "--spool", str(spool_path)],
        capture_output=True, check=True,
    )  # fmt: skip
    report = json.loads(shown.stdout)
    assert report["states"]["delivered"] == 4
    feedback = report["feedback"]
    assert (feedback["clicks"], feedback["opens"], feedback["unsubscribes"]) == (1, 1, 1)
    assert (feedback["late_bounces"], feedback["complaints"]) == (2, 1)
    assert feedback["complaint_rate"] == pytest.approx(1 / 4)
    assert feedback["complaint_rate_by_domain"] == {DOMAIN: pytest.approx(1 / 4)}

    # The event logs: the engine's deliveries, the web's and the listener's signals.
    def logged(name: str) -> list[tuple[str, str]]:
        lines = (tmp_path / name).read_text().splitlines()
        return [(e["type"], e["recipient"]) for e in map(json.loads, lines)]

    assert sorted(e for e in logged("events.jsonl") if e[0] == "delivered") == [
        ("delivered", name) for name in NAMES
    ]
    assert sorted(logged("web-events.jsonl")) == [
        ("clicked", "ann"), ("opened", "ann"), ("unsubscribed", "ann")
    ]  # fmt: skip
    assert sorted(logged("inbound-events.jsonl")) == [
        ("bounced-late", "bob"), ("bounced-late", "dora"), ("complained", "carol")
    ]  # fmt: skip
    categories = {
        e["recipient"]: json.loads(e["detail"])["category"]
        for e in map(json.loads, (tmp_path / "inbound-events.jsonl").read_text().splitlines())
        if e["type"] == "bounced-late"
    }
    assert categories == {"bob": "bad-mailbox", "dora": "message-expired"}

    # The next campaign of the list: the unsubscribed, the hard-bounced and the
    # complaining are suppressed at submit; dora (expired) and dave are not.
    dave = ferrymail.Recipient(f"dave@{DOMAIN}", {}, id="dave")
    async with ferrymail.Engine(spool_path, engine_config) as engine:
        result = await engine.submit(news("c2"), [*PEOPLE, dave])
    assert (result.accepted, result.suppressed) == (2, 3)
    with open_spool(spool_path, read_only=True) as spool:
        states = spool.final_states("c2")
    assert {n: states[n] for n in ("ann", "bob", "carol")} == dict.fromkeys(
        ("ann", "bob", "carol"), "suppressed"
    )
    assert states["dave"] != "suppressed" and states["dora"] != "suppressed"
