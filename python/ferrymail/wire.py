"""The msgspec structs that cross between Python and Rust; rust/src/wire.rs mirrors them.

Every struct is `array_like` (a MessagePack array in field order) and frozen. Add fields
only at the end, with defaults: rmp-serde rejects trailing elements it does not know.
Times cross as integer epoch milliseconds, binary as bytes.
"""

from __future__ import annotations

from typing import Any

import msgspec


class TrackingSpec(msgspec.Struct, array_like=True, frozen=True):
    base_url: str
    secret: bytes
    opens: bool
    clicks: bool


class UnsubscribeSpec(msgspec.Struct, array_like=True, frozen=True):
    url: str | None
    mailto: str | None
    secret: bytes


class DkimKeySpec(msgspec.Struct, array_like=True, frozen=True):
    domain: str
    selector: str
    private_key: str
    algorithm: str | None
    headers: list[str] | None
    canonicalization: str


class CampaignSpec(msgspec.Struct, array_like=True, frozen=True):
    id: str
    sender: str
    from_: str
    subject: str
    html: str | None
    text: str | None
    reply_to: str | None
    headers: list[tuple[str, str]]
    tracking: TrackingSpec | None
    unsubscribe: UnsubscribeSpec | None
    dkim: list[DkimKeySpec] = []


class Recipient(msgspec.Struct, array_like=True, frozen=True):
    """One recipient: the address, the variables its message is personalised with, and
    the ESP's own key for it (`id`, a string or an integer), which tokens, Message-IDs
    and events name. Without an id, they name the address."""

    address: str
    vars: dict[str, Any] = {}
    id: str | int | None = None


class RenderOutcome(msgspec.Struct, array_like=True, frozen=True, gc=False):
    envelope_from: str
    data: bytes | None
    message_id: str | None
    error: str | None
    smtputf8: bool
    rcpt_to: str | None
