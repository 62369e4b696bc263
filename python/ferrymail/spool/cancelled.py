"""Recipients a spool ends as cancelled, for their events: the webhook outbox rows are
written in the transaction that ends them, the event log's events are taken after it.

A campaign's recipients end as cancelled on many paths (the cancel's pages, a batch that
would start, a deferral or a release after the cancel, the leases of a dead process,
a flush); every one of them runs its UPDATE … RETURNING through `_ended`, so no path
ends a recipient without its event, and a crash cannot keep the state and lose the
webhook event (or the other way round).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from .outbox import OutboxRow
from .rows import CancelledRecipient

#: What the engine gives the spool: the webhook outbox rows of these recipients' events.
CancelledHook = Callable[[list[CancelledRecipient]], Sequence[OutboxRow]]


class CancelledEvents:
    """The part of SqliteSpool and PostgresSpool that keeps the recipients they end as
    cancelled. The spool calls `_ended` in the transaction, with the rows of an
    `UPDATE … RETURNING campaign, key, address, domain, attempts, submitted_at, id`, and
    `_commit_cancelled(ok)` when that transaction ends; `_campaign_name` (CampaignNames)
    names the campaigns and `_enqueue_rows(db, rows, now)` writes outbox rows."""

    #: Set by the engine (see Engine): with it the spool writes the outbox rows of the
    #: recipients it ends as cancelled in the same transaction, and keeps the recipients
    #: for `take_cancelled`. Without it (the CLI, a spool alone) neither happens.
    on_cancelled: CancelledHook | None = None

    def __init__(self) -> None:
        self._cancelling: list[CancelledRecipient] = []  # this transaction's
        # Committed, not taken yet: appended by the spool's thread, taken by the engine's
        # (a deque: each append and pop is atomic).
        self._cancelled: deque[CancelledRecipient] = deque()

    def _campaign_name(self, campaign: int) -> str:
        raise NotImplementedError

    def _enqueue_rows(self, db: Any, rows: Sequence[OutboxRow], now: float) -> None:
        raise NotImplementedError

    def _ended(
        self, db: Any, rows: Sequence[Sequence[Any]], now: float
    ) -> list[CancelledRecipient]:
        """Recipients this transaction ends as cancelled (RETURNING rows): their outbox
        rows go in it; returns them."""
        name = self._campaign_name
        ended = [
            CancelledRecipient(name(int(r[0])), r[1], r[2], r[3], int(r[4]), float(r[5]), now)
            for r in rows
        ]
        hook = self.on_cancelled
        if hook is not None and ended:
            hooked = hook(ended)
            if hooked:
                self._enqueue_rows(db, hooked, now)
            self._cancelling.extend(ended)
        return ended

    def _commit_cancelled(self, committed: bool) -> None:
        if self._cancelling:
            if committed:
                self._cancelled.extend(self._cancelling)
            self._cancelling = []

    def take_cancelled(self) -> list[CancelledRecipient]:
        """The recipients ended as cancelled by the transactions committed since the
        last call (only while `on_cancelled` is set), for the event log's events: their
        webhook events are already in the outbox. Safe from another thread than the
        spool's calls."""
        cancelled = self._cancelled
        return [cancelled.popleft() for _ in range(len(cancelled))]
