"""The API's JSON bodies as msgspec structs: decoding validates them, and the OpenAPI
document's schemas are generated from them."""

from __future__ import annotations

from typing import Any

import msgspec


class TrackingIn(msgspec.Struct, forbid_unknown_fields=True):
    base_url: str
    secret: str
    opens: bool = True
    clicks: bool = True


class UnsubscribeIn(msgspec.Struct, forbid_unknown_fields=True):
    url: str | None = None
    mailto: str | None = None
    secret: str | None = None


class VerpIn(msgspec.Struct, forbid_unknown_fields=True):
    secret: str


class CampaignIn(msgspec.Struct, forbid_unknown_fields=True, rename={"from_": "from"}):
    """A campaign file's keys, templates inline (`html`, `text`: the template text), the
    id from the URL. `dkim`: names of keys in the server's key store."""

    sender: str
    from_: str
    subject: str
    html: str | None = None
    text: str | None = None
    reply_to: str | None = None
    headers: dict[str, str] | None = None
    tracking: TrackingIn | None = None
    unsubscribe: UnsubscribeIn | None = None
    verp: bool | VerpIn = False
    dkim: list[str] = []
    pool: str | None = None


class CampaignStored(msgspec.Struct):
    """The campaign is in the spool (durably), compiled, and takes recipients. PUT again
    with the same campaign changes nothing; with another, it replaces the stored one
    while none of its recipients was attempted, else 409."""

    id: str


class Rejected(msgspec.Struct):
    #: The recipient's line (JSON lines) or element (a JSON array), from 1.
    line: int
    reason: str


class SubmitOut(msgspec.Struct):
    accepted: int
    duplicates: int
    rejected: int
    suppressed: int
    #: The first few lines refused, and why.
    reasons: list[Rejected]


class Cancelled(msgspec.Struct):
    id: str
    cancelled: int


class Flushed(msgspec.Struct):
    flushed: int


class SuppressionIn(msgspec.Struct, forbid_unknown_fields=True):
    reason: str = "added by the API"


class Suppression(msgspec.Struct):
    address: str
    suppressed: bool
    reason: str | None = None
    added_at: float | None = None


class ErrorOut(msgspec.Struct):
    error: str
    detail: Any = None


class TemplateErrorDetail(msgspec.Struct):
    message: str
    part: str
    line: int
    column: int
