"""Standard Webhooks signatures: the headers a batch is POSTed with, so that a receiver
verifies it with that spec's libraries (`standardwebhooks.Webhook(secret).verify`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """ "v1,<base64 HMAC-SHA256 of '{id}.{timestamp}.{body}'>" (the spec's "v1" scheme)."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def headers(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """webhook-id, webhook-timestamp (seconds, of this attempt) and webhook-signature:
    one signature per key, space-separated (a receiver holding either key verifies it,
    so a secret is rotated without a gap)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(k, msg_id, timestamp, body) for k in keys),
    }
