"""Which addresses (for the suppression list) and domains count as the same one."""

from __future__ import annotations

import contextlib

import idna


def suppression_key(address: str) -> str:
    """The form in which the suppression list stores and compares `address`.

    RFC 5321 §2.4 lets a server treat local parts case-sensitively, but the large mailbox
    providers do not, and ESPs suppress "Ann@Example.com" and "ann@example.com" together:
    a suppression must never be dodged by a change of case (the cost, that a rare
    case-sensitive server's mailbox suppresses its case-variant twin, is the safe side).
    So the whole address is compared case-insensitively (Unicode lower case for SMTPUTF8
    local parts), and an international domain in its A-label form ("bücher.de" and
    "xn--bcher-kva.de" are one domain), without a final dot. An address without "@" is
    lower-cased whole.
    """
    address = address.strip()
    local, at, domain = address.rpartition("@")
    if not at:
        return address.lower()
    return f"{local.lower()}@{domain_key(domain)}"


def domain_key(domain: str) -> str:
    """A domain as the spool stores it: lower-case A-labels, without a final dot (what
    an operator types for `flush` may be "Bücher.DE.")."""
    domain = domain.strip().removesuffix(".")
    if not domain.isascii():
        # Not a valid name: it cannot receive mail, so it is compared as text.
        with contextlib.suppress(idna.IDNAError, UnicodeError):
            domain = idna.encode(domain, uts46=True).decode("ascii")
    return domain.lower()
