"""The bounce domain's listener (`ferrymail.inbound`): late bounces, complaints,
auto-replies and mailto unsubscribes over real SMTP into a real spool."""

from __future__ import annotations

import asyncio
import json
import os
import re
import smtplib
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import ferrymail
import pytest
from engine_support import on_uvloop
from ferrymail import verp
from ferrymail.events import EventBus
from ferrymail.inbound import InboundServer, message_digest
from ferrymail.spool import SqliteSpool
from ferrymail.webhooks import Webhook
from ferrymail.webhooks.feedback import feedback_hook
from inbound_support import (
    BOUNCE_DOMAIN,
    arf,
    auto_reply,
    delivered_spool,
    dsn,
    inbound_config,
    message_id,
    plain,
    rendered,
    send,
    unsubscribe_mail,
)
from web_support import SECRET, UNSUBSCRIBE_SECRET, campaign

ANN = ferrymail.Recipient("ann@example.org", {})
BOB = ferrymail.Recipient("bob@example.net", {})


@asynccontextmanager
async def listening(
    spool: SqliteSpool, tmp_path: Path, **overrides: object
) -> AsyncIterator[tuple[InboundServer, int]]:
    events = EventBus(tmp_path / "inbound-events.jsonl")
    server = InboundServer(spool, inbound_config(**overrides), events, hostname="mx.test")
    _, port = await server.start("127.0.0.1", 0)
    try:
        yield server, port
    finally:
        await server.stop()
        events.close()


def events(tmp_path: Path) -> list[dict[str, object]]:
    path = tmp_path / "inbound-events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def deliver(
    port: int, content: bytes, to: str = f"bounces@{BOUNCE_DOMAIN}"
) -> tuple[int, bytes]:
    return await asyncio.to_thread(send, port, content, to)


# --- No open relay, and the limits ------------------------------------------------


@on_uvloop
async def test_mail_for_other_domains_is_refused(tmp_path: Path) -> None:
    spool = delivered_spool(tmp_path / "s.db", [campaign()], [ANN])
    async with listening(spool, tmp_path) as (server, port):
        code, _ = await deliver(port, b"Subject: x\r\n\r\nx\r\n", to="someone@elsewhere.example")
        assert code == 550
        code, _ = await deliver(port, b"Subject: x\r\n\r\nx\r\n", to="BOUNCES@Bounces.Example.COM")
        assert code == 250
        assert server.refused_recipients == 1


@on_uvloop
async def test_connections_past_the_limit_get_421(tmp_path: Path) -> None:
    spool = delivered_spool(tmp_path / "s.db", [campaign()], [ANN])
    async with listening(spool, tmp_path, max_connections=2) as (server, port):
        held = [await asyncio.to_thread(smtplib.SMTP, "127.0.0.1", port) for _ in range(2)]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as third:
            greeting = await asyncio.to_thread(third.recv, 200)
        assert greeting.startswith(b"421 "), greeting
        for client in held:
            client.close()
        await asyncio.sleep(0.2)  # (the sessions end)
        code, _ = await deliver(port, b"Subject: x\r\n\r\nx\r\n")
        assert code == 250
        assert server.refused_connections == 1


@on_uvloop
async def test_a_message_over_the_size_limit_is_refused_and_the_listener_goes_on(
    tmp_path: Path,
) -> None:
    spool = delivered_spool(tmp_path / "s.db", [campaign()], [ANN])
    original = rendered(campaign(), ANN)
    async with listening(spool, tmp_path, max_message_size=20_000) as (_, port):
        code, _ = await deliver(
            port, dsn(original, ANN.address, headers_only=False) + (b"x" * 78 + b"\r\n") * 400
        )
        assert code == 552
        code, _ = await deliver(port, dsn(original, ANN.address))
        assert code == 250
    assert [e["type"] for e in events(tmp_path)] == ["bounced-late"]


@on_uvloop
async def test_hostile_messages_are_answered_and_record_nothing(tmp_path: Path) -> None:
    spool = delivered_spool(tmp_path / "s.db", [campaign()], [ANN])
    hostile = [
        b"\x00\xff\xfe garbage with no headers at all\r\n",
        b"Content-Type: multipart/report; report-type=delivery-status\r\n\r\nno boundary\r\n",
        b"X-Header: " + b"a" * 900 + b"\r\n" * 1 + (b"X-Header: " + b"a" * 900 + b"\r\n") * 5000,
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n" * 2000,
    ]
    async with listening(spool, tmp_path) as (server, port):
        for content in hostile:
            code, _ = await deliver(port, content)
            assert code == 250
        assert server.received["unknown"] == len(hostile)
    assert spool.suppressions() == []
    assert spool.feedback("news-1") == []


@on_uvloop
async def test_a_spool_that_cannot_record_makes_the_sender_try_again(tmp_path: Path) -> None:
    delivered_spool(tmp_path / "s.db", [campaign()], [ANN]).close()
    spool = SqliteSpool(tmp_path / "s.db", read_only=True)
    original = rendered(campaign(), ANN)
    async with listening(spool, tmp_path) as (_, port):
        code, text = await deliver(port, dsn(original, ANN.address))
    assert code == 451, text


# --- Late bounces -------------------------------------------------------------------


@on_uvloop
async def test_late_hard_bounce_keeps_the_delivery_adds_the_bounce_and_suppresses(
    tmp_path: Path,
) -> None:
    first, second = plain("news-1"), plain("news-2")
    spool = delivered_spool(tmp_path / "s.db", [first, second], [ANN, BOB])
    # The report quotes news-1's message (no token in it): the Message-ID picks it over
    # the newer news-2.
    original = rendered(first, ANN)
    async with listening(spool, tmp_path) as (_, port):
        code, _ = await deliver(port, dsn(original, ANN.address))
    assert code == 250
    assert spool.final_states("news-1") == {ANN.address: "delivered", BOB.address: "delivered"}
    assert [(k, key) for k, key, *_ in spool.feedback("news-1")] == [("bounced-late", ANN.address)]
    assert spool.feedback("news-2") == []
    assert spool.is_suppressed(ANN.address) and not spool.is_suppressed(BOB.address)
    report = spool.report("news-1")
    assert report.states["delivered"] == 2
    assert report.feedback.late_bounces == 1
    (event,) = events(tmp_path)
    assert (event["type"], event["campaign"], event["address"]) == (
        "bounced-late",
        "news-1",
        ANN.address,
    )
    detail = json.loads(str(event["detail"]))
    assert detail["status"] == "5.1.1" and detail["category"] == "bad-mailbox"
    assert detail["matched_by"] == "message-id"


@on_uvloop
async def test_message_expired_bounce_is_recorded_but_suppresses_nothing(tmp_path: Path) -> None:
    spool = delivered_spool(tmp_path / "s.db", [campaign()], [ANN])
    report = dsn(
        rendered(campaign(), ANN),
        ANN.address,
        status="4.4.7",
        diagnostic="smtp; 451 4.4.7 delivery time expired",
    )
    async with listening(spool, tmp_path) as (_, port):
        await deliver(port, report)
    assert [k for k, *_ in spool.feedback("news-1")] == ["bounced-late"]
    assert json.loads(str(events(tmp_path)[0]["detail"]))["category"] == "message-expired"
    assert not spool.is_suppressed(ANN.address)


@on_uvloop
async def test_a_delay_report_is_an_event_only(tmp_path: Path) -> None:
    spool = delivered_spool(tmp_path / "s.db", [campaign()], [ANN])
    report = dsn(
        rendered(campaign(), ANN),
        ANN.address,
        action="delayed",
        status="4.2.2",
        diagnostic="smtp; 452 4.2.2 mailbox full",
    )
    async with listening(spool, tmp_path) as (server, port):
        await deliver(port, report)
    assert server.received["delay"] == 1
    assert spool.feedback("news-1") == []
    assert [(e["type"], e["address"]) for e in events(tmp_path)] == [("delayed", ANN.address)]


@on_uvloop
async def test_a_bounce_for_an_address_never_sent_to_suppresses_nothing(tmp_path: Path) -> None:
    # A forged bounce (backscatter) must not put addresses on the suppression list.
    spool = delivered_spool(tmp_path / "s.db", [campaign()], [ANN])
    stranger = ferrymail.Recipient("victim@example.com", {})
    async with listening(spool, tmp_path) as (server, port):
        code, _ = await deliver(port, dsn(rendered(campaign(), stranger), stranger.address))
    assert code == 250
    assert server.unmatched == 1
    assert spool.suppressions() == [] and spool.feedback("news-1") == []


def test_message_digest_is_the_renderers() -> None:
    by_id = ferrymail.Recipient("carol@example.org", {}, id="esp-7")
    by_int = ferrymail.Recipient("dan@example.org", {}, id=-12)
    for recipient, key, address in (
        (ANN, ANN.address, True),
        (by_id, "esp-7", False),
        (by_int, -12, False),
    ):
        found = message_id(rendered(campaign(), recipient))
        digest = re.fullmatch(r"<([0-9a-f]{32})@.*>", found)
        assert digest, found
        assert digest[1] == message_digest("news-1", key, address=address)


# --- Complaints ---------------------------------------------------------------------


@on_uvloop
async def test_complaint_names_its_recipient_and_suppresses_globally(tmp_path: Path) -> None:
    first, second = campaign("news-1", list_id="<news.example.com>"), campaign("promo-1")
    spool = delivered_spool(tmp_path / "s.db", [first, second], [ANN, BOB])
    async with listening(spool, tmp_path) as (_, port):
        code, _ = await deliver(
            port, arf(rendered(first, BOB), BOB.address), to=f"fbl@{BOUNCE_DOMAIN}"
        )
    assert code == 250
    assert [(k, key) for k, key, *_ in spool.feedback("news-1")] == [("complained", BOB.address)]
    assert spool.is_suppressed(BOB.address)  # globally: every list
    report = spool.report("news-1").feedback
    assert report.complaints == 1
    assert report.complaint_rate == 0.5
    assert report.complaint_rate_by_domain == {"example.net": 1.0}
    (event,) = events(tmp_path)
    detail = json.loads(str(event["detail"]))
    assert detail["feedback_type"] == "abuse" and detail["user_agent"].startswith("Yahoo")


@on_uvloop
async def test_redacted_complaint_about_an_esp_id_is_matched_by_its_tracking_link(
    tmp_path: Path,
) -> None:
    # Microsoft's JMRP removes the recipient's address; the ESP's id keys the
    # recipient, so no address could find it: the tracking token in the body does.
    carol = ferrymail.Recipient("carol@outlook.example", {}, id="esp-carol")
    spool = delivered_spool(tmp_path / "s.db", [campaign()], [ANN, carol])
    report = arf(
        rendered(campaign(), carol), carol.address, user_agent="Microsoft JMRP", redact=True
    )
    assert carol.address.encode() not in report
    async with listening(spool, tmp_path) as (_, port):
        await deliver(port, report, to=f"fbl@{BOUNCE_DOMAIN}")
    assert [(k, key) for k, key, *_ in spool.feedback("news-1")] == [("complained", "esp-carol")]
    assert spool.is_suppressed(carol.address)
    assert json.loads(str(events(tmp_path)[0]["detail"]))["matched_by"] == "unsubscribe token"


# --- Auto-replies and mailto unsubscribes -------------------------------------------


@on_uvloop
async def test_an_auto_reply_is_recorded_and_never_a_bounce(tmp_path: Path) -> None:
    spool = delivered_spool(tmp_path / "s.db", [campaign()], [ANN])
    reply = auto_reply(ANN.address, message_id(rendered(campaign(), ANN)))
    async with listening(spool, tmp_path) as (server, port):
        await deliver(port, reply)
    assert server.received["auto-reply"] == 1
    assert [k for k, *_ in spool.feedback("news-1")] == ["auto-reply"]
    feedback = spool.report("news-1").feedback
    assert (feedback.auto_replies, feedback.late_bounces) == (1, 0)
    assert not spool.is_suppressed(ANN.address)


@on_uvloop
async def test_mailto_unsubscribe_suppresses_for_the_list_once(tmp_path: Path) -> None:
    c = ferrymail.Campaign(
        id="news-1",
        sender="bounces@news.example.com",
        from_="News <news@example.com>",
        subject="News",
        text="Hello",
        unsubscribe=ferrymail.Unsubscribe(
            mailto=f"unsubscribe@{BOUNCE_DOMAIN}", secret=UNSUBSCRIBE_SECRET
        ),
    )
    spool = delivered_spool(tmp_path / "s.db", [c, campaign("promo-1")], [ANN])
    header = re.search(rb"List-Unsubscribe: <mailto:[^?]+\?subject=([^>]+)>", rendered(c, ANN))
    assert header, "no mailto List-Unsubscribe"
    mail = unsubscribe_mail(ANN.address, header[1].decode())
    async with listening(spool, tmp_path) as (_, port):
        for _ in range(2):  # a second request changes nothing
            code, _ = await deliver(port, mail, to=f"unsubscribe@{BOUNCE_DOMAIN}")
            assert code == 250
    assert spool.is_suppressed(ANN.address, spool.campaign_list("news-1"))
    assert not spool.is_suppressed(ANN.address)  # not globally: promo-1 still may
    assert [k for k, *_ in spool.feedback("news-1")] == ["unsubscribed"]
    assert [e["type"] for e in events(tmp_path)] == ["unsubscribed"]


@on_uvloop
async def test_webhooks_get_the_same_events_as_the_log_from_the_spools_transactions(
    tmp_path: Path,
) -> None:
    """With webhooks (as `ferrymail inbound --service-config` sets them), each event of
    the log is in the outbox too: a late bounce with its record, a delay on its own."""
    spool = delivered_spool(tmp_path / "s.db", [plain("news-1")], [ANN, BOB])
    hook = Webhook(
        name="esp",
        url="http://127.0.0.1:9/events",  # never called: no sender runs here
        events=frozenset({"bounced-late", "delayed"}),
        secrets=(b"k" * 32,),
    )
    spool.on_feedback = feedback_hook([hook])
    original = rendered(plain("news-1"), ANN)
    delay = dsn(rendered(plain("news-1"), BOB), BOB.address, action="delayed", status="4.2.2")
    async with listening(spool, tmp_path) as (_, port):
        assert (await deliver(port, dsn(original, ANN.address)))[0] == 250
        assert (await deliver(port, delay))[0] == 250
    batch = spool.webhook_take("esp", 100, older_than=1e12)
    assert batch is not None
    outboxed = [json.loads(body) for _, body in batch.events]
    assert [(e["type"], e["address"]) for e in outboxed] == [
        ("bounced-late", ANN.address),
        ("delayed", BOB.address),
    ]
    assert [{k: v for k, v in e.items() if k != "id"} for e in outboxed] == events(tmp_path)


# --- VERP ---------------------------------------------------------------------------


@on_uvloop
async def test_a_verp_address_names_its_row_and_a_forged_one_names_nothing(
    tmp_path: Path,
) -> None:
    # Keyed by the ESP's ids and with a mangled report naming no one: only the token
    # in the address the bounce came to can find the recipient.
    carol = ferrymail.Recipient("carol@example.org", {}, id="esp-carol")
    dave = ferrymail.Recipient("dave@example.org", {}, id="esp-dave")
    spool = delivered_spool(tmp_path / "s.db", [plain("news-1")], [carol, dave])
    rows = {key: row for row, key, *_ in spool.iter_recipients("news-1")}
    mangled = dsn(b"Subject: (original lost)\r\n\r\n", "unknown@relay.example")
    genuine = verp.seal_token(rows["esp-carol"], SECRET)
    forged = verp.seal_token(rows["esp-dave"], "another-secret-0123456789")
    async with listening(spool, tmp_path) as (server, port):
        for token in (genuine.upper(), forged):  # (an MTA may upper-case it)
            code, _ = await deliver(port, mangled, to=f"bounces+{token}@{BOUNCE_DOMAIN}")
            assert code == 250
    assert [(k, key) for k, key, *_ in spool.feedback("news-1")] == [("bounced-late", "esp-carol")]
    assert server.unmatched == 1
    assert [a for a, _, _ in spool.suppressions()] == ["carol@example.org"]
    assert json.loads(str(events(tmp_path)[0]["detail"]))["matched_by"] == "verp"


# --- The command line ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--listen", "127.0.0.1:0"], "give --domain DOMAIN"),
        (["--listen", "127.0.0.1", "--domain", BOUNCE_DOMAIN], "--listen: HOST:PORT"),
        (["--listen", "127.0.0.1:0", "--domain", "bad domain"], "domains[0]"),
        (["--listen", "127.0.0.1:0", "--config", "missing.toml"], "missing.toml"),
    ],
)
def test_inbound_command_refuses_bad_settings_in_one_line(
    args: list[str], says: str, tmp_path: Path
) -> None:
    delivered_spool(tmp_path / "s.db", [campaign()], [ANN]).close()
    env = {**os.environ, "FERRYMAIL_TRACKING_SECRET": SECRET}
    done = subprocess.run(
        [sys.executable, "-m", "ferrymail", "inbound", *args, "--spool", str(tmp_path / "s.db")],
        capture_output=True, text=True, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert done.returncode == 2
    assert says in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
