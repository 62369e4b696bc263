"""Tokens that say nothing to a reader: the sample campaign's click, open and unsubscribe
tokens are opaque, as short as their claims, and read back by an independent reader
written here with the `cryptography` package (which pins the format of
rust/src/render/token.rs); anything else is a TokenError."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from email import message_from_bytes
from email.policy import default

import msgspec
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from ferrymail import Recipient, RenderedMessage, TokenError, render, sample
from ferrymail.tracking import TokenClaims, verify

VERSION = 2
KINDS = {1: "click", 2: "open", 3: "unsubscribe"}
_TOKEN = re.compile(r"https://t\.example\.com/[cu]/([A-Za-z0-9_-]+)")


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def aead(secret: str) -> AESGCMSIV:
    hkdf = HKDF(SHA256(), 32, b"ferrymail tracking tokens", b"v2 AES-256-GCM-SIV")
    return AESGCMSIV(hkdf.derive(secret.encode()))


def varint(b: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = b[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if byte < 0x80:
            return value, at


def reference_open(token: str, secret: str) -> TokenClaims:
    """The token layout read by hand, as rust/src/render/token.rs documents it."""
    raw = unb64(token)
    assert raw[0] == VERSION
    claims = aead(secret).decrypt(bytes(12), raw[1:], raw[:1])
    head = claims[0]
    kind, scheme, form = head & 3, head >> 2 & 3, head >> 4
    length, at = varint(claims, 1)
    campaign = claims[at : at + length].decode()
    at += length
    link = url = None
    if KINDS[kind] == "click":
        link, at = varint(claims, at)
        length, at = varint(claims, at)
        url = ("", "http://", "https://")[scheme] + claims[at : at + length].decode()
        at += length
    if form == 2:
        recipient: str | int = claims[at:].decode()
    else:
        number, end = varint(claims, at)
        assert end == len(claims)
        recipient = ~number if form == 1 else number
    return TokenClaims(KINDS[kind], campaign, recipient, link, url)


def sample_tokens(recipients: list[Recipient]) -> list[str]:
    found = []
    for message in render(sample.campaign(), recipients, threads=1):
        assert isinstance(message, RenderedMessage)
        msg = message_from_bytes(message.data, policy=default)
        parts = [p.get_content() for p in msg.walk() if p.get_content_maintype() == "text"]
        found += _TOKEN.findall("\n".join([str(msg["List-Unsubscribe"]), *parts]))
    return found


@pytest.mark.parametrize("key", [0, 42, -7, 2**63 - 1, "crm-0042", None], ids=repr)
def test_an_independent_reader_gets_the_same_claims(key: int | str | None) -> None:
    vars = {"first_name": "Émilie", "city": "Kiel", "member_id": 7}
    recipient = Recipient("émilie@example.net", vars, id=key)
    found = sample_tokens([recipient])
    assert len(set(found)) > 15
    kinds = set()
    for token in found:
        claims = verify(token, sample.SECRET)
        assert reference_open(token, sample.SECRET) == claims
        assert claims.recipient == (key if key is not None else "émilie@example.net")
        kinds.add(claims.kind)
    assert kinds == {"click", "open", "unsubscribe"}


def test_tokens_say_nothing_to_a_reader() -> None:
    # A recipient without an id: the address stands in, and used to be readable.
    vars = {"first_name": "Ann", "city": "Oslo", "member_id": 7}
    recipient = Recipient("ann.reader@example.net", vars)
    found = sample_tokens([recipient])
    readable = [b"ann.reader", b"example.net", b"autumn-2026", b"shop.example", b"utm_source"]
    for token in found:
        raw = unb64(token)
        # Whatever alignment a reader tries: base64 at each offset of the raw bytes.
        for clear in readable:
            assert clear not in raw
            assert clear.decode() not in token
        assert raw[0] == VERSION  # the only byte in clear


def test_tokens_are_exactly_as_long_as_their_claims() -> None:
    # No redundant byte: version + head + campaign + (link + URL) + recipient + 16-byte tag.
    campaign = b"autumn-2026"
    for token in sample_tokens([next(sample.recipients(1))]):
        claims = verify(token, sample.SECRET)
        size = 1 + 1 + 1 + len(campaign) + 1 + 16  # recipient id 0: one byte
        if claims.kind == "click":
            assert claims.url is not None
            url = claims.url.removeprefix("https://").encode()
            size += 1 + (1 if len(url) < 128 else 2) + len(url)
        assert len(unb64(token)) == size, claims


def test_sample_token_lengths() -> None:
    """The sample campaign's tokens for 1,000 recipients, in characters. With the old
    signed MessagePack tokens: open and unsubscribe 46 to 48, clicks 82 to 168 (133 on
    average); now 42 to 43, and 70 to 154 (119)."""
    lengths: dict[str, list[int]] = {"click": [], "open": [], "unsubscribe": []}
    for token in set(sample_tokens(list(sample.recipients(1000)))):
        lengths[verify(token, sample.SECRET).kind].append(len(token))
    assert max(lengths["open"]) <= 43 and max(lengths["unsubscribe"]) <= 43
    assert max(lengths["click"]) <= 154
    assert sum(lengths["click"]) / len(lengths["click"]) < 120


def old_token(secret: str) -> str:
    """A version 1 token: MessagePack claims in clear, then a truncated HMAC."""
    payload = msgspec.msgpack.encode((1, 2, "autumn-2026", 0, None, 7))
    return b64(payload + hmac.digest(secret.encode(), payload, hashlib.sha256)[:16])


def test_old_and_unknown_versions_are_refused() -> None:
    with pytest.raises(TokenError, match="unknown token version 150 "):
        verify(old_token(sample.SECRET), sample.SECRET)  # 0x96: a MessagePack array of 6
    raw = bytearray(unb64(sample_tokens([next(sample.recipients(1))])[0]))
    for version in (0, 1, 3, 255):
        raw[0] = version
        with pytest.raises(TokenError, match=f"unknown token version {version} "):
            verify(b64(bytes(raw)), sample.SECRET)


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "data:text/html,x", "vbscript:x", "https://a.example/\r\nX: y"]
)
def test_a_sealed_url_that_is_not_http_is_never_a_redirect_target(url: str) -> None:
    # Only the secret's holder can seal a token; if one ever sealed such a URL (a bug,
    # another program), verify refuses it rather than hand it to a redirect.
    claims = bytes([1]) + bytes([11]) + b"autumn-2026" + bytes([0, len(url)]) + url.encode()
    sealed = aead(sample.SECRET).encrypt(bytes(12), claims + bytes([7]), bytes([VERSION]))
    with pytest.raises(TokenError, match="not http"):
        verify(b64(bytes([VERSION]) + sealed), sample.SECRET)


def test_a_token_sealed_by_the_reference_verifies() -> None:
    claims = (
        bytes([1 | 2 << 2 | 2 << 4]) + bytes([2]) + b"c1" + bytes([3, 9]) + b"x.example" + b"bob"
    )
    sealed = aead(sample.SECRET).encrypt(bytes(12), claims, bytes([VERSION]))
    assert verify(b64(bytes([VERSION]) + sealed), sample.SECRET) == TokenClaims(
        "click", "c1", "bob", 3, "https://x.example"
    )
