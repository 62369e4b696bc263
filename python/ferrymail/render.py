"""ferrymail.render: one campaign and many recipients to one message each, in Rust."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from . import _core
from .campaign import Campaign
from .errors import WireError
from .wire import Recipient, RenderOutcome

_encoder = msgspec.msgpack.Encoder()
_outcomes = msgspec.msgpack.Decoder(list[RenderOutcome])


class RenderedMessage(msgspec.Struct, frozen=True):
    """A recipient's finished message. `data` is exactly what DATA carries (CRLF line
    ends, before dot-stuffing); `rcpt_to` and `envelope_from` are the SMTP envelope."""

    recipient: Recipient
    envelope_from: str
    rcpt_to: str
    data: bytes
    message_id: str
    smtputf8: bool


class RenderError(msgspec.Struct, frozen=True):
    """Why one recipient got no message (bad address, undefined variable, header injection…)."""

    recipient: Recipient
    reason: str


def render(
    campaign: Campaign,
    recipients: Iterable[Recipient | str],
    *,
    threads: int | None = None,
) -> list[RenderedMessage | RenderError]:
    """Renders every recipient, in order: a `RenderedMessage` or a `RenderError` each.

    The work runs in Rust with the GIL released, on every core (`threads=None`), on the
    calling thread only (`threads=1`), or on a pool of `threads` threads.
    """
    batch = [r if isinstance(r, Recipient) else Recipient(r) for r in recipients]
    n_threads = 0 if threads is None else max(1, int(threads))
    try:
        encoded = _core.render(campaign._inner, _encoder.encode(batch), n_threads)
        outcomes = _outcomes.decode(encoded)
    except (TypeError, ValueError, OverflowError, WireError):
        # A recipient the wire cannot carry (vars holding an arbitrary object, an id
        # beyond 64 bits) must fail alone: retry one by one to find it.
        return [_render_alone(campaign, r) for r in batch]
    return [_result(r, o) for r, o in zip(batch, outcomes, strict=True)]


def _render_alone(campaign: Campaign, recipient: Recipient) -> RenderedMessage | RenderError:
    try:
        (outcome,) = _outcomes.decode(
            _core.render(campaign._inner, _encoder.encode([recipient]), 1)
        )
    except (TypeError, ValueError, OverflowError, WireError) as e:
        return RenderError(recipient, f"recipient cannot be encoded: {e}")
    return _result(recipient, outcome)


def _result(recipient: Recipient, o: RenderOutcome) -> RenderedMessage | RenderError:
    if o.data is None or o.message_id is None or o.rcpt_to is None:
        return RenderError(recipient, o.error or "no message was produced")
    return RenderedMessage(recipient, o.envelope_from, o.rcpt_to, o.data, o.message_id, o.smtputf8)
