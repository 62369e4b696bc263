"""Addresses and codes as reports write them: typed fields, angle brackets, reply codes."""

from __future__ import annotations

import email.utils
import re

from .mime import clean

_ENHANCED = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?![\d.])")
_REPLY_CODE = re.compile(r"^\s*([245]\d\d)(?:[ \-]|$)")
_REPLY_CODE_ANYWHERE = re.compile(r"(?<![\d.#])([45]\d\d)(?:[ \-])(?=\s*[45]\.\d|\s*\S)")
_MAILBOX = re.compile(r"[^\s<>()\[\],;:\"@]+@[^\s<>()\[\],;:\"@]+\.[^\s<>()\[\],;:\"@]+")


def untyped(value: str | None) -> str | None:
    """A typed field's value without its type: "rfc822; a@b" -> "a@b", "dns; mx" -> "mx"."""
    if value is None:
        return None
    kind, semi, rest = value.partition(";")
    text = rest if semi and kind.strip() and " " not in kind.strip() else value
    return clean(text) or None


def address(value: str | None) -> str | None:
    """A bare mailbox from a field value: type, display name, brackets and comments off;
    None when it holds none."""
    text = untyped(value)
    if not text:
        return None
    m = _MAILBOX.search(text.strip("<>"))
    return m[0].strip(".") if m else None


def sender(value: str | None) -> str | None:
    """The address of a From header; None when it has none."""
    if not value:
        return None
    try:
        found = email.utils.parseaddr(value)[1]
    except Exception:
        found = ""
    return address(found) or address(value)


def enhanced_code(text: str | None) -> str | None:
    """The first enhanced status code (RFC 3463) in the text: "5.1.1"."""
    m = _ENHANCED.search(text or "")
    return m[1] if m else None


def reply_code(text: str | None, *, anywhere: bool = False) -> int | None:
    """The SMTP reply code that starts the text (550), or with `anywhere` the first one
    in it that is followed by more words; None without one."""
    if not text:
        return None
    m = _REPLY_CODE.match(text) or (_REPLY_CODE_ANYWHERE.search(text) if anywhere else None)
    return int(m[1]) if m else None


def message_id(value: str | None) -> str | None:
    """A Message-ID without its angle brackets."""
    if not value:
        return None
    text = value.strip()
    m = re.search(r"<([^<>\s]+)>", text)
    return (m[1] if m else text.split()[0] if text.split() else None) or None


def verp_token(envelope_to: str | None) -> str | None:
    """The local part after the first "+" of `envelope_to` ("bounces+TOKEN@host" ->
    "TOKEN"); None when it has none."""
    if not envelope_to or not isinstance(envelope_to, str):
        return None
    local = envelope_to.strip().strip("<>").rpartition("@")[0] or envelope_to
    _, plus, token = local.partition("+")
    return clean(token, 512) or None if plus else None
