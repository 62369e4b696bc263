"""`parse`: one inbound message -> what it is (`Feedback`), without I/O, never raising.

Order, and why: a report part (RFC 3464 delivery status, RFC 5965 feedback report)
wins over everything, because a report is also auto-generated mail (RFC 3834 §5 has
DSNs carry Auto-Submitted). Then a mailto unsubscribe, Microsoft JMRP's non-ARF
complaint, a bounce without a report (its MTA's words; Exim's bounces also carry
Auto-Submitted), and only then an auto-reply. The report is looked for outside quoted
messages: in a DSN about a DSN, the quoted inner report is the original, not the news.
"""

from __future__ import annotations

import re
from email.message import Message

from ..bounce import BounceClassifier
from . import arf, dsn, plaintext
from .addresses import sender as sender_address
from .addresses import verp_token as verp_token_of
from .autoreply import auto_reply_reason
from .mime import (
    MAX_BYTES,
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
from .model import Feedback, Kind
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
# the token base64url (the sealed-token alphabet).
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
        return _parse(bytes(message[: MAX_BYTES + 1]), len(message), verp, classifier)
    except Exception as e:  # the guarantee: a clean result, whatever the input did
        return Feedback(
            "unknown", verp_token=verp, problem=f"unreadable message ({type(e).__name__}: {e})"
        )


def _parse(
    data: bytes, size: int, verp: str | None, classifier: BounceClassifier | None
) -> Feedback:
    message, problems = load(data)
    if size > len(data) and not problems:  # load saw only the bytes handed to it
        problems.append(f"message of {size} bytes: only the first {MAX_BYTES} read")
    elif size > len(data):
        problems[0] = f"message of {size} bytes: only the first {MAX_BYTES} read"
    subject_raw = header(message, "subject")
    common = {
        "verp_token": verp,
        "sender": sender_address(header(message, "from")),
        "subject": decoded(subject_raw) if subject_raw else None,
    }
    classifier = classifier or _CLASSIFIER
    parts = [p for p, _ in walk(message, into_messages=False)]
    problems.extend(_defects(parts))

    def done(kind: Kind, problem: str | None = None, **found: object) -> Feedback:
        notes = problems + ([problem] if problem else [])
        return Feedback(kind, problem="; ".join(notes) or None, **common, **found)  # type: ignore[arg-type]

    status = next((p for p in parts if content_type(p) in _STATUS_TYPES), None)
    report = next((p for p in parts if content_type(p) in _FEEDBACK_TYPES), None)
    if status is not None:
        return _delivery_report(message, parts, status, classifier, done)
    if report is not None:
        return _feedback_report(parts, report, done)
    if content_type(message) == "multipart/report":
        kind = param(message, "report-type") or "none"
        if kind == "disposition-notification":  # an MDN (RFC 8098): a read receipt
            return done("auto-reply")
        return done("unknown", f"a multipart/report of report-type {kind} without a status part")
    if common["subject"] and (m := _UNSUBSCRIBE.fullmatch(common["subject"])):
        return done("unsubscribe", unsubscribe_token=m[1])
    if common["sender"] == arf.JMRP_SENDER and (
        quoted := next((p for p in parts if content_type(p) in _QUOTED_TYPES), None)
    ):
        return done(
            "complaint",
            complaint=arf.Complaint(feedback_type="abuse", user_agent="Microsoft JMRP"),
            original=original(quoted_message(quoted)),
        )
    body = _first_text(parts)
    if bounce := plaintext.looks_like_bounce(body, common["subject"], common["sender"]):
        action = "failed" if bounce == "bounce" else "delayed"
        found, named = plaintext.recipients(
            body, headers(message, "x-failed-recipients"), action, classifier
        )
        quoted = next((p for p in parts if content_type(p) in _QUOTED_TYPES), None)
        note = None
        if not found:
            note = "a bounce without a report names no address we could read"
        elif named > len(found):
            note = f"the bounce names {named} recipients: only the first {len(found)} read"
        return done(
            bounce,  # type: ignore[arg-type]
            note,
            recipients=found,
            original=original(quoted_message(quoted)) if quoted is not None else None,
        )
    if reason := auto_reply_reason(message, common["subject"]):
        del reason  # the kind says it; the reason is for debugging
        return done("auto-reply")
    return done(
        "unknown",
        "not a delivery report, complaint, bounce, auto-reply or unsubscribe"
        if message.get_payload() or message.keys()
        else "an empty message",
    )


def _delivery_report(message, parts, status, classifier, done) -> Feedback:  # type: ignore[no-untyped-def]
    blocks, total = fields(text(status, MAX_BYTES), dsn.MAX_RECIPIENTS + 1)
    per_message = dsn.first(blocks[0]) if blocks else {}
    if "final-recipient" in per_message or "action" in per_message:
        per_message, recipient_blocks = {}, blocks  # no per-message block (non-conforming)
        recipients_total = total
    else:
        recipient_blocks, recipients_total = blocks[1:], max(total - 1, 0)
    recipients = tuple(
        dsn.recipient(dsn.first(b), classifier) for b in recipient_blocks[: dsn.MAX_RECIPIENTS]
    )
    quoted = next((p for p in parts if content_type(p) in _QUOTED_TYPES), None)
    envelope_sender = None
    if sender := per_message.get("x-postfix-sender") or per_message.get("original-mail-from"):
        from .addresses import address

        envelope_sender = address(sender)
    found = {
        "recipients": recipients,
        "original": original(
            quoted_message(quoted) if quoted is not None else None, envelope_sender
        ),
        "reporting_mta": _untyped(per_message.get("reporting-mta")),
        "envelope_id": _untyped(per_message.get("original-envelope-id")),
    }
    note = None
    if recipients_total > len(recipients):
        note = (
            f"the report names {recipients_total if total <= len(blocks) else 'more than ' + str(len(recipients))}"
            f" recipients: only the first {len(recipients)} read"
        )
    if not recipients:
        return done("unknown", "a delivery report without a recipient", **found)
    kind = dsn.kind_of(recipients)
    if kind == "unknown":
        note = "; ".join(
            filter(
                None, [note, "a delivery report of success only (delivered, relayed or expanded)"]
            )
        )
    return done(kind, note, **found)  # type: ignore[arg-type]


def _feedback_report(parts, report, done) -> Feedback:  # type: ignore[no-untyped-def]
    blocks, _ = fields(text(report), 4)
    complaint = arf.complaint([f for block in blocks for f in block])
    quoted = next((p for p in parts if content_type(p) in _QUOTED_TYPES), None)
    found = {
        "complaint": complaint,
        "original": original(
            quoted_message(quoted) if quoted is not None else None, complaint.original_mail_from
        ),
    }
    if complaint.feedback_type in arf.COMPLAINT_TYPES:
        return done("complaint", **found)
    return done(
        "unknown", f"a feedback report of type {complaint.feedback_type}, not a complaint", **found
    )


def _untyped(value: str | None) -> str | None:
    from .addresses import untyped

    return untyped(value)


def _first_text(parts: list[Message]) -> str:
    """The first text/plain part outside quoted messages (a bounce's explanation); the
    top-level body when the message is not multipart."""
    for part in parts:
        if content_type(part) == "text/plain" and not children(part):
            return text(part)
    return ""


def _defects(parts: list[Message]) -> list[str]:
    names: dict[str, None] = {}
    for part in parts:
        for defect in getattr(part, "defects", ()):
            names.setdefault(type(defect).__name__, None)
    if not names:
        return []
    return ["MIME defects: " + ", ".join(list(names)[:6])]
