"""The SMTP transport against real peers on loopback: delivery, per-recipient replies,
EHLO/HELO, failover, broken and slow servers, SIZE, SMTPUTF8, PIPELINING and RSET."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable

import ferrymail
import pytest
from smtp_peers import (
    GARBAGE,
    OUT_OF_RANGE,
    OVERLONG,
    Fault,
    RawServer,
    ScriptedServer,
    SmtpSink,
    drop,
    shutting_down,
    slow,
)
from transport_support import SENDER, campaign, deliver, recipients, route, statuses

Scripted = Callable[..., ScriptedServer]
Raw = Callable[..., RawServer]
Sink = Callable[..., SmtpSink]


def _without_date(data: bytes) -> bytes:
    return re.sub(rb"^Date: [^\r]*\r\n", b"", data, flags=re.MULTILINE)


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_delivers_each_rendered_message_byte_for_byte(scripted_server: Scripted) -> None:
    server = scripted_server()
    batch = recipients(5)
    outcomes = deliver(route(server), batch)

    assert statuses(outcomes) == ["delivered"] * 5
    rendered = ferrymail.render(campaign(), batch)
    got = {m.rcpt_tos: m for m in server.messages}
    for r, o, message in zip(batch, outcomes, rendered, strict=True):
        assert isinstance(message, ferrymail.RenderedMessage)
        received = got[(r.address,)]
        assert received.mail_from == SENDER
        # Dot-stuffed on the wire, unstuffed by the server: the same bytes as rendered.
        assert _without_date(received.content) == _without_date(message.data)
        assert (o.code, o.stage, o.kind, o.mx) == (250, "dot", "reply", "mx.test")
        assert o.address == "127.0.0.1" and o.tls is None and o.elapsed_ms > 0
        assert o.message_id == message.message_id


def test_each_recipient_gets_its_own_rcpt_reply(scripted_server: Scripted) -> None:
    server = scripted_server(
        rcpt_replies={
            "user1@dest.test": "550 5.1.1 <user1@dest.test>: Recipient address rejected",
            "user3@dest.test": "452 4.2.2 Mailbox full",
        }
    )
    outcomes = deliver(route(server), recipients(5))

    assert statuses(outcomes) == ["delivered", "permanent", "delivered", "transient", "delivered"]
    bad, full = outcomes[1], outcomes[3]
    assert (bad.code, bad.enhanced, bad.stage, bad.kind) == (550, "5.1.1", "rcpt", "reply")
    assert "Recipient address rejected" in bad.text
    assert (full.code, full.enhanced, full.stage, full.kind) == (452, "4.2.2", "rcpt", "reply")
    assert sorted(m.rcpt_tos[0] for m in server.delivered) == [
        "user0@dest.test",
        "user2@dest.test",
        "user4@dest.test",
    ]


def test_a_refused_recipient_is_followed_by_rset_and_only_then(raw_server: Raw) -> None:
    server = raw_server(faults=[Fault("RCPT", reply="550 5.1.1 no such user", match="user1@")])
    outcomes = deliver(route(server), recipients(4), max_connections_per_host=1)

    assert statuses(outcomes) == ["delivered", "permanent", "delivered", "delivered"]
    server.wait_closed()
    (connection,) = server.connections
    verbs = [c.split()[0] for c in connection.commands]
    # MAIL RCPT DATA per transaction; RSET once, before the transaction after the failure.
    assert verbs[1:] == [
        *["MAIL", "RCPT", "DATA"],
        *["MAIL", "RCPT", "DATA"],
        *["RSET", "MAIL", "RCPT", "DATA"],
        *["MAIL", "RCPT", "DATA"],
        "QUIT",
    ]


def test_data_accepted_after_every_rcpt_failed_gets_a_lone_dot(raw_server: Raw) -> None:
    # RFC 2920 §3.1: a pipelining client that sees 354 though no recipient was accepted
    # must end the (empty) message with ".", never send the content.
    server = raw_server(
        faults=[
            Fault("RCPT", reply="550 5.1.1 no such user"),
            Fault("DATA", reply="354 go on then"),
        ]
    )
    (outcome,) = deliver(route(server), recipients(1))

    assert (outcome.status, outcome.code, outcome.stage) == ("permanent", 550, "rcpt")
    server.wait_closed()
    assert [m.content for m in server.messages] == [b""]


def test_a_lost_connection_after_the_lone_dot_keeps_the_rcpt_refusal(raw_server: Raw) -> None:
    # Nothing was sent when every RCPT failed: the connection dying after the lone "."
    # changes nothing about the recipient (it is no "may have been delivered" case).
    server = raw_server(
        faults=[
            Fault("RCPT", reply="550 5.1.1 no such user"),
            Fault("DATA", reply="354 go on then"),
            drop("DOT"),
        ]
    )
    (outcome,) = deliver(route(server), recipients(1))
    assert (outcome.status, outcome.code, outcome.stage) == ("permanent", 550, "rcpt")
    assert outcome.kind == "reply" and "may have been delivered" not in outcome.text


@pytest.mark.parametrize(
    "capabilities",
    [
        ("PIPELINING", "SMTPUTF8", "8BITMIME", "ENHANCEDSTATUSCODES"),
        ("SMTPUTF8", "8BITMIME", "ENHANCEDSTATUSCODES"),
    ],
    ids=["pipelining", "lockstep"],
)
def test_a_control_character_in_an_address_never_reaches_the_wire(
    raw_server: Raw, capabilities: tuple[str, ...]
) -> None:
    # The renderer accepts any non-ASCII local part (RFC 6531), NEL (U+0085, a C1
    # control) included; the command writer refuses it, for that recipient alone.
    server = raw_server(capabilities=capabilities)
    batch = [*recipients(1), ferrymail.Recipient("ann\x85lee@dest.test", {"name": "x"})]
    batch += recipients(2, "else.test")
    outcomes = deliver(route(server), batch, max_connections_per_host=1)

    assert statuses(outcomes) == ["delivered", "permanent", "delivered", "delivered"]
    bad = outcomes[1]
    assert (bad.kind, bad.stage, bad.code, bad.enhanced) == ("local", "mail", 553, "5.1.3")
    assert "recipient address" in bad.text and "control character" in bad.text
    assert "ann\\u{85}lee" in bad.text and bad.message_id is not None
    server.wait_closed()
    commands = [c for conn in server.connections for c in conn.commands]
    assert [c for c in commands if c.startswith("RCPT")] == [
        "RCPT TO:<user0@dest.test>",
        "RCPT TO:<user0@else.test>",
        "RCPT TO:<user1@else.test>",
    ]
    assert not any("ann" in c for c in commands)
    assert len(server.connections) == 1


def test_mail_from_refused_fails_the_message_permanently(scripted_server: Scripted) -> None:
    server = scripted_server(replies={"MAIL": "553 5.7.1 Sender address rejected"})
    (outcome,) = deliver(route(server), recipients(1))
    assert (outcome.status, outcome.code, outcome.enhanced) == ("permanent", 553, "5.7.1")
    assert outcome.stage == "mail" and server.messages == []


def test_data_refused_and_dot_refused(scripted_server: Scripted) -> None:
    server = scripted_server(
        replies={"DATA": ["451 4.3.0 try later"], "DOT": [None, "554 5.7.1 spam"]}
    )
    outcomes = deliver(route(server), recipients(3), max_connections_per_host=1)
    assert [(o.status, o.stage, o.code) for o in outcomes] == [
        ("transient", "data", 451),
        ("delivered", "dot", 250),
        ("permanent", "dot", 554),
    ]


def test_ehlo_refused_falls_back_to_helo(scripted_server: Scripted) -> None:
    server = scripted_server(replies={"EHLO": "502 5.5.2 Error: command not recognized"})
    outcomes = deliver(route(server), recipients(2))
    assert statuses(outcomes) == ["delivered", "delivered"]
    server.wait_closed()
    assert [c.commands[0].split()[0] for c in server.connections] == ["EHLO"] * len(
        server.connections
    )
    assert all(c.commands[1] == "HELO client.test" for c in server.connections)


def test_ehlo_and_helo_refused_is_transient(scripted_server: Scripted) -> None:
    server = scripted_server(replies={"EHLO": "554 5.7.1 go away", "HELO": "554 5.7.1 go away"})
    (outcome,) = deliver(route(server), recipients(1))
    # The server's refusal of the session decides: a reply, though a transient outcome.
    assert (outcome.status, outcome.stage, outcome.code) == ("transient", "ehlo", 554)
    assert outcome.kind == ferrymail.OutcomeKind.REPLY


def test_a_421_banner_fails_over_to_the_next_host(scripted_server: Scripted) -> None:
    busy = scripted_server(host="127.0.0.2", banner="421 4.3.2 mx1 busy, try another")
    ok = scripted_server(host="127.0.0.3")
    outcomes = deliver(route(busy, ok), recipients(6))

    assert statuses(outcomes) == ["delivered"] * 6
    assert {o.mx for o in outcomes} == {"mx.test-1"}
    assert {o.address for o in outcomes} == {"127.0.0.3"}
    assert busy.messages == [] and len(ok.delivered) == 6
    assert {o.kind for o in outcomes} == {"reply"}
    # The busy host was tried once for the batch, not once per message or worker.
    assert len(busy.connections) == 1


def test_a_421_banner_of_the_only_host_defers_with_that_reply(scripted_server: Scripted) -> None:
    busy = scripted_server(banner="421 4.3.2 busy, try later")
    (outcome,) = deliver(route(busy), recipients(1))
    assert (outcome.status, outcome.stage, outcome.code) == ("transient", "banner", 421)
    assert (outcome.kind, outcome.enhanced) == ("reply", "4.3.2")


def test_a_5xx_banner_and_a_refused_connection_fail_over(scripted_server: Scripted) -> None:
    refusing = scripted_server(host="127.0.0.2", banner="554 5.3.2 no service here")
    ok = scripted_server(host="127.0.0.4")
    dead = ferrymail.MxHost("dead.test", ["127.0.0.1"], _closed_port())
    hosts = [dead, *route(refusing, ok).hosts]
    outcomes = deliver(ferrymail.Route(hosts), recipients(3))
    assert statuses(outcomes) == ["delivered"] * 3
    assert {o.address for o in outcomes} == {"127.0.0.4"}


def test_each_address_of_a_host_is_tried_in_order(scripted_server: Scripted) -> None:
    ok = scripted_server(host="127.0.0.5")
    host = ferrymail.MxHost("mx.test", ["127.0.0.6", "127.0.0.5"], ok.port)
    outcomes = deliver(ferrymail.Route([host]), recipients(2))
    assert statuses(outcomes) == ["delivered"] * 2
    assert {o.address for o in outcomes} == {"127.0.0.5"}


def test_every_host_failing_defers_each_recipient_with_the_reason() -> None:
    hosts = [
        ferrymail.MxHost("a.test", ["127.0.0.1"], _closed_port()),
        ferrymail.MxHost("b.test", ["127.0.0.1"], _closed_port()),
    ]
    outcomes = deliver(ferrymail.Route(hosts), recipients(20))
    assert statuses(outcomes) == ["transient"] * 20
    assert {(o.stage, o.code, o.mx, o.kind) for o in outcomes} == {
        ("connect", None, "b.test", "refused")
    }
    assert all("Connection refused" in o.text for o in outcomes)
    assert len({o.message_id for o in outcomes}) == 20


def test_a_route_without_hosts_defers() -> None:
    outcomes = deliver(ferrymail.Route([]), recipients(2))
    assert statuses(outcomes) == ["transient"] * 2
    assert outcomes[0].stage == "connect" and "no address" in outcomes[0].text
    assert {o.kind for o in outcomes} == {"unreachable"}


def test_connection_lost_after_the_dot_is_transient_and_says_so(raw_server: Raw) -> None:
    server = raw_server(faults=[drop("DOT")])
    (outcome,) = deliver(route(server), recipients(1))
    assert (outcome.status, outcome.stage, outcome.code) == ("transient", "dot", None)
    assert outcome.kind == "lost" and "may have been delivered" in outcome.text
    # The server did get the whole message: this is the duplicate-on-retry case.
    assert len(server.messages) == 1


def test_421_mid_session_ends_the_connection(raw_server: Raw) -> None:
    server = raw_server(faults=[shutting_down("MAIL", connection=0)])
    outcomes = deliver(route(server), recipients(3), max_connections_per_host=1)
    assert [(o.status, o.stage, o.code, o.kind) for o in outcomes] == [
        ("transient", "mail", 421, "reply"),
        ("delivered", "dot", 250, "reply"),
        ("delivered", "dot", 250, "reply"),
    ]
    server.wait_closed()
    assert len(server.connections) == 2


def test_a_slow_server_hits_the_configured_timeout(raw_server: Raw) -> None:
    server = raw_server(faults=[slow("MAIL", 3.0)])
    (outcome,) = deliver(route(server), recipients(1), mail_timeout=0.3)
    assert (outcome.status, outcome.stage, outcome.code) == ("transient", "mail", None)
    assert outcome.kind == "timeout" and "timed out after 0.3 s" in outcome.text


def test_a_slow_banner_hits_the_greeting_timeout_and_fails_over(raw_server: Raw) -> None:
    slow_host = raw_server(host="127.0.0.2", faults=[slow("BANNER", 3.0)])
    ok = raw_server(host="127.0.0.3")
    outcomes = deliver(route(slow_host, ok), recipients(2), greeting_timeout=0.3)
    assert statuses(outcomes) == ["delivered"] * 2
    # Delivered by the second host, after the slow one timed out once for the batch.
    assert {(o.mx, o.address) for o in outcomes} == {("mx.test-1", "127.0.0.3")}
    assert len(ok.delivered) == 2
    assert slow_host.messages == [] and len(slow_host.connections) == 1
    slow_host.wait_closed()
    assert slow_host.connections[0].commands == []


def test_a_banner_that_never_comes_alone_is_a_timeout_at_the_banner(raw_server: Raw) -> None:
    server = raw_server(faults=[slow("BANNER", 3.0)])
    (outcome,) = deliver(route(server), recipients(1), greeting_timeout=0.3)
    assert (outcome.status, outcome.stage, outcome.code) == ("transient", "banner", None)
    assert (outcome.kind, outcome.mx, outcome.address) == ("timeout", "mx.test", "127.0.0.1")


def test_a_connection_lost_before_the_dot_cannot_have_delivered(raw_server: Raw) -> None:
    server = raw_server(faults=[drop("RCPT")])
    (outcome,) = deliver(route(server), recipients(1))
    assert (outcome.status, outcome.stage, outcome.code) == ("transient", "rcpt", None)
    assert outcome.kind == "lost" and "may have been delivered" not in outcome.text


def test_a_source_address_that_cannot_be_used_is_a_local_outcome(scripted_server: Scripted) -> None:
    # 192.0.2.1 (TEST-NET-1) is not an address of this host: binding to it fails before
    # any packet is sent. This host's setup is at fault, not the MX: kind "local".
    server = scripted_server()
    (outcome,) = deliver(route(server), recipients(1), source_address="192.0.2.1")
    assert (outcome.status, outcome.stage, outcome.code) == ("transient", "connect", None)
    assert outcome.kind == "local" and server.connections == []
    assert "192.0.2.1" in outcome.text


@pytest.mark.parametrize(
    ("reply", "expect"),
    [
        (GARBAGE, "malformed reply line"),
        (OVERLONG, "longer than"),
        (OUT_OF_RANGE, "malformed reply line"),
        ("250-first line\r\n251 second line with another code", "multiline reply began"),
        ("".join(f"250-line {i}\r\n" for i in range(200)) + "250 end", "longer than 100 lines"),
    ],
    ids=["garbage", "overlong-line", "code-999", "code-changes", "too-many-lines"],
)
def test_garbage_replies_are_a_transient_protocol_error(
    raw_server: Raw, reply: str | bytes, expect: str
) -> None:
    server = raw_server(faults=[Fault("RCPT", reply=reply)])
    outcomes = deliver(route(server), recipients(2), max_connections_per_host=1)
    for outcome in outcomes:
        assert (outcome.status, outcome.stage, outcome.code) == ("transient", "rcpt", None)
        assert outcome.kind == "protocol"
        assert "protocol error" in outcome.text and expect in outcome.text


def test_a_message_over_the_size_limit_is_not_sent(raw_server: Raw) -> None:
    server = raw_server(capabilities=["PIPELINING", "SIZE 300", "ENHANCEDSTATUSCODES"])
    small = campaign(text="hi")
    big = campaign(text="x" * 400)
    (too_big,) = deliver(route(server), recipients(1), the_campaign=big)
    (fits,) = deliver(route(server), recipients(1), the_campaign=small)

    assert (too_big.status, too_big.code, too_big.enhanced) == ("permanent", 552, "5.3.4")
    assert too_big.kind == "local" and fits.kind == "reply"
    assert too_big.stage == "mail" and "not sent" in too_big.text and "300" in too_big.text
    assert fits.status == "delivered"
    server.wait_closed()
    mails = [c for conn in server.connections for c in conn.commands if c.startswith("MAIL")]
    assert len(mails) == 1 and re.search(r" SIZE=\d+$", mails[0])


def test_smtputf8_is_declared_when_needed_and_refused_without_it(
    scripted_server: Scripted, raw_server: Raw
) -> None:
    with_it = raw_server(host="127.0.0.2")
    without = raw_server(host="127.0.0.3", capabilities=["PIPELINING", "8BITMIME"])
    batch = [ferrymail.Recipient("jürgen@dest.test", {"name": "Jürgen"})]
    (ok,) = deliver(route(with_it), batch)
    (refused,) = deliver(route(without), batch)

    assert ok.status == "delivered"
    with_it.wait_closed()
    mail = next(c for c in with_it.connections[0].commands if c.startswith("MAIL"))
    assert mail.endswith(" SMTPUTF8")
    assert (refused.status, refused.code, refused.enhanced) == ("permanent", 553, "5.6.7")
    assert (refused.stage, refused.kind) == ("mail", "local")
    assert "SMTPUTF8" in refused.text and without.messages == []


def test_pipelining_is_used_when_offered_and_never_otherwise(raw_server: Raw) -> None:
    pipelining = raw_server(host="127.0.0.2")
    lockstep = raw_server(host="127.0.0.3", capabilities=["SIZE 10240000", "8BITMIME"])
    assert statuses(deliver(route(pipelining), recipients(5))) == ["delivered"] * 5
    assert statuses(deliver(route(lockstep), recipients(5))) == ["delivered"] * 5

    pipelining.wait_closed()
    lockstep.wait_closed()
    assert pipelining.pipelined and pipelining.pipelining_violations == []
    assert lockstep.pipelined == []
    # The next message's envelope rides behind the final dot (RFC 2920 §3.1).
    assert any(p.stage == "DOT" and p.allowed for p in pipelining.pipelined)


def test_a_message_chained_behind_a_421_goes_on_a_new_connection(raw_server: Raw) -> None:
    server = raw_server(faults=[shutting_down("DOT", connection=0)])
    outcomes = deliver(route(server), recipients(3), max_connections_per_host=1)
    assert [(o.status, o.stage, o.code, o.kind) for o in outcomes] == [
        ("transient", "dot", 421, "reply"),
        ("delivered", "dot", 250, "reply"),
        ("delivered", "dot", 250, "reply"),
    ]
    server.wait_closed()
    assert len(server.connections) == 2
    assert sorted(m.rcpt_tos[0] for m in server.delivered) == ["user1@dest.test", "user2@dest.test"]


def test_smtp_sink_with_and_without_pipelining(smtp_sink: Sink) -> None:
    for sink in (smtp_sink(), smtp_sink(pipelining=False)):
        outcomes = deliver(route(sink), recipients(300))
        assert statuses(outcomes) == ["delivered"] * 300
        assert sink.counters().messages == 300


def test_smtp_sink_error_injection_per_command(smtp_sink: Sink) -> None:
    hard = smtp_sink(hard_reject=["RCPT"])
    soft = smtp_sink(soft_reject=["MAIL"])
    (bounced,) = deliver(route(hard), recipients(1))
    (deferred,) = deliver(route(soft), recipients(1))
    assert (bounced.status, bounced.stage, bounced.code, bounced.enhanced) == (
        "permanent",
        "rcpt",
        500,
        "5.3.0",
    )
    assert (deferred.status, deferred.stage, deferred.code) == ("transient", "mail", 450)


def test_a_render_error_fails_that_recipient_only(scripted_server: Scripted) -> None:
    server = scripted_server()
    batch = [*recipients(2), ferrymail.Recipient("not an address"), *recipients(1, "other.test")]
    outcomes = deliver(route(server), batch)
    assert statuses(outcomes) == ["delivered", "delivered", "permanent", "delivered"]
    assert (outcomes[2].stage, outcomes[2].code, outcomes[2].kind) == ("render", None, "render")
    assert "not an address" in outcomes[2].text


def test_a_recipient_the_wire_cannot_carry_fails_alone(scripted_server: Scripted) -> None:
    server = scripted_server()
    batch = [*recipients(1), ferrymail.Recipient("x@dest.test", {"o": object()}), *recipients(1)]
    outcomes = deliver(route(server), batch)
    assert statuses(outcomes) == ["delivered", "permanent", "delivered"]
    assert (outcomes[1].stage, outcomes[1].kind) == ("render", "render")
    assert "cannot be encoded" in outcomes[1].text


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"tls": "sometimes"}, "tls"),
        ({"helo_name": ""}, "helo_name"),
        ({"source_address": "eth0"}, "source_address"),
        ({"mail_timeout": 0}, "mail_timeout"),
        ({"max_connections_per_host": 0}, "max_connections_per_host"),
        ({"tls": "required", "ca_file": "/nonexistent/ca.pem"}, "ca_file"),
    ],
)
def test_bad_options_are_a_config_error_naming_the_field(
    overrides: dict[str, object], named: str
) -> None:
    from transport_support import options

    with pytest.raises(ferrymail.ConfigError, match=named):
        ferrymail.Transport(options(**overrides))


def test_a_bad_route_address_is_a_config_error() -> None:
    bad = ferrymail.Route([ferrymail.MxHost("mx.test", ["mx.test"])])
    with pytest.raises(ferrymail.ConfigError, match=r"MX host mx.test: 'mx.test'|\"mx.test\""):
        deliver(bad, recipients(1))
