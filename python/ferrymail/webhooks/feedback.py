"""The webhook events of the feedback `serve` and `inbound` record (clicks, opens,
unsubscribes, late bounces, complaints, auto-replies, delays): the spool's hook that
makes their outbox rows, written in the transaction that records the signals
(spool/feedback_events.py), so a crash keeps both or neither."""

from __future__ import annotations

from collections.abc import Sequence

from ..events import feedback_event
from ..spool import OutboxRow, Recorded, Signal
from ..spool.feedback_events import FeedbackHook
from .config import Webhook
from .outbox import Outbox


def feedback_hook(webhooks: Sequence[Webhook]) -> FeedbackHook | None:
    """The spool's `on_feedback` for these webhooks; None when none wants feedback."""
    outbox = Outbox(webhooks)
    if not outbox:
        return None

    def rows(signals: Sequence[Signal], recorded: Sequence[Recorded]) -> Sequence[OutboxRow]:
        return outbox.rows([feedback_event(s, r) for s, r in zip(signals, recorded, strict=True)])

    return rows
