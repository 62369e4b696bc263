"""Reading request bodies under a size limit: whole (small JSON), or record by record as
they arrive (JSON lines, or the elements of a JSON array)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from .errors import ApiError
from .types import Receive


async def whole(receive: Receive, limit: int) -> bytes:
    """The body, at most `limit` bytes; ApiError 413 beyond."""
    parts = [chunk async for chunk in chunks(receive, limit)]
    return b"".join(parts)


async def chunks(receive: Receive, limit: int) -> AsyncIterator[bytes]:
    """The body's chunks as the server hands them over; ApiError 413 once more than
    `limit` bytes came (what came before was already handed on)."""
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "disconnected", "the client went away before the body ended")
        body = message.get("body", b"")
        size += len(body)
        if size > limit:
            raise ApiError(413, "too-large", f"the body is larger than {limit:,} bytes")
        if body:
            yield body
        if not message.get("more_body", False):
            return


async def records(receive: Receive, limit: int, max_record: int) -> AsyncIterator[bytes]:
    """The body's records as they arrive: the elements of a JSON array when the body
    starts with "[", else its lines (JSON lines). Only one chunk and one partial record
    are in memory at a time. ApiError 413 for a body over `limit` or a record over
    `max_record` bytes, 400 for an array that does not end or has text after it."""
    body = chunks(receive, limit)
    first = b""
    async for chunk in body:
        first += chunk
        if first.strip():
            break
    splitter: _Lines | _Array = (
        _Array(max_record) if first.lstrip().startswith(b"[") else _Lines(max_record)
    )
    for record in splitter.feed(first):
        yield record
    async for chunk in body:
        for record in splitter.feed(chunk):
            yield record
    for record in splitter.end():
        yield record


class _Lines:
    def __init__(self, max_record: int) -> None:
        self._max = max_record
        self._pending = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        *complete, self._pending = (self._pending + chunk).split(b"\n")
        if len(self._pending) > self._max:
            raise ApiError(413, "too-large", f"a line is longer than {self._max:,} bytes")
        return complete

    def end(self) -> list[bytes]:
        return [self._pending] if self._pending.strip() else []


# What changes the structure: brackets, braces, commas, and the quotes and backslashes
# that say whether they are inside a string.
_STRUCTURE = re.compile(rb'[\\"\[\]{},]')
_BACKSLASH, _QUOTE, _COMMA = 0x5C, 0x22, 0x2C
_OPEN, _CLOSE = (0x5B, 0x7B), (0x5D, 0x7D)


class _Array:
    """Splits a JSON array into its elements' texts, chunk by chunk, without decoding
    them (msgspec decodes and validates each element). A regular expression jumps from
    one structural character to the next, so the scan costs little per byte."""

    def __init__(self, max_record: int) -> None:
        self._max = max_record
        self._buf = b""
        self._scan = 0  # where the scan goes on in _buf
        self._start: int | None = None  # where the current element starts in _buf
        self._depth = 0
        self._in_string = False
        self._ended = False

    def feed(self, chunk: bytes) -> list[bytes]:
        buf = self._buf + chunk
        out: list[bytes] = []
        i = self._scan
        while (match := _STRUCTURE.search(buf, i)) is not None:
            j = match.start()
            c = buf[j]
            if self._ended:
                raise ApiError(400, "bad-json", "text after the end of the JSON array")
            if self._in_string:
                if c == _BACKSLASH:
                    if j + 1 >= len(buf):  # the escaped character is in the next chunk
                        i = j
                        break
                    i = j + 2
                    continue
                self._in_string = c != _QUOTE
            elif c == _QUOTE:
                self._in_string = True
            elif c in _OPEN:
                if self._depth == 0 and buf[:j].strip():
                    raise ApiError(400, "bad-json", "expected a JSON array or JSON lines")
                self._depth += 1
                if self._depth == 1:
                    self._start = j + 1
            elif c in _CLOSE:
                self._depth -= 1
                if self._depth == 0:
                    assert self._start is not None
                    element = buf[self._start : j]
                    if element.strip() or out or self._start > 1:
                        out.append(element)
                    self._ended, self._start = True, j + 1
            elif c == _COMMA and self._depth == 1:
                assert self._start is not None
                out.append(buf[self._start : j])
                self._start = j + 1
            i = j + 1
        else:
            i = len(buf)
        # Keep only the current element's text.
        cut = self._start if self._start is not None else 0
        if self._ended:
            if buf[cut:].strip():
                raise ApiError(400, "bad-json", "text after the end of the JSON array")
            cut = len(buf)
        self._buf, self._scan = buf[cut:], i - cut
        if self._start is not None:
            self._start -= cut
        if len(self._buf) > self._max:
            raise ApiError(413, "too-large", f"an element is longer than {self._max:,} bytes")
        return out

    def end(self) -> list[bytes]:
        if not self._ended:
            raise ApiError(400, "bad-json", "the JSON array does not end")
        return []
