"""What a report quotes of the original message: Message-ID, envelope sender, links."""

from __future__ import annotations

import html
import re
from email.message import Message

from .addresses import address, message_id
from .mime import content_type, decoded, header, headers, text, walk
from .model import OriginalMessage

#: Links kept from a quoted body, and the longest kept; ferrymail's tracking links are
#: a few hundred characters, and a receiver may quote a body of any size.
MAX_LINKS = 50
MAX_LINK_LENGTH = 4096

_URL = re.compile(r"https?://[^\s<>\"'`\\^{}|\[\]]+", re.IGNORECASE)
_ANGLE_URI = re.compile(r"<([^<>\s]+)>")


def _links(quoted: Message) -> tuple[str, ...]:
    found: dict[str, None] = {}
    for part, _ in walk(quoted):
        kind = content_type(part)
        if kind not in ("text/plain", "text/html"):
            continue
        body = text(part)
        for m in _URL.finditer(body):
            url = m[0].rstrip(".,;:!?)")
            if kind == "text/html":
                url = html.unescape(url)
            if len(url) <= MAX_LINK_LENGTH:
                found.setdefault(url, None)
            if len(found) >= MAX_LINKS:
                return tuple(found)
    return tuple(found)


def original(quoted: Message | None, envelope_sender: str | None = None) -> OriginalMessage:
    """The original as quoted (`quoted`: a message/rfc822 part's message, or the
    headers of a text/rfc822-headers part); `envelope_sender` is the report's own
    idea of it (X-Postfix-Sender, Original-Mail-From), used without a Return-Path."""
    if quoted is None:
        return OriginalMessage(envelope_sender=envelope_sender)
    subject = header(quoted, "subject")
    unsubscribe: list[str] = []
    for value in headers(quoted, "list-unsubscribe"):
        unsubscribe.extend(m[1] for m in _ANGLE_URI.finditer(value))
    return OriginalMessage(
        message_id=message_id(header(quoted, "message-id")),
        envelope_sender=address(header(quoted, "return-path")) or envelope_sender,
        to=header(quoted, "to"),
        subject=decoded(subject) if subject else None,
        links=_links(quoted),
        list_unsubscribe=tuple(unsubscribe[:MAX_LINKS]),
    )
