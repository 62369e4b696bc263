"""Submitted recipients to spool rows: encoded once, addresses checked, suppressions marked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from typing import Any

import msgspec

from . import _core
from .spool import NewRecipient, domain_key
from .wire import Recipient

# Recipients per spool transaction at submit: big enough that the fsync is amortised,
# small enough that memory stays flat for any campaign size.
CHUNK = 10_000
# An async source that pauses this long has what it gave so far queued at once.
LINGER = 0.2
# RFC 3463 X.1.3: bad destination mailbox address syntax.
INVALID_ADDRESS = (553, "5.1.3")

_encoder = msgspec.msgpack.Encoder()


class SubmitResult(msgspec.Struct, frozen=True):
    """How many recipients went into the queue, how many were final at once, and how
    many the campaign had already (a recipient key is queued once per campaign)."""

    accepted: int
    rejected: int
    suppressed: int
    duplicates: int = 0


def key_of(recipient: Recipient) -> str:
    """What events and reports call a recipient: the ESP's id, else the address, its
    domain in lower-case A-labels ("a@EXAMPLE.NET" and "a@example.net", "a@bücher.de"
    and "a@xn--bcher-kva.de" are one mailbox, one key: queued once). The local part
    stays as written: RFC 5321 §2.4 lets a receiver tell "Ann@" from "ann@"."""
    if recipient.id is not None:
        return str(recipient.id)
    local, at, domain = recipient.address.rpartition("@")
    return f"{local}@{domain_key(domain)}" if at else recipient.address


async def chunks(
    recipients: Iterable[Recipient | str] | AsyncIterable[Recipient | str],
    size: int = CHUNK,
    linger: float = LINGER,
) -> AsyncIterator[list[Recipient]]:
    """The recipients in lists of at most `size`, from a plain or an async iterable,
    without ever holding more than one list. From an async iterable that pauses, what
    has come is handed on after `linger` seconds, so delivery need not wait for a slow
    source to fill a whole chunk."""
    chunk: list[Recipient] = []
    if isinstance(recipients, AsyncIterable):
        source = aiter(recipients)
        pending: asyncio.Future[Recipient | str] | None = None
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(source))
            # Waiting does not cancel the pending item: the source is never cut short.
            done, _ = await asyncio.wait({pending}, timeout=linger if chunk else None)
            if not done:
                yield chunk
                chunk = []
                continue
            try:
                r = pending.result()
            except StopAsyncIteration:
                break
            pending = None
            chunk.append(_recipient(r))
            if len(chunk) >= size:
                yield chunk
                chunk = []
    else:
        for r in recipients:
            chunk.append(_recipient(r))
            if len(chunk) >= size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def _recipient(r: Any) -> Recipient:
    if isinstance(r, Recipient):
        return r
    if isinstance(r, str):
        return Recipient(r)
    raise TypeError(f"a recipient must be a ferrymail.Recipient or an address, not {r!r}")


def rows(chunk: Sequence[Recipient], suppressed: set[str]) -> list[NewRecipient]:
    """One spool row per recipient: queued, or rejected (why) or suppressed at once.
    `suppressed` holds the chunk's addresses (as given) on the suppression list."""
    checks = _core.check_addresses([r.address for r in chunk])
    out: list[NewRecipient] = []
    for r, (domain, problem) in zip(chunk, checks, strict=True):
        key = key_of(r)
        try:
            blob = _encoder.encode(r)
        except (TypeError, ValueError, OverflowError) as e:
            problem = problem or f"recipient cannot be encoded: {e}"
            blob = b""
        if problem is not None:
            code, enhanced = INVALID_ADDRESS
            text = f"invalid recipient {r.address!r}: {problem}"
            out.append(NewRecipient(blob, r.address, domain, key, "rejected", code, enhanced, text))
        elif r.address in suppressed:
            text = "on the suppression list"
            out.append(NewRecipient(blob, r.address, domain, key, "suppressed", None, None, text))
        else:
            out.append(NewRecipient(blob, r.address, domain, key, "queued"))
    return out
