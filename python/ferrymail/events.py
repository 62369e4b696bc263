"""Delivery events: one per recipient state change, to a JSON-lines log and to async subscribers."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator, Sequence
from typing import IO

import orjson

# A subscriber that falls this far behind loses its oldest events rather than growing
# without bound; the log file never loses any.
SUBSCRIBER_BACKLOG = 100_000


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One state change of one recipient.

    `type` is the new state: queued, rejected, suppressed (at submit); delivered,
    bounced, deferred, expired, failed (after an attempt). `recipient` is the ESP's id
    (or the address when it gave none). `attempt` counts attempts so far. `timestamp` is
    seconds since the epoch; `since_submit` seconds since the recipient was submitted.
    """

    type: str
    campaign: str
    recipient: str
    address: str
    domain: str
    mx: str | None
    ip: str | None
    attempt: int
    code: int | None
    enhanced: str | None
    text: str | None
    category: str | None
    timestamp: float
    since_submit: float


class EventBus:
    """Writes each batch of events to the log in one write and hands them to every
    subscriber's queue."""

    def __init__(self, log_path: str | os.PathLike[str] | None) -> None:
        self._log: IO[bytes] | None = open(log_path, "ab") if log_path is not None else None  # noqa: SIM115
        self._subscribers: list[asyncio.Queue[Event | None]] = []

    @property
    def listened(self) -> bool:
        """Whether anyone takes events (a log or a subscriber): if not, the engine does
        not build them."""
        return self._log is not None or bool(self._subscribers)

    def publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        if self._log is not None:
            self._log.write(
                b"".join(orjson.dumps(e, option=orjson.OPT_APPEND_NEWLINE) for e in events)
            )
            self._log.flush()
        for queue in self._subscribers:
            for event in events:
                if queue.qsize() >= SUBSCRIBER_BACKLOG:
                    queue.get_nowait()
                queue.put_nowait(event)

    async def subscribe(self) -> AsyncIterator[Event]:
        """Events from now on, until the bus closes."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._subscribers.append(queue)
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            self._subscribers.remove(queue)

    def close(self) -> None:
        for queue in self._subscribers:
            queue.put_nowait(None)
        if self._log is not None:
            self._log.close()
            self._log = None
