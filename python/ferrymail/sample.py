"""A realistic sample campaign (≈3 KB of HTML and text, 10 links, 3 variables) used by
`ferrymail demo` and the benchmarks, so that both measure the same work."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from .campaign import Campaign, DkimKey, Tracking, Unsubscribe
from .wire import Recipient

SENDER = "bounces@news.example.com"
FROM = "Ferry Outfitters <news@example.com>"
SUBJECT = "{{ first_name }}, your {{ city }} autumn picks are here"
TRACKING_BASE = "https://t.example.com/c/"
UNSUBSCRIBE_BASE = "https://t.example.com/u/"
SECRET = "sample-secret-0123456789abcdef"

_PRODUCTS = [
    ("Waxed canvas jacket", "jackets/waxed-canvas", "189.00"),
    ("Merino crew sweater", "knitwear/merino-crew", "98.00"),
    ("Harbour rain boots", "footwear/harbour-boots", "120.00"),
    ("Fisherman beanie", "accessories/fisherman-beanie", "32.00"),
    ("Deck shoes, leather", "footwear/deck-shoes", "110.00"),
    ("Chart-print scarf", "accessories/chart-scarf", "45.00"),
]

HTML = (
    """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Autumn picks</title>
<style>body{font-family:Georgia,serif;color:#222}a{color:#0b5394}.p{padding:8px 0}</style>
</head><body>
<table width="100%" cellpadding="0" cellspacing="0"><tr><td align="center">
<a href="https://shop.example.com/?utm_source=news&amp;utm_campaign=autumn">
<img src="https://cdn.example.com/logo.png" alt="Ferry Outfitters" width="180"></a>
</td></tr></table>
<h1>Hello {{ first_name }},</h1>
<p>The days are getting shorter in {{ city }}, and the ferries run on winter timetables
again. We picked a few things that keep you warm and dry on deck, and a few that simply
look good at the harbour café. Members like you get free shipping until Sunday.</p>
<p>Your member number is <strong>{{ member_id }}</strong>; quote it in store for the
same prices.</p>
"""
    + "".join(
        f"""<div class="p"><a href="https://shop.example.com/{path}?utm_source=news&amp;utm_campaign=autumn">{name}</a>
 &mdash; ${price}. Built to last, made by people who know the sea.</div>
"""
        for name, path, price in _PRODUCTS
    )
    + """<p>Questions? <a href="mailto:help@example.com">Write to us</a> or call
<a href="tel:+15555550100">+1 555 555 0100</a>.</p>
<p><a href="https://shop.example.com/stores?city={{ city|urlencode }}">Find a store near you</a> ·
<a href="https://shop.example.com/account">Your account</a> ·
<a href="https://example.com/privacy">Privacy</a></p>
<p style="font-size:12px;color:#777">You receive this because you joined Ferry Outfitters.
<a href="{{ unsubscribe_url }}">Unsubscribe</a> at any time. Ferry Outfitters,
1 Pier Road, Harbourtown.</p>
</body></html>
"""
)

TEXT = (
    """Hello {{ first_name }},

The days are getting shorter in {{ city }}, and the ferries run on winter timetables
again. We picked a few things that keep you warm and dry on deck.
Members like you get free shipping until Sunday. Member number: {{ member_id }}.

"""
    + "".join(
        f"* {name}, ${price}: https://shop.example.com/{path}?utm_source=news\n"
        for name, path, price in _PRODUCTS
    )
    + """
Find a store near you: https://shop.example.com/stores
Your account: https://shop.example.com/account

Unsubscribe: {{ unsubscribe_url }}
Ferry Outfitters, 1 Pier Road, Harbourtown.
"""
)

_CITIES = ["Oslo", "Bergen", "Hamburg", "Kiel", "Göteborg", "Halifax", "Seattle", "Zürich"]
_NAMES = ["Ann", "Bo", "Chiara", "Dmitri", "Émilie", "Farah", "Günther", "Hiro", "Ines"]


def campaign(
    campaign_id: str = "autumn-2026", dkim: Sequence[DkimKey] = (), html: str = HTML
) -> Campaign:
    """The sample campaign with click and open tracking and one-click unsubscribe (`html`:
    another HTML part, e.g. a longer one for a benchmark)."""
    return Campaign(
        id=campaign_id,
        sender=SENDER,
        from_=FROM,
        subject=SUBJECT,
        html=html,
        text=TEXT,
        headers={"Feedback-ID": "autumn-2026:news:ferry"},
        tracking=Tracking(base_url=TRACKING_BASE, secret=SECRET),
        unsubscribe=Unsubscribe(url=UNSUBSCRIBE_BASE, mailto="unsubscribe@example.com"),
        dkim=dkim,
    )


def recipients(n: int, domains: int = 50) -> Iterator[Recipient]:
    """n recipients over `domains` domains, with the three variables the templates use."""
    for i in range(n):
        yield Recipient(
            address=f"user{i}@d{i % domains}.example.net",
            vars={
                "first_name": _NAMES[i % len(_NAMES)],
                "city": _CITIES[i % len(_CITIES)],
                "member_id": 100_000 + i,
            },
            id=i,
        )
