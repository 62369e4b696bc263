"""Cancelling a campaign in the spool, and the API keys table, on both backends: queued
and deferred recipients end as cancelled, leased ones are not started, requeued ones end
there, in-flight ones finish; a version 4 SQLite file is migrated."""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from ferrymail.spool import CancelledRecipient, OutboxRow, Spool, SqliteSpool, open_spool
from ferrymail.spool.schema import SCHEMA_VERSION
from test_spool import Clock, dead_pid, new, outcome


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def spool(spool_at: str, clock: Clock) -> Iterator[Spool]:
    with open_spool(spool_at, clock=clock) as spool:
        spool.put_campaign("c1", b"spec-1")
        spool.put_campaign("c2", b"spec-2")
        yield spool


def states(spool: Spool, campaign: str) -> dict[str, str]:
    """Every recipient's state by address (final_states leaves pending ones out)."""
    return {address: state for _, _, address, state, _ in _rows(spool, campaign)}


def _rows(spool: Spool, campaign: str) -> Iterator[tuple[int, str, str, str, int]]:
    from ferrymail.spool.states import NAME

    for id_, key, address, state, attempts in spool.iter_recipients(campaign):
        yield id_, key, address, state if isinstance(state, str) else NAME[state], attempts


def test_cancel_ends_queued_and_deferred_and_lets_in_flight_finish(
    spool: Spool, clock: Clock
) -> None:
    spool.insert("c1", [new(f"r{i}@a.test") for i in range(4)])
    spool.insert("c2", [new("other@a.test")])
    leased = {r.address: r for r in spool.lease(3, "me", 60, domains=None)}
    assert set(leased) == {"r0@a.test", "r1@a.test", "r2@a.test"}
    spool.started([leased["r0@a.test"].id])  # r0's attempt is under way
    spool.record([outcome(leased["r1@a.test"], "deferred", next_attempt=clock.now + 60)])
    # r2 is leased, not started; r3 is queued; r1 deferred.

    cancelled = spool.cancel("c1")  # r1 (deferred) and r3 (queued)
    assert sorted((r.address, r.attempts) for r in cancelled) == [
        ("r1@a.test", 1),
        ("r3@a.test", 0),
    ]
    assert {r.key for r in cancelled} == {"r1@a.test", "r3@a.test"}
    assert all(r.domain == "a.test" and r.submitted_at == clock.now for r in cancelled)
    assert spool.cancelled_at("c1") == clock.now
    assert spool.cancelled_at("c2") is None
    # r2's batch starts after the cancel: the spool ends it instead of starting it.
    assert spool.started([leased["r2@a.test"].id]) == [leased["r2@a.test"].id]
    # r0 finishes: its outcome is recorded as usual.
    spool.record([outcome(leased["r0@a.test"], "delivered", code=250)])
    assert states(spool, "c1") == {
        "r0@a.test": "delivered",
        "r1@a.test": "cancelled",
        "r2@a.test": "cancelled",
        "r3@a.test": "cancelled",
    }
    report = spool.report("c1")
    assert report.states["cancelled"] == 3
    assert spool.status().states["cancelled"] == 3
    assert spool.pending("c1") == 0
    # Another campaign is untouched, and a cancel again cancels nothing more.
    assert states(spool, "c2") == {"other@a.test": "queued"}
    assert spool.cancel("c1") == []


def test_cancel_goes_by_pages(spool: Spool) -> None:
    spool.insert("c1", [new(f"r{i}@a.test") for i in range(25)])
    pages = [len(spool.cancel("c1", limit=10)) for _ in range(4)]
    assert pages == [10, 10, 5, 0]
    assert spool.report("c1").states["cancelled"] == 25


def test_a_recipient_put_back_after_the_cancel_ends_cancelled(spool: Spool, clock: Clock) -> None:
    spool.insert("c1", [new("a@a.test"), new("b@a.test"), new("c@a.test")])
    leased = {r.address: r for r in spool.lease(3, "me", 60)}
    spool.started([r.id for r in leased.values()])
    spool.cancel("c1")
    # a is deferred by its attempt, b released untried (a stop), c's owner shuts down.
    spool.record(
        [
            outcome(leased["a@a.test"], "deferred", next_attempt=clock.now + 60, code=451),
            outcome(leased["b@a.test"], "queued"),
        ]
    )
    assert spool.release_owner("me") == 1
    assert states(spool, "c1") == {
        "a@a.test": "cancelled",
        "b@a.test": "cancelled",
        "c@a.test": "cancelled",
    }
    assert spool.lease(10, "me", 60) == []


def test_api_keys_are_kept_by_hash(spool: Spool, clock: Clock) -> None:
    assert spool.add_api_key("app", b"h" * 32, False)
    assert spool.add_api_key("dash", b"d" * 32, True)
    assert not spool.add_api_key("app", b"x" * 32, False)  # the name is taken
    assert spool.find_api_key(b"h" * 32) == ("app", False, b"h" * 32)
    assert spool.find_api_key(b"d" * 32) == ("dash", True, b"d" * 32)
    assert spool.find_api_key(b"x" * 32) is None
    assert spool.api_keys() == [("app", False, clock.now), ("dash", True, clock.now)]
    assert spool.revoke_api_key("app")
    assert not spool.revoke_api_key("app")
    assert spool.find_api_key(b"h" * 32) is None


def test_a_version_4_spool_gets_the_cancelled_state(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "spool.db"
    with SqliteSpool(path, clock=clock) as spool:
        spool.put_campaign("c1", b"spec-1")
        spool.insert("c1", [new("a@x.test")])
    # As version 4 left it: no api_key table, no cancel mark, a CHECK that refuses 9 (and
    # no webhook outbox, version 6's, nor version 7's fleet tables).
    with closing(sqlite3.connect(path)) as db:
        db.execute("DROP TABLE rate_bucket")
        db.execute("DROP TABLE fleet_node")
        db.execute("DROP TABLE webhook_outbox")
        db.execute("DROP TABLE api_key")
        db.execute("ALTER TABLE campaign DROP COLUMN cancelled_at")
        (version,) = db.execute("PRAGMA schema_version").fetchone()
        db.execute("PRAGMA writable_schema = ON")
        db.execute(
            "UPDATE sqlite_schema SET sql = replace(sql, 'BETWEEN 0 AND 9', 'BETWEEN 0 AND 8')"
            " WHERE name = 'recipient'"
        )
        db.execute(f"PRAGMA schema_version = {version + 1}")
        db.execute("PRAGMA user_version = 4")
        db.commit()
    with closing(sqlite3.connect(path)) as db, pytest.raises(sqlite3.IntegrityError):
        db.execute("UPDATE recipient SET state = 9, due = NULL, next_attempt = NULL")
    with SqliteSpool(path, clock=clock) as spool:
        assert len(spool.cancel("c1")) == 1
        assert spool.report("c1").states["cancelled"] == 1
        assert spool.add_api_key("app", b"h" * 32, False)
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_version_1_postgresql_spool_gets_the_cancelled_state(pg_url: str, clock: Clock) -> None:
    import psycopg
    from ferrymail.spool.pg_schema import SCHEMA_VERSION as PG_VERSION

    with open_spool(pg_url, clock=clock) as spool:
        spool.put_campaign("c1", b"spec-1")
        spool.insert("c1", [new("a@x.test")])
    # As version 1 left it: no api_key table, no cancel mark, a CHECK that refuses 9 (and
    # no webhook outbox, version 3's, nor version 4's fleet tables).
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute("DROP TABLE rate_bucket")
        db.execute("DROP TABLE fleet_node")
        db.execute("DROP TABLE webhook_outbox")
        db.execute("DROP TABLE api_key")
        db.execute("ALTER TABLE campaign DROP COLUMN cancelled_at")
        db.execute("ALTER TABLE recipient DROP CONSTRAINT recipient_state_check")
        db.execute(
            "ALTER TABLE recipient ADD CONSTRAINT recipient_state_check"
            " CHECK (state BETWEEN 0 AND 8)"
        )
        db.execute("UPDATE ferrymail_spool SET version = 1")
    with open_spool(pg_url, clock=clock) as spool:
        assert [r.address for r in spool.cancel("c1")] == ["a@x.test"]
        assert spool.report("c1").states["cancelled"] == 1
        assert spool.add_api_key("app", b"h" * 32, False)
    with psycopg.connect(pg_url) as db:
        assert db.execute("SELECT version FROM ferrymail_spool").fetchone() == (PG_VERSION,)


class Hook:
    """The engine's side of `on_cancelled`: an outbox row per recipient, and what it saw."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def __call__(self, ended: list[CancelledRecipient]) -> list[OutboxRow]:
        if self.fail:
            raise RuntimeError("the outbox cannot be written")
        return [OutboxRow("esp", f"evt-{r.key}", b'{"type":"cancelled"}') for r in ended]


def outboxed(spool: Spool) -> list[str]:
    """The event ids of the outbox's waiting events, in order."""
    batch = spool.webhook_take("esp", 1000, older_than=1e12)
    return [] if batch is None else [event_id for event_id, _ in batch.events]


def test_every_path_that_ends_a_recipient_as_cancelled_gives_its_event(
    spool: Spool, clock: Clock
) -> None:
    spool.on_cancelled = Hook()
    host = socket.gethostname()
    spool.insert("c1", [new(f"r{i}@a.test") for i in range(7)])
    leased = {r.address: r for r in spool.lease(5, "me", 60)}  # r0 … r4
    spool.lease(1, f"{host}:{dead_pid()}:0a1b2c3d", 60)  # r5, of a process that died
    spool.started([leased["r0@a.test"].id, leased["r1@a.test"].id])
    clock.advance(1)
    # The cancel's page: r6, the only one waiting.
    assert [r.key for r in spool.cancel("c1")] == ["r6@a.test"]
    # A batch about to start: r2 ends instead.
    assert spool.started([leased["r2@a.test"].id]) == [leased["r2@a.test"].id]
    # A deferral after the cancel: r0 ends there.
    deferral = OutboxRow("esp", "evt-deferred", b'{"type":"deferred"}')
    spool.record(
        [outcome(leased["r0@a.test"], "deferred", next_attempt=clock.now + 60)], [deferral]
    )
    # r1's attempt, begun before the cancel, finishes.
    spool.record([outcome(leased["r1@a.test"], "delivered", code=250)])
    # The shutdown of "me": r3 and r4 (leased, not started) end there.
    assert spool.release_owner("me") == 2
    # A flush ends the dead process's lease: r5 ends there.
    spool.flush()

    ended = spool.take_cancelled()
    keys = [r.key for r in ended]  # in the order of their transactions
    assert keys[:3] == ["r6@a.test", "r2@a.test", "r0@a.test"]
    assert sorted(keys[3:5]) == ["r3@a.test", "r4@a.test"]
    assert keys[5:] == ["r5@a.test"]
    assert {r.campaign for r in ended} == {"c1"}
    assert all(r.at == clock.now and r.submitted_at == clock.now - 1 for r in ended)
    assert {r.key: r.attempts for r in ended}["r0@a.test"] == 1
    assert spool.take_cancelled() == []  # taken once
    # Each one's webhook event is in the outbox, r0's after its deferral's.
    events = outboxed(spool)
    assert sorted(events) == sorted(["evt-deferred", *(f"evt-{key}" for key in keys)])
    assert events.index("evt-deferred") + 1 == events.index("evt-r0@a.test")
    assert states(spool, "c1") == {
        **{f"r{i}@a.test": "cancelled" for i in (0, 2, 3, 4, 5, 6)},
        "r1@a.test": "delivered",
    }


def test_a_cancel_whose_events_cannot_be_written_ends_nobody(spool: Spool) -> None:
    spool.insert("c1", [new("a@a.test"), new("b@a.test")])
    spool.on_cancelled = Hook(fail=True)
    with pytest.raises(RuntimeError, match="the outbox cannot be written"):
        spool.cancel("c1")
    # Both or neither: the recipients still wait, no event was kept.
    assert states(spool, "c1") == {"a@a.test": "queued", "b@a.test": "queued"}
    assert spool.cancelled_at("c1") is None
    assert spool.take_cancelled() == []
    assert outboxed(spool) == []
    spool.on_cancelled = Hook()
    assert len(spool.cancel("c1")) == 2
    assert sorted(outboxed(spool)) == ["evt-a@a.test", "evt-b@a.test"]
    assert len(spool.take_cancelled()) == 2


def test_without_the_hook_nothing_is_kept(spool: Spool) -> None:
    spool.insert("c1", [new("a@a.test")])
    assert [(r.campaign, r.key) for r in spool.cancel("c1")] == [("c1", "a@a.test")]
    assert spool.take_cancelled() == []
    assert outboxed(spool) == []
