"""Click, open and unsubscribe tracking: which links are rewritten, what their signed
tokens name, and that ferrymail.tracking.verify refuses anything it did not sign."""

from __future__ import annotations

import html as html_module
import re
from urllib.parse import urlsplit

import ferrymail
import pytest
from ferrymail import Campaign, Recipient, TokenError, Tracking, Unsubscribe
from ferrymail.tracking import TokenClaims, verify
from support import (
    BASE64URL,
    SECRET,
    SENDER,
    TRACK,
    UNSUB,
    UNSUBSCRIBE_SECRET,
    clicks,
    content,
    leaf_parts,
    list_unsubscribe,
    parse,
    pixel_tokens,
    rendered,
    tokens,
    tracking,
)

SHOP = "https://shop.example.com/?utm_source=news&utm_campaign=autumn"
HTML = """<html><head><title>t</title></head><body>
<p><a href="https://shop.example.com/?utm_source=news&amp;utm_campaign=autumn">Shop</a></p>
<p><a class="btn" href='https://shop.example.com/jackets'>Jackets</a>
<a href=https://shop.example.com/boots>Boots</a>
<A HREF="HTTP://Shop.Example.com/Upper">Upper</A>
<a href="{{ product_url }}">From a variable</a>
<a href="https://shop.example.com/jackets">Jackets again</a></p>
<p><a href="mailto:help@example.com">Mail</a> <a href="tel:+15555550100">Call</a>
<a href="#top">Top</a> <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>
</body></html>
"""
HTML_URLS = [
    SHOP,
    "https://shop.example.com/jackets",
    "https://shop.example.com/boots",
    "HTTP://Shop.Example.com/Upper",
    "https://shop.example.com/p/42?size=m&colour=blue",
]
TEXT = f"""Shop: {SHOP}
Jackets: https://shop.example.com/jackets.
Only in text: (https://shop.example.com/text-only)
Write to mailto:help@example.com or call tel:+15555550100.
Unsubscribe: {{{{ unsubscribe_url }}}}
"""
VARS = {"product_url": "https://shop.example.com/p/42?size=m&colour=blue"}


def campaign(**overrides: object) -> Campaign:
    spec: dict[str, object] = {
        "id": "autumn-2026",
        "sender": SENDER,
        "from_": "Ferry <news@example.com>",
        "subject": "Autumn",
        "html": HTML,
        "text": TEXT,
        "tracking": tracking(),
        "unsubscribe": Unsubscribe(url=UNSUB, mailto="unsubscribe@example.com"),
    }
    spec.update(overrides)
    return Campaign(**spec)  # type: ignore[arg-type]


def parts(c: Campaign, recipient: Recipient) -> tuple[str, str]:
    text, html = leaf_parts(parse(rendered(c, recipient)))
    return content(text), content(html)


@pytest.mark.parametrize(
    ("recipient", "named"),
    [
        (Recipient("ann@example.com", VARS, id=42), 42),
        (Recipient("ann@example.com", VARS, id="crm-0042"), "crm-0042"),
        (Recipient("ann@example.com", VARS, id=-(2**63)), -(2**63)),
        (Recipient("ann@example.com", VARS), "ann@example.com"),
    ],
    ids=["int-id", "str-id", "min-int-id", "no-id"],
)
def test_click_tokens_name_campaign_recipient_link_and_url(
    recipient: Recipient, named: int | str
) -> None:
    text, html = parts(campaign(), recipient)
    html_claims = clicks(html)
    assert [c.url for c in html_claims] == [*HTML_URLS[:4], HTML_URLS[4], HTML_URLS[1]]
    for claims in html_claims + clicks(text):
        assert claims.kind == "click"
        assert claims.campaign == "autumn-2026"
        assert claims.recipient == named


def test_links_are_numbered_by_distinct_url_in_order_of_first_appearance() -> None:
    text, html = parts(campaign(), Recipient("ann@example.com", VARS, id=1))
    numbers = {c.url: c.link for c in clicks(html) + clicks(text)}
    # Each distinct URL has one number, in both parts, in order of first appearance.
    for claims in clicks(html) + clicks(text):
        assert claims.link == numbers[claims.url]
    urls = [*HTML_URLS, "https://shop.example.com/text-only"]
    assert [numbers[u] for u in urls] == list(range(len(urls)))


def test_text_links_keep_surrounding_punctuation() -> None:
    text, _ = parts(campaign(), Recipient("ann@example.com", VARS))
    jackets, only = (m for m in text.splitlines() if m.startswith(("Jackets:", "Only in text:")))
    assert re.fullmatch(r"Jackets: " + re.escape(TRACK) + r"[A-Za-z0-9_-]+\.", jackets)
    assert re.fullmatch(r"Only in text: \(" + re.escape(TRACK) + r"[A-Za-z0-9_-]+\)", only)
    assert [c.url for c in clicks(text)] == [
        SHOP,
        "https://shop.example.com/jackets",
        "https://shop.example.com/text-only",
    ]


def test_mailto_tel_fragment_and_unsubscribe_links_are_left_alone() -> None:
    message = rendered(campaign(), Recipient("ann@example.com", VARS))
    msg = parse(message)
    text, html = (content(p) for p in leaf_parts(msg))
    url, _ = list_unsubscribe(msg)
    assert '<a href="mailto:help@example.com">Mail</a>' in html
    assert '<a href="tel:+15555550100">Call</a>' in html
    assert '<a href="#top">Top</a>' in html
    assert f'<a href="{url}">Unsubscribe</a>' in html
    assert "Write to mailto:help@example.com or call tel:+15555550100." in text
    assert f"Unsubscribe: {url}" in text
    assert all(c.url != url for c in clicks(html) + clicks(text))


def test_open_pixel_sits_before_body_end_and_verifies_as_open() -> None:
    _, html = parts(campaign(), Recipient("ann@example.com", VARS, id=42))
    (token,) = pixel_tokens(html)
    assert re.search(r'style="display:none">\n?</body>', html)
    assert html.index(token) > html.index("Unsubscribe</a>")
    assert verify(token, SECRET) == TokenClaims(
        kind="open", campaign="autumn-2026", recipient=42, link=None, url=None
    )


def test_list_unsubscribe_tokens_verify_as_unsubscribe() -> None:
    c = campaign(
        unsubscribe=Unsubscribe(
            url=UNSUB, mailto="unsubscribe@example.com", secret=UNSUBSCRIBE_SECRET
        )
    )
    msg = parse(rendered(c, Recipient("ann@example.com", VARS, id="crm-7")))
    url, mailto = list_unsubscribe(msg)
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    (url_token,) = tokens(url, UNSUB)
    assert url == UNSUB + url_token
    expected = TokenClaims(
        kind="unsubscribe", campaign="autumn-2026", recipient="crm-7", link=None, url=None
    )
    assert verify(url_token, UNSUBSCRIBE_SECRET) == expected
    mailto_token = re.fullmatch(
        r"mailto:unsubscribe@example\.com\?subject=unsubscribe-([A-Za-z0-9_-]+)", mailto
    )
    assert mailto_token
    assert verify(mailto_token.group(1), UNSUBSCRIBE_SECRET) == expected
    # Unsubscribe tokens are signed with the unsubscribe secret, not the tracking one.
    with pytest.raises(TokenError):
        verify(url_token, SECRET)


def test_unsubscribe_uses_the_tracking_secret_when_it_has_none() -> None:
    msg = parse(rendered(campaign(), Recipient("ann@example.com", VARS, id=5)))
    url, _ = list_unsubscribe(msg)
    assert verify(url.removeprefix(UNSUB), SECRET).kind == "unsubscribe"


def test_mailto_only_unsubscribe_has_no_one_click_header() -> None:
    c = campaign(
        html="<p>hi</p>",
        text="hi",
        unsubscribe=Unsubscribe(mailto="unsubscribe@example.com"),
    )
    msg = parse(rendered(c, Recipient("ann@example.com")))
    (mailto,) = list_unsubscribe(msg)
    assert mailto.startswith("mailto:unsubscribe@example.com?subject=unsubscribe-")
    assert msg["List-Unsubscribe-Post"] is None


def test_url_only_unsubscribe() -> None:
    c = campaign(unsubscribe=Unsubscribe(url=UNSUB, secret=UNSUBSCRIBE_SECRET))
    msg = parse(rendered(c, Recipient("ann@example.com", VARS)))
    (url,) = list_unsubscribe(msg)
    assert verify(url.removeprefix(UNSUB), UNSUBSCRIBE_SECRET).kind == "unsubscribe"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_unsubscribe_tokens_differ_per_recipient() -> None:
    urls = []
    for r in ferrymail.render(
        campaign(), [Recipient(f"u{i}@example.com", VARS, id=i) for i in range(20)]
    ):
        assert isinstance(r, ferrymail.RenderedMessage)
        urls.append(list_unsubscribe(parse(r))[0])
    assert len(set(urls)) == 20
    assert [verify(u.removeprefix(UNSUB), SECRET).recipient for u in urls] == list(range(20))


def test_tokens_signed_with_another_secret_are_refused() -> None:
    text, html = parts(campaign(), Recipient("ann@example.com", VARS, id=42))
    found = tokens(text) + tokens(html)
    assert found
    for token in found:
        verify(token, SECRET)
        verify(token, SECRET.encode())
        for wrong in (SECRET + "!", SECRET[:-1], "another-secret-entirely-0123", b""):
            with pytest.raises(TokenError):
                verify(token, wrong)


def test_every_single_character_change_is_detected() -> None:
    text, html = parts(campaign(), Recipient("ann@example.com", VARS, id=42))
    accepted = []
    for token in (tokens(text)[0], pixel_tokens(html)[0]):
        for i, original in enumerate(token):
            for replacement in BASE64URL:
                if replacement == original:
                    continue
                tampered = token[:i] + replacement + token[i + 1 :]
                try:
                    verify(tampered, SECRET)
                except TokenError:
                    continue
                accepted.append(f"{token} with {original!r} at {i} -> {replacement!r}")
    assert accepted == []


@pytest.mark.parametrize(
    "token",
    ["", "a", "!!!!", "lgEB", "=" * 8, "A" * 200],
)
def test_garbage_is_refused(token: str) -> None:
    with pytest.raises(TokenError) as info:
        verify(token, SECRET)
    assert isinstance(info.value, ferrymail.Error)
    assert isinstance(info.value, ValueError)


def test_truncated_and_extended_tokens_are_refused() -> None:
    text, _ = parts(campaign(), Recipient("ann@example.com", VARS, id=42))
    token = tokens(text)[0]
    for tampered in (token[:-1], token[:-4], token + "A", token + "AAAA", token[1:]):
        with pytest.raises(TokenError):
            verify(tampered, SECRET)


def test_clicks_off_leaves_links_alone_but_keeps_the_pixel() -> None:
    c = campaign(tracking=Tracking(base_url=TRACK, secret=SECRET, clicks=False))
    text, html = parts(c, Recipient("ann@example.com", VARS, id=1))
    assert tokens(text) == []
    assert clicks(html) == []
    assert f"Shop: {SHOP}\n" in text
    assert "<a class=\"btn\" href='https://shop.example.com/jackets'>" in html
    (token,) = pixel_tokens(html)
    assert verify(token, SECRET).kind == "open"


def test_opens_off_has_no_pixel_but_tracks_clicks() -> None:
    c = campaign(tracking=Tracking(base_url=TRACK, secret=SECRET, opens=False))
    text, html = parts(c, Recipient("ann@example.com", VARS, id=1))
    assert pixel_tokens(html) == []
    assert "<img" not in html
    assert {c.kind for c in clicks(html) + clicks(text)} == {"click"}
    assert len(clicks(html)) == 6


def test_no_tracking_leaves_the_body_as_rendered() -> None:
    c = campaign(tracking=None, unsubscribe=Unsubscribe(url=UNSUB, secret=UNSUBSCRIBE_SECRET))
    text, html = parts(c, Recipient("ann@example.com", VARS))
    assert TRACK not in text + html
    assert f"Shop: {SHOP}\n" in text
    assert '<a href="https://shop.example.com/?utm_source=news&amp;utm_campaign=autumn">' in html
    assert "<img" not in html


def test_tracked_href_is_html_escaped() -> None:
    _, html = parts(campaign(), Recipient("ann@example.com", VARS))
    hrefs = [m[1] for m in re.findall(r"""href=(["'])(.*?)\1""", html, re.IGNORECASE)]
    assert all("<" not in h and ">" not in h for h in hrefs)
    assert sum(h.startswith(TRACK) for h in hrefs) == 6


def test_long_urls_survive_in_their_tokens() -> None:
    long_url = "https://shop.example.com/search?q=" + "ü%20x&y=" * 400
    c = campaign(html='<a href="{{ product_url }}">x</a>', text="{{ product_url }}")
    text, html = parts(c, Recipient("ann@example.com", {"product_url": long_url}, id=3))
    (text_click,) = clicks(text)
    (html_click,) = clicks(html)
    assert text_click.url == html_click.url == long_url
    assert text_click.link == html_click.link


def test_unsubscribe_url_with_a_query_keeps_it_after_the_token() -> None:
    base = "https://t.example.com/u?list=autumn&src=mail"
    c = campaign(unsubscribe=Unsubscribe(url=base, secret=UNSUBSCRIBE_SECRET))
    msg = parse(rendered(c, Recipient("ann@example.com", VARS, id=9)))
    (url,) = list_unsubscribe(msg)
    split = urlsplit(url)
    assert (split.scheme, split.netloc, split.query) == (
        "https",
        "t.example.com",
        "list=autumn&src=mail",
    )
    prefix, token = split.path.rsplit("/", 1)
    assert prefix == "/u"
    text, html = (content(p) for p in leaf_parts(msg))
    assert f"Unsubscribe: {url}" in text
    (href,) = re.findall(r'<a href="([^"]*)">Unsubscribe</a>', html)
    assert html_module.unescape(href) == url
    assert all(claims.url != url for claims in clicks(text) + clicks(html))
    assert verify(token, UNSUBSCRIBE_SECRET).recipient == 9
