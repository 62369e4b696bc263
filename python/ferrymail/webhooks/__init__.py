"""Webhooks: events POSTed to the ESP's endpoints in signed batches (Standard Webhooks),
from an outbox in the spool: durable, retried, at least once (see sender.py)."""

from .config import EVENT_TYPES, Webhook, WebhookConfigError, decode_secret, load, loads
from .outbox import Outbox, event_json
from .sender import WebhookSender, backoff
from .sign import headers, signature

__all__ = [
    "EVENT_TYPES",
    "Outbox",
    "Webhook",
    "WebhookConfigError",
    "WebhookSender",
    "backoff",
    "decode_secret",
    "event_json",
    "headers",
    "load",
    "loads",
    "signature",
]
