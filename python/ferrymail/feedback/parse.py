"""`parse`: one inbound message -> what it is (`Feedback`), without I/O, never raising.

Order, and why: a report part (RFC 3464 delivery status, RFC 5965 feedback report)
wins over everything, because a report is also auto-generated mail (RFC 3834 §5 has
DSNs carry Auto-Submitted). Then a mailto unsubscribe, Microsoft JMRP's non-ARF
complaint, a bounce without a report (its MTA's words), and an auto-reply. A bounce's
words win over Auto-Submitted (Exim's bounces carry it) but not over the signs only
autoresponders write (Precedence: auto_reply, X-Autoreply, an "Automatic reply"
subject), unless a mailer-daemon or postmaster sent it: an out-of-office text may quote
anything. The report is looked for outside quoted messages: in a DSN about a DSN, the
quoted inner report is the original, not the news.
"""

from __future__ import annotations

import html
import re
from email.message import Message
from typing import Any

from ..bounce import BounceClassifier
from . import arf, dsn, plaintext
from .addresses import address, untyped
from .addresses import sender as sender_address
from .addresses import verp_token as verp_token_of
from .autoreply import auto_reply_reason
from .mime import (
    MAX_BYTES,
    MAX_LINES,
    children,
    content_type,
    decoded,
    fields,
    header,
    headers,
    load,
    param,
    quoted_message,
    text,
    walk,
)
from .model import Complaint, Feedback, Kind
from .original import original

_STATUS_TYPES = (
    "message/delivery-status",
    "message/global-delivery-status",
    "text/delivery-status",
)
_FEEDBACK_TYPES = ("message/feedback-report", "text/feedback-report")
_QUOTED_TYPES = (
    "message/rfc822",
    "message/global",
    "text/rfc822-headers",
    "message/rfc822-headers",
    "message/global-headers",
)
# RFC 8058's mailto form as rust/src/render writes it: subject=unsubscribe-<token>,
# the token base64url (the sealed-token alphabet). The listener checks that the
# message came to the unsubscribe address; the parser reads the subject only.
_UNSUBSCRIBE = re.compile(r"\s*unsubscribe-([A-Za-z0-9_-]{8,512})\s*", re.IGNORECASE)

_CLASSIFIER = BounceClassifier()


def parse(
    message: bytes,
    *,
    envelope_to: str | None = None,
    classifier: BounceClassifier | None = None,
) -> Feedback:
    """What `message` (as the bounce domain's listener received it) is and says.

    `envelope_to` is the envelope recipient it came to (RCPT TO): its VERP token is
    `Feedback.verp_token`. `classifier` (default: the built-in rules) names bounce
    categories. Hostile input never raises: what cannot be read is kind "unknown" with
    `problem` saying why, within the limits in `ferrymail.feedback.mime` and
    `MAX_RECIPIENTS`. A `message` that is not bytes is a caller's bug: TypeError.
    """
    if not isinstance(message, (bytes, bytearray, memoryview)):
        raise TypeError(f"parse takes the message as bytes, not {type(message).__name__}")
    verp = verp_token_of(envelope_to)
    try:
        return _Reading(bytes(message[: MAX_BYTES + 1]), len(message), verp).read(
            classifier or _CLASSIFIER
        )
    except Exception as e:  # the guarantee: a clean result, whatever the input did
        return Feedback(
            "unknown", verp_token=verp, problem=f"unreadable message ({type(e).__name__}: {e})"
        )


class _Reading:
    """One message being read: its parts, what is common to every result, the problems."""

    def __init__(self, data: bytes, size: int, verp: str | None) -> None:
        self.message, self.problems = load(data)
        if size > MAX_BYTES:  # load saw only the bytes handed to it: name the real size
            note = f"message of {size} bytes: only the first {MAX_BYTES} read"
            self.problems = [note] + [p for p in self.problems if not p.startswith("message of")]
        subject = header(self.message, "subject")
        self.subject = decoded(subject) if subject else None
        self.sender = sender_address(header(self.message, "from"))
        self.verp = verp
        self.parts = [p for p, _ in walk(self.message, into_messages=False)]
        self.problems.extend(_defects(self.parts))

    def result(self, kind: Kind, problem: str | None = None, **found: Any) -> Feedback:
        notes = self.problems + ([problem] if problem else [])
        return Feedback(
            kind,
            verp_token=self.verp,
            sender=self.sender,
            subject=self.subject,
            problem="; ".join(notes) or None,
            **found,
        )

    def first(self, types: tuple[str, ...]) -> Message | None:
        return next((p for p in self.parts if content_type(p) in types), None)

    def read(self, classifier: BounceClassifier) -> Feedback:
        if (status := self.first(_STATUS_TYPES)) is not None:
            return self.delivery_report(status, classifier)
        if (report := self.first(_FEEDBACK_TYPES)) is not None:
            return self.feedback_report(report)
        if content_type(self.message) == "multipart/report":
            report_type = param(self.message, "report-type") or "none"
            if report_type == "disposition-notification":  # an MDN (RFC 8098): a receipt
                return self.result("auto-reply")
            return self.result(
                "unknown", f"a multipart/report of report-type {report_type} without a report part"
            )
        if self.subject and (m := _UNSUBSCRIBE.fullmatch(self.subject)):
            return self.result("unsubscribe", unsubscribe_token=m[1])
        quoted = self.first(_QUOTED_TYPES)
        if (self.sender or "").lower() == arf.JMRP_SENDER and quoted is not None:
            return self.result(
                "complaint",
                complaint=Complaint(feedback_type="abuse", user_agent="Microsoft JMRP"),
                original=original(quoted_message(quoted)),
            )
        auto_reply = auto_reply_reason(self.message, self.subject)
        body = _first_text(self.parts)
        bounce = plaintext.looks_like_bounce(body, self.subject, self.sender)
        if bounce and (
            auto_reply is None
            or auto_reply.startswith("Auto-Submitted")
            or plaintext.from_daemon(self.sender)
        ):
            return self.text_bounce(bounce, body, quoted, classifier)
        if auto_reply:
            return self.result("auto-reply")
        empty = not self.message.keys() and not self.message.get_payload()
        return self.result(
            "unknown",
            "an empty message"
            if empty
            else "not a delivery report, complaint, bounce, auto-reply or unsubscribe",
        )

    def delivery_report(self, status: Message, classifier: BounceClassifier) -> Feedback:
        blocks, _ = fields(text(status, MAX_BYTES), MAX_LINES)
        per_message = dsn.first(blocks[0]) if blocks else {}
        if dsn.is_recipient(per_message):
            per_message = {}  # no per-message block (a non-conforming report)
        else:
            blocks = blocks[1:]
        named = [b for b in map(dsn.first, blocks) if dsn.is_recipient(b)]
        recipients = tuple(dsn.recipient(b, classifier) for b in named[: dsn.MAX_RECIPIENTS])
        quoted = self.first(_QUOTED_TYPES)
        reported_sender = per_message.get("x-postfix-sender") or per_message.get(
            "original-mail-from"
        )
        found: dict[str, Any] = {
            "recipients": recipients,
            "original": original(
                quoted_message(quoted) if quoted is not None else None, address(reported_sender)
            ),
            "reporting_mta": untyped(per_message.get("reporting-mta")),
            "envelope_id": untyped(per_message.get("original-envelope-id")),
        }
        notes = []
        if len(named) > len(recipients):
            notes.append(
                f"the report names {len(named)} recipients: only the first {len(recipients)} read"
            )
        if not recipients:
            return self.result("unknown", "a delivery report that names no recipient", **found)
        kind = dsn.kind_of(recipients)
        if kind == "unknown":
            notes.append("a delivery report of success only (delivered, relayed or expanded)")
        return self.result(kind, "; ".join(notes) or None, **found)

    def feedback_report(self, report: Message) -> Feedback:
        blocks, _ = fields(text(report), 4)
        complaint = arf.complaint([f for block in blocks for f in block])
        quoted = self.first(_QUOTED_TYPES)
        found: dict[str, Any] = {
            "complaint": complaint,
            "original": original(
                quoted_message(quoted) if quoted is not None else None,
                complaint.original_mail_from,
            ),
        }
        if complaint.feedback_type in arf.COMPLAINT_TYPES:
            return self.result("complaint", **found)
        return self.result(
            "unknown",
            f"a feedback report of type {complaint.feedback_type}, not a complaint",
            **found,
        )

    def text_bounce(
        self, bounce: str, body: str, quoted: Message | None, classifier: BounceClassifier
    ) -> Feedback:
        action = "failed" if bounce == "bounce" else "delayed"
        found, named = plaintext.recipients(
            body, headers(self.message, "x-failed-recipients"), action, classifier
        )
        note = None
        if not found:
            note = "a bounce without a report names no address we could read"
        elif named > len(found):
            note = f"the bounce names {named} recipients: only the first {len(found)} read"
        return self.result(
            bounce,  # type: ignore[arg-type]
            note,
            recipients=found,
            original=original(quoted_message(quoted)) if quoted is not None else None,
        )


_TAG = re.compile(r"<[^>]{0,2000}>")
_BLOCK_TAG = re.compile(r"<(?:br|/p|/div|/tr|/li|/h\d)\b[^>]{0,200}>", re.IGNORECASE)


def _first_text(parts: list[Message]) -> str:
    """The first text/plain part outside quoted messages (a bounce's explanation; the
    top-level body when the message is not multipart), else the first text/html one
    with its tags taken out (some ISPs send their bounces in HTML only)."""
    for part in parts:
        if content_type(part) == "text/plain" and not children(part):
            return text(part)
    for part in parts:
        if content_type(part) == "text/html" and not children(part):
            page = _BLOCK_TAG.sub("\n", text(part))
            return html.unescape(_TAG.sub(" ", page))
    return ""


def _defects(parts: list[Message]) -> list[str]:
    """The kinds of MIME damage the stdlib parser noted (a missing boundary, a
    truncated part), named once each."""
    names: dict[str, None] = {}
    for part in parts:
        for defect in getattr(part, "defects", ()):
            names.setdefault(type(defect).__name__, None)
    return ["MIME defects: " + ", ".join(list(names)[:6])] if names else []
