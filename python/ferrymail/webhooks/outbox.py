"""Which events go to which webhook: events made into outbox rows (one per endpoint that
wants the event's type), each with a stable id that is in its JSON."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import orjson

from ..events import Event, FeedbackEvent
from ..spool.outbox import OutboxRow
from .config import Webhook


def event_json(event_id: str, event: Event | FeedbackEvent) -> bytes:
    """The event as the webhook's JSON object: {"id": ..., "type": ..., ...}, the same
    keys as the event log's lines, plus the id."""
    return b'{"id":"' + event_id.encode() + b'",' + orjson.dumps(event)[1:]


class Outbox:
    """Routes events to the endpoints whose `events` list their type."""

    def __init__(self, webhooks: Sequence[Webhook]) -> None:
        self._by_type: dict[str, list[str]] = {}
        for hook in webhooks:
            for kind in hook.events:
                self._by_type.setdefault(kind, []).append(hook.name)

    def __bool__(self) -> bool:
        """Whether any endpoint wants any event (if not, nothing is written)."""
        return bool(self._by_type)

    def rows(self, events: Sequence[Event | FeedbackEvent]) -> list[OutboxRow]:
        """One row per (wanting endpoint, event), in the events' order; an event has one
        id whatever the number of endpoints."""
        rows: list[OutboxRow] = []
        for event in events:
            endpoints = self._by_type.get(event.type)
            if not endpoints:
                continue
            event_id = "evt_" + uuid.uuid4().hex
            body = event_json(event_id, event)
            rows.extend(OutboxRow(e, event_id, body) for e in endpoints)
        return rows
