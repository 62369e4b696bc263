"""ferrymail.feedback.parse on inbound mail: RFC and receiver samples, bounces without a
report, auto-replies, mailto unsubscribes, hostile input, and genuine Postfix DSNs."""

from __future__ import annotations

import base64
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ferrymail.feedback import (
    MAX_BYTES,
    MAX_LINES,
    MAX_NESTING,
    MAX_RECIPIENTS,
    Feedback,
    parse,
)
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from postfix_peer import PostfixPeer, available
from smtp_peers import ScriptedServer

SAMPLES = Path(__file__).parent / "feedback_samples"
KINDS = {"bounce", "delay", "complaint", "auto-reply", "unsubscribe", "unknown"}


def sample(name: str) -> bytes:
    return (SAMPLES / f"{name}.eml").read_bytes()


def summary(feedback: Feedback) -> list[tuple[str | None, str, str | None, str | None]]:
    return [(r.address, r.action, r.status, r.category) for r in feedback.recipients]


# --- Every sample: its kind and the recipients it names ------------------------------

EXPECTED = {
    # RFC 3464 appendix: a failure after 5 days of 4xx is an expiry, not a bad mailbox.
    "rfc3464-simple": (
        "bounce",
        [("louisl@larry.slip.umd.edu", "failed", "4.0.0", "message-expired")],
    ),
    "rfc3464-multi-recipient": (
        "bounce",
        [
            ("arathib@vnet.ibm.com", "failed", "5.0.0", "other"),
            ("johnh@hpnjld.njd.hp.com", "delayed", "4.0.0", "other"),
            ("wsnell@sdcc13.ucsd.edu", "failed", "5.0.0", "bad-mailbox"),
        ],
    ),
    "rfc3464-delayed": ("delay", [("slow@example.org", "delayed", "4.7.1", "policy-related")]),
    "dsn-success-only": ("unknown", [("happy@example.org", "delivered", "2.0.0", None)]),
    "office365-ndr": (
        "bounce",
        [
            ("gone@contoso.com", "failed", "5.1.10", "bad-mailbox"),
            ("edge@contoso.com", "failed", "5.4.1", "bad-mailbox"),
        ],
    ),
    "gmail-dsn": ("bounce", [("nosuchuser@gmail.com", "failed", "5.1.1", "bad-mailbox")]),
    "qmail": (
        "bounce",
        [
            ("nobody@qmail.example", "failed", "5.1.1", "bad-mailbox"),
            ("full@qmail.example", "failed", "5.2.2", "quota"),
        ],
    ),
    "exim-old": ("bounce", [("ghost@exim.example", "failed", "5.1.1", "bad-mailbox")]),
    "exim-delay": ("delay", [("slowpoke@exim.example", "delayed", "4.4.1", "bad-mailbox")]),
    "postfix-no-report": (
        "bounce",
        [("moved@postfix.example", "failed", "5.2.1", "inactive-mailbox")],
    ),
    "sendmail-plain": ("bounce", [("left@sm.example", "failed", "5.1.1", "bad-mailbox")]),
    "isp-text-bounce": (
        "bounce",
        [("oldcustomer@isp.example", "failed", "5.2.1", "inactive-mailbox")],
    ),
    "rfc5965-abuse": ("complaint", []),
    "rfc5965-minimal-headers": ("complaint", []),
    "yahoo-cfl": ("complaint", []),
    "yahoo-cfl-headers-only": ("complaint", []),
    "microsoft-jmrp-arf": ("complaint", []),
    "microsoft-jmrp-rfc822": ("complaint", []),
    "arf-not-spam": ("unknown", []),
    "rfc3834-auto-replied": ("auto-reply", []),
    "outlook-out-of-office": ("auto-reply", []),
    "vacation-precedence": ("auto-reply", []),
    "mailto-unsubscribe": ("unsubscribe", []),
}


def test_every_sample_file_has_an_expectation() -> None:
    names = {p.stem for p in SAMPLES.glob("*.eml")}
    assert names - {n for n in names if n.startswith("hostile-")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_kind_and_recipients(name: str) -> None:
    kind, recipients = EXPECTED[name]
    feedback = parse(sample(name), envelope_to="bounces+T0K3N@bounces.example.com")
    assert feedback.kind == kind
    assert summary(feedback) == recipients
    assert feedback.verp_token == "T0K3N"
    if kind == "unknown":
        assert feedback.problem
    elif name != "hostile-wrong-charset":
        assert feedback.problem is None


# --- Delivery status notifications ---------------------------------------------------


def test_dsn_fields_per_message_and_per_recipient() -> None:
    feedback = parse(sample("rfc3464-multi-recipient"))
    assert feedback.reporting_mta == "cs.utk.edu"
    assert feedback.envelope_id == "ferrymail-42"
    first = feedback.recipients[0]
    assert first.original == "arathib@vnet.ibm.com"
    assert first.reply_code == 550
    # The folded Diagnostic-Code is one line, without its "smtp;" type.
    assert first.diagnostic == "550 'arathib@vnet.IBM.COM' is not a registered gateway user"
    assert first.remote_mta == "vnet.ibm.com"
    assert feedback.addresses == (
        "arathib@vnet.ibm.com",
        "johnh@hpnjld.njd.hp.com",
        "wsnell@sdcc13.ucsd.edu",
    )


def test_dsn_quotes_the_original_message_id_envelope_sender_and_links() -> None:
    feedback = parse(sample("office365-ndr"))
    original = feedback.original
    assert original is not None
    assert original.message_id == "shipped.7@example.com"
    assert original.envelope_sender == "bounces+ms-t0k3n@bounces.example.com"
    # Quoted-printable and HTML entities undone: the link as it was sent.
    assert original.links == ("https://t.example.com/c/CLICKTOKEN0?a=1&b=2",)
    assert original.list_unsubscribe == (
        "https://t.example.com/u/UNSUBTOKEN123",
        "mailto:unsubscribe@example.com?subject=unsubscribe-UNSUBTOKEN123",
    )


def test_dsn_with_headers_only_and_an_encoded_subject() -> None:
    feedback = parse(sample("gmail-dsn"))
    assert feedback.original is not None
    assert feedback.original.message_id == "welcome.9@example.com"
    assert feedback.original.subject == "Willkommen überall"
    assert feedback.recipients[0].reply_code == 550
    assert feedback.recipients[0].remote_mta is not None
    assert feedback.recipients[0].remote_mta.startswith("gmail-smtp-in.l.google.com")


def test_a_dsn_is_a_report_though_it_is_auto_submitted() -> None:
    raw = sample("rfc3464-delayed")
    assert b"Auto-Submitted: auto-replied" in raw
    feedback = parse(raw)
    assert feedback.kind == "delay"
    assert feedback.original is not None
    assert feedback.original.envelope_sender == "bounces+d3l4y-t0k3n@bounces.example.com"


def test_success_only_report_keeps_the_recipient_and_says_why_unknown() -> None:
    feedback = parse(sample("dsn-success-only"))
    assert feedback.kind == "unknown"
    assert feedback.problem is not None and "success only" in feedback.problem


@pytest.mark.parametrize(
    ("envelope_to", "token"),
    [
        ("bounces+T0K3N@bounces.example.com", "T0K3N"),
        ("<bounces+AbC-_9@bounces.example.com>", "AbC-_9"),
        ("bounces+a+b@bounces.example.com", "a+b"),
        ("bounces@bounces.example.com", None),
        ("bounces+@bounces.example.com", None),
        (None, None),
    ],
)
def test_verp_token_is_the_local_part_after_plus(envelope_to: str | None, token: str) -> None:
    assert parse(sample("gmail-dsn"), envelope_to=envelope_to).verp_token == token


# --- Complaints ------------------------------------------------------------------------


def test_rfc5965_report_fields() -> None:
    feedback = parse(sample("rfc5965-abuse"))
    complaint = feedback.complaint
    assert complaint is not None
    assert complaint.feedback_type == "abuse"
    assert complaint.user_agent == "SomeGenerator/1.0"
    assert complaint.version == "1"
    assert complaint.source_ip == "192.0.2.1"
    assert complaint.original_rcpt_to == ("user@example.com",)
    assert complaint.original_mail_from == "somespammer@example.net"
    assert complaint.reported_domains == ("example.net",)
    assert feedback.addresses == ("user@example.com",)
    assert feedback.original is not None
    # RFC 5965's example writes its Message-ID without angle brackets.
    assert feedback.original.message_id == "8787KJKJ3K4J3K4J3K4J3.mail@example.net"
    assert feedback.original.links == ("http://example.net/earn_money.html",)


def test_rfc5965_minimal_report_with_headers_only() -> None:
    feedback = parse(sample("rfc5965-minimal-headers"))
    assert feedback.complaint is not None
    assert feedback.complaint.feedback_type == "fraud"
    assert feedback.original is not None
    assert feedback.original.message_id == "8787KJKJ3K4J3K4J3K4J3.mail@example.net"


def test_yahoo_complaint_names_recipient_and_the_original_tokens() -> None:
    feedback = parse(sample("yahoo-cfl"), envelope_to="fbl@example.com")
    assert feedback.complaint is not None
    assert feedback.complaint.user_agent == "Yahoo!-Mail-Feedback/2.0"
    assert feedback.complaint.original_rcpt_to == ("reader@yahoo.com",)
    assert feedback.sender == "feedback@arf.mail.yahoo.com"
    original = feedback.original
    assert original is not None
    assert original.message_id == "picks.2026-47.reader@example.com"
    assert original.envelope_sender == "bounces+y4h00-t0k3n@bounces.example.com"
    assert original.links == (
        "https://t.example.com/c/Y4h00Cl1ckT0ken0",
        "https://t.example.com/c/Y4h00Cl1ckT0ken1",
        "https://t.example.com/o/Y4h00OpenT0ken",
    )
    assert original.list_unsubscribe == ("https://t.example.com/u/Y4h00UnsubT0ken",)


def test_yahoo_headers_only_complaint() -> None:
    feedback = parse(sample("yahoo-cfl-headers-only"))
    assert feedback.complaint is not None
    assert feedback.complaint.original_rcpt_to == ("reader@aol.com",)
    assert feedback.original is not None
    assert feedback.original.links == ()
    assert feedback.original.list_unsubscribe == ("https://t.example.com/u/Y4h00UnsubT0ken2",)


@pytest.mark.parametrize("name", ["microsoft-jmrp-arf", "microsoft-jmrp-rfc822"])
def test_microsoft_complaint_with_the_recipient_masked(name: str) -> None:
    feedback = parse(sample(name))
    assert feedback.kind == "complaint"
    assert feedback.complaint is not None
    assert feedback.complaint.feedback_type == "abuse"
    original = feedback.original
    assert original is not None
    # Microsoft removes the recipient: the original is matched by its id and links.
    assert original.to == "masked"
    assert original.message_id in ("order.55@example.com", "order.56@example.com")
    assert original.envelope_sender is not None
    assert original.envelope_sender.startswith("bounces+m5ft")
    assert len(original.links) == 1 and original.links[0].startswith("https://t.example.com/c/")


def test_not_spam_report_is_not_a_complaint() -> None:
    feedback = parse(sample("arf-not-spam"))
    assert feedback.kind == "unknown"
    assert feedback.complaint is not None and feedback.complaint.feedback_type == "not-spam"
    assert feedback.problem == "a feedback report of type not-spam, not a complaint"


# --- Bounces without a report ----------------------------------------------------------


def test_text_bounce_reads_only_above_the_quoted_copy() -> None:
    # qmail's copy quotes "somebody@else.example"; Exim's quotes the headers again.
    assert parse(sample("qmail")).addresses == ("nobody@qmail.example", "full@qmail.example")
    assert parse(sample("exim-old")).addresses == ("ghost@exim.example",)


def test_text_bounce_keeps_the_reason() -> None:
    [moved] = parse(sample("postfix-no-report")).recipients
    assert moved.reply_code == 550
    assert moved.diagnostic is not None and "Mailbox disabled" in moved.diagnostic


def test_an_auto_reply_that_quotes_bounce_words_is_still_an_auto_reply() -> None:
    raw = sample("vacation-precedence")
    assert b"Delivery to the following recipient failed" in raw
    feedback = parse(raw)
    assert feedback.kind == "auto-reply"
    assert feedback.recipients == ()


# --- Auto-replies and unsubscribes ---------------------------------------------------


@pytest.mark.parametrize(
    "name", ["rfc3834-auto-replied", "outlook-out-of-office", "vacation-precedence"]
)
def test_auto_replies_are_never_bounces(name: str) -> None:
    feedback = parse(sample(name), envelope_to="bounces+4ut0@bounces.example.com")
    assert feedback.kind == "auto-reply"
    assert feedback.recipients == ()
    assert feedback.verp_token == "4ut0"
    assert feedback.sender is not None


def test_mailto_unsubscribe_token() -> None:
    feedback = parse(sample("mailto-unsubscribe"), envelope_to="unsubscribe@example.com")
    assert feedback.kind == "unsubscribe"
    assert feedback.unsubscribe_token == "AbC_d3F-gh1JkLmN0pQrStUvWxYz012345678"
    assert feedback.sender == "dana@example.org"
    assert feedback.verp_token is None


@pytest.mark.parametrize(
    "subject",
    ["Re: unsubscribe-AbCdEfGh123", "unsubscribe", "unsubscribe-abc", "unsubscribe-a b c d e"],
)
def test_not_an_unsubscribe(subject: str) -> None:
    raw = f"From: a@example.org\nTo: unsubscribe@example.com\nSubject: {subject}\n\nhi\n"
    feedback = parse(raw.encode())
    assert feedback.kind == "unknown"
    assert feedback.unsubscribe_token is None


# --- Hostile input: a clean result within the limits ---------------------------------


def test_missing_boundary() -> None:
    feedback = parse(sample("hostile-missing-boundary"))
    assert feedback.kind == "unknown"
    assert feedback.problem is not None and "NoBoundaryInMultipartDefect" in feedback.problem


def test_truncated_mime() -> None:
    feedback = parse(sample("hostile-truncated"))
    assert feedback.kind == "unknown"
    assert feedback.problem is not None
    assert "CloseBoundaryNotFoundDefect" in feedback.problem
    assert "without a report part" in feedback.problem


def test_wrong_and_unknown_charsets_read_what_they_can() -> None:
    feedback = parse(sample("hostile-wrong-charset"))
    assert feedback.kind == "bounce"
    [slow] = feedback.recipients
    assert (slow.address, slow.status, slow.category) == (
        "slow@example.org",
        "5.1.1",
        "bad-mailbox",
    )
    assert slow.diagnostic is not None and "\ufffd" in slow.diagnostic  # latin-1 in UTF-8
    assert feedback.subject is not None  # an encoded word in an unknown charset, kept raw


def test_a_dsn_about_a_dsn_reports_the_outer_recipient_only() -> None:
    feedback = parse(sample("hostile-nested-report"))
    assert feedback.kind == "bounce"
    assert feedback.addresses == ("louisl@larry.slip.umd.edu",)
    assert feedback.original is not None
    assert feedback.original.subject == "Returned mail: User unknown"


def test_ten_megabytes_of_headers() -> None:
    raw = b"Subject: x\r\n" + b"X-Filler: " + b"a" * 70 + b"\r\n"
    raw = raw * (10 * 1024 * 1024 // len(raw)) + b"\r\nbody\r\n"
    feedback = parse(raw)
    assert feedback.kind == "unknown"
    assert feedback.problem is not None
    assert f"message of {len(raw)} bytes: only the first {MAX_BYTES} read" in feedback.problem


def test_one_header_line_of_ten_megabytes() -> None:
    feedback = parse(b"Subject: " + b"\xff" * (10 * 1024 * 1024))
    assert feedback.kind == "unknown"
    assert feedback.problem is not None and "only the first" in feedback.problem


@pytest.mark.parametrize("seed", range(5))
def test_binary_garbage(seed: int) -> None:
    raw = random.Random(seed).randbytes(200_000)
    feedback = parse(raw)
    assert feedback.kind == "unknown"
    assert feedback.problem


def test_empty_message() -> None:
    feedback = parse(b"")
    assert (feedback.kind, feedback.problem) == ("unknown", "an empty message")


def test_thousands_of_recipients_are_capped() -> None:
    blocks = "".join(
        f"Final-Recipient: rfc822; r{i}@example.org\nAction: failed\nStatus: 5.1.1\n\n"
        for i in range(3000)
    )
    raw = (
        "From: MAILER-DAEMON@x.example\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        "--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; x.example\n\n"
        f"{blocks}--b--\n"
    ).encode()
    feedback = parse(raw)
    assert feedback.kind == "bounce"
    assert len(feedback.recipients) == MAX_RECIPIENTS
    assert feedback.recipients[-1].address == f"r{MAX_RECIPIENTS - 1}@example.org"
    assert (
        feedback.problem
        == f"the report names 3000 recipients: only the first {MAX_RECIPIENTS} read"
    )


def test_deeply_nested_multiparts_are_cut() -> None:
    depth = 20_000
    opening = "".join(
        f"--b{i}\nContent-Type: multipart/mixed; boundary=b{i + 1}\n\n" for i in range(depth)
    )
    raw = (
        "Content-Type: multipart/mixed; boundary=b0\n\n" + opening + "--b{depth}\n\nx\n"
    ).encode()
    feedback = parse(raw)
    assert feedback.kind == "unknown"
    assert feedback.problem is not None
    assert f"more than {MAX_NESTING} nested parts" in feedback.problem


def test_deeply_nested_messages_are_cut() -> None:
    # feedparser recurses once per message/rfc822: a RecursionError without the cut.
    feedback = parse(b"Content-Type: message/rfc822\n\n" * 5000)
    assert feedback.kind == "unknown"
    assert feedback.problem is not None
    assert f"more than {MAX_NESTING} nested parts" in feedback.problem
    assert "RecursionError" not in feedback.problem


def test_many_lines_are_cut() -> None:
    raw = sample("rfc3464-delayed") + b"x\n" * (2 * MAX_LINES)
    feedback = parse(raw)
    assert feedback.kind == "delay"  # the report comes first and is read whole
    assert feedback.problem is not None
    assert f"more than {MAX_LINES} lines: only the first {MAX_LINES} read" in feedback.problem


def test_status_blocks_that_name_no_recipient_are_not_recipients() -> None:
    raw = (
        "From: MAILER-DAEMON@x.example\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        "--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; x.example\n\n"
        + "a: b\n\n" * 1000
        + "--b--\n"
    ).encode()
    feedback = parse(raw)
    assert feedback.kind == "unknown"
    assert feedback.recipients == ()
    assert feedback.problem == "a delivery report that names no recipient"


def test_status_without_action_says_the_action() -> None:
    raw = sample("gmail-dsn").replace(b"Action: failed\n", b"")
    assert parse(raw).recipients[0].action == "failed"
    assert parse(raw.replace(b"Status: 5.1.1", b"Status: 4.2.2")).kind == "delay"


def test_a_report_behind_nested_multiparts_within_the_limits_is_read() -> None:
    dsn = sample("rfc3464-delayed").split(b"\n\n", 1)
    wrapped = dsn[0].replace(
        b"Content-Type: multipart/report", b"X-Was: multipart/report"
    )  # the report's own headers, minus its type, on the outer message
    inner = b"Content-Type: multipart/report" + dsn[0].split(b"Content-Type: multipart/report")[1]
    raw = (
        wrapped.split(b"\tboundary=")[0]
        + b"Content-Type: multipart/mixed; boundary=outer\n\n--outer\n"
        + inner
        + b"\n\n"
        + dsn[1]
        + b"\n--outer--\n"
    )
    feedback = parse(raw)
    assert feedback.kind == "delay"
    assert feedback.addresses == ("slow@example.org",)


def test_not_bytes_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="bytes, not str"):
        parse("From: a@b\n\nhi")  # type: ignore[arg-type]


@hypothesis_settings(max_examples=300)
@given(st.binary(max_size=4000))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    feedback = parse(raw)
    assert feedback.kind in KINDS
    if feedback.kind == "unknown":
        assert feedback.problem


@hypothesis_settings(max_examples=300)
@given(
    st.sampled_from(sorted(EXPECTED)),
    st.integers(min_value=0, max_value=8000),
    st.integers(min_value=0, max_value=400),
    st.binary(max_size=40),
)
def test_mangled_samples_never_raise(name: str, at: int, cut: int, junk: bytes) -> None:
    raw = sample(name)
    feedback = parse(raw[:at] + junk + raw[at + cut :])
    assert feedback.kind in KINDS
    if feedback.kind == "unknown":
        assert feedback.problem


# --- Genuine DSNs from a real Postfix --------------------------------------------------

needs_postfix = pytest.mark.skipif(available() is not None, reason=str(available()))

ORIGINAL = (
    b"From: News <news@example.com>\r\n"
    b"To: {rcpt}\r\n"
    b"Subject: Weekly news\r\n"
    b"Message-ID: <{mid}@example.com>\r\n"
    b"List-Unsubscribe: <https://t.example.com/u/UnsubT0ken>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Read it: https://t.example.com/c/Cl1ckT0ken\r\n"
)


@pytest.fixture
def postfix_peer() -> Iterator[Callable[..., PostfixPeer]]:
    """postfix_peer(**options) starts a PostfixPeer (stopped at teardown)."""
    started: list[PostfixPeer] = []

    def start(**options: object) -> PostfixPeer:
        peer = PostfixPeer(**options)  # type: ignore[arg-type]
        started.append(peer)
        return peer.start()

    yield start
    for peer in reversed(started):
        peer.stop()


def wait_for(server: ScriptedServer, count: int, postfix: PostfixPeer, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while len(server.messages) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(server.messages)} of {count} DSNs came:\n{postfix.log()}")
        time.sleep(0.05)


def original_for(rcpt: str, mid: str) -> bytes:
    return ORIGINAL.replace(b"{rcpt}", rcpt.encode()).replace(b"{mid}", mid.encode())


@needs_postfix
def test_postfix_dsn_for_an_unknown_user(
    scripted_server: Callable[..., ScriptedServer], postfix_peer: Callable[..., PostfixPeer]
) -> None:
    relay = scripted_server(
        rcpt_replies={
            "nobody@recipients.test": "550 5.1.1 <nobody@recipients.test>: Recipient address "
            "rejected: User unknown in virtual mailbox table"
        }
    )
    bounces = scripted_server()
    postfix = postfix_peer(relay_to=relay.address, bounces_to=bounces.address)
    postfix.send(
        "bounces+Unkn0wnT0k@bounces.test",
        ["nobody@recipients.test", "reader@recipients.test"],
        original_for("nobody@recipients.test", "unknown-user"),
    )
    wait_for(bounces, 1, postfix)
    [dsn] = bounces.messages
    assert dsn.mail_from == "<>"  # a bounce has the null sender (aiosmtpd keeps the brackets)
    assert [m.rcpt_tos for m in relay.delivered] == [("reader@recipients.test",)]

    feedback = parse(dsn.content, envelope_to=dsn.rcpt_tos[0])
    assert feedback.kind == "bounce"
    assert feedback.verp_token == "Unkn0wnT0k"
    assert summary(feedback) == [("nobody@recipients.test", "failed", "5.1.1", "bad-mailbox")]
    [nobody] = feedback.recipients
    assert nobody.original == "nobody@recipients.test"
    assert nobody.reply_code == 550
    assert feedback.reporting_mta == "mta.ferrymail.test"
    assert feedback.original is not None
    assert feedback.original.message_id == "unknown-user@example.com"
    assert feedback.original.envelope_sender == "bounces+Unkn0wnT0k@bounces.test"
    assert feedback.original.links == ("https://t.example.com/c/Cl1ckT0ken",)
    assert feedback.original.list_unsubscribe == ("https://t.example.com/u/UnsubT0ken",)
    assert feedback.problem is None


@needs_postfix
def test_postfix_dsn_for_an_expired_message(
    scripted_server: Callable[..., ScriptedServer], postfix_peer: Callable[..., PostfixPeer]
) -> None:
    relay = scripted_server(rcpt_replies={"later@recipients.test": "451 4.3.0 Try again later"})
    bounces = scripted_server()
    postfix = postfix_peer(relay_to=relay.address, bounces_to=bounces.address)
    postfix.send(
        "bounces+Exp1redT0k@bounces.test",
        ["later@recipients.test"],
        original_for("later@recipients.test", "expired"),
    )
    wait_for(bounces, 1, postfix)
    feedback = parse(bounces.messages[0].content, envelope_to=bounces.messages[0].rcpt_tos[0])
    assert feedback.kind == "bounce"
    assert feedback.verp_token == "Exp1redT0k"
    # Postfix gave up (maximal_queue_lifetime): failed with the last 4xx status.
    assert summary(feedback) == [("later@recipients.test", "failed", "4.3.0", "message-expired")]
    assert feedback.original is not None
    assert feedback.original.message_id == "expired@example.com"


@needs_postfix
def test_postfix_delay_warning(
    scripted_server: Callable[..., ScriptedServer], postfix_peer: Callable[..., PostfixPeer]
) -> None:
    relay = scripted_server(
        rcpt_replies={"slow@recipients.test": "450 4.2.1 Mailbox busy, try again later"}
    )
    bounces = scripted_server()
    postfix = postfix_peer(relay_to=relay.address, bounces_to=bounces.address, delay_warning="1s")
    postfix.send(
        "bounces+D3layT0k@bounces.test",
        ["slow@recipients.test"],
        original_for("slow@recipients.test", "delayed"),
    )
    wait_for(bounces, 1, postfix, timeout=30)
    feedback = parse(bounces.messages[0].content, envelope_to=bounces.messages[0].rcpt_tos[0])
    assert feedback.kind == "delay"
    assert feedback.verp_token == "D3layT0k"
    [slow] = feedback.recipients
    assert (slow.address, slow.action, slow.status) == ("slow@recipients.test", "delayed", "4.2.1")
    assert feedback.original is not None
    assert feedback.original.message_id == "delayed@example.com"


def test_global_delivery_status_rfc6533() -> None:
    raw = (
        sample("gmail-dsn")
        .replace(
            b"Content-Type: message/delivery-status",
            b"Content-Type: message/global-delivery-status",
        )
        .replace(b"rfc822; nosuchuser@gmail.com", "utf-8; usér@exämple.org".encode())
    )
    feedback = parse(raw)
    assert feedback.kind == "bounce"
    assert summary(feedback) == [("usér@exämple.org", "failed", "5.1.1", "bad-mailbox")]
    assert feedback.reporting_mta == "googlemail.com"


def test_base64_encoded_status_part() -> None:
    dsn = sample("rfc3464-delayed")
    head, status, tail = dsn.partition(b"Reporting-MTA: dns; mta.example.net")
    body, boundary, rest = (status + tail).partition(b"\n--4F1B2C")
    encoded = base64.encodebytes(body)
    raw = (
        head.replace(
            b"Content-Type: message/delivery-status\n",
            b"Content-Type: message/delivery-status\nContent-Transfer-Encoding: base64\n",
        )
        + encoded
        + boundary
        + rest
    )
    feedback = parse(raw)
    assert feedback.kind == "delay"
    assert feedback.addresses == ("slow@example.org",)


def test_read_receipt_is_an_auto_reply() -> None:
    raw = (
        b"From: reader@example.org\nSubject: Read: news\nMIME-Version: 1.0\n"
        b"Content-Type: multipart/report; report-type=disposition-notification; boundary=m\n\n"
        b"--m\nContent-Type: text/plain\n\nDisplayed.\n"
        b"--m\nContent-Type: message/disposition-notification\n\n"
        b"Final-Recipient: rfc822; reader@example.org\n"
        b"Disposition: manual-action/MDN-sent-manually; displayed\n--m--\n"
    )
    feedback = parse(raw)
    assert feedback.kind == "auto-reply"
    assert feedback.recipients == ()


def test_html_only_bounce_is_read_from_its_text() -> None:
    raw = (
        b"From: postmaster@isp.example\nSubject: Undeliverable mail\nMIME-Version: 1.0\n"
        b"Content-Type: text/html; charset=utf-8\n\n"
        b"<html><body><p>Your message could not be delivered.</p>"
        b"<p>&lt;gone@isp.example&gt;: 550 5.1.1 user unknown</p></body></html>\n"
    )
    feedback = parse(raw)
    assert feedback.kind == "bounce"
    assert summary(feedback) == [("gone@isp.example", "failed", "5.1.1", "bad-mailbox")]
