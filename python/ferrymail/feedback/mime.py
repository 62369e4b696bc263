"""Bounded reading of hostile MIME: the limits, the stdlib parse, parts, headers and text.

Why `email.policy.compat32`: it keeps header values as the raw strings that came in and
decodes nothing until asked, so reading a header never raises and never runs the
`email.policy.default` header-registry parser (`_header_value_parser`), which raises on
some malformed addresses and has had quadratic-time bugs on crafted headers. Values are
decoded here, each in a `try`, and cut to a bounded length. The stdlib parser itself
(feedparser) never raises on bad MIME: it records defects and keeps going.

Limits (all inputs are attacker-controlled; every cut is reported in `problem`):
- `MAX_BYTES`: only the first 1 MiB of a message is read. Reports put their parts first
  (RFC 3464 §2, RFC 5965 §2): the explanation, the status part, then the original,
  which is all that a cut loses.
- `MAX_LINES`: and only its first 20,000 lines. feedparser's cost is per line and per
  part, not per byte: before this cut, a megabyte of empty parts or of one-line status
  blocks took about 20 s to parse here, one of short lines inside 64 nested multiparts
  50 s (measured under tracemalloc, which slows it a few times); now the worst found is
  about 0.3 s. A DSN is a few dozen lines; the original it quotes rarely a few thousand.
- `MAX_NESTING`: the message is also cut before its 33rd `boundary=` parameter or
  `message/` content type. feedparser keeps one matcher per open multipart and checks
  each line against all of them (lines times depth), and it recurses once per nested
  message/rfc822 (a RecursionError at about a thousand); capping the declarations
  bounds the depth before the stdlib parser sees them.
- message/delivery-status parts are parsed as text (see `_Part`), not by feedparser,
  which makes a Message object of each of their blocks.
- `MAX_PARTS` parts are visited, at most `MAX_DEPTH` deep.
- `MAX_VALUE` characters of any one value are kept; `MAX_TEXT` characters of a text
  part are read.
"""

from __future__ import annotations

import email.header
import email.parser
import email.policy
import re
from collections.abc import Iterator
from email.message import Message

MAX_BYTES = 1 << 20
MAX_LINES = 20_000
MAX_NESTING = 32
MAX_PARTS = 256
MAX_DEPTH = 16
MAX_VALUE = 2000
MAX_TEXT = 64 * 1024

_NESTING = re.compile(rb"boundary\s*=|content-type:\s*message/", re.IGNORECASE)
_FOLD = re.compile(r"\r?\n[ \t]+")
_SPACE = re.compile(r"\s+")
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?")


def load(data: bytes) -> tuple[Message, list[str]]:
    """The parsed message (compat32) and the cuts made to `data` on the way."""
    problems: list[str] = []
    if len(data) > MAX_BYTES:
        problems.append(f"message of {len(data)} bytes: only the first {MAX_BYTES} read")
        data = data[:MAX_BYTES]
    end = -1
    for _ in range(MAX_LINES):
        end = data.find(b"\n", end + 1)
        if end < 0:
            break
    else:
        if end + 1 < len(data):
            problems.append(f"more than {MAX_LINES} lines: only the first {MAX_LINES} read")
            data = data[: end + 1]
    for count, m in enumerate(_NESTING.finditer(data), 1):
        if count > MAX_NESTING:
            problems.append(
                f"more than {MAX_NESTING} nested parts (boundaries or message/ types): "
                f"read up to byte {m.start()}"
            )
            data = data[: data.rfind(b"\n", 0, m.start()) + 1]
            break
    parser = email.parser.BytesParser(_Part, policy=email.policy.compat32)
    return parser.parsebytes(data), problems


class _Part(Message):
    """A compat32 Message that calls message/delivery-status text/delivery-status.

    feedparser turns each block of a message/delivery-status part into a Message of
    its own (about a millisecond each, with thousands of blocks a hostile report can
    hold) and loses the part's transfer encoding on the way; as text it is one payload
    that `fields` reads in one pass and `get_payload(decode=True)` decodes.
    """

    def get_content_type(self) -> str:
        kind = super().get_content_type()
        return "text/delivery-status" if kind == "message/delivery-status" else kind


def clean(value: object, limit: int = MAX_VALUE) -> str:
    """A header value or text as one printable line: undecodable bytes (kept by the
    parser as surrogates) become U+FFFD, folds and runs of white space one space."""
    text = value if isinstance(value, str) else str(value)
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return _SPACE.sub(" ", _FOLD.sub(" ", text[: limit * 2])).strip()[:limit]


def decoded(value: str) -> str:
    """`value` with its RFC 2047 encoded words decoded (as far as they decode)."""
    if not _ENCODED_WORD.search(value):
        return value
    try:
        return clean(str(email.header.make_header(email.header.decode_header(value))))
    except Exception:  # any malformed encoded word: keep the raw text
        return value


def headers(message: Message, name: str) -> list[str]:
    """Every value of the header `name`, cleaned (raw: compat32 never decodes them)."""
    name = name.lower()
    return [clean(v) for k, v in message.raw_items() if k.lower() == name]


def header(message: Message, name: str) -> str | None:
    """The first value of the header `name`, cleaned; None when absent."""
    values = headers(message, name)
    return values[0] if values else None


def content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:
        return "text/plain"


def param(part: Message, name: str) -> str | None:
    try:
        value = part.get_param(name)
    except Exception:
        return None
    if isinstance(value, tuple):  # RFC 2231: (charset, language, value)
        value = value[2]
    return clean(value).lower() if value is not None else None


def children(part: Message) -> list[Message]:
    """A multipart's or message/*'s direct sub-parts (none for a leaf)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    return []


def walk(root: Message, *, into_messages: bool = True) -> Iterator[tuple[Message, int]]:
    """(part, depth) in document order, at most MAX_PARTS of them, at most MAX_DEPTH deep;
    not into message/* parts (a quoted original) unless `into_messages`."""
    stack = [(root, 0)]
    visited = 0
    while stack and visited < MAX_PARTS:
        part, depth = stack.pop()
        visited += 1
        yield part, depth
        if depth >= MAX_DEPTH:
            continue
        if not into_messages and depth > 0 and content_type(part).startswith("message/"):
            continue
        stack.extend((child, depth + 1) for child in reversed(children(part)))


def _charset(part: Message) -> str:
    try:
        charset = part.get_content_charset() or "utf-8"
        "".encode(charset)  # LookupError for an unknown one
        return charset
    except Exception:
        return "utf-8"


def _transfer_decoded(text: str, part: Message) -> str:
    """`text` (a message/* part's body as the parser split it) undone of a base64 or
    quoted-printable Content-Transfer-Encoding that some MTAs put on report parts."""
    cte = (header(part, "content-transfer-encoding") or "").lower()
    if cte not in ("base64", "quoted-printable"):
        return text
    holder = Message()
    holder["Content-Transfer-Encoding"] = cte
    holder.set_payload(text.encode("ascii", "replace").decode("ascii"))
    raw = holder.get_payload(decode=True)
    return raw.decode(_charset(part), "replace") if isinstance(raw, bytes) else text


def _block_text(block: Message) -> str:
    lines = [clean_lines(f"{k}: {v}") for k, v in block.raw_items()]
    # As bytes: get_payload() without decode would turn 8-bit text (RFC 6533's UTF-8
    # addresses) into U+FFFD by the block's (absent) charset.
    # The blank line after the headers ends a block: RFC 6533's per-message fields are
    # the headers, its per-recipient blocks the body.
    payload = block.get_payload(decode=True)
    if isinstance(payload, bytes) and payload.strip():
        lines.append("\n" + payload.decode("utf-8", "replace"))
    return "\n".join(lines)


def clean_lines(text: str) -> str:
    """`text` with bytes the parser kept as surrogates decoded as UTF-8 (U+FFFD where
    they are not), its lines kept."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def text(part: Message, limit: int = MAX_TEXT) -> str:
    """The decoded text of a part (its charset, or UTF-8 when that is unknown; bad bytes
    become U+FFFD), at most `limit` characters. A message/* part that the parser split
    into header blocks (message/delivery-status) is joined back into its text."""
    try:
        payload = part.get_payload()
        if isinstance(payload, list):
            blocks = [_block_text(b) for b in payload[:20000] if isinstance(b, Message)]
            joined = "\n\n".join(blocks)
            return _transfer_decoded(joined[:limit], part)
        raw = part.get_payload(decode=True)
        if not isinstance(raw, bytes):
            return ""
        return raw[: limit * 4].decode(_charset(part), "replace")[:limit]
    except Exception:  # a part the stdlib cannot decode reads as empty
        return ""


def quoted_message(part: Message) -> Message | None:
    """The message a message/rfc822 part carries, or the headers a text/rfc822-headers
    part carries (as a message without a body); None for other parts."""
    kind = content_type(part)
    if kind in ("message/rfc822", "message/global"):
        inner = children(part)
        return inner[0] if inner else None
    if kind in ("text/rfc822-headers", "message/rfc822-headers", "message/global-headers"):
        raw = text(part).lstrip("\r\n")
        try:
            return email.parser.HeaderParser(policy=email.policy.compat32).parsestr(raw)
        except Exception:
            return None
    return None


def fields(text: str, max_blocks: int) -> tuple[list[list[tuple[str, str]]], int]:
    """RFC 822-style field blocks separated by blank lines (a delivery-status or
    feedback-report body): (up to `max_blocks` blocks of (lower-case name, value),
    the number of blocks in all). Folded lines are unfolded; lines that are not a
    field are skipped."""
    blocks: list[list[tuple[str, str]]] = []
    total = 0
    current: list[tuple[str, str]] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            if current:
                total += 1
                if len(blocks) < max_blocks:
                    blocks.append(current)
                current = []
            continue
        if line[0] in " \t":
            if current:
                name, value = current[-1]
                if len(value) < MAX_VALUE:
                    current[-1] = (name, value + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        if colon and name.strip() and " " not in name.strip():
            current.append((name.strip().lower(), value.strip()))
    if current:
        total += 1
        if len(blocks) < max_blocks:
            blocks.append(current)
    return blocks, total
