"""Reads the signed tokens of click, open and unsubscribe URLs (see rust/src/render/token.rs).

A token is base64url(payload || tag): `payload` is the MessagePack array
`[version, kind, campaign, link, url, recipient]`, `tag` the first 16 bytes of
HMAC-SHA256(secret, payload). This reader uses only the standard library's hmac, so a
tracking server can verify tokens without the Rust extension.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Literal

import msgspec

from .errors import TokenError

TAG_LEN = 16
VERSION = 1
_KINDS: dict[int, Literal["click", "open", "unsubscribe"]] = {
    1: "click",
    2: "open",
    3: "unsubscribe",
}
_payload = msgspec.msgpack.Decoder(tuple[int, int, str, int, str | None, str | int])


class TokenClaims(msgspec.Struct, frozen=True):
    """What a verified token names. `link` and `url` are set for clicks only: `link` is
    the link's number in its message (distinct URLs, in order of first appearance)."""

    kind: Literal["click", "open", "unsubscribe"]
    campaign: str
    recipient: str | int
    link: int | None
    url: str | None


def verify(token: str, secret: str | bytes) -> TokenClaims:
    """Checks the token's signature with `secret` and returns what it names; raises
    `TokenError` for a malformed, tampered or foreign token."""
    key = secret.encode() if isinstance(secret, str) else secret
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as e:
        raise TokenError(f"token is not base64url: {e}") from None
    # The decoder is lenient (it skips junk, accepts '+' and '/', ignores unused bits):
    # only the exact encoding ferrymail writes is a token.
    if base64.urlsafe_b64encode(raw).rstrip(b"=") != token.encode("ascii", "replace"):
        raise TokenError("token is not in canonical base64url form")
    if len(raw) <= TAG_LEN:
        raise TokenError("token is too short")
    payload, tag = raw[:-TAG_LEN], raw[-TAG_LEN:]
    expected = hmac.new(key, payload, hashlib.sha256).digest()[:TAG_LEN]
    if not hmac.compare_digest(tag, expected):
        raise TokenError("token signature does not match (tampered, or signed with another secret)")
    try:
        version, kind, campaign, link, url, recipient = _payload.decode(payload)
    except msgspec.DecodeError as e:
        raise TokenError(f"token payload is malformed: {e}") from None
    if version != VERSION or kind not in _KINDS:
        raise TokenError(f"unknown token version {version} or kind {kind}")
    is_click = _KINDS[kind] == "click"
    return TokenClaims(
        kind=_KINDS[kind],
        campaign=campaign,
        recipient=recipient,
        link=link if is_click else None,
        url=url if is_click else None,
    )
