"""Writes verdicts to the spool with group commit, then publishes their events."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from ..events import Event, EventBus
from ..judge import Verdict
from ..spool import Leased, Update
from ..spool.states import CANCELLED, DEFERRED, QUEUED
from ..spooler import Spooler
from ..webhooks.outbox import Outbox


class Ended(Protocol):
    """A recipient the spool ended (spool.CancelledRecipient, or a Leased one)."""

    @property
    def key(self) -> str: ...
    @property
    def address(self) -> str: ...
    @property
    def domain(self) -> str: ...
    @property
    def attempts(self) -> int: ...
    @property
    def submitted_at(self) -> float: ...


class Recorder:
    """The only writer of outcomes: updates, suppressions and events in one place. The
    webhook events of a write (`outbox`'s rows) go in the same transaction as its
    updates, so that an outcome recorded is an event that will reach its webhooks.

    Group commit: verdicts that arrive while a write is on the disk go together in the
    next one, so ten sites delivering at once cost one fsync, not ten, and each outcome
    still reaches the disk within one write's time. `settled(n)` is told how many leased
    recipients left the engine's hands with each write.
    """

    def __init__(
        self,
        spooler: Spooler,
        bus: EventBus,
        settled: Callable[[int], None],
        outbox: Outbox | None = None,
        node: str | None = None,
    ) -> None:
        self._spooler = spooler
        self._outbox = outbox
        self._node = node
        self._bus = bus
        self._settled = settled
        self._commits: list[tuple[Verdict, asyncio.Future[None]]] = []
        self._committing = False

    async def record(self, verdict: Verdict) -> None:
        """Writes a verdict, then publishes its events; returns when it is durable."""
        if not verdict.updates and not verdict.suppress:
            return
        done = asyncio.get_running_loop().create_future()
        self._commits.append((verdict, done))
        if not self._committing:
            self._committing = True
            try:
                while self._commits:
                    group, self._commits = self._commits, []
                    await self._commit([v for v, _ in group])
                    for _, waiting in group:
                        waiting.set_result(None)
            except BaseException as e:
                for _, waiting in [*group, *self._commits]:
                    if not waiting.done():
                        waiting.set_exception(e)
                self._commits = []
                raise
            finally:
                self._committing = False
        await done

    async def release(self, waiting: list[tuple[Leased, float]]) -> None:
        """Back to the spool without counting an attempt, each due at the time given
        (when its site's suspension ends, or now)."""
        if not waiting:
            return
        # Recipients tried before stay "deferred"; the others are still just "queued".
        updates = [
            Update(
                r.id,
                "deferred" if r.attempts else "queued",
                r.attempts,
                until,
                None,
                None,
                None,
                None,
                None,
                None,
            )
            for r, until in waiting
        ]
        await self._spooler.call(self._spooler.spool.record, updates)
        self._settled(len(updates))

    async def cancelled(self, leased: list[Leased]) -> None:
        """Recipients the spool ended as cancelled instead of starting their attempt
        (their campaign was cancelled after they were leased): already recorded there;
        they leave the engine's hands and their events are published."""
        if not leased:
            return
        self._settled(len(leased))
        await self.publish_cancelled((r.campaign, r) for r in leased)

    async def publish_cancelled(self, ended: Iterable[tuple[str, Ended]]) -> None:
        """The events of recipients the spool ended as cancelled (campaign, recipient):
        to the event log and subscribers, and to the webhooks' outbox (a transaction
        after the cancel's: a crash between the two loses these events for the
        webhooks, not the recipients' state)."""
        if not self._listened():
            return
        now = time.time()
        events = [
            Event(
                CANCELLED,
                campaign,
                r.key,
                r.address,
                r.domain,
                None,
                None,
                r.attempts,
                None,
                None,
                None,
                None,
                now,
                now - r.submitted_at,
                None,
                self._node,
            )
            for campaign, r in ended
        ]
        await self._enqueue(events)
        self._bus.publish(events)

    def _listened(self) -> bool:
        return self._bus.listened or bool(self._outbox)

    async def _enqueue(self, events: list[Event]) -> None:
        if self._outbox and events:
            hooked = self._outbox.rows(events)
            await self._spooler.call(self._spooler.spool.webhook_enqueue, hooked)

    async def _commit(self, verdicts: list[Verdict]) -> None:
        spool = self._spooler.spool
        updates = [u for v in verdicts for u in v.updates]
        hooked = self._outbox.rows([e for v in verdicts for e in v.events]) if self._outbox else []
        await self._spooler.call(spool.record, updates, hooked)
        for verdict in verdicts:
            for address, reason in verdict.suppress:
                await self._spooler.call(spool.suppress, address, reason)
        self._settled(len(updates))
        ended = await self._cancelled(updates)
        for verdict in verdicts:
            self._bus.publish(verdict.events)
            if ended and len(verdict.events) == len(verdict.updates):
                # Deferred (or released) after their campaign was cancelled: the spool
                # ended them there; their event follows the deferral's.
                now = time.time()
                events = [
                    dataclasses.replace(
                        e,
                        type=CANCELLED,
                        timestamp=now,
                        since_submit=e.since_submit + now - e.timestamp,
                    )
                    for u, e in zip(verdict.updates, verdict.events, strict=True)
                    if u.id in ended
                ]
                await self._enqueue(events)
                self._bus.publish(events)

    async def _cancelled(self, updates: list[Update]) -> set[int]:
        """Which of the recipients these updates put back in the queue the spool ended
        as cancelled instead (see SqliteSpool.cancel); looked up only when someone takes
        the events and there were such updates (deferrals are the rare outcome)."""
        if not self._listened():
            return set()
        requeued = [u.id for u in updates if u.state in (QUEUED, DEFERRED)]
        if not requeued:
            return set()
        spool = self._spooler.spool
        return set(await self._spooler.call(spool.cancelled_among, requeued))
