"""Campaign, Tracking and Unsubscribe: what an ESP hands over, checked and compiled once."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from . import _core
from .wire import CampaignSpec, TrackingSpec, UnsubscribeSpec

_encoder = msgspec.msgpack.Encoder()


class Tracking(msgspec.Struct, frozen=True):
    """Click and open tracking. Each tracked link becomes `base_url` + a signed token
    naming campaign, recipient, link number and URL; `ferrymail.tracking.verify(token,
    secret)` reads it back."""

    base_url: str
    secret: str | bytes
    opens: bool = True
    clicks: bool = True


class Unsubscribe(msgspec.Struct, frozen=True):
    """List-Unsubscribe (RFC 2369) and one-click unsubscribe (RFC 8058).

    `url` gets a signed per-recipient token appended and is available to the body as
    `{{ unsubscribe_url }}`; `mailto` receives unsubscribe mails whose subject carries
    the token. `secret` signs the tokens; without it the tracking secret is used.
    """

    url: str | None = None
    mailto: str | None = None
    secret: str | bytes | None = None


def _secret_bytes(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else bytes(secret)


class Campaign:
    """One message template for many recipients.

    `sender` is the envelope sender (MAIL FROM); `from_` the From header. `subject`,
    `html`, `text`, `from_`, `reply_to` and header values are Jinja templates, compiled
    here: a syntax error raises `TemplateError` naming the part, line and column, and a
    bad setting raises `ConfigError` naming it.
    """

    __slots__ = ("_inner", "from_", "headers", "html", "id", "reply_to", "sender", "spec",
                 "subject", "text", "tracking", "unsubscribe")

    def __init__(
        self,
        id: str | int,
        sender: str,
        from_: str,
        subject: str,
        html: str | None = None,
        text: str | None = None,
        reply_to: str | None = None,
        headers: Mapping[str, str] | None = None,
        tracking: Tracking | None = None,
        unsubscribe: Unsubscribe | None = None,
    ) -> None:
        self.id = str(id)
        self.sender = sender
        self.from_ = from_
        self.subject = subject
        self.html = html
        self.text = text
        self.reply_to = reply_to
        self.headers = dict(headers or {})
        self.tracking = tracking
        self.unsubscribe = unsubscribe
        self.spec = CampaignSpec(
            id=self.id,
            sender=sender,
            from_=from_,
            subject=subject,
            html=html,
            text=text,
            reply_to=reply_to,
            headers=list(self.headers.items()),
            tracking=_tracking_spec(tracking),
            unsubscribe=_unsubscribe_spec(unsubscribe, tracking),
        )
        self._inner = _core.compile_campaign(_encoder.encode(self.spec))

    def __repr__(self) -> str:
        return f"Campaign(id={self.id!r}, sender={self.sender!r}, subject={self.subject!r})"


def _tracking_spec(tracking: Tracking | None) -> TrackingSpec | None:
    if tracking is None:
        return None
    return TrackingSpec(
        base_url=tracking.base_url,
        secret=_secret_bytes(tracking.secret),
        opens=tracking.opens,
        clicks=tracking.clicks,
    )


def _unsubscribe_spec(
    unsubscribe: Unsubscribe | None, tracking: Tracking | None
) -> UnsubscribeSpec | None:
    if unsubscribe is None:
        return None
    secret = unsubscribe.secret
    if secret is None and tracking is not None:
        secret = tracking.secret
    return UnsubscribeSpec(
        url=unsubscribe.url,
        mailto=unsubscribe.mailto,
        secret=_secret_bytes(secret) if secret is not None else b"",
    )
