"""Bounces without a report part (qmail, old Exim, Postfix and sendmail without DSN,
ISP texts): the failed addresses and reasons found in the words, classified.

A message is taken for such a bounce only on a strong sign: a phrase these MTAs write
(`_BOUNCE_TEXT`), or a bounce subject from a mailer-daemon or postmaster sender. Then
the addresses come, in order of trust, from Exim's X-Failed-Recipients header, from
"<address>: reason" paragraphs (qmail, Postfix), from an address alone on its line
followed by indented reason lines (Exim, sendmail), or from the first line that holds
both an address and a 4xx/5xx reply code. Only the text before the quoted original
(`_COPY_MARKER`) is read: the original's own addresses are not recipients that failed.
"""

from __future__ import annotations

import re

from ..bounce import BounceClassifier
from .addresses import address, enhanced_code, reply_code
from .dsn import MAX_RECIPIENTS
from .mime import clean
from .model import RecipientReport

_BOUNCE_TEXT = re.compile(
    r"this is the qmail-send program"
    r"|following address(?:es|\(es\))? failed"
    r"|could not be delivered to one or more"
    r"|couldn't be delivered to one or more"
    r"|following addresses had permanent fatal errors"
    r"|delivery (?:has failed|to the following recipients? failed)"
    r"|message (?:could not|couldn't|was not|wasn't) (?:be )?delivered"
    r"|(?:unable|failed) to deliver (?:your|the|this) message"
    r"|permanent error[;,.]? I've given up",
    re.IGNORECASE,
)
_DELAY_TEXT = re.compile(
    r"this is a warning only"
    r"|has not yet been delivered"
    r"|could not be delivered for (?:more than|past)"
    r"|could not send message for past"
    r"|will (?:continue|keep) (?:trying|to try)"
    r"|still being retried|delivery (?:has been )?delayed",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|returned (?:mail|to sender)|delivery (?:status notification|failure|failed)"
    r"|mail delivery (?:failed|failure|system)|failure notice|non[ -]?remis|unzustellbar"
    r"|delayed mail|delivery delayed|warning: could not send",
    re.IGNORECASE,
)
_DAEMON = re.compile(r"^(?:mailer-daemon|postmaster|mail-daemon|mailer)@", re.IGNORECASE)
_COPY_MARKER = re.compile(
    r"^[ \t]*-{2,}[^\n]*?(?:copy of the message|original message|message headers"
    r"|undelivered message|returned message|message follows)"
    r"|^[ \t]*original message headers:?[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
_MAILBOX = r"[^\s<>()\[\],;:\"@]+@[^\s<>()\[\],;:\"@]+\.[A-Za-z0-9\-.]+"
# qmail's "<a@b>:" and Postfix's "<a@b>: host ... said: 550 ..." paragraphs.
_PARAGRAPH = re.compile(
    rf"^[ \t]*<({_MAILBOX})>(?:[ \t]*\(expanded from <[^>\n]*>\))?:[ \t]*(.*(?:\n[ \t]*\S.*)*)",
    re.MULTILINE,
)
# Exim's "  a@b\n    SMTP error ... 550 ..." and sendmail's "<a@b>\n    (reason: ...)".
_INDENTED = re.compile(
    rf"^[ \t]*<?({_MAILBOX})>?[ \t]*\n((?:[ \t]+\S.*(?:\n|$))+)",
    re.MULTILINE,
)
# Outlook's and Gmail's sentences: "Your message to a@b couldn't be delivered",
# "wasn't delivered to a@b because ...".
_SENTENCE = re.compile(
    rf"(?:message to|delivered to|delivery to|deliver to)[ \t]+<?({_MAILBOX})>?"
    r"[ \t]*(.*(?:\n[ \t]*\S.*)*)",
    re.IGNORECASE,
)
_CODE_LINE = re.compile(r"^.*\b[45]\d\d\b.*$", re.MULTILINE)
_ANY_MAILBOX = re.compile(_MAILBOX)


def from_daemon(sender: str | None) -> bool:
    """Whether the address is a mail system's own (MAILER-DAEMON@, postmaster@)."""
    return bool(sender and _DAEMON.match(sender))


def looks_like_bounce(body: str, subject: str | None, sender: str | None) -> str | None:
    """ "bounce" or "delay" when the words say so (see the module docstring), else None."""
    head = body[:8192]
    if _DELAY_TEXT.search(head) or (
        subject and sender and _DAEMON.match(sender) and _DELAY_TEXT.search(subject)
    ):
        return "delay"
    if _BOUNCE_TEXT.search(head):
        return "bounce"
    if subject and sender and _DAEMON.match(sender) and _BOUNCE_SUBJECT.search(subject):
        return "bounce"
    return None


def _reasons(body: str) -> list[tuple[str, str]]:
    for pattern in (_PARAGRAPH, _INDENTED, _SENTENCE):
        found = [(m[1], m[2]) for m in pattern.finditer(body)]
        if found:
            return found
    for m in _CODE_LINE.finditer(body):
        if a := _ANY_MAILBOX.search(m[0]):
            return [(a[0], m[0])]
    return []


def recipients(
    body: str, failed_header: list[str], action: str, classifier: BounceClassifier
) -> tuple[tuple[RecipientReport, ...], int]:
    """The failed recipients the text names (at most MAX_RECIPIENTS), and how many it
    names in all. `failed_header`: the X-Failed-Recipients values, which Exim writes."""
    cut = _COPY_MARKER.search(body)
    body = body[: cut.start()] if cut else body
    reasons = {a.lower(): (a, clean(r)) for a, r in reversed(_reasons(body))}
    named: list[tuple[str, str]] = []
    for value in failed_header:
        for part in value.split(","):
            if a := address(part):
                named.append(reasons.pop(a.lower(), (a, "")))
    named.extend(reasons[k] for k in reversed(list(reasons)))
    seen: set[str] = set()
    reports: list[RecipientReport] = []
    for a, reason in named:
        if a.lower() in seen:
            continue
        seen.add(a.lower())
        if len(reports) >= MAX_RECIPIENTS:
            continue
        status = enhanced_code(reason)
        code = reply_code(reason, anywhere=True)
        category = classifier.classify(code, status, reason, "reply")
        reports.append(
            RecipientReport(
                address=a,
                action=action,
                status=status,
                reply_code=code,
                diagnostic=reason or None,
                category=category,
            )
        )
    return tuple(reports), len(seen)
