"""Mail for the inbound listener's tests: delivery reports, feedback-loop reports,
auto-replies and mailto unsubscribes about messages ferrymail really rendered, and a
spool whose recipients were delivered."""

from __future__ import annotations

import smtplib
from pathlib import Path

import ferrymail
from ferrymail.inbound import InboundConfig
from ferrymail.spool import SqliteSpool, Update
from web_support import SECRET, UNSUBSCRIBE_SECRET, spool_with

BOUNCE_DOMAIN = "bounces.example.com"


def plain(campaign_id: str) -> ferrymail.Campaign:
    """A campaign without tracking or unsubscribe links: a report about its messages
    quotes no token, only their Message-ID and addresses."""
    return ferrymail.Campaign(
        id=campaign_id,
        sender="bounces@news.example.com",
        from_="News <news@example.com>",
        subject="News",
        text="Hello",
    )


def inbound_config(**overrides: object) -> InboundConfig:
    fields: dict[str, object] = {
        "domains": [BOUNCE_DOMAIN],
        "tracking_secrets": [SECRET],
        "unsubscribe_secrets": [UNSUBSCRIBE_SECRET],
    }
    fields.update(overrides)
    return InboundConfig(**fields)  # type: ignore[arg-type]


def delivered_spool(
    path: Path, campaigns: list[ferrymail.Campaign], recipients: list[ferrymail.Recipient]
) -> SqliteSpool:
    """A spool where every recipient of every campaign was delivered (250)."""
    spool = spool_with(path, campaigns, recipients)
    leased = spool.lease(10_000, "test", 60)
    spool.record(
        [
            Update(r.id, "delivered", 1, None, 250, "2.0.0", "OK", None, "mx", "127.0.0.1")
            for r in leased
        ]
    )
    return spool


def rendered(campaign: ferrymail.Campaign, recipient: ferrymail.Recipient) -> bytes:
    """The message ferrymail sends the recipient, with the Return-Path its receiver
    adds (the envelope sender)."""
    (message,) = ferrymail.render(campaign, [recipient])
    assert isinstance(message, ferrymail.RenderedMessage), message
    return f"Return-Path: <{message.envelope_from}>\r\n".encode() + message.data


def message_id(original: bytes) -> str:
    for line in original.split(b"\r\n"):
        if line.lower().startswith(b"message-id:"):
            return line.split(b":", 1)[1].strip().decode()
    raise AssertionError("no Message-ID")


def _report(kind: str, human: str, report: str, original: bytes, *, headers_only: bool) -> bytes:
    quoted = original.split(b"\r\n\r\n", 1)[0] + b"\r\n" if headers_only else original
    quoted_type = "text/rfc822-headers" if headers_only else "message/rfc822"
    return (
        (
            "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n"
            f"To: <bounces@{BOUNCE_DOMAIN}>\r\n"
            "Subject: Report\r\n"
            "MIME-Version: 1.0\r\n"
            f'Content-Type: multipart/report; report-type={kind}; boundary="REPORT"\r\n'
            "\r\n--REPORT\r\nContent-Type: text/plain\r\n\r\n"
            f"{human}\r\n"
            f"--REPORT\r\nContent-Type: message/{kind}\r\n\r\n"
            f"{report}\r\n"
            f"--REPORT\r\nContent-Type: {quoted_type}\r\n\r\n"
        ).encode()
        + quoted
        + b"\r\n--REPORT--\r\n"
    )


def dsn(
    original: bytes,
    recipient: str,
    *,
    action: str = "failed",
    status: str = "5.1.1",
    diagnostic: str = "smtp; 550 5.1.1 <{r}>: Recipient address rejected: User unknown",
    headers_only: bool = True,
) -> bytes:
    """An RFC 3464 report about `recipient` of `original`, as Postfix writes one."""
    report = (
        "Reporting-MTA: dns; mx.example.net\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\n"
        f"Original-Recipient: rfc822;{recipient}\r\n"
        f"Action: {action}\r\n"
        f"Status: {status}\r\n"
        "Remote-MTA: dns; mailbox.example.net\r\n"
        f"Diagnostic-Code: {diagnostic.format(r=recipient)}\r\n"
    )
    human = "I'm sorry to have to inform you that your message could not be delivered."
    return _report("delivery-status", human, report, original, headers_only=headers_only)


def arf(
    original: bytes,
    recipient: str | None,
    *,
    user_agent: str = "Yahoo!-Mail-Feedback/2.0",
    redact: bool = False,
    mail_from: str = "bounces@news.example.com",
) -> bytes:
    """An RFC 5965 abuse report quoting `original` whole; `redact` removes the
    recipient from it, as Microsoft's JMRP does."""
    report = (
        "Feedback-Type: abuse\r\n"
        f"User-Agent: {user_agent}\r\n"
        "Version: 1\r\n"
        f"Original-Mail-From: <{mail_from}>\r\n"
        + ("" if redact or recipient is None else f"Original-Rcpt-To: <{recipient}>\r\n")
        + "Source-IP: 127.0.0.1\r\n"
        "Arrival-Date: Thu, 3 Dec 2026 10:00:00 +0000\r\n"
    )
    if redact and recipient is not None:
        original = original.replace(recipient.encode(), b"<redacted>")
    human = "This is an email abuse report for an email message received."
    return _report("feedback-report", human, report, original, headers_only=False)


def auto_reply(sender: str, in_reply_to: str) -> bytes:
    return (
        f"From: {sender}\r\n"
        f"To: bounces@{BOUNCE_DOMAIN}\r\n"
        "Subject: Automatic reply: News\r\n"
        "Auto-Submitted: auto-replied\r\n"
        f"In-Reply-To: {in_reply_to}\r\n"
        "Content-Type: text/plain\r\n\r\n"
        "I am out of the office until Monday.\r\n"
    ).encode()


def unsubscribe_mail(sender: str, mailto_subject: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: unsubscribe@{BOUNCE_DOMAIN}\r\n"
        f"Subject: {mailto_subject}\r\n\r\nunsubscribe\r\n"
    ).encode()


def send(
    port: int, content: bytes, to: str = f"bounces@{BOUNCE_DOMAIN}", *, host: str = "127.0.0.1"
) -> tuple[int, bytes]:
    """Sends `content` to the listener from the null sender, as an MTA sends a bounce;
    the reply to its final dot."""
    with smtplib.SMTP(host, port, timeout=10) as client:
        client.ehlo("mx.example.net")
        code, text = client.mail("<>")
        assert code == 250, (code, text)
        code, text = client.rcpt(to)
        if code != 250:
            return code, text
        return client.data(content)
