"""What `ferrymail.feedback.parse` says about one inbound message: typed, frozen structs.

These are values for the inbound listener to act on (suppress, record an event, match
the original message); the parser itself does no I/O and decides nothing.
"""

from __future__ import annotations

from typing import Literal

import msgspec

#: What an inbound message is, as the listener acts on it:
#: - "bounce": a report (or a bounce without one) that delivery to a recipient failed
#:   for good; each failed recipient is in `Feedback.recipients` with its category.
#: - "delay": a report that delivery is still being retried; nothing failed yet.
#: - "complaint": an abuse report from a feedback loop (ARF, RFC 5965, or Microsoft's
#:   JMRP "RFC822 attachment" format); see `Feedback.complaint`.
#: - "auto-reply": an out-of-office or other automatic answer (RFC 3834); never a bounce.
#: - "unsubscribe": a mailto unsubscribe (`subject=unsubscribe-TOKEN`); see
#:   `Feedback.unsubscribe_token`.
#: - "unknown": anything else, or what could not be read; `Feedback.problem` says why.
Kind = Literal["bounce", "delay", "complaint", "auto-reply", "unsubscribe", "unknown"]


class RecipientReport(msgspec.Struct, frozen=True):
    """One recipient a delivery report (or a bounce without one) speaks about.

    The listener suppresses `original or address` when `action` is "failed" and
    `category` is in `ferrymail.bounce.HARD_CATEGORIES`, and records the rest.
    """

    #: The address the reporting MTA tried (RFC 3464 Final-Recipient, or the address a
    #: bounce without a report names); None when the report names none it can parse.
    address: str | None
    #: The address as the sender gave it (Original-Recipient), when the MTA kept it; it
    #: differs from `address` after an alias or forward. Match on this one first.
    original: str | None = None
    #: RFC 3464 Action, lower case: "failed", "delayed", "delivered", "relayed" or
    #: "expanded" ("failed" for a bounce without a report).
    action: str = "failed"
    #: The enhanced status code (RFC 3463), e.g. "5.1.1"; from Status, or from the
    #: diagnostic text when Status is missing.
    status: str | None = None
    #: The SMTP reply code in the diagnostic (550), when it carries one.
    reply_code: int | None = None
    #: The remote server's words (Diagnostic-Code without its "smtp;" type), unfolded.
    diagnostic: str | None = None
    #: The server that answered (Remote-MTA without its "dns;" type).
    remote_mta: str | None = None
    #: `BounceClassifier` category for "failed" and "delayed" recipients (None for the
    #: others). A "failed" recipient with a class-4 status is "message-expired": the
    #: reporting MTA gave up retrying, which says nothing lasting about the mailbox.
    category: str | None = None


class OriginalMessage(msgspec.Struct, frozen=True):
    """What a report quotes of the message ferrymail sent (its headers, maybe its body):
    the listener matches the original by `message_id`, by the tracking or unsubscribe
    token in `links` / `list_unsubscribe`, or by `envelope_sender` (the VERP address)."""

    #: Message-ID, without its angle brackets.
    message_id: str | None = None
    #: The original's envelope sender: Return-Path in the quoted headers, else the
    #: report's Original-Mail-From / X-Postfix-Sender; without angle brackets.
    envelope_sender: str | None = None
    #: The To header, as quoted (receivers may redact it; Microsoft does).
    to: str | None = None
    #: Subject, decoded.
    subject: str | None = None
    #: The http(s) URLs of the quoted body, in order, each once, at most `MAX_LINKS`.
    links: tuple[str, ...] = ()
    #: The List-Unsubscribe URIs of the quoted headers (each carries the recipient's
    #: unsubscribe token).
    list_unsubscribe: tuple[str, ...] = ()


class Complaint(msgspec.Struct, frozen=True):
    """An abuse report's own fields (RFC 5965 §3.1 and §3.2)."""

    #: Feedback-Type, lower case: "abuse", "fraud", "virus", "other", "not-spam" or
    #: "auth-failure" (RFC 6591). Only the first four make the kind "complaint".
    feedback_type: str
    #: User-Agent: the software that made the report ("Yahoo!-Mail-Feedback/2.0").
    user_agent: str | None = None
    #: Version (RFC 5965 says "1"; older loops write "0.1").
    version: str | None = None
    #: Source-IP: the address the reported message came from (ferrymail's own).
    source_ip: str | None = None
    #: Original-Rcpt-To (may be given several times): the recipients who complained.
    original_rcpt_to: tuple[str, ...] = ()
    #: Original-Mail-From: the reported message's envelope sender.
    original_mail_from: str | None = None
    #: Arrival-Date, as written.
    arrival_date: str | None = None
    #: Reported-Domain (may repeat).
    reported_domains: tuple[str, ...] = ()


class Feedback(msgspec.Struct, frozen=True):
    """What one inbound message is, and what it says; see `Kind`."""

    kind: Kind
    #: The recipients a delivery report or a bounce speaks about, in the report's order,
    #: at most `MAX_RECIPIENTS` (`problem` says when more were cut). Successes
    #: ("delivered", "relayed", "expanded") are kept with their action; the kind is
    #: "bounce" if any recipient failed, else "delay" if any was delayed, else "unknown".
    recipients: tuple[RecipientReport, ...] = ()
    #: For "complaint" (and the reports that are not complaints: not-spam, auth-failure).
    complaint: Complaint | None = None
    #: What the report quotes of ferrymail's message.
    original: OriginalMessage | None = None
    #: The VERP token: the local part after "+" in `envelope_to` (bounces+TOKEN@...),
    #: opaque here; verifying it is the listener's job. None without one.
    verp_token: str | None = None
    #: For "unsubscribe": the token after "unsubscribe-" in the subject, opaque here.
    unsubscribe_token: str | None = None
    #: The reporting MTA (Reporting-MTA without its "dns;" type), for a delivery report.
    reporting_mta: str | None = None
    #: RFC 3464 Original-Envelope-Id, when the original was sent with ENVID.
    envelope_id: str | None = None
    #: The From address of the inbound message (for an auto-reply: who answered).
    sender: str | None = None
    #: Subject of the inbound message, decoded.
    subject: str | None = None
    #: Why the kind is "unknown", or what was cut or malformed on the way (a result may
    #: be partial: the listener logs this text); None when all was read.
    problem: str | None = None

    @property
    def addresses(self) -> tuple[str, ...]:
        """The recipients this feedback is about, each once: a report's recipients (their
        original address first), a complaint's Original-Rcpt-To; empty when it names
        none (then match by `verp_token` or `original`)."""
        seen: dict[str, None] = {}
        for r in self.recipients:
            if a := r.original or r.address:
                seen.setdefault(a, None)
        if self.complaint is not None:
            for a in self.complaint.original_rcpt_to:
                seen.setdefault(a, None)
        return tuple(seen)
