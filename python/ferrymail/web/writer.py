"""FeedbackWriter: clicks and opens to the spool in group commits, and to the event bus."""

from __future__ import annotations

import asyncio
import logging
import sqlite3

from ..events import EventBus, feedback_event
from ..spool import Recorded, Signal
from ..spooler import Spooler

_log = logging.getLogger(__name__)

#: Signals one transaction records at most.
MAX_BATCH = 5000
#: Events published between two yields to the event loop: a big batch's events (their
#: log line) would otherwise hold up every request for tens of milliseconds.
PUBLISH_SLICE = 256
#: How often a batch is tried again when the spool stays locked past its busy timeout
#: (another process writing without pause), and the first wait (doubled each time).
RETRIES = 5
RETRY_AFTER = 0.1
#: Signals waiting for a commit at most: past that (a spool that cannot keep up, a disk
#: that stalls), requests wait for room instead of memory growing without bound.
MAX_PENDING = 100_000


class FeedbackWriter:
    """Records clicks and opens in group commits on the spool thread.

    `add` queues a signal and returns at once: the request is answered (the redirect,
    the pixel) before its row is on disk. One task writes what is queued, in one
    transaction, then what came meanwhile, and so on: under load each fsync carries
    hundreds of signals, and a click costs its request no disk wait at all. The price
    is durability: the signals queued or being committed when the process dies (a kill,
    a power cut) are lost, a few milliseconds' worth under load, at most MAX_PENDING.
    A lost click or open changes no recipient's state and no suppression, and the
    person already has their page; trackers of mail servers (KumoMTA's and Postal's
    logs) write such events asynchronously for the same reason. Unsubscribes, which
    must not be lost (RFC 8058, the providers' two-day rule), are not written here: the
    unsubscribe endpoint waits for its own durable commit.
    """

    def __init__(self, spooler: Spooler, bus: EventBus | None) -> None:
        self._spooler = spooler
        self._bus = bus
        self._pending: list[Signal] = []
        self._task: asyncio.Task[None] | None = None
        self._room = asyncio.Event()
        self._room.set()
        #: Signals that could not be recorded (the spool failed), since the start.
        self.lost = 0
        #: Batches tried again because the spool was locked.
        self.retries = 0

    async def add(self, signal: Signal) -> None:
        if len(self._pending) >= MAX_PENDING:
            self._room.clear()
            await self._room.wait()
        self._pending.append(signal)
        if self._task is None:
            self._task = asyncio.create_task(self._write(), name="ferrymail-feedback")

    async def _write(self) -> None:
        try:
            while self._pending:
                batch = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
                if len(self._pending) < MAX_PENDING:
                    self._room.set()
                recorded = await self._record(batch)
                if recorded is None:
                    continue
                for start in range(0, len(batch), PUBLISH_SLICE):
                    end = start + PUBLISH_SLICE
                    self._publish(batch[start:end], recorded[start:end])
                    await asyncio.sleep(0)
        finally:
            self._task = None
            self._room.set()

    async def _record(self, batch: list[Signal]) -> list[Recorded | None] | None:
        """Records the batch; a spool locked by other writers (the engine, other workers)
        past its busy timeout is tried again, RETRIES times; what still fails (a full
        disk, a broken file) is logged and dropped, so that clicks are still answered."""
        for attempt in range(RETRIES + 1):
            try:
                return await self._spooler.call(self._spooler.spool.record_feedback, batch)
            except sqlite3.OperationalError as e:
                if attempt < RETRIES and _busy(e):
                    self.retries += 1
                    await asyncio.sleep(RETRY_AFTER * 2**attempt)
                    continue
                failure: Exception = e
            except Exception as e:
                failure = e
            break
        self.lost += len(batch)
        _log.error(
            "ferrymail web: %d clicks and opens could not be recorded: %s", len(batch), failure
        )
        return None

    def _publish(self, batch: list[Signal], recorded: list[Recorded | None]) -> None:
        if self._bus is None or not self._bus.listened:
            return
        events = [
            feedback_event(signal, done)
            for signal, done in zip(batch, recorded, strict=True)
            if done is not None
        ]
        self._bus.publish(events)

    async def flush(self) -> None:
        """Waits until every signal added so far is committed (or lost)."""
        while self._task is not None:
            await asyncio.shield(self._task)


def _busy(error: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY and SQLITE_LOCKED: another connection holds the lock."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(error) or "busy" in str(error)
