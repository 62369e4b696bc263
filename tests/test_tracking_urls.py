"""Links that are always links: how tracking and unsubscribe URLs are joined from their
base, which bases are refused, and that no link but http(s) is ever rewritten."""

from __future__ import annotations

import html as html_module
import re
from urllib.parse import urlsplit

import pytest
from ferrymail import Campaign, ConfigError, Recipient, Tracking, Unsubscribe
from ferrymail.tracking import verify
from support import SECRET, SENDER, content, leaf_parts, list_unsubscribe, parse, rendered

HTML = '<p><a href="https://shop.example.com/a">A</a> <a href="{{ unsubscribe_url }}">U</a></p>'
TEXT = "See https://shop.example.com/b\nUnsubscribe: {{ unsubscribe_url }}\n"


def campaign(
    base_url: str = "https://t.example.net/c/",
    unsubscribe_url: str | None = "https://t.example.net/u/",
    html: str = HTML,
    text: str = TEXT,
    headers: dict[str, str] | None = None,
) -> Campaign:
    return Campaign(
        id="links-2026",
        sender=SENDER,
        from_="Ferry <news@example.com>",
        subject="Links",
        html=html,
        text=text,
        headers=headers,
        tracking=Tracking(base_url=base_url, secret=SECRET),
        unsubscribe=Unsubscribe(url=unsubscribe_url, mailto="unsubscribe@example.com"),
    )


def message_urls(c: Campaign) -> tuple[list[str], str, str]:
    """Every URL in the message's hrefs, img srcs and text, the unsubscribe URL, and
    the text part."""
    msg = parse(rendered(c, Recipient("ann@example.com", id=7)))
    text, html = (content(p) for p in leaf_parts(msg))
    found = [html_module.unescape(u) for u in re.findall(r'(?:href|src)="([^"]*)"', html)]
    found += re.findall(r"https?://\S+", text)
    return found, list_unsubscribe(msg)[0], text


@pytest.mark.parametrize(
    ("base", "path", "query"),
    [
        ("https://t.example.net", "", ""),
        ("https://t.example.net/", "", ""),
        ("https://t.example.net/c", "/c", ""),
        ("https://t.example.net/c/", "/c", ""),
        ("https://t.example.net/c?src=mail&v=1", "/c", "src=mail&v=1"),
        ("https://t.example.net:8443/c/d", "/c/d", ""),
    ],
)
def test_the_token_is_a_path_segment_of_its_own(base: str, path: str, query: str) -> None:
    urls, _, _ = message_urls(campaign(base_url=base))
    tracked = [u for u in urls if "t.example.net" in u and "/u/" not in u]
    assert len(tracked) == 3  # a click in each part, and the pixel
    kinds = []
    for url in tracked:
        split = urlsplit(url)
        assert split.scheme == "https"
        assert split.netloc == urlsplit(base).netloc
        assert split.query == query
        prefix, token = split.path.rsplit("/", 1)
        assert prefix == path
        claims = verify(token, SECRET)
        assert (claims.campaign, claims.recipient) == ("links-2026", 7)
        kinds.append(claims.kind)
    assert sorted(kinds) == ["click", "click", "open"]


@pytest.mark.parametrize("base", ["https://t.example.net/u", "https://t.example.net/u/"])
def test_unsubscribe_url_without_a_slash_gets_one(base: str) -> None:
    urls, unsubscribe, text = message_urls(campaign(unsubscribe_url=base))
    split = urlsplit(unsubscribe)
    prefix, token = split.path.rsplit("/", 1)
    assert (split.netloc, prefix) == ("t.example.net", "/u")
    assert verify(token, SECRET).kind == "unsubscribe"
    assert unsubscribe in urls
    assert f"Unsubscribe: {unsubscribe}\n" in text


@pytest.mark.parametrize(
    "base",
    [
        "t.example.net/c/",
        "//t.example.net/c/",
        "/c/",
        "ftp://t.example.net/",
        "javascript:alert(1)//",
        "https://",
        "https:///c/",
        "https://t.example.net/c/#frag",
        "https://user:pw@t.example.net/c/",
        "https://t.example.net:port/c/",
        "https://t.example.net\\c",
    ],
)
def test_a_base_that_is_not_an_absolute_http_url_is_refused(base: str) -> None:
    with pytest.raises(ConfigError) as info:
        campaign(base_url=base)
    assert info.value.field == "tracking.base_url"
    assert str(info.value).startswith("tracking.base_url: ")
    with pytest.raises(ConfigError) as info:
        campaign(unsubscribe_url=base)
    assert info.value.field == "unsubscribe.url"


def test_one_click_unsubscribe_needs_https() -> None:
    with pytest.raises(ConfigError) as info:
        campaign(unsubscribe_url="http://t.example.net/u/")
    assert info.value.field == "unsubscribe.url"
    assert "RFC 8058" in str(info.value) and "https" in str(info.value)
    # Tracking links may be plain http (a local tracking server, say).
    urls, _, _ = message_urls(campaign(base_url="http://127.0.0.1:8000/c"))
    assert any(u.startswith("http://127.0.0.1:8000/c/") for u in urls)


# Links that must never be rewritten: other schemes in every spelling a browser
# accepts (case, leading blanks and control characters, character references).
NOT_HTTP = [
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    "  javascript:alert(1)",
    "\tjavascript:alert(1)",
    "\x01javascript:alert(1)",
    "java\tscript:alert(1)",
    "javascript&#58;alert(1)",
    "javascript&#x3A;alert(1)",
    "&#106;avascript:alert(1)",
    "javascript&colon;alert(1)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "DATA:text/html,<b>x</b>",
    "vbscript:msgbox(1)",
    "VBScript:msgbox(1)",
    "file:///etc/passwd",
    "ftp://ftp.example.com/x",
    "//shop.example.com/protocol-relative",
    "/relative/path",
    "http:/one-slash.example.com",
    "https:no-slashes.example.com",
    "mailto:a@example.com",
    "tel:+15555550100",
    "sms:+15555550100",
    "#top",
    "",
]


@pytest.mark.parametrize("href", NOT_HTTP)
def test_links_that_are_not_http_are_never_rewritten(href: str) -> None:
    escaped = href.replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    anchor = f'<a href="{escaped}">x</a>'
    # Both the planned path (fixed template) and the render-then-scan one (a variable
    # puts markup in the body).
    for html in (f"<p>{anchor}</p>", "<p>{{ markup|safe }}</p>"):
        c = campaign(html=html, text="Hi\n", unsubscribe_url=None)
        msg = parse(rendered(c, Recipient("ann@example.com", {"markup": anchor}, id=1)))
        _, body = (content(p) for p in leaf_parts(msg))
        assert anchor in body, body
        assert body.count("t.example.net") == 1  # the open pixel only


@pytest.mark.parametrize("url", ["javascript:alert(1)", "data:text/plain,x", "vbscript:x"])
def test_text_links_that_are_not_http_are_never_rewritten(url: str) -> None:
    for text in (f"Go {url} now\n", "Go {{ link }} now\n"):
        c = campaign(html=None, text=text, unsubscribe_url=None)
        msg = parse(rendered(c, Recipient("ann@example.com", {"link": url}, id=1)))
        assert content(msg) == f"Go {url} now\n"


def test_odd_spellings_of_http_are_tracked_and_keep_their_url() -> None:
    # What a browser reads as http(s) and our scan does too: the redirect goes to it.
    for href, url in [
        ("HTTPS://Shop.Example.com/A", "HTTPS://Shop.Example.com/A"),
        ("  https://shop.example.com/a  ", "https://shop.example.com/a"),
        ("https&#58;//shop.example.com/a", "https://shop.example.com/a"),
        ("&#104;ttps://shop.example.com/a", "https://shop.example.com/a"),
    ]:
        c = campaign(html=f'<a href="{href}">x</a>', unsubscribe_url=None, text="Hi\n")
        msg = parse(rendered(c, Recipient("ann@example.com", id=1)))
        _, body = (content(p) for p in leaf_parts(msg))
        (tracked,) = re.findall(r'<a href="https://t\.example\.net/c/([A-Za-z0-9_-]+)"', body)
        assert verify(tracked, SECRET).url == url


def test_a_link_with_control_characters_is_left_alone() -> None:
    # A redirect to a URL with a line break in it could split the tracking server's
    # response headers: such a link is not tracked at all.
    anchor = '<a href="https://shop.example.com/a&#10;Set-Cookie:x=1">x</a>'
    c = campaign(html=f"<p>{anchor}</p>", text="Hi\n", unsubscribe_url=None)
    msg = parse(rendered(c, Recipient("ann@example.com", id=1)))
    _, body = (content(p) for p in leaf_parts(msg))
    assert anchor in body


def test_list_id_accompanies_list_unsubscribe() -> None:
    msg = parse(rendered(campaign(), Recipient("ann@example.com", id=1)))
    assert msg["List-Id"] == "<links-2026.news.example.com>"
    own = campaign(headers={"list-id": "Ferry news <news.example.com>"})
    msg = parse(rendered(own, Recipient("ann@example.com", id=1)))
    assert msg.get_all("List-Id") == ["Ferry news <news.example.com>"]


def test_a_link_too_long_to_work_once_tracked_is_left_alone() -> None:
    # Its tracked form would pass the 8 KiB request line common web servers accept.
    fits, too_long = ("https://shop.example.com/?q=" + "x" * n for n in (4000, 4100))
    html = '<a href="{{ a }}">a</a><a href="{{ b }}">b</a>'
    c = campaign(html=html, text="Hi\n", unsubscribe_url=None)
    msg = parse(rendered(c, Recipient("ann@example.com", {"a": fits, "b": too_long}, id=1)))
    _, body = (content(p) for p in leaf_parts(msg))
    (tracked,) = re.findall(r'<a href="https://t\.example\.net/c/([A-Za-z0-9_-]+)">a</a>', body)
    assert verify(tracked, SECRET).url == fits
    assert len(tracked) < 8000
    (untracked,) = re.findall(r'<a href="([^"]*)">b</a>', body)
    assert html_module.unescape(untracked) == too_long  # as written (autoescaped)
