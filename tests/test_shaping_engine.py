"""The shaping file applied by the engine, against scripted peers answering as Gmail, Yahoo
and Microsoft do: limits per site, rules that fire at their threshold, their actions
(lower the rate, suspend the site or a campaign, bounce), ending on time, kept in the
spool, shown by `ferrymail status`, lifted by `ferrymail flush`, and other sites
untouched."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import ferrymail
import pytest
from dns_peer import DnsServer
from engine_support import campaign, config, free_port_everywhere, on_uvloop, people
from ferrymail.shaping import default_path, loads
from ferrymail.spool import ShapingAction, open_spool
from smtp_peers import Message, RawServer, ScriptedServer, slow

Scripted = Callable[..., ScriptedServer]

GMAIL_RATE_LIMITED = (
    "421 4.7.28 [127.0.0.1] Our system has detected an unusual rate of unsolicited mail "
    "originating from your IP address. To protect our users from spam, mail sent from your "
    "IP address has been temporarily rate limited."
)
YAHOO_TS02 = (
    "421 4.7.0 [TS02] Messages from 127.0.0.1 temporarily deferred due to unexpected "
    "volume or user complaints - 4.16.56.1; see https://postmaster.yahooinc.com/error-codes"
)
YAHOO_POLICY = "554 5.7.9 Message not accepted for policy reasons. See https://postmaster.yahooinc.com/error-codes"
MICROSOFT_BUSY = (
    "451 4.7.500 Server busy. Please try again later from [127.0.0.1]. (S77714) "
    "[Name=Protocol Filter Agent][AGT=PFA][MxId=11BB6C3A4E71E5FC]"
)


@pytest.fixture(scope="module")
def port() -> int:
    return free_port_everywhere()


def rate(messages: list[Message]) -> float:
    """Messages per second at the peer, between its first and last message."""
    times = sorted(m.received_at for m in messages)
    return (len(times) - 1) / (times[-1] - times[0])


def shaped(
    dns: DnsServer, port: int, tmp_path: Path, shaping: str, **overrides: object
) -> ferrymail.Config:
    return config(dns, port, tmp_path, shaping=loads(shaping, name="test.toml"), **overrides)


@on_uvloop
async def test_a_site_entry_sets_the_rate_and_other_sites_keep_theirs(
    dns_server: DnsServer, scripted_server: Scripted, port: int, tmp_path: Path, spool_at: str
) -> None:
    dns_server.add_zone("slow-site.test", ["@ MX 10 mx", "mx A 127.0.0.21"])
    dns_server.add_zone("fast-site.test", ["@ MX 10 mx", "mx A 127.0.0.22"])
    slow = scripted_server(host="127.0.0.21", port=port)
    fast = scripted_server(host="127.0.0.22", port=port)
    shaping = '[site."mx.slow-site.test"]\nmax_message_rate = "20/s"\n'
    cfg = shaped(dns_server, port, tmp_path, shaping, batch_size=10)
    async with ferrymail.Engine(spool_at, cfg) as engine:
        await engine.submit(campaign(), people("slow-site.test", 60) + people("fast-site.test", 60))
        await engine.drain()

    assert len(slow.delivered) == len(fast.delivered) == 60
    # One second's worth may go at once (the bucket starts full), then 20 a second.
    assert rate(slow.delivered[20:]) == pytest.approx(20, rel=0.2)
    assert rate(fast.delivered) > 60


@on_uvloop
async def test_gmail_rate_limit_rule_fires_at_its_threshold_and_lowers_the_rate(
    dns_server: DnsServer, scripted_server: Scripted, port: int, tmp_path: Path, spool_at: str
) -> None:
    dns_server.add_zone("gmail-like.test", ["@ MX 10 gmail-smtp-in.l.google.test."])
    dns_server.add_zone("google.test", ["gmail-smtp-in.l A 127.0.0.23"])
    dns_server.add_zone("other-site.test", ["@ MX 10 mx", "mx A 127.0.0.24"])
    gmail = scripted_server(
        host="127.0.0.23", port=port, replies={"RCPT": [GMAIL_RATE_LIMITED] * 3}
    )
    other = scripted_server(host="127.0.0.24", port=port)
    shaping = """
[provider.google]
mx_suffix = [".google.test"]
[[provider.google.automation]]
name = "gmail-rate-limited-4.7.28"
regex = '^421 4\\.7\\.28 '
trigger = "3/min"
set = { max_message_rate = "10/s" }
duration = "1m"
"""
    cfg = shaped(dns_server, port, tmp_path, shaping, batch_size=5)
    async with ferrymail.Engine(spool_at, cfg) as engine:
        await engine.submit(
            campaign(), people("gmail-like.test", 40) + people("other-site.test", 40)
        )
        await engine.drain()

    with open_spool(spool_at, read_only=True) as spool:
        (action,) = spool.actions()
        suspended = spool.suspensions()
    assert (action.rule, action.scope, action.limits) == (
        "gmail-rate-limited-4.7.28",
        "site",
        {"max_message_rate": "10/s"},
    )
    assert action.reply.startswith("421 4.7.28 [127.0.0.1] Our system has detected")
    assert action.domains == ["gmail-like.test"]
    assert suspended == []  # the rule took the 421: no built-in suspension
    assert len(gmail.delivered) == 40 and len(other.delivered) == 40
    after = [m for m in gmail.delivered if m.received_at > action.started]
    assert len(after) >= 30
    assert rate(after[10:]) == pytest.approx(10, rel=0.25)
    assert rate(other.delivered) > 40


@on_uvloop
async def test_yahoo_deferral_suspends_the_site_until_the_action_ends(
    dns_server: DnsServer, scripted_server: Scripted, port: int, tmp_path: Path, spool_at: str
) -> None:
    dns_server.add_zone("yahoo-like.test", ["@ MX 10 mta5.am0.yahoodns.test."])
    dns_server.add_zone("yahoodns.test", ["mta5.am0 A 127.0.0.25"])
    yahoo = scripted_server(host="127.0.0.25", port=port, replies={"RCPT": [YAHOO_TS02]})
    shaping = """
[provider.yahoo]
mx_suffix = [".yahoodns.test"]
[[provider.yahoo.automation]]
name = "yahoo-deferred-ts01-ts04"
regex = '^421 4\\.7\\.0 \\[TSS?0[124]\\]'
trigger = "immediate"
suspend = true
duration = "2s"
"""
    cfg = shaped(dns_server, port, tmp_path, shaping, batch_size=1)
    async with ferrymail.Engine(spool_at, cfg) as engine:
        await engine.submit(campaign(), people("yahoo-like.test", 3))
        drained = asyncio.create_task(engine.drain())
        while not await _suspensions(spool_at):
            await asyncio.sleep(0.05)
        (suspension,) = await _suspensions(spool_at)
        await drained

    assert suspension.reason.startswith("shaping rule yahoo-deferred-ts01-ts04: 421 4.7.0 [TS02]")
    assert suspension.until - suspension.since == pytest.approx(2, abs=0.3)
    assert len(yahoo.delivered) == 3
    # Nothing went to the site while it was suspended, and it was sent to again on time.
    first = min(m.received_at for m in yahoo.delivered)
    assert first >= suspension.until - 0.05
    assert first < suspension.until + 1.5


async def _suspensions(where: str) -> list[object]:
    """The spool's suspensions, as another process reads them (none before it exists)."""
    if not where.startswith("postgresql://") and not Path(where).exists():
        return []
    with open_spool(where, read_only=True) as spool:
        return list(spool.suspensions())


@on_uvloop
async def test_a_bounce_rule_bounces_what_is_queued_for_the_site(
    dns_server: DnsServer, scripted_server: Scripted, port: int, tmp_path: Path, spool_at: str
) -> None:
    dns_server.add_zone("policy.test", ["@ MX 10 mx", "mx A 127.0.0.26"])
    scripted_server(host="127.0.0.26", port=port, replies={"RCPT": YAHOO_POLICY})
    shaping = """
[site."mx.policy.test"]
[[site."mx.policy.test".automation]]
name = "refuses-everything"
regex = '^554 5\\.7\\.9 '
trigger = "immediate"
bounce = true
duration = "1m"
"""
    cfg = shaped(dns_server, port, tmp_path, shaping, batch_size=2)
    async with ferrymail.Engine(spool_at, cfg) as engine:
        await engine.submit(campaign(), people("policy.test", 10))
        await engine.drain()
        report = await engine.report("c1")

    assert report.states["bounced"] == 10
    replies = dict(report.replies)
    by_rule = sum(
        n for text, n in replies.items() if "bounced by shaping rule refuses-everything" in text
    )
    assert by_rule >= 6  # the first batch got the 554 itself; the rest never went out
    assert sum(replies.values()) == 10


@on_uvloop
async def test_the_shipped_file_reacts_to_microsofts_busy_reply(
    dns_server: DnsServer, scripted_server: Scripted, port: int, tmp_path: Path, spool_at: str
) -> None:
    text = Path(default_path()).read_text()
    text = text.replace(
        'mx_suffix = [".outlook.com", ".hotmail.com"]',
        'mx_suffix = [".outlook.com", ".hotmail.com", ".outlook.test"]',
    )
    assert ".outlook.test" in text
    dns_server.add_zone(
        "contoso-like.test", ["@ MX 10 contoso-like-test.mail.protection.outlook.test."]
    )
    dns_server.add_zone("outlook.test", ["contoso-like-test.mail.protection A 127.0.0.27"])
    scripted_server(host="127.0.0.27", port=port, replies={"RCPT": [MICROSOFT_BUSY]})
    cfg = shaped(dns_server, port, tmp_path, text, batch_size=1)
    async with ferrymail.Engine(spool_at, cfg) as engine:
        await engine.submit(campaign(), people("contoso-like.test", 1))
        running = asyncio.create_task(engine.run())
        deadline = time.monotonic() + 20
        while not await _actions(spool_at):
            assert time.monotonic() < deadline, "no rule fired"
            await asyncio.sleep(0.05)
        engine.stop()
        await running

    (action,) = await _actions(spool_at)
    assert action.rule == "microsoft-server-busy-4.7.500"
    assert action.limits == {"connection_limit": 1, "max_message_rate": "30/min"}
    # `ferrymail status` shows it with the reply; `ferrymail flush` lifts it.
    status = _cli("status", "--spool", str(spool_at))
    assert "microsoft-server-busy-4.7.500" in status and "451 4.7.500 Server busy" in status
    flushed = _cli("flush", "--spool", str(spool_at))
    assert "shaping rule microsoft-server-busy-4.7.500 on" in flushed
    assert await _actions(spool_at) == []


async def _actions(where: str) -> list[object]:
    if not where.startswith("postgresql://") and not Path(where).exists():
        return []
    with open_spool(where, read_only=True) as spool:
        return list(spool.actions())


def _cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "ferrymail", *args], capture_output=True, text=True, check=True
    )
    return done.stdout


@on_uvloop
async def test_an_entry_sets_the_tls_policy_and_timeouts_of_its_sites_batches(
    dns_server: DnsServer,
    scripted_server: Scripted,
    raw_server: Callable[..., RawServer],
    port: int,
    tmp_path: Path,
    spool_at: str,
) -> None:
    # A silent greeting: the transport waits 300 s (RFC 5321), the site's entry 1 s.
    dns_server.add_zone("silent.test", ["@ MX 10 mx", "mx A 127.0.0.28"])
    raw_server(host="127.0.0.28", port=port, faults=[slow("BANNER", 60)])
    # No STARTTLS offered: the transport's policy is "off", the entry's "required".
    dns_server.add_zone("needs-tls.test", ["@ MX 10 mx", "mx A 127.0.0.29"])
    plain = scripted_server(host="127.0.0.29", port=port)
    shaping = """
[site."mx.silent.test"]
greeting_timeout = "1s"
[domain."needs-tls.test"]
tls = "required"
"""
    cfg = shaped(dns_server, port, tmp_path, shaping)
    async with ferrymail.Engine(spool_at, cfg) as engine:
        events = engine.events()
        await engine.submit(campaign(), people("silent.test", 1) + people("needs-tls.test", 1))
        running = asyncio.create_task(engine.run())
        deferred: dict[str, ferrymail.Event] = {}
        async with asyncio.timeout(20):
            async for event in events:
                if event.type == "deferred":
                    deferred.setdefault(event.domain, event)
                if len(deferred) == 2:
                    break
        engine.stop()
        await running

    assert deferred["silent.test"].text == "timed out after 1.0 s"  # not 300 s
    assert "tls" in deferred["needs-tls.test"].text.lower()
    assert plain.delivered == []


@on_uvloop
async def test_an_entrys_idle_timeout_closes_its_sites_pooled_connections_sooner(
    dns_server: DnsServer, scripted_server: Scripted, port: int, tmp_path: Path, spool_at: str
) -> None:
    dns_server.add_zone("brief.test", ["@ MX 10 mx", "mx A 127.0.0.30"])
    dns_server.add_zone("kept.test", ["@ MX 10 mx", "mx A 127.0.0.31"])
    brief = scripted_server(host="127.0.0.30", port=port)
    kept = scripted_server(host="127.0.0.31", port=port)
    shaping = '[domain."brief.test"]\nidle_timeout = "0.3s"\n'
    smtp = ferrymail.SmtpOptions("engine.test", tls="off", idle_timeout=60.0)
    cfg = shaped(dns_server, port, tmp_path, shaping, smtp=smtp)
    async with ferrymail.Engine(spool_at, cfg) as engine:
        await engine.submit(campaign(), people("brief.test", 3) + people("kept.test", 3))
        await engine.drain()
        # The site's 0.3 s (closed within a second past it), not the transport's 60 s.
        await asyncio.to_thread(brief.wait_closed, 5.0)
        assert [c.commands[-1] for c in brief.connections] == ["QUIT"] * len(brief.connections)
        assert kept.connections and not any(c.closed for c in kept.connections)

    assert len(brief.delivered) == len(kept.delivered) == 3


@on_uvloop
async def test_a_campaign_rule_holds_that_campaign_and_the_others_go_on(
    dns_server: DnsServer, scripted_server: Scripted, port: int, tmp_path: Path, spool_at: str
) -> None:
    dns_server.add_zone("held.test", ["@ MX 10 mx", "mx A 127.0.0.20"])
    banned = (
        "550 5.7.1 Service unavailable, Client host [127.0.0.1] blocked using banned sender list"
    )
    scripted_server(
        host="127.0.0.20",
        port=port,
        rcpt_replies={f"user{i}@held.test": banned for i in range(3)},
    )
    shaping = """
[site."mx.held.test"]
[[site."mx.held.test".automation]]
name = "banned-sender"
regex = '^550 5\\.7\\.\\d+ .*banned sender'
trigger = "immediate"
scope = "campaign"
suspend = true
duration = "1h"
"""
    cfg = shaped(dns_server, port, tmp_path, shaping, batch_size=5)
    async with ferrymail.Engine(spool_at, cfg) as engine:
        await engine.submit(campaign("c1"), people("held.test", 20))
        await engine.submit(campaign("c2"), people("held.test", 20, start=100))
        running = asyncio.create_task(engine.run())
        deadline = time.monotonic() + 20
        while (await engine.report("c2")).states["delivered"] < 20:
            assert time.monotonic() < deadline, "c2 did not go on"
            await asyncio.sleep(0.05)
        engine.stop()
        await running
        held = await engine.report("c1")

    assert held.states["bounced"] == 3  # the replies themselves
    assert held.states["delivered"] == 2  # the rest of the first batch
    assert held.states["queued"] + held.states["deferred"] == 15  # waiting, not bounced
    with open_spool(spool_at, read_only=True) as spool:
        (action,) = spool.actions()
    assert (action.scope, action.campaign) == ("campaign", "c1")


@on_uvloop
async def test_an_action_in_the_spool_holds_after_a_restart(
    dns_server: DnsServer, scripted_server: Scripted, port: int, tmp_path: Path, spool_at: str
) -> None:
    dns_server.add_zone("restarted.test", ["@ MX 10 mx", "mx A 127.0.0.19"])
    peer = scripted_server(host="127.0.0.19", port=port)
    cfg = shaped(dns_server, port, tmp_path, "", batch_size=5)
    site = f"mx.restarted.test:{port}"
    now = time.time()
    with open_spool(spool_at) as spool:  # what an engine before left
        spool.put_actions(
            [
                ShapingAction(
                    "gmail-rate-limited-4.7.28", "site", site, "", "", now - 5, now + 60, 0.0,
                    GMAIL_RATE_LIMITED, False, False, {"max_message_rate": "10/s"},
                    ["restarted.test"],
                )
            ]
        )  # fmt: skip
    async with ferrymail.Engine(spool_at, cfg) as engine:
        await engine.submit(campaign(), people("restarted.test", 40))
        await engine.drain()

    assert len(peer.delivered) == 40
    assert rate(peer.delivered[10:]) == pytest.approx(10, rel=0.25)
