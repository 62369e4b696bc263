"""VERP end to end: each message's MAIL FROM, as a real SMTP peer receives it, carries a
token that opens to its recipient's spool row; the settings, the campaign file, previews
and stored specs of an older ferrymail."""

from __future__ import annotations

import email.policy
import re
import subprocess
import sys
from collections.abc import Callable
from email.parser import BytesParser
from pathlib import Path

import ferrymail
import msgspec
import pytest
from dns_peer import DnsServer
from engine_support import campaign, config, free_port_everywhere, on_uvloop, people, spool_sql
from ferrymail import ConfigError, Tracking, Unsubscribe, Verp, WireError
from ferrymail.feedback.addresses import verp_token
from ferrymail.spool import open_spool
from ferrymail.verp import open_token, seal_token
from ferrymail.wire import CampaignSpec, MxHost, Route, SmtpOptions
from smtp_peers import Message, ScriptedServer

Scripted = Callable[..., ScriptedServer]

SECRET = "verp-test-secret-0123456789"
TRACKING = Tracking(base_url="https://t.sender.test/c/", secret=SECRET)
#: bounces+TOKEN@sender.test, TOKEN 39 characters of lower-case base32.
VERP_SENDER = re.compile(r"bounces\+([a-z2-7]{39})@sender\.test")


@pytest.fixture(scope="module")
def port() -> int:
    return free_port_everywhere()


def parsed(message: Message) -> email.message.EmailMessage:
    return BytesParser(policy=email.policy.default).parsebytes(message.content)  # type: ignore[return-value]


def rows_by_address(path: str | Path, campaign_id: str = "c1") -> dict[str, int]:
    with open_spool(path) as spool:
        return {address: row for row, _, address, _, _ in spool.iter_recipients(campaign_id)}


def check_verp(delivered: list[Message], rows: dict[str, int], secrets: list[str]) -> None:
    """Each message's MAIL FROM opens to the spool row of the recipient it went to."""
    assert sorted(m.rcpt_tos[0] for m in delivered) == sorted(rows)
    opened = set()
    for m in delivered:
        match = VERP_SENDER.fullmatch(m.mail_from)
        assert match, m.mail_from
        token = match[1]
        # The listener's extractor finds the same token in the address a bounce comes to.
        assert verp_token(m.mail_from) == token
        row = open_token(token, secrets)
        (rcpt,) = m.rcpt_tos
        assert row == rows[rcpt]
        # Forwarders lower- or upper-case local parts: the token still opens.
        assert open_token(token.upper(), secrets) == row
        message = parsed(m)
        assert message["To"] == rcpt
        # The header From is the campaign's, never the VERP address; we write no
        # Return-Path (the receiving MTA does, from MAIL FROM).
        assert message["From"] == "Sender <news@sender.test>"
        assert message["Return-Path"] is None
        opened.add(row)
    assert len(opened) == len(delivered)


@on_uvloop
async def test_each_message_names_its_spool_row_in_mail_from(
    dns_server: DnsServer, scripted_server: Scripted, port: int, tmp_path: Path, spool_at: str
) -> None:
    dns_server.add_zone("verp.test", ["@ MX 10 mx", "mx A 127.0.0.2"])
    server = scripted_server(host="127.0.0.2", port=port)
    path = spool_at
    async with ferrymail.Engine(path, config(dns_server, port, tmp_path)) as e:
        await e.submit(campaign(tracking=TRACKING, verp=True), people("verp.test", 3))
        # A campaign without VERP in the same engine keeps the plain sender.
        await e.submit(campaign("c2"), people("verp.test", 2, start=10))
        await e.drain()

    verp = [m for m in server.delivered if m.rcpt_tos[0] in rows_by_address(path)]
    assert len(verp) == 3
    # The secret of an earlier rotation first: the current one still opens the tokens.
    check_verp(verp, rows_by_address(path), ["an-older-secret-0123456789", SECRET])
    plain = [m for m in server.delivered if m not in verp]
    assert [m.mail_from for m in plain] == ["bounces@sender.test"] * 2
    # A token opens only with its campaign's secret.
    token = VERP_SENDER.fullmatch(verp[0].mail_from)[1]  # type: ignore[index]
    assert open_token(token, ["another-secret-0123456789"]) is None


@on_uvloop
async def test_a_verp_secret_of_its_own_and_a_restart(
    dns_server: DnsServer, scripted_server: Scripted, port: int, tmp_path: Path, spool_at: str
) -> None:
    """Recipients queued by one engine and delivered by the next, which compiles the
    campaign from the spec stored in the spool: VERP comes back with it."""
    dns_server.add_zone("verp-own.test", ["@ MX 10 mx", "mx A 127.0.0.3"])
    server = scripted_server(host="127.0.0.3", port=port)
    path = spool_at
    own = "a-verp-secret-of-its-own-42"
    cfg = config(dns_server, port, tmp_path)
    async with ferrymail.Engine(path, cfg) as e:
        c = campaign(tracking=TRACKING, verp=Verp(secret=own.encode()))
        await e.submit(c, people("verp-own.test", 3))
    assert server.delivered == []
    async with ferrymail.Engine(path, cfg) as e:
        await e.drain()

    check_verp(server.delivered, rows_by_address(path), [own])
    # Its own secret, not the tracking one.
    token = VERP_SENDER.fullmatch(server.delivered[0].mail_from)[1]  # type: ignore[index]
    assert open_token(token, [SECRET]) is None


@on_uvloop
async def test_a_spec_stored_before_verp_existed_still_delivers(
    dns_server: DnsServer, scripted_server: Scripted, port: int, tmp_path: Path, spool_at: str
) -> None:
    dns_server.add_zone("verp-old.test", ["@ MX 10 mx", "mx A 127.0.0.4"])
    server = scripted_server(host="127.0.0.4", port=port)
    path = spool_at
    cfg = config(dns_server, port, tmp_path)
    async with ferrymail.Engine(path, cfg) as e:
        await e.submit(campaign(), people("verp-old.test", 2))
    # The spec as the ferrymail before VERP stored it: the same array, one field short.
    ((stored,),) = spool_sql(path, "SELECT spec FROM campaign WHERE name = 'c1'")
    fields = msgspec.msgpack.decode(stored)
    assert fields[-1] is None  # verp, the last field
    old = msgspec.msgpack.encode(fields[:-1])
    spool_sql(path, "UPDATE campaign SET spec = ? WHERE name = 'c1'", [old])
    assert msgspec.msgpack.decode(old, type=CampaignSpec).verp is None
    async with ferrymail.Engine(path, cfg) as e:
        await e.drain()
        report = await e.report("c1")

    assert report.states["delivered"] == 2
    assert [m.mail_from for m in server.delivered] == ["bounces@sender.test"] * 2
    # Submitting the campaign again (its spec now encoded with the verp field) is the
    # same campaign, not a changed spec: the duplicates are not queued again.
    async with ferrymail.Engine(path, cfg) as e:
        again = await e.submit(campaign(), people("verp-old.test", 2))
    assert (again.accepted, again.duplicates) == (0, 2)


def test_verp_true_takes_the_tracking_else_the_unsubscribe_secret() -> None:
    with_tracking = campaign(tracking=TRACKING, verp=True)
    assert with_tracking.spec.verp is not None
    assert with_tracking.spec.verp.secret == SECRET.encode()
    unsubscribe = Unsubscribe(url="https://t.sender.test/u/", secret=b"u" * 20)
    only_unsubscribe = campaign(unsubscribe=unsubscribe, verp=True)
    assert only_unsubscribe.spec.verp is not None
    assert only_unsubscribe.spec.verp.secret == b"u" * 20
    assert campaign().spec.verp is None and campaign(verp=False).spec.verp is None


@pytest.mark.parametrize(
    ("settings", "field", "says"),
    [
        ({"verp": True}, "verp", "neither"),
        ({"verp": "yes"}, "verp", "true, false or Verp"),
        ({"verp": Verp(secret="short")}, "verp.secret", "at least 16 bytes"),
        ({"verp": True, "tracking": TRACKING, "sender": "bounces+x@sender.test"}, "sender", "'+'"),
        ({"verp": True, "tracking": TRACKING, "sender": "b" * 25 + "@sender.test"}, "sender", "24"),
    ],
)
def test_bad_verp_settings_are_config_errors_naming_the_field(
    settings: dict[str, object], field: str, says: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)) as raised:
        campaign(**settings)
    assert raised.value.field == field
    assert "VERP" in str(raised.value) or "verp" in str(raised.value)


def test_the_longest_sender_verp_allows() -> None:
    c = campaign(tracking=TRACKING, verp=True, sender="b" * 24 + "@sender.test")
    assert c.spec.verp is not None
    # Without VERP, a '+' in the sender is fine.
    assert campaign(sender="bounces+x@sender.test").spec.verp is None


def test_a_preview_has_the_plain_sender() -> None:
    """No spool, no row: ferrymail.render shows the envelope sender without a token."""
    (message,) = ferrymail.render(campaign(tracking=TRACKING, verp=True), people("p.test", 1))
    assert isinstance(message, ferrymail.RenderedMessage)
    assert message.envelope_from == "bounces@sender.test"


def test_tokens_seal_and_open_and_refuse_bad_input() -> None:
    for row in (0, 1, 2**31, 2**63 - 1, 2**64 - 1):
        token = seal_token(row, SECRET)
        assert re.fullmatch(r"[a-z2-7]{39}", token)
        assert open_token(token, [SECRET]) == row
        assert open_token(token, [SECRET.encode()]) == row
    token = seal_token(5, SECRET)
    flipped = token[:10] + ("a" if token[10] != "a" else "b") + token[11:]
    for bad in (flipped, token[:-1], token + "a", "", "x" * 100_000, "é" * 39, "0" * 39):
        assert open_token(bad, [SECRET]) is None, bad
    assert open_token(None, [SECRET]) is None  # type: ignore[arg-type]
    assert open_token(token, []) is None
    with pytest.raises(TypeError, match="list of secrets"):
        open_token(token, SECRET)
    for row in (-1, 2**64, 1.5, True):
        with pytest.raises(ValueError, match="row_id"):
            seal_token(row, SECRET)  # type: ignore[arg-type]


def test_envelope_ids_must_match_the_recipients() -> None:
    transport = ferrymail.Transport(SmtpOptions("verp.test", tls="off"))
    c = campaign(tracking=TRACKING, verp=True)
    assert c._inner.verp and not campaign()._inner.verp
    payload = msgspec.msgpack.encode(people("x.test", 2))
    route = msgspec.msgpack.encode(Route([MxHost("mx.x.test", ["127.0.0.1"], 9)]))
    with pytest.raises(WireError, match="1 ids for 2 recipients"):
        transport._inner.start(c._inner, payload, route, envelope_ids=[1])


# --- the campaign file --------------------------------------------------------------------

CAMPAIGN = """\
id = "welcome"
sender = "{sender}"
from = "Ferry <news@example.com>"
subject = "Hi {{ first_name }}"
text = "welcome.txt"
{verp}
[tracking]
base_url = "https://t.example.com/c/"
secret = "a-secret-of-16-bytes-or-more"
"""


def send(
    directory: Path, verp: str, server: ScriptedServer, sender: str = "bounces@news.example.com"
) -> subprocess.CompletedProcess[str]:
    (directory / "welcome.toml").write_text(CAMPAIGN.format(verp=verp, sender=sender))
    (directory / "welcome.txt").write_text("Hi {{ first_name }}\n")
    (directory / "people.csv").write_text("email,first_name\nann@a.test,Ann\nbo@b.test,Bo\n")
    return subprocess.run(
        [
            *(sys.executable, "-m", "ferrymail", "send", "welcome.toml", "people.csv"),
            *("--spool", "spool.db", "--smarthost", f"{server.host}:{server.port}"),
        ],
        capture_output=True,
        text=True,
        cwd=directory,
        timeout=60,
    )


def test_ferrymail_send_with_verp_true_in_the_campaign_file(tmp_path: Path) -> None:
    with ScriptedServer() as server:
        done = send(tmp_path, "verp = true", server)
    assert done.returncode == 0, done.stderr
    rows = rows_by_address(tmp_path / "spool.db", "welcome")
    assert sorted(m.rcpt_tos[0] for m in server.delivered) == sorted(rows)
    for m in server.delivered:
        local, _, domain = m.mail_from.rpartition("@")
        assert domain == "news.example.com" and local.startswith("bounces+")
        token = local.removeprefix("bounces+")
        assert open_token(token, ["a-secret-of-16-bytes-or-more"]) == rows[m.rcpt_tos[0]]


def test_the_campaign_file_verp_table_and_bad_values(tmp_path: Path) -> None:
    with ScriptedServer() as server:
        done = send(tmp_path, "", server)
        assert done.returncode == 0, done.stderr
        assert {m.mail_from for m in server.delivered} == {"bounces@news.example.com"}
        for verp, says in [
            ('verp = "yes"', "`verp` must be true, false or a table"),
            ("[verp]\nkey = 1", "[verp] unknown key `key`"),
            ('[verp]\nsecret = "short"', "verp.secret: a signing secret needs at least 16"),
        ]:
            failed = send(tmp_path, verp, server)
            assert failed.returncode == 2, (verp, failed.stderr)
            assert says in failed.stderr, (verp, failed.stderr)
    own = "[verp]\nsecret = 'the-verp-secret-of-this-file'"
    (tmp_path / "own").mkdir()
    with ScriptedServer() as server:
        done = send(tmp_path / "own", own, server)
    assert done.returncode == 0, done.stderr
    token = verp_token(server.delivered[0].mail_from)
    assert token is not None and open_token(token, ["the-verp-secret-of-this-file"]) is not None


def test_a_verp_sender_with_a_plus_is_refused_by_the_cli(tmp_path: Path) -> None:
    with ScriptedServer() as server:
        failed = send(tmp_path, "verp = true", server, sender="bounces+a@news.example.com")
    assert failed.returncode == 2
    assert "sender: bounces+a@news.example.com already has a '+'" in failed.stderr
    assert server.delivered == []
