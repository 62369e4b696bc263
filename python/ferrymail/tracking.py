"""Reads the opaque tokens of click, open and unsubscribe URLs (see rust/src/render/token.rs).

A token is base64url(version || AES-256-GCM-SIV(claims) || tag) under a key derived
from the campaign's secret with HKDF-SHA256: it says nothing to whoever reads the URL,
and only the secret's holder can make or read one. A tracking server verifies tokens
with the secret alone (no spool): a click token carries its destination URL.
"""

from __future__ import annotations

from typing import Literal, cast

import msgspec

from . import _core
from .errors import TokenError

Kind = Literal["click", "open", "unsubscribe"]


class TokenClaims(msgspec.Struct, frozen=True):
    """What a verified token names. `link` and `url` are set for clicks only: `link` is
    the link's number in its message (distinct URLs, in order of first appearance), and
    `url` is always an http(s) URL (no other link is ever tracked)."""

    kind: Kind
    campaign: str
    recipient: str | int
    link: int | None
    url: str | None


def verify(token: str, secret: str | bytes) -> TokenClaims:
    """Opens the token with `secret` and returns what it names; raises `TokenError` for a
    malformed, tampered or foreign token, or one of an unknown version."""
    if not isinstance(token, str):
        raise TokenError(f"a token is text, not {type(token).__name__}")
    if isinstance(secret, str):
        key = secret.encode()
    elif isinstance(secret, bytes):
        key = secret
    else:
        raise TypeError(f"secret must be text or bytes, not {type(secret).__name__}")
    kind, campaign, recipient, link, url = _core.open_token(token, key)
    return TokenClaims(
        kind=cast(Kind, kind), campaign=campaign, recipient=recipient, link=link, url=url
    )
