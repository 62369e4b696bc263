"""Automatic answers (RFC 3834 and what autoresponders write instead): never bounces."""

from __future__ import annotations

import re
from email.message import Message

from .mime import header

_PRECEDENCE = re.compile(r"^(?:auto_reply|bulk|junk)\b", re.IGNORECASE)
_SUBJECT = re.compile(
    r"^\s*(?:auto(?:matic|matische)?[ -]?(?:reply|response|answer|antwort)"
    r"|autoreply|autoresponse|out of (?:the )?office|ooo\b|on (?:vacation|holiday|leave)"
    r"|away from (?:the office|my desk)|i am (?:out|away)|abwesenheit"
    r"|r[ée]ponse automatique|absence|respuesta autom[áa]tica|risposta automatica)",
    re.IGNORECASE,
)
#: Headers whose presence alone marks an autoresponder's message.
_FLAGS = ("x-autoreply", "x-autorespond", "x-autoresponder", "x-autoresponse")


def auto_reply_reason(message: Message, subject: str | None) -> str | None:
    """Why the message is an automatic answer (the header or subject that says so), or
    None. RFC 3834 §5: Auto-Submitted other than "no" is automatic; Precedence bulk,
    junk and auto_reply are what older responders write; the X- headers and subjects
    ("Automatic reply:", "Out of Office") are what the rest do."""
    auto = header(message, "auto-submitted")
    if auto and auto.split(";")[0].strip().lower() != "no":
        return f"Auto-Submitted: {auto}"
    precedence = header(message, "precedence")
    if precedence and _PRECEDENCE.match(precedence):
        return f"Precedence: {precedence}"
    for name in _FLAGS:
        if header(message, name) is not None:
            return name
    if subject and _SUBJECT.match(subject):
        return f"Subject: {subject}"
    return None
