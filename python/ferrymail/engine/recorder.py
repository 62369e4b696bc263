"""Writes verdicts to the spool with group commit, then publishes their events."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from ..events import Event, EventBus
from ..judge import Verdict
from ..spool import CancelledRecipient, Leased, OutboxRow, Update
from ..spool.states import CANCELLED
from ..spooler import Spooler
from ..webhooks.outbox import Outbox


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
        spooler.spool.on_cancelled = self._outboxed

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

    def cancelled(self, leased: list[Leased]) -> None:
        """Recipients the spool ended as cancelled instead of starting their attempt
        (their campaign was cancelled after they were leased): they leave the engine's
        hands, and their events are published."""
        if leased:
            self._settled(len(leased))
            self.publish_cancelled()

    def publish_cancelled(self) -> None:
        """Publishes the events of the recipients the spool ended as cancelled since the
        last call (whatever the path: a cancel, a batch, a deferral, a sweep). Their
        webhook events are already in the outbox, written by the spool in the
        transaction that ended them (`_outboxed`)."""
        ended = self._spooler.spool.take_cancelled()
        if ended and self._bus.listened:
            self._bus.publish([self._event(r) for r in ended])

    def _outboxed(self, ended: list[CancelledRecipient]) -> Sequence[OutboxRow]:
        """The spool's hook (spool/cancelled.py): the outbox rows of these recipients'
        events, for the transaction that ends them as cancelled."""
        if not self._outbox:
            return ()
        return self._outbox.rows([self._event(r) for r in ended])

    def _event(self, r: CancelledRecipient) -> Event:
        return Event(
            CANCELLED,
            r.campaign,
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
            r.at,
            r.at - r.submitted_at,
            None,
            self._node,
        )

    async def _commit(self, verdicts: list[Verdict]) -> None:
        spool = self._spooler.spool
        updates = [u for v in verdicts for u in v.updates]
        hooked = self._outbox.rows([e for v in verdicts for e in v.events]) if self._outbox else []
        await self._spooler.call(spool.record, updates, hooked)
        for verdict in verdicts:
            for address, reason in verdict.suppress:
                await self._spooler.call(spool.suppress, address, reason)
        self._settled(len(updates))
        for verdict in verdicts:
            self._bus.publish(verdict.events)
        # Deferred (or released) after their campaign was cancelled: the spool ended
        # them in this transaction; their events follow the deferrals'.
        self.publish_cancelled()
