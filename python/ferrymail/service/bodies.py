"""Reading request bodies under a size limit: whole (small JSON) or line by line (streamed)."""

from __future__ import annotations

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


async def lines(receive: Receive, limit: int, max_line: int) -> AsyncIterator[bytes]:
    """The body's lines (without the newline), as they arrive: only one chunk and one
    partial line are in memory at a time. ApiError 413 for a body over `limit` or a line
    over `max_line` bytes."""
    pending = b""
    async for chunk in chunks(receive, limit):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line
        if len(pending) > max_line:
            raise ApiError(413, "too-large", f"a line is longer than {max_line:,} bytes")
    if pending:
        yield pending
