"""Reads and makes VERP tokens: the envelope sender's `bounces+TOKEN@domain` names the
spool row of the message's recipient (see rust/src/render/verp.rs).

A token is lower-case base32 of AES-256-GCM-SIV(row id) and its tag, under a key
derived from the campaign's VERP secret with HKDF-SHA256 (salt and info of its own, so
it is not the tracking tokens' key even for the same secret). The inbound listener
takes the token out of the address a bounce came to
(`ferrymail.feedback.addresses.verp_token`), opens it with `open_token`, and looks the
row up in the spool.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import _core


def open_token(token: str, secrets: Sequence[str | bytes]) -> int | None:
    """The spool row id `token` names, in any letter case, under the first of `secrets`
    (give the current secret and the ones before it while rotating) that opens it;
    None when none does: malformed, tampered, or sealed with another secret."""
    if isinstance(secrets, str | bytes):
        raise TypeError("secrets is a list of secrets, not one secret: give [secret]")
    keys = [_secret_bytes(s) for s in secrets]
    if not isinstance(token, str):
        return None
    return _core.open_verp_token(token, keys)


def seal_token(row_id: int, secret: str | bytes) -> str:
    """The token the renderer writes for spool row `row_id` under `secret` (for tests
    and tools)."""
    if isinstance(row_id, bool) or not isinstance(row_id, int) or not 0 <= row_id < 2**64:
        raise ValueError(f"row_id must be an integer from 0 to 2**64 - 1, not {row_id!r:.40}")
    return _core.seal_verp_token(row_id, _secret_bytes(secret))


def _secret_bytes(secret: str | bytes) -> bytes:
    if isinstance(secret, str):
        return secret.encode()
    if isinstance(secret, bytes):
        return secret
    raise TypeError(f"a secret is text or bytes, not {type(secret).__name__}")
