"""Campaigns, spools and real tokens for the tracking server's tests."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import ferrymail
import msgspec
from ferrymail.spool import SqliteSpool
from ferrymail.submit import rows
from ferrymail.tracking import verify
from ferrymail.web import WebConfig

SECRET = "web-test-secret-0123456789"
OLD_SECRET = "web-old-secret-0123456789"
UNSUBSCRIBE_SECRET = "web-unsub-secret-0123456789"
TRACK = "https://t.example.com/t"
UNSUB = "https://t.example.com/u"
URLS = ["https://shop.example.com/?a=1&b=2", "http://shop.example.com/boots"]
HTML = (
    '<html><body><p><a href="https://shop.example.com/?a=1&amp;b=2">Shop</a>'
    ' <a href="http://shop.example.com/boots">Boots</a></p>'
    '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>'
)
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile"


def campaign(
    campaign_id: str = "news-1", *, list_id: str | None = None, secret: str = SECRET
) -> ferrymail.Campaign:
    return ferrymail.Campaign(
        id=campaign_id,
        sender="bounces@news.example.com",
        from_="News <news@example.com>",
        subject="News",
        html=HTML,
        tracking=ferrymail.Tracking(base_url=TRACK, secret=secret),
        unsubscribe=ferrymail.Unsubscribe(url=UNSUB, secret=UNSUBSCRIBE_SECRET),
        headers={} if list_id is None else {"List-Id": list_id},
    )


def config(**overrides: object) -> WebConfig:
    fields: dict[str, object] = {
        "tracking_secrets": [SECRET],
        "unsubscribe_secrets": [UNSUBSCRIBE_SECRET],
        "tracking_path": urlsplit(TRACK).path,
        "unsubscribe_path": urlsplit(UNSUB).path,
    }
    fields.update(overrides)
    return WebConfig(**fields)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Links:
    """The paths a recipient's message points at: its clicks (in link order), its open
    pixel and its one-click unsubscribe."""

    clicks: list[str]
    open: str
    unsubscribe: str


def links(c: ferrymail.Campaign, recipient: ferrymail.Recipient) -> Links:
    (message,) = ferrymail.render(c, [recipient])
    assert isinstance(message, ferrymail.RenderedMessage), message
    data = message.data.decode()
    found = dict.fromkeys(re.findall(re.escape(TRACK) + r"/([A-Za-z0-9_-]+)", data))
    clicks, pixel = [], []
    for token in found:
        claims = verify(token, c.tracking.secret)  # type: ignore[union-attr]
        (clicks if claims.kind == "click" else pixel).append(f"/t/{token}")
    (unsubscribe,) = dict.fromkeys(re.findall(re.escape(UNSUB) + r"/([A-Za-z0-9_-]+)", data))
    return Links(clicks, pixel[0], f"/u/{unsubscribe}")


def spool_with(
    path: Path, campaigns: list[ferrymail.Campaign], recipients: list[ferrymail.Recipient]
) -> SqliteSpool:
    """A spool with the campaigns and their recipients queued (as submit leaves them)."""
    spool = SqliteSpool(path)
    for c in campaigns:
        spool.put_campaign(c.id, msgspec.msgpack.encode(c.spec))
        spool.insert(c.id, rows(recipients, set()))
    return spool
