"""A campaign the spool has, compiled again from its stored spec: POST …/recipients after a
restart of the server needs no PUT again."""

from __future__ import annotations

import msgspec

from ..campaign import Campaign, DkimKey, Tracking, Unsubscribe, Verp
from ..wire import CampaignSpec

_specs = msgspec.msgpack.Decoder(CampaignSpec)


def from_spec(stored: bytes) -> Campaign | None:
    """The Campaign whose spec is `stored`, or None when it cannot be made again
    exactly (a DKIM key set by From domain, which the API does not make). The result's
    spec is checked equal to the stored one: a campaign made again must send what the
    stored one would."""
    spec = _specs.decode(stored)
    if any(k.for_domain is not None for k in spec.dkim):
        return None
    tracking = spec.tracking
    unsubscribe = spec.unsubscribe
    campaign = Campaign(
        id=spec.id,
        sender=spec.sender,
        from_=spec.from_,
        subject=spec.subject,
        html=spec.html,
        text=spec.text,
        reply_to=spec.reply_to,
        headers=dict(spec.headers),
        tracking=None
        if tracking is None
        else Tracking(tracking.base_url, tracking.secret, tracking.opens, tracking.clicks),
        unsubscribe=None
        if unsubscribe is None
        else Unsubscribe(unsubscribe.url, unsubscribe.mailto, unsubscribe.secret or None),
        verp=False if spec.verp is None else Verp(spec.verp.secret),
        dkim=[
            DkimKey(
                k.domain,
                k.selector,
                k.private_key,
                k.algorithm,
                k.headers,
                k.canonicalization,
                k.aligned,
            )
            for k in spec.dkim
        ],
        pool=spec.pool,
    )
    return campaign if campaign.spec == spec else None
