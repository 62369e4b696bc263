"""Helpers the renderer tests share: parse a rendered message back, check its wire form,
and find, verify and undo tracked links."""

from __future__ import annotations

import email.policy
import re
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.parser import BytesParser, Parser

import ferrymail
from ferrymail.tracking import TokenClaims, verify

SECRET = "test-secret-0123456789abcdef"
UNSUBSCRIBE_SECRET = "unsubscribe-secret-0123456789"
TRACK = "https://t.example.com/c/"
UNSUB = "https://t.example.com/u/"
SENDER = "bounces@news.example.com"

#: RFC 5322 §2.1.1: at most 998 octets a line, before the CRLF.
MAX_LINE = 998
BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

_BYTES_PARSER = BytesParser(policy=email.policy.default)
_TEXT_PARSER = Parser(policy=email.policy.default)
_BARE_CR_OR_LF = re.compile(rb"\r(?!\n)|(?<!\r)\n")
_PIXEL = re.compile(
    r'<img src="' + re.escape(TRACK) + r'([A-Za-z0-9_-]+)" width="1" height="1" alt=""'
    r' style="display:none">'
)


def tracking(**kwargs: object) -> ferrymail.Tracking:
    return ferrymail.Tracking(base_url=TRACK, secret=SECRET, **kwargs)  # type: ignore[arg-type]


def render_one(
    campaign: ferrymail.Campaign, recipient: ferrymail.Recipient | str
) -> ferrymail.RenderedMessage | ferrymail.RenderError:
    (result,) = ferrymail.render(campaign, [recipient])
    return result


def rendered(
    campaign: ferrymail.Campaign, recipient: ferrymail.Recipient | str
) -> ferrymail.RenderedMessage:
    result = render_one(campaign, recipient)
    assert isinstance(result, ferrymail.RenderedMessage), result
    return result


def parse(message: ferrymail.RenderedMessage) -> EmailMessage:
    """Parses the message as a receiver would. Without SMTPUTF8 it must be 7-bit; with it,
    the headers may carry raw UTF-8 (RFC 6532), which only the str parser reads."""
    if not message.smtputf8:
        assert message.data.isascii(), "a message without SMTPUTF8 must be 7-bit"
        msg = _BYTES_PARSER.parsebytes(message.data)
    else:
        msg = _TEXT_PARSER.parsestr(message.data.decode("utf-8"))
    assert isinstance(msg, EmailMessage)
    return msg


def assert_wire_clean(data: bytes) -> None:
    """Every line ends in CRLF, no bare CR or LF anywhere, no line over 998 octets."""
    bare = _BARE_CR_OR_LF.search(data)
    assert bare is None, (
        f"bare CR or LF at {bare.start()}: {data[bare.start() - 40 : bare.end() + 40]!r}"
    )
    assert data.endswith(b"\r\n")
    longest = max(data.split(b"\r\n"), key=len)
    assert len(longest) <= MAX_LINE, f"line of {len(longest)} octets: {longest[:120]!r}…"


def header_names(data: bytes) -> list[str]:
    """The field names of the top-level header section, in order, duplicates kept."""
    head = data.split(b"\r\n\r\n", 1)[0]
    return [
        line.split(b":", 1)[0].decode("ascii")
        for line in head.split(b"\r\n")
        if line and line[:1] not in (b" ", b"\t")
    ]


def mailbox(msg: EmailMessage, field: str) -> tuple[str, str]:
    """(display name, addr-spec) of a single-mailbox field.

    The address comes from email.policy.default. The display name too, except when it
    is made of RFC 2047 encoded-words: the stdlib keeps the whitespace between adjacent
    encoded-words of a phrase, which RFC 2047 §6.2 says a reader must drop, so those are
    decoded with email.header instead.
    """
    (address,) = msg[field].addresses
    (raw,) = [v for k, v in msg.raw_items() if k.lower() == field.lower()]
    raw = re.sub(r"\r?\n", "", raw).strip()
    name = address.display_name
    if raw.startswith("=?") and raw.endswith(">"):
        name = str(make_header(decode_header(raw[: raw.rindex("<")].strip())))
    return name, address.addr_spec


def leaf_parts(msg: EmailMessage) -> list[EmailMessage]:
    return [p for p in msg.walk() if not p.is_multipart()]  # type: ignore[misc]


def content(part: EmailMessage) -> str:
    """A text part's decoded content with line ends as LF."""
    text = part.get_content()
    assert isinstance(text, str)
    return text.replace("\r\n", "\n")


def as_body(text: str, *, multipart: bool) -> str:
    """What a text template's output reads as after the trip through MIME: any line break
    (CRLF, LF or a lone CR) is one line end. A single-part body must end in a line end,
    so one is added there; in a multipart the CRLF before the boundary belongs to the
    boundary (RFC 2046 §5.1.1), so the part's text comes back exactly."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not multipart and text and not text.endswith("\n"):
        text += "\n"
    return text


def tokens(text: str, base: str = TRACK) -> list[str]:
    return re.findall(re.escape(base) + r"([A-Za-z0-9_-]+)", text)


def untrack_text(text: str, secret: str = SECRET) -> str:
    """Replaces each click-tracking URL with the URL its token names."""

    def original(m: re.Match[str]) -> str:
        claims = verify(m.group(1), secret)
        assert claims.kind == "click" and claims.url is not None
        return claims.url

    return re.sub(re.escape(TRACK) + r"([A-Za-z0-9_-]+)", original, text)


def untrack_html(body: str, secret: str = SECRET) -> str:
    """Removes the open pixel and puts each tracked href's original URL back (escaped)."""
    body = _PIXEL.sub("", body)

    def original(m: re.Match[str]) -> str:
        claims = verify(m.group(1), secret)
        assert claims.kind == "click" and claims.url is not None
        return escape_attribute(claims.url)

    return re.sub(re.escape(TRACK) + r"([A-Za-z0-9_-]+)", original, body)


def escape_attribute(value: str) -> str:
    """HTML-escapes a double-quoted attribute value (the characters that must be)."""
    return (
        value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    )


def pixel_tokens(body: str) -> list[str]:
    return _PIXEL.findall(body)


def clicks(text: str, secret: str = SECRET) -> list[TokenClaims]:
    """The claims of every click-tracked URL in a part, in order (the pixel is not one)."""
    return [verify(t, secret) for t in tokens(_PIXEL.sub("", text))]


def list_unsubscribe(msg: EmailMessage) -> list[str]:
    """The URIs of List-Unsubscribe, in order."""
    value = re.sub(r"\s+", "", str(msg["List-Unsubscribe"]))
    return re.findall(r"<([^>]*)>", value)
