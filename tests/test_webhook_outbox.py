"""The webhook outbox of both spools: batches in order, kept whole across retries, dead
letters and replay, written with the outcomes they belong to."""

from __future__ import annotations

import psycopg
import pytest
from ferrymail.spool import NewRecipient, OutboxRow, Update, open_spool
from ferrymail.spool.pg_schema import SCHEMA_VERSION


def rows(endpoint: str, *names: str) -> list[OutboxRow]:
    return [OutboxRow(endpoint, f"evt_{n}", f'{{"id":"evt_{n}"}}'.encode()) for n in names]


def test_batches_go_in_order_and_a_failed_one_is_sent_again_whole(spool_at: str) -> None:
    with open_spool(spool_at) as spool:
        spool.webhook_enqueue(rows("a", "1", "2", "3") + rows("b", "x"))
        # Two of three: not full, and the oldest is younger than the wait: nothing yet.
        assert spool.webhook_take("a", 5, older_than=0.0) is None
        first = spool.webhook_take("a", 2, older_than=0.0)
        assert first is not None and [e for e, _ in first.events] == ["evt_1", "evt_2"]
        spool.webhook_enqueue(rows("a", "4"))
        spool.webhook_failed("a", first.batch, "HTTP 500", next_attempt=123.0)
        again = spool.webhook_take("a", 10, older_than=1e12)
        assert again is not None and again.batch == first.batch
        assert [e for e, _ in again.events] == ["evt_1", "evt_2"]
        assert (again.attempts, again.due) == (1, 123.0)
        assert spool.webhook_sent("a", first.batch) == 2
        rest = spool.webhook_take("a", 10, older_than=1e12)
        assert rest is not None and [e for e, _ in rest.events] == ["evt_3", "evt_4"]
        other = spool.webhook_take("b", 10, older_than=1e12)
        assert other is not None and [e for e, _ in other.events] == ["evt_x"]


def test_a_dead_letter_waits_for_replay_then_goes_first(spool_at: str) -> None:
    with open_spool(spool_at) as spool:
        spool.webhook_enqueue(rows("a", "1", "2"))
        dead = spool.webhook_take("a", 1, older_than=1e12)
        assert dead is not None
        spool.webhook_failed("a", dead.batch, "refused", next_attempt=None)
        later = spool.webhook_take("a", 1, older_than=1e12)
        assert later is not None and [e for e, _ in later.events] == ["evt_2"]
        spool.webhook_sent("a", later.batch)
        [backlog] = spool.webhook_backlog()
        assert (backlog.endpoint, backlog.pending, backlog.dead) == ("a", 0, 1)
        assert backlog.last_error == "refused"
        assert spool.webhook_take("a", 1, older_than=1e12) is None
        assert spool.webhook_replay() == 1
        back = spool.webhook_take("a", 1, older_than=1e12)
        assert back is not None and back.batch == dead.batch and back.attempts == 0
        assert [e for e, _ in back.events] == ["evt_1"]


def test_record_writes_the_outbox_in_its_transaction(spool_at: str) -> None:
    with open_spool(spool_at) as spool:
        spool.put_campaign("c1", b"spec")
        [rid] = spool.insert("c1", [NewRecipient(b"blob", "a@x.test", "x.test", "a", "queued")])
        assert rid is not None
        [leased] = spool.lease(1, "me", 60)
        done = Update(leased.id, "delivered", 1, None, 250, None, "ok", None, None, None)
        spool.record([done], rows("a", "1"))
        taken = spool.webhook_take("a", 1, older_than=1e12)
        assert taken is not None and [e for e, _ in taken.events] == ["evt_1"]
        # A write that fails writes neither: an outbox row the table refuses (no body)
        # leaves the recipient in flight.
        spool.insert("c1", [NewRecipient(b"blob", "b@x.test", "x.test", "b", "queued")])
        [other] = spool.lease(1, "me", 60)
        bad = OutboxRow("b", "evt_2", None)  # type: ignore[arg-type]
        with pytest.raises(Exception):  # noqa: B017 (either backend's own error)
            spool.record([Update(other.id, "delivered", 1, *[None] * 7)], [bad])
        assert spool.counts()["in-flight"] == 1
        assert spool.webhook_take("b", 1, older_than=1e12) is None


def test_a_postgresql_spool_of_version_2_gets_the_outbox(pg_url: str) -> None:
    open_spool(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute("DROP TABLE rate_bucket")  # version 4's
        db.execute("DROP TABLE fleet_node")
        db.execute("DROP TABLE webhook_outbox")
        db.execute("UPDATE ferrymail_spool SET version = 2")
    with open_spool(pg_url) as spool:
        spool.webhook_enqueue(rows("a", "1"))
        assert [b.pending for b in spool.webhook_backlog()] == [1]
    with psycopg.connect(pg_url, autocommit=True) as db:
        assert db.execute("SELECT version FROM ferrymail_spool").fetchone() == (SCHEMA_VERSION,)
