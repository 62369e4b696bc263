"""The webhook outbox's rows and statements, shared by both spools (each runs them in its
own transaction; PostgreSQL's placeholders are made from SQLite's here)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import orjson


class OutboxRow(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One event for one webhook endpoint: `event_id` is the event's stable id (in the
    body too), `body` its JSON object."""

    endpoint: str
    event_id: str
    body: bytes


class OutboxBatch(msgspec.Struct, frozen=True):
    """The batch an endpoint is to be sent next: `batch` (its first row's id, the
    webhook-id's number) and its events (id, JSON) in order; `attempts` POSTs failed so
    far, the first at `first_failed`; not before `due` (seconds since the epoch)."""

    endpoint: str
    batch: int
    events: list[tuple[str, bytes]]
    attempts: int
    first_failed: float | None
    due: float


class WebhookBacklog(msgspec.Struct, frozen=True):
    """An endpoint's events in the outbox: `pending` (waiting or being retried), `dead`
    (retries gave up; `ferrymail webhooks replay`), the oldest pending one's time, and
    the last failure's text."""

    endpoint: str
    pending: int
    dead: int
    oldest: float | None
    last_error: str | None


ENQUEUE = "INSERT INTO webhook_outbox (endpoint, event_id, body, created_at) VALUES (?, ?, ?, ?)"
_OPEN = (
    "SELECT batch, attempts, next_attempt, first_failed FROM webhook_outbox"
    " WHERE endpoint = ? AND dead = 0 AND batch IS NOT NULL ORDER BY batch, id LIMIT 1"
)
_BATCH_ROWS = (
    "SELECT event_id, body FROM webhook_outbox WHERE endpoint = ? AND batch = ? AND dead = 0"
    " ORDER BY id"
)
_NEXT = (
    "SELECT id, event_id, body, created_at FROM webhook_outbox"
    " WHERE endpoint = ? AND dead = 0 AND batch IS NULL ORDER BY id LIMIT ?"
)
_STAMP = "UPDATE webhook_outbox SET batch = ? WHERE id = ?"
_SENT = "DELETE FROM webhook_outbox WHERE endpoint = ? AND batch = ? AND dead = 0"
_FAILED = (
    "UPDATE webhook_outbox SET attempts = attempts + 1, next_attempt = ?, last_error = ?,"
    " first_failed = coalesce(first_failed, ?), dead = ? WHERE endpoint = ? AND batch = ?"
    " AND dead = 0"
)
_REPLAY = (
    "UPDATE webhook_outbox SET dead = 0, attempts = 0, next_attempt = NULL,"
    " first_failed = NULL WHERE dead = 1"
)
_BACKLOG = (
    "SELECT endpoint, sum(1 - dead), sum(dead), min(CASE WHEN dead = 0 THEN created_at END),"
    " max(last_error) FROM webhook_outbox GROUP BY endpoint ORDER BY endpoint"
)

Execute = Callable[[str, Sequence[Any]], Any]


def pg(statement: str) -> str:
    """A statement above with PostgreSQL's placeholders."""
    return statement.replace("?", "%s")


def enqueue_params(rows: Sequence[OutboxRow], now: float) -> list[tuple[str, str, bytes, float]]:
    return [(r.endpoint, r.event_id, r.body, now) for r in rows]


# SQLite's: the rows as one JSON array of [endpoint, event_id, body as text], one
# statement step for all of them (see statements.RECIPIENTS_BY_KEY for why: the GIL).
ENQUEUE_JSON = (
    "INSERT INTO webhook_outbox (endpoint, event_id, body, created_at)"
    " SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
    " CAST(json_extract(value, '$[2]') AS BLOB), ?2 FROM json_each(?1)"
)


def enqueue_json(rows: Sequence[OutboxRow]) -> str:
    """ENQUEUE_JSON's array (a body is JSON, hence UTF-8 text)."""
    return orjson.dumps([(r.endpoint, r.event_id, r.body.decode()) for r in rows]).decode()


def take(
    execute: Execute, endpoint: str, limit: int, older_than: float, now: float, postgres: bool
) -> OutboxBatch | None:
    """The endpoint's open batch (one that failed, to be sent again as it was), else a new
    one of its next `limit` events, made only when there are `limit` of them or the oldest
    came before `older_than` (the batch's wait is over). None: nothing to send yet."""
    q = pg if postgres else str
    found = execute(q(_OPEN), (endpoint,)).fetchone()
    if found is not None:
        batch, attempts, next_attempt, first_failed = found
        rows = execute(q(_BATCH_ROWS), (endpoint, batch)).fetchall()
        events = [(str(e), bytes(b)) for e, b in rows]
        due = now if next_attempt is None else float(next_attempt)
        return OutboxBatch(endpoint, int(batch), events, int(attempts), first_failed, due)
    rows = execute(q(_NEXT), (endpoint, limit)).fetchall()
    if not rows or (len(rows) < limit and float(rows[0][3]) > older_than):
        return None
    batch = int(rows[0][0])
    for row in rows:
        execute(q(_STAMP), (batch, row[0]))
    events = [(str(e), bytes(b)) for _, e, b, _ in rows]
    return OutboxBatch(endpoint, batch, events, 0, None, now)


def sent(execute: Execute, endpoint: str, batch: int, postgres: bool) -> int:
    q = pg if postgres else str
    return int(execute(q(_SENT), (endpoint, batch)).rowcount)


def failed(
    execute: Execute,
    endpoint: str,
    batch: int,
    error: str,
    next_attempt: float | None,
    now: float,
    postgres: bool,
) -> None:
    q = pg if postgres else str
    dead = 1 if next_attempt is None else 0
    execute(q(_FAILED), (next_attempt, error, now, dead, endpoint, batch))


def replay(execute: Execute, endpoint: str | None, postgres: bool) -> int:
    q = pg if postgres else str
    if endpoint is None:
        return int(execute(q(_REPLAY), ()).rowcount)
    return int(execute(q(_REPLAY + " AND endpoint = ?"), (endpoint,)).rowcount)


def backlog(execute: Execute) -> list[WebhookBacklog]:
    return [
        WebhookBacklog(
            str(e),
            int(p or 0),
            int(d or 0),
            None if o is None else float(o),
            None if err is None else str(err),
        )
        for e, p, d, o, err in execute(_BACKLOG, ()).fetchall()
    ]
