"""The webhook events of the feedback a spool records (clicks, opens, unsubscribes, late
bounces, complaints, auto-replies): written to the outbox in the transaction that
records the signals, so a crash keeps both or neither."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson

from .outbox import OutboxRow
from .rows import Recorded, Signal

#: What `serve` and `inbound` give the spool: the outbox rows of these signals' events
#: (each with what the spool stored for it).
FeedbackHook = Callable[[Sequence[Signal], Sequence[Recorded]], Sequence[OutboxRow]]


class FeedbackEvents:
    """The part of SqliteSpool and PostgresSpool that writes the outbox rows of the
    signals they record, through `on_feedback`; the spool has `_enqueue_rows`."""

    #: Set by `serve` and `inbound` when they have webhooks (webhooks/feedback.py).
    on_feedback: FeedbackHook | None = None

    def _enqueue_rows(self, db: Any, rows: Sequence[OutboxRow], now: float) -> None:
        raise NotImplementedError

    def _feedback_outbox(
        self,
        db: Any,
        signals: Sequence[Signal],
        recorded: Sequence[Recorded | None],
        now: float,
    ) -> None:
        """In the transaction `db` that recorded `signals`: their events' outbox rows
        (none for a signal of a campaign the spool does not have)."""
        hook = self.on_feedback
        if hook is None:
            return
        known = [(s, r) for s, r in zip(signals, recorded, strict=True) if r is not None]
        if known:
            rows = hook([s for s, _ in known], [r for _, r in known])
            if rows:
                self._enqueue_rows(db, rows, now)


def unsubscribe_signal(
    campaign_id: str, key: str, at: float, scope: str, user_agent: str | None, by: str | None
) -> Signal:
    """The "unsubscribed" signal `unsubscribe` records: its detail says the scope
    ("global" or the list's name) and, when not the one-click POST, how it came."""
    detail: dict[str, str] = {"scope": scope or "global"}
    if by is not None:
        detail["by"] = by
    return Signal(
        "unsubscribed",
        campaign_id,
        key,
        at,
        user_agent=user_agent,
        detail=orjson.dumps(detail).decode(),
    )
