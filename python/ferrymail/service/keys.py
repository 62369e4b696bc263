"""API keys: making a token, and the hash the spool keeps of it."""

from __future__ import annotations

import hashlib
import hmac
import secrets

#: What every token starts with, so that a leaked one is recognisable (secret scanners).
PREFIX = "fm_"


def new_token() -> str:
    """A new API key: 256 random bits, URL-safe."""
    return PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> bytes:
    """What the spool stores and looks a key up by.

    A plain SHA-256 is the right hash here, not a password hash (bcrypt, Argon2): the
    token is 256 random bits, so nobody can guess it from its hash however fast the hash
    is; a slow hash only protects low-entropy secrets that people choose."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def same(stored: bytes, presented: bytes) -> bool:
    """Compares two digests in constant time (the lookup found the row by this digest;
    this keeps the final check free of timing differences too)."""
    return hmac.compare_digest(stored, presented)
