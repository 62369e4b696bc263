"""The event bus of `serve` and `inbound` when they have webhooks: what they publish
(clicks, opens, unsubscribes, late bounces, complaints, auto-replies) also goes to the
spool's webhook outbox, written by a thread of its own with its own spool connection.

Not in the transaction that recorded the feedback (those are the web writer's and the
inbound listener's, which know nothing of webhooks): a crash in the milliseconds between
that commit and this write loses those events for the webhooks (the spool keeps the
feedback rows; `ferrymail report` counts them). The engine's outcomes have no such gap:
its recorder writes their outbox rows in the same transaction.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence

from ..events import Event, EventBus, FeedbackEvent
from ..spool import OutboxRow, open_spool
from .config import Webhook
from .outbox import Outbox

#: Tries of one write before its events are given up (logged), and the wait after the
#: first failure (doubling): a spool locked by another writer for a while.
WRITE_TRIES = 5
RETRY_AFTER = 0.2

_log = logging.getLogger(__name__)


class OutboxBus(EventBus):
    """An EventBus that also writes the events its webhooks want to the outbox of the
    spool at `spool_at`, and hands every event to `observe` (ferrymail.metrics), when
    given. `close()` waits for what was published to be written."""

    def __init__(
        self,
        log_path: str | os.PathLike[str] | None,
        spool_at: str | os.PathLike[str],
        webhooks: Sequence[Webhook],
        observe: Callable[[Event | FeedbackEvent], None] | None = None,
    ) -> None:
        super().__init__(log_path)
        self._outbox = Outbox(webhooks)
        self._observe = observe
        self._spool_at = spool_at
        self._rows: queue.SimpleQueue[list[OutboxRow] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        if self._outbox:
            self._thread = threading.Thread(
                target=self._write_outbox, name="ferrymail-outbox", daemon=True
            )
            self._thread.start()
        #: Events that could not be written to the outbox (logged), since the start.
        self.outbox_lost = 0

    @property
    def listened(self) -> bool:
        return super().listened or bool(self._outbox) or self._observe is not None

    def publish(self, events: Sequence[Event | FeedbackEvent]) -> None:
        super().publish(events)
        if self._observe is not None:
            for event in events:
                self._observe(event)
        rows = self._outbox.rows(events)
        if rows:
            self._rows.put(rows)

    def close(self) -> None:
        if self._thread is not None:
            self._rows.put(None)
            self._thread.join()
        super().close()

    def _write_outbox(self) -> None:
        spool = open_spool(self._spool_at, light=True)
        try:
            done = False
            while not done:
                rows = self._rows.get()
                if rows is None:
                    break
                while not self._rows.empty():  # what came meanwhile, in one transaction
                    more = self._rows.get()
                    if more is None:
                        done = True
                        break
                    rows.extend(more)
                self._enqueue(spool, rows)
        finally:
            spool.close()

    def _enqueue(self, spool: object, rows: list[OutboxRow]) -> None:
        for attempt in range(WRITE_TRIES):
            try:
                spool.webhook_enqueue(rows)  # type: ignore[attr-defined]
                return
            except Exception as e:
                failure = e
                time.sleep(RETRY_AFTER * 2**attempt)
        self.outbox_lost += len(rows)
        _log.error(
            "ferrymail: %d webhook events could not be written to the outbox: %s",
            len(rows),
            failure,
        )
