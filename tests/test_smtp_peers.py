"""The SMTP test peers (tests/smtp_peers.py) behave as documented, driven by smtplib and,
where smtplib cannot show it (pipelining, broken replies), by a raw socket."""

from __future__ import annotations

import smtplib
import socket
import ssl
import time
from collections.abc import Callable

import pytest
from smtp_peers import (
    GARBAGE,
    OUT_OF_RANGE,
    OVERLONG,
    Fault,
    RawServer,
    ScriptedServer,
    SmtpSink,
    TlsFiles,
    drop,
    shutting_down,
    slow,
)

MESSAGE = b"From: a@x.test\r\nTo: b@x.test\r\nSubject: hi\r\n\r\nHello.\r\n.dot-stuffed line\r\n"

Scripted = Callable[..., ScriptedServer]
Raw = Callable[..., RawServer]
Sink = Callable[..., SmtpSink]


class Wire:
    """A raw SMTP client socket: sends exact bytes, reads exact replies."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=5)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        return self.file.readline(200_000)

    def reply(self) -> list[bytes]:
        """One reply, every line of a multi-line one, CRLF cut."""
        lines = [self.line().rstrip(b"\r\n")]
        while lines[-1][3:4] == b"-":
            lines.append(self.line().rstrip(b"\r\n"))
        return lines

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def send(address: tuple[str, int], rcpts: list[str], n: int = 1, **kw: object) -> smtplib.SMTP:
    """Delivers MESSAGE n times over one smtplib connection, then QUIT."""
    with smtplib.SMTP(*address, local_hostname="client.test", timeout=5) as client:
        for _ in range(n):
            client.sendmail("a@x.test", rcpts, MESSAGE, **kw)  # type: ignore[arg-type]
    return client


# --- ScriptedServer ----------------------------------------------------------------------


def test_scripted_records_connections_commands_and_messages(scripted_server: Scripted) -> None:
    server = scripted_server(host="127.0.0.2")
    assert server.address[0] == "127.0.0.2" and server.port > 0
    send(server.address, ["b@x.test", "c@x.test"], n=2)
    server.wait_closed()
    (connection,) = server.connections
    assert connection.commands[0] == "EHLO client.test"
    mail = f"MAIL FROM:<a@x.test> size={len(MESSAGE)}"
    assert connection.commands[1:4] == [mail, "RCPT TO:<b@x.test>", "RCPT TO:<c@x.test>"]
    assert connection.commands[-1] == "QUIT" and not connection.tls
    assert len(server.delivered) == 2
    first = server.delivered[0]
    assert (first.mail_from, first.connection) == ("a@x.test", 0)
    assert first.rcpt_tos == ("b@x.test", "c@x.test")
    assert first.content == MESSAGE  # dot-unstuffed again


@pytest.mark.parametrize("banner", ["421 4.3.2 busy", "554 5.3.2 no service"])
def test_scripted_banner_refusal(scripted_server: Scripted, banner: str) -> None:
    server = scripted_server(banner=banner)
    with pytest.raises(smtplib.SMTPConnectError):
        smtplib.SMTP(*server.address, timeout=5)
    wire = Wire(server.address)
    assert wire.reply() == [banner.encode()]
    if banner.startswith("421"):
        assert wire.line() == b""  # closed after the 421
    else:  # RFC 5321 §3.1: 503 to anything until QUIT
        wire.send(b"EHLO client.test\r\n")
        assert wire.reply()[0].startswith(b"503 ")
        wire.send(b"QUIT\r\n")
        assert wire.reply()[0].startswith(b"221 ")
    wire.close()


def test_scripted_ehlo_refused_then_helo(scripted_server: Scripted) -> None:
    server = scripted_server(replies={"EHLO": "502 5.5.2 EHLO not here"})
    send(server.address, ["b@x.test"])
    commands = server.connections[0].commands
    assert commands[:2] == ["EHLO client.test", "HELO client.test"]
    assert len(server.delivered) == 1


def test_scripted_per_recipient_and_per_occurrence_replies(scripted_server: Scripted) -> None:
    server = scripted_server(
        rcpt_replies={"nobody@x.test": "550 5.1.1 no such user", "full@x.test": "452 4.2.2 full"},
        replies={"MAIL": ["451 4.3.0 try again", None], "DOT": [None, "554 5.7.1 spam"]},
    )
    with smtplib.SMTP(*server.address, timeout=5) as client:
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail("a@x.test", ["b@x.test"], MESSAGE)
        assert refused.value.smtp_code == 451
        client.rset()
        rcpts = ["nobody@x.test", "b@x.test", "full@x.test"]
        rejected = client.sendmail("a@x.test", rcpts, MESSAGE)
        assert rejected == {
            "nobody@x.test": (550, b"5.1.1 no such user"),
            "full@x.test": (452, b"4.2.2 full"),
        }
        with pytest.raises(smtplib.SMTPDataError) as data_error:
            client.sendmail("a@x.test", ["b@x.test"], MESSAGE)
        assert data_error.value.smtp_code == 554
    assert [m.rcpt_tos for m in server.messages] == [("b@x.test",), ("b@x.test",)]
    assert [m.accepted for m in server.messages] == [True, False]


def test_scripted_data_reply_and_size_limit(scripted_server: Scripted) -> None:
    server = scripted_server(replies={"DATA": "451 4.3.0 no DATA today"}, size_limit=50)
    with smtplib.SMTP(*server.address, timeout=5) as client:
        client.ehlo()
        assert client.esmtp_features["size"] == "50"
        with pytest.raises(smtplib.SMTPSenderRefused) as too_big:  # MAIL … size=72
            client.sendmail("a@x.test", ["b@x.test"], MESSAGE)
        assert too_big.value.smtp_code == 552
        with pytest.raises(smtplib.SMTPDataError) as no_data:
            client.sendmail("a@x.test", ["b@x.test"], b"small\r\n")
        assert no_data.value.smtp_code == 451
    assert server.messages == []


@pytest.mark.parametrize("smtputf8", [True, False])
def test_scripted_smtputf8(scripted_server: Scripted, smtputf8: bool) -> None:
    server = scripted_server(smtputf8=smtputf8)
    with smtplib.SMTP(*server.address, timeout=5) as client:
        client.ehlo()
        assert client.has_extn("smtputf8") is smtputf8
        assert "pipelining" not in client.esmtp_features


def test_scripted_starttls_offered(scripted_server: Scripted, mx_tls: TlsFiles) -> None:
    server = scripted_server(tls=mx_tls.server_context)
    with smtplib.SMTP(*server.address, local_hostname="client.test", timeout=5) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        client.sendmail("a@x.test", ["b@x.test"], MESSAGE)  # plaintext first
        client.starttls(context=mx_tls.client_context())
        client.sendmail("a@x.test", ["b@x.test"], MESSAGE)
    assert [m.tls for m in server.delivered] == [False, True]
    assert server.connections[0].tls


def test_scripted_starttls_required_and_wrong_name(
    scripted_server: Scripted, mx_tls: TlsFiles, wrong_name_tls: TlsFiles
) -> None:
    server = scripted_server(tls=mx_tls.server_context, require_tls=True)
    with smtplib.SMTP(*server.address, timeout=5) as client:
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail("a@x.test", ["b@x.test"], MESSAGE)
        assert refused.value.smtp_code == 530
    impostor = scripted_server(tls=wrong_name_tls.server_context)
    client = smtplib.SMTP(*impostor.address, timeout=5)
    client.ehlo()
    # smtplib checks the name it connected to, 127.0.0.1: valid for mx_tls, not for this one.
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        client.starttls(context=wrong_name_tls.client_context())
    client.close()
    assert impostor.messages == [] and not impostor.connections[0].tls


# --- RawServer ---------------------------------------------------------------------------


@pytest.mark.parametrize("pipelining", [True, False])
def test_raw_delivers_for_a_correct_client(raw_server: Raw, pipelining: bool) -> None:
    capabilities = ["SIZE 1000", "8BITMIME", *(["PIPELINING"] if pipelining else [])]
    server = raw_server(capabilities=capabilities)
    client = send(server.address, ["b@x.test", "c@x.test"], n=2)
    advertised = {"size", "8bitmime", "pipelining"} if pipelining else {"size", "8bitmime"}
    assert client.esmtp_features.keys() == advertised
    server.wait_closed()
    assert [(m.rcpt_tos, m.content, m.reply) for m in server.messages] == [
        (("b@x.test", "c@x.test"), MESSAGE, "250 Ok: queued")  # no ENHANCEDSTATUSCODES
    ] * 2
    assert server.pipelined == []


def test_raw_detects_pipelining(raw_server: Raw) -> None:
    plain = raw_server(capabilities=["8BITMIME"])
    pipelining = raw_server()
    for server in (plain, pipelining):
        wire = Wire(server.address)
        wire.reply()
        wire.send(b"EHLO client.test\r\n")
        wire.reply()
        wire.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n")  # one write
        assert [wire.reply()[0][:3] for _ in range(3)] == [b"250", b"250", b"354"]
        wire.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")  # content after 354 is not pipelining
        assert wire.reply()[0].startswith(b"250")
        wire.send(b"QUIT\r\n")
        wire.reply()
        wire.close()
    expected = [("MAIL", "MAIL FROM:<a@x.test>"), ("RCPT", "RCPT TO:<b@x.test>")]
    assert [(p.stage, p.command) for p in plain.pipelining_violations] == expected
    assert [(p.stage, p.command) for p in pipelining.pipelined] == expected
    assert pipelining.pipelining_violations == []


def test_raw_flags_pipelining_after_ehlo_even_when_advertised(raw_server: Raw) -> None:
    server = raw_server()
    wire = Wire(server.address)
    wire.reply()
    wire.send(b"EHLO client.test\r\nMAIL FROM:<a@x.test>\r\n")  # EHLO ends a group
    wire.reply()
    wire.reply()
    wire.close()
    assert [(p.stage, p.allowed) for p in server.pipelined] == [("EHLO", False)]


@pytest.mark.parametrize("reply", [GARBAGE, OVERLONG, OUT_OF_RANGE.encode() + b"\r\n"])
def test_raw_broken_replies(raw_server: Raw, reply: bytes) -> None:
    server = raw_server(faults=[Fault("MAIL", reply=reply)])
    wire = Wire(server.address)
    wire.reply()
    wire.send(b"EHLO client.test\r\n")
    wire.reply()
    wire.send(b"MAIL FROM:<a@x.test>\r\n")
    assert wire.line() == reply
    wire.close()


def test_raw_drop_after_dot(raw_server: Raw) -> None:
    server = raw_server(faults=[drop("DOT")])
    with pytest.raises(smtplib.SMTPServerDisconnected):
        send(server.address, ["b@x.test"])
    (message,) = server.messages
    assert message.content == MESSAGE and message.reply == "" and not message.accepted


def test_raw_421_and_faults_per_connection_and_match(raw_server: Raw) -> None:
    server = raw_server(
        faults=[
            shutting_down("RCPT", match="<down@x.test>"),
            Fault("BANNER", reply="554 5.3.2 not now", connection=0),
        ]
    )
    with pytest.raises(smtplib.SMTPConnectError):
        smtplib.SMTP(*server.address, timeout=5)
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send(server.address, ["down@x.test"])
    server.wait_closed()
    assert server.connections[1].commands[-1] == "RCPT TO:<down@x.test>"  # then closed
    send(server.address, ["b@x.test"])
    assert len(server.delivered) == 1


def test_raw_slow_peer_and_prompt_stop(raw_server: Raw) -> None:
    server = raw_server(faults=[slow("MAIL", 0.3)])
    started = time.monotonic()
    send(server.address, ["b@x.test"])
    assert time.monotonic() - started >= 0.3
    stuck = RawServer(faults=[slow("BANNER", 60)]).start()
    wire = Wire(stuck.address)
    started = time.monotonic()
    stuck.stop()  # the delay does not hold stop() up
    assert time.monotonic() - started < 2
    assert wire.line() == b""
    wire.close()


# --- SmtpSink ----------------------------------------------------------------------------


def test_sink_counts_and_dumps(smtp_sink: Sink) -> None:
    sink = smtp_sink(dump=True)
    assert sink.counters() == (0, 0, 0)  # waiting for the port did not connect
    client = send(sink.address, ["b@x.test", "c@x.test"], n=3)
    assert {"pipelining", "enhancedstatuscodes"} <= client.esmtp_features.keys()
    counters = sink.wait_for(messages=3, sessions=1)
    assert (counters.sessions, counters.quits, counters.messages) == (1, 1, 3)
    dumped = sink.dumped()
    assert len(dumped) == 3
    assert dumped[0].mail_args.startswith("<a@x.test>")
    assert dumped[0].rcpt_args == ("<b@x.test>", "<c@x.test>")
    assert dumped[0].content == MESSAGE


def test_sink_capability_flags(smtp_sink: Sink) -> None:
    sink = smtp_sink(pipelining=False, enhanced_status_codes=False)
    with smtplib.SMTP(*sink.address, timeout=5) as client:
        client.ehlo()
        assert not client.has_extn("pipelining") and not client.has_extn("enhancedstatuscodes")


def test_sink_error_injection(smtp_sink: Sink) -> None:
    hard = smtp_sink(hard_reject=["RCPT"])
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        send(hard.address, ["b@x.test"])
    assert refused.value.recipients["b@x.test"][0] == 500
    soft = smtp_sink(soft_reject=["MAIL"])
    with pytest.raises(smtplib.SMTPSenderRefused) as deferred:
        send(soft.address, ["b@x.test"])
    assert deferred.value.smtp_code == 450
    gone = smtp_sink(disconnect=["DATA"])
    with pytest.raises(smtplib.SMTPServerDisconnected):
        send(gone.address, ["b@x.test"])
    assert gone.wait_for(sessions=1).messages == 0
