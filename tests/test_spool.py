"""The spool, on a real SQLite file and a real PostgreSQL database (each test that is not
about the SQLite file runs on both): leasing, recording, reports, suppressions,
reopening; and, SQLite's own, corrupt files, SIGKILL at random moments, and flat memory
for a million recipients."""

from __future__ import annotations

import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from ferrymail.errors import ConfigError
from ferrymail.spool import (
    FINAL,
    PENDING,
    DomainStatus,
    Leased,
    NewRecipient,
    Spool,
    SqliteSpool,
    Update,
    open_spool,
    suppression_key,
)
from ferrymail.spool import owners as spool_owners
from ferrymail.spool import postgres as spool_postgres
from ferrymail.spool import sqlite as spool_sqlite
from ferrymail.spool.postgres import PostgresSpool
from ferrymail.spool.schema import SCHEMA_VERSION
from ferrymail.spool.states import ALL, CODE, PENDING_BELOW
from ferrymail.wire import Recipient
from psycopg.rows import dict_row

T0 = 1_800_000_000.0  # the fake clock's start; any time would do
ENCODER = msgspec.msgpack.Encoder()


class Clock:
    """A clock the tests move by hand: leases and retries come due when a test says."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "spool.db"


@pytest.fixture
def spool(spool_at: str, clock: Clock) -> Iterator[Spool]:
    """A spool with campaign c1, on SQLite and on PostgreSQL (conftest.spool_at)."""
    with open_spool(spool_at, clock=clock) as spool:
        spool.put_campaign("c1", b"spec-1")
        yield spool


@pytest.fixture
def sqlite_spool(path: Path, clock: Clock) -> Iterator[SqliteSpool]:
    """For the tests about SQLite's own workings."""
    with SqliteSpool(path, clock=clock) as spool:
        spool.put_campaign("c1", b"spec-1")
        yield spool


def new(
    address: str,
    state: str = "queued",
    *,
    key: str | None = None,
    code: int | None = None,
    text: str | None = None,
) -> NewRecipient:
    blob = ENCODER.encode(Recipient(address, {"name": address.upper()}, key))
    domain = address.rpartition("@")[2].lower()
    return NewRecipient(blob, address, domain, key or address, state, code, None, text)


def outcome(
    leased: Leased,
    state: str,
    *,
    next_attempt: float | None = None,
    code: int | None = None,
    enhanced: str | None = None,
    text: str | None = None,
    category: str | None = None,
) -> Update:
    attempts = leased.attempts + (state != "queued")
    return Update(
        leased.id,
        state,
        attempts,
        next_attempt,
        code,
        enhanced,
        text,
        category,
        "mx.example.net",
        "192.0.2.1",
    )


def stored(spool: Spool) -> dict[int, dict[str, Any]]:
    """Every recipient row as the database has it, by id (a second connection)."""
    if isinstance(spool, PostgresSpool):
        with psycopg.connect(spool.url, row_factory=dict_row) as pg:
            return {row["id"]: row for row in pg.execute("SELECT * FROM recipient")}
    assert isinstance(spool, SqliteSpool)
    with closing(sqlite3.connect(spool.path)) as db:
        db.row_factory = sqlite3.Row
        return {row["id"]: dict(row) for row in db.execute("SELECT * FROM recipient")}


# ---- states ----


def test_states_partition_and_codes() -> None:
    assert set(ALL) == PENDING | FINAL and not PENDING & FINAL
    assert {"queued", "in-flight", "deferred"} == PENDING
    assert all(CODE[s] < PENDING_BELOW for s in PENDING)
    assert all(CODE[s] >= PENDING_BELOW for s in FINAL)
    assert sorted(CODE.values()) == list(range(len(ALL)))


# ---- insert and lease ----


def test_insert_returns_ids_in_order_and_lease_is_oldest_due_first(
    spool: Spool, clock: Clock
) -> None:
    first = spool.insert("c1", [new(f"a{i}@one.test") for i in range(3)])
    clock.advance(1)
    second = spool.insert("c1", [new(f"b{i}@two.test") for i in range(3)])
    assert first == [1, 2, 3] and second == [4, 5, 6]
    assert spool.insert("c1", []) == []

    leased = spool.lease(4, "me", 60)
    assert [r.id for r in leased] == [1, 2, 3, 4]
    one = leased[0]
    assert one == Leased(
        1, "c1", new("a0@one.test").recipient, "a0@one.test", "one.test", "a0@one.test", 0, T0, 0
    )
    assert msgspec.msgpack.decode(one.recipient, type=Recipient).address == "a0@one.test"
    assert spool.lease(0, "me", 60) == []


def test_leased_rows_are_not_leased_again(spool: Spool) -> None:
    spool.insert("c1", [new(f"r{i}@x.test") for i in range(5)])
    first = spool.lease(2, "a", 60)
    second = spool.lease(10, "b", 60)
    assert [r.id for r in first] == [1, 2]
    assert [r.id for r in second] == [3, 4, 5]
    assert spool.lease(10, "c", 60) == []
    rows = stored(spool)
    assert {rows[i]["lease_owner"] for i in (1, 2)} == {"a"}
    assert {rows[i]["lease_until"] for i in (3, 4, 5)} == {T0 + 60}


def test_an_expired_lease_comes_back(spool: Spool, clock: Clock) -> None:
    spool.insert("c1", [new("a@x.test"), new("b@x.test")])
    assert len(spool.lease(10, "dead", 30)) == 2
    assert spool.next_due() == T0 + 30  # when the leases end
    clock.advance(29)
    assert spool.lease(10, "alive", 30) == []
    clock.advance(1)
    again = spool.lease(10, "alive", 30)
    assert [(r.id, r.attempts) for r in again] == [(1, 0), (2, 0)]  # no attempt counted
    assert {row["lease_owner"] for row in stored(spool).values()} == {"alive"}
    # The dead owner's release at shutdown (had it lived) no longer touches them.
    assert spool.release_owner("dead") == 0


def dead_pid() -> int:
    """The pid of a process that has ended (and been waited for)."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    return int(child.stdout)


def test_the_leases_of_a_dead_process_of_this_host_end_at_once(spool_at: str, clock: Clock) -> None:
    host = socket.gethostname()
    dead, alive = f"{host}:{dead_pid()}:0a1b2c3d", f"{host}:{os.getpid()}:4e5f6a7b"
    with open_spool(spool_at, clock=clock) as before:
        before.put_campaign("c1", b"spec-1")
        before.insert("c1", [new(f"r{i}@x.test") for i in range(4)])
        assert len(before.lease(2, dead, 1800)) == 2
        assert len(before.lease(1, alive, 1800)) == 1
        assert len(before.lease(1, "elsewhere.example:1:89abcdef", 1800)) == 1
    assert not spool_owners.dead_here(alive)
    assert not spool_owners.dead_here("elsewhere.example:1:89abcdef")  # pids of another host
    # A restarted engine takes the dead process's recipients at once, not after 30 min;
    # the live one's and the other host's wait for their leases to end.
    with open_spool(spool_at, clock=clock) as after:
        assert [(o, n, d) for o, n, _, d in after.leases()] == [
            (dead, 2, True), ("elsewhere.example:1:89abcdef", 1, False), (alive, 1, False)
        ]  # fmt: skip
        taken = after.lease(10, "restarted", 1800)
        assert [r.id for r in taken] == [1, 2]
        assert {row["lease_owner"] for row in stored(after).values()} == {
            "restarted", alive, "elsewhere.example:1:89abcdef"
        }  # fmt: skip


def test_flush_puts_back_ended_leases_and_a_dead_processs(spool_at: str, clock: Clock) -> None:
    host = socket.gethostname()
    with open_spool(spool_at, clock=clock) as spool:
        spool.put_campaign("c1", b"spec-1")
        spool.insert("c1", [new(f"r{i}@d{i}.test") for i in range(4)])
        spool.lease(1, "gone-elsewhere", 60)
        spool.lease(1, f"{host}:{dead_pid()}:00000000", 1800)
        spool.lease(1, f"{host}:{os.getpid()}:11111111", 1800)  # alive: left alone
        clock.advance(61)
        assert spool.flush("d3.test") == 0  # not theirs
        assert spool.flush() == 2
        rows = stored(spool)
        assert [rows[i]["state"] for i in (1, 2, 3, 4)] == [
            CODE["queued"], CODE["queued"], CODE["in-flight"], CODE["queued"]
        ]  # fmt: skip
        assert rows[1]["due"] == rows[2]["due"] == T0 + 61
        assert [r.id for r in spool.lease(10, "me", 60)] == [4, 1, 2]  # oldest due first


def test_attempts_cut_short_by_a_dead_process_are_counted_in_a_row(
    spool: Spool, clock: Clock
) -> None:
    spool.insert("c1", [new("a@x.test"), new("b@x.test"), new("c@x.test")])
    leased = spool.lease(10, "dies", 30)
    spool.started([leased[0].id, leased[1].id])  # c@ was leased, never attempted
    clock.advance(30)
    again = spool.lease(10, "dies too", 30)
    assert [(r.address, r.interrupted, r.attempts) for r in again] == [
        ("a@x.test", 1, 0),
        ("b@x.test", 1, 0),
        ("c@x.test", 0, 0),
    ]
    spool.started([r.id for r in again])
    clock.advance(30)
    third = spool.lease(10, "alive", 30)
    assert [r.interrupted for r in third] == [2, 2, 1]
    # An outcome ends the run; a release without an attempt does not.
    spool.record([outcome(third[0], "deferred", next_attempt=clock.now)])
    spool.record([outcome(third[1], "queued")])
    spool.record([outcome(third[2], "delivered", code=250)])
    assert [(r.address, r.interrupted) for r in spool.lease(10, "alive", 30)] == [
        ("a@x.test", 0),
        ("b@x.test", 2),
    ]
    spool.started([third[2].id])  # a final row is not touched
    assert stored(spool)[third[2].id]["interrupted"] == 0


def test_renew_extends_a_lease(spool: Spool, clock: Clock) -> None:
    spool.insert("c1", [new("a@x.test"), new("b@x.test")])
    leased = spool.lease(10, "me", 30)
    clock.advance(20)
    assert spool.renew([leased[0].id], 30) == 1
    clock.advance(15)  # the second lease has ended, the renewed one has not
    assert [r.id for r in spool.lease(10, "other", 30)] == [2]
    spool.record([outcome(leased[0], "delivered", code=250)])
    assert spool.renew([leased[0].id], 30) == 0  # final: nothing to renew


def test_lease_for_given_domains(spool: Spool) -> None:
    spool.insert("c1", [new(f"r{i}@d{i % 3}.test") for i in range(9)])
    leased = spool.lease(10, "me", 60, domains={"d1.test", "d2.test"})
    assert [r.id for r in leased] == [2, 3, 5, 6, 8, 9]
    assert [r.id for r in spool.lease(10, "me", 60, domains=[])] == []
    assert [r.id for r in spool.lease(2, "me", 60, domains=["d0.test"])] == [1, 4]


# ---- record ----


def test_record_applies_only_to_rows_in_flight(spool: Spool, clock: Clock) -> None:
    spool.insert("c1", [new("a@x.test"), new("b@x.test"), new("c@x.test")])
    a, b = spool.lease(2, "me", 60)
    clock.advance(5)
    delivered = outcome(a, "delivered", code=250, enhanced="2.0.0", text="ok queued as 1")
    bounced = outcome(b, "bounced", code=550, enhanced="5.1.1", text="no such user")
    assert spool.record([delivered, bounced]) == 0
    # A replay, a late contradicting outcome, and a row never leased: all skipped.
    late = outcome(a, "bounced", code=550, text="too late")
    never = Update(3, "delivered", 1, None, 250, None, None, None, None, None)
    assert spool.record([delivered, late, never]) == 3
    rows = stored(spool)
    assert rows[1]["state"] == CODE["delivered"] and rows[1]["text"] == "ok queued as 1"
    assert rows[2]["state"] == CODE["bounced"] and rows[2]["enhanced"] == "5.1.1"
    assert rows[3]["state"] == CODE["queued"] and rows[3]["attempts"] == 0
    assert rows[1]["attempts"] == 1 and rows[1]["updated_at"] == T0 + 5
    assert (rows[1]["mx"], rows[1]["ip"]) == ("mx.example.net", "192.0.2.1")
    assert all(rows[i][f] is None for i in (1, 2) for f in ("lease_until", "lease_owner", "due"))
    assert spool.final_states("c1") == {
        "a@x.test": "delivered",
        "b@x.test": "bounced",
        "c@x.test": "queued",
    }


def test_deferred_rows_come_due_at_their_next_attempt(spool: Spool, clock: Clock) -> None:
    spool.insert("c1", [new("a@x.test")])
    (a,) = spool.lease(1, "me", 60)
    deferral = outcome(
        a, "deferred", next_attempt=T0 + 300, code=451, text="greylisted", category="greylisting"
    )
    spool.record([deferral])
    assert spool.next_due() == T0 + 300
    assert spool.pending() == 1
    clock.advance(299)
    assert spool.lease(1, "me", 60) == []
    clock.advance(1)
    (again,) = spool.lease(1, "me", 60)
    assert again.id == a.id and again.attempts == 1
    spool.record([outcome(again, "delivered", code=250)])
    assert spool.next_due() is None and spool.pending() == 0


def test_release_without_an_attempt_keeps_the_last_reply(spool: Spool, clock: Clock) -> None:
    spool.insert("c1", [new("a@x.test")])
    (a,) = spool.lease(1, "me", 60)
    spool.record([outcome(a, "deferred", next_attempt=T0, code=421, text="slow down")])
    (a,) = spool.lease(1, "me", 60)
    # The site is suspended: back to the queue until T0 + 600, no attempt made.
    release = Update(a.id, "queued", a.attempts, T0 + 600, None, None, None, None, None, None)
    spool.record([release])
    row = stored(spool)[a.id]
    assert (row["state"], row["attempts"], row["due"]) == (CODE["queued"], 1, T0 + 600)
    assert (row["code"], row["text"], row["mx"]) == (421, "slow down", "mx.example.net")
    clock.advance(600)
    (a,) = spool.lease(1, "me", 60)
    # A release without a time is due at once.
    spool.record([Update(a.id, "queued", 1, None, None, None, None, None, None, None)])
    assert spool.next_due() == clock.now


def test_bad_updates_and_rows_are_refused_whole(spool: Spool) -> None:
    spool.insert("c1", [new("a@x.test"), new("b@x.test")])
    a, b = spool.lease(2, "me", 60)
    with pytest.raises(ValueError, match="cannot end 'in-flight'"):
        spool.record([outcome(a, "delivered"), outcome(b, "in-flight")])
    with pytest.raises(ValueError, match="deferred without a next attempt"):
        spool.record([outcome(a, "deferred")])
    assert spool.counts()["in-flight"] == 2  # the delivered one before the bad one too
    with pytest.raises(ValueError, match="cannot be 'deferred'"):
        spool.insert("c1", [new("c@x.test"), new("d@x.test", "deferred")])
    with pytest.raises(ConfigError, match="'nope' is not in the spool"):
        spool.insert("nope", [new("e@x.test")])
    assert sum(spool.counts().values()) == 2


# SQLite only: PRAGMA synchronous. (PostgresSpool commits leases with
# synchronous_commit off, set per transaction: nothing to observe after it.)
def test_leases_skip_the_fsync_and_outcomes_do_not(sqlite_spool: Spool) -> None:
    spool = sqlite_spool

    def synchronous() -> int:
        return int(spool._db.execute("PRAGMA synchronous").fetchone()[0])

    full, normal = 2, 1
    assert synchronous() == full
    spool.insert("c1", [new("a@x.test")])
    assert synchronous() == full
    (a,) = spool.lease(1, "me", 60)
    assert synchronous() == normal
    spool.record([outcome(a, "delivered", code=250)])
    assert synchronous() == full


# ---- shutdown and flush ----


def test_release_owner_puts_back_what_it_leased(spool: Spool, clock: Clock) -> None:
    spool.insert("c1", [new(f"r{i}@x.test") for i in range(4)])
    (r1,) = spool.lease(1, "me", 60)
    spool.record([outcome(r1, "deferred", next_attempt=T0, code=451)])  # due again at once
    mine = spool.lease(2, "me", 60)  # the deferred one and a queued one
    theirs = spool.lease(1, "them", 60)
    assert [r.id for r in mine] == [1, 2] and [r.id for r in theirs] == [3]
    clock.advance(1)
    assert spool.release_owner("me") == 2
    rows = stored(spool)
    assert (rows[1]["state"], rows[1]["due"], rows[1]["attempts"]) == (CODE["deferred"], T0, 1)
    assert (rows[2]["state"], rows[2]["due"], rows[2]["attempts"]) == (CODE["queued"], T0, 0)
    assert rows[3]["state"] == CODE["in-flight"] and rows[3]["lease_owner"] == "them"
    assert [r.id for r in spool.lease(10, "me", 60)] == [1, 2, 4]


def test_flush_makes_waiting_rows_due_now(spool: Spool, clock: Clock) -> None:
    spool.insert("c1", [new(f"r{i}@d{i % 2}.test") for i in range(4)])
    leased = spool.lease(4, "me", 60)
    spool.record([outcome(r, "deferred", next_attempt=T0 + 3600) for r in leased])
    clock.advance(5)
    assert spool.flush("D1.test.") == 2  # as an operator may type it
    assert [r.id for r in spool.lease(10, "me", 60)] == [2, 4]
    assert spool.flush() == 2
    assert spool.flush() == 0  # already due
    assert [r.id for r in spool.lease(10, "me", 60)] == [1, 3]


# ---- counts, report, status ----


def mixed_campaign(spool: Spool, clock: Clock) -> None:
    """c1: 12 recipients at a.test, b.test and c.test ending in every kind of state."""
    spool.insert(
        "c1",
        [
            new("bad@", "rejected", code=553, text="not a valid address"),
            new("gone@a.test", "suppressed", text="on the suppression list"),
            *(new(f"r{i}@{'abc'[i % 3]}.test") for i in range(10)),
        ],
    )
    spool.put_campaign("c2", b"spec-2")
    spool.insert("c2", [new("other@c.test")])
    # r0 … r8 of c1; r9@a.test and c2's other@c.test stay queued.
    r = {leased.address: leased for leased in spool.lease(9, "me", 60)}
    text = "<x>: Recipient address rejected: User unknown"

    def unknown(leased: Leased) -> Update:
        return outcome(
            leased, "bounced", code=550, enhanced="5.1.1", text=text, category="bad-mailbox"
        )

    spool.record(
        [
            outcome(r["r0@a.test"], "delivered", code=250),
            outcome(r["r1@b.test"], "delivered", code=250),
            unknown(r["r2@c.test"]),
            unknown(r["r3@a.test"]),
            outcome(r["r4@b.test"], "bounced", code=554, text="spam", category="spam"),
            outcome(
                r["r5@c.test"],
                "deferred",
                next_attempt=T0 + 900,
                code=451,
                enhanced="4.7.1",
                text="greylisted",
                category="greylisting",
            ),
            outcome(r["r6@a.test"], "expired", code=421, text="busy", category="throttled"),
            outcome(r["r7@b.test"], "failed", text="undefined variable"),
            # r8@c.test stays in flight.
        ]
    )


def test_counts_report_and_status_of_a_mixed_campaign(spool: Spool, clock: Clock) -> None:
    mixed_campaign(spool, clock)
    expected = {
        "queued": 1,
        "in-flight": 1,
        "deferred": 1,
        "delivered": 2,
        "bounced": 3,
        "expired": 1,
        "rejected": 1,
        "suppressed": 1,
        "failed": 1,
        "cancelled": 0,
    }
    report = spool.report("c1")
    assert report.campaign == "c1"
    assert report.states == expected
    assert list(report.states) == list(ALL)
    assert report.domains == {
        "": {"rejected": 1},
        "a.test": {"suppressed": 1, "delivered": 1, "bounced": 1, "expired": 1, "queued": 1},
        "b.test": {"delivered": 1, "bounced": 1, "failed": 1},
        "c.test": {"bounced": 1, "deferred": 1, "in-flight": 1},
    }
    assert report.categories == {"bad-mailbox": 2, "spam": 1, "greylisting": 1, "throttled": 1}
    assert report.replies == [
        ("550 5.1.1 <x>: Recipient address rejected: User unknown", 2),
        ("421 busy", 1),
        ("451 4.7.1 greylisted", 1),
        ("554 spam", 1),
    ]
    c2 = spool.report("c2")
    assert c2.states["queued"] == 1 and sum(c2.states.values()) == 1

    assert spool.counts() == expected | {"queued": 2}
    assert spool.pending() == 4 and spool.pending("c1") == 3 and spool.pending("c2") == 1
    status = spool.status()
    assert status.states == spool.counts()
    assert status.pending_domains == 2
    assert status.domains == [
        DomainStatus("c.test", 3, 1, 1, T0 + 900),
        DomainStatus("a.test", 1, 0, 0, None),
    ]
    assert status.next_due == T0 == spool.next_due()  # r9 has been due since submit
    with pytest.raises(ConfigError, match="'nope'"):
        spool.report("nope")


def test_iter_recipients_streams_in_id_order(spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (spool_sqlite, spool_postgres):
        monkeypatch.setattr(module, "PAGE", 7)  # many pages, one partly filled
    spool.put_campaign("c2", b"spec-2")
    expected = []
    for chunk in range(5):  # two campaigns' chunks interleaved in the table
        ids = spool.insert("c1", [new(f"a{chunk}-{i}@x.test") for i in range(6)])
        spool.insert("c2", [new(f"b{chunk}-{i}@x.test") for i in range(4)])
        expected += [(id_, f"a{chunk}-{i}@x.test") for i, id_ in enumerate(ids)]
    got = list(spool.iter_recipients("c1"))
    assert [(id_, key) for id_, key, _, _, _ in got] == expected
    assert {(state, attempts) for _, _, _, state, attempts in got} == {("queued", 0)}
    assert len(spool.final_states("c2")) == 20
    spool.put_campaign("empty", b"spec")
    assert list(spool.iter_recipients("empty")) == []
    with pytest.raises(ConfigError, match="'nope' is not in the spool"):
        spool.iter_recipients("nope")  # at the call, not at the first page


# ---- campaigns ----


def test_a_key_is_queued_once_per_campaign(spool: Spool) -> None:
    first = spool.insert("c1", [new("a@x.test"), new("b@x.test"), new("A@x.test", key="a@x.test")])
    assert first == [1, 2, None]  # the same key later in one insert: left out
    # A resubmit of the list (after a crash, or by mistake) queues only what is new,
    # whatever state the earlier rows are in; a rejected row's key counts too.
    again = spool.insert(
        "c1", [new("b@x.test"), new("c@x.test"), new("bad", "rejected", code=553), new("a@x.test")]
    )
    assert again == [None, 4, 5, None]
    assert spool.insert("c1", [new("bad", "rejected", code=553), new("d@x.test")]) == [None, 7]
    assert [(k, a) for _, k, a, _, _ in spool.iter_recipients("c1")] == [
        ("a@x.test", "a@x.test"),
        ("b@x.test", "b@x.test"),
        ("c@x.test", "c@x.test"),
        ("bad", "bad"),
        ("d@x.test", "d@x.test"),
    ]
    # Keys are per campaign: another campaign may send to the same people.
    spool.put_campaign("c2", b"spec-2")
    assert spool.insert("c2", [new("a@x.test"), new("b@x.test")]) == [8, 9]
    assert spool.counts()["queued"] == 6


def test_put_campaign_is_idempotent_and_replaces_a_spec_only_while_nothing_was_attempted(
    spool: Spool,
) -> None:
    assert spool.put_campaign("c1", b"spec-1") is False  # the same bytes: nothing to do
    assert spool.campaign_spec("c1") == b"spec-1"
    assert spool.campaign_spec("nope") is None
    # Recipients refused at submit, queued but never leased, or failed to render: no
    # message can have gone out, so a fixed spec replaces the old one, and the failed
    # are forgotten, to be queued again when submitted again.
    spool.insert("c1", [new("q@x.test"), new("f@x.test"), new("r@x.test", "rejected")])
    _, failed = spool.lease(2, "me", 60)
    spool.record([outcome(failed, "failed")])
    spool.release_owner("me")  # the other one: leased, never attempted
    assert spool.put_campaign("c1", b"spec-2") is True
    assert spool.campaign_spec("c1") == b"spec-2"
    assert spool.final_states("c1") == {"q@x.test": "queued", "r@x.test": "rejected"}
    assert spool.insert("c1", [new("f@x.test"), new("q@x.test")])[1] is None
    # Once one was attempted (here deferred), the old spec stays, and the error says
    # what to do.
    (deferred,) = spool.lease(1, "me", 60)
    spool.record([outcome(deferred, "deferred", next_attempt=T0 + 60)])
    with pytest.raises(ConfigError, match="campaign 'c1' is already in the spool") as e:
        spool.put_campaign("c1", b"spec-3")
    assert e.value.field == "id"
    assert "1 of its recipients were attempted" in str(e.value) and "a new id" in str(e.value)
    assert spool.campaign_spec("c1") == b"spec-2"


# ---- suppressions ----


def test_suppressions_compare_addresses_case_insensitively(spool: Spool, clock: Clock) -> None:
    spool.suppress("Ann.Lee@Example.COM", "hard bounce")
    for same in ("ann.lee@example.com", "ANN.LEE@EXAMPLE.COM", " ann.lee@example.com. "):
        assert spool.is_suppressed(same), same
    assert not spool.is_suppressed("ann.lee@example.org")
    assert not spool.is_suppressed("annlee@example.com")  # no dot or plus folding
    spool.suppress("Jörg@Bücher.DE", "complaint")
    assert suppression_key("No-At-Sign") == "no-at-sign"
    assert spool.is_suppressed("jörg@xn--bcher-kva.de")
    assert suppression_key("JÖRG@bücher.de") == "jörg@xn--bcher-kva.de"
    clock.advance(10)
    spool.suppress("ANN.LEE@example.com", "complaint")  # again: the new reason and time
    assert spool.suppressions() == [
        ("ann.lee@example.com", "complaint", T0 + 10),
        ("jörg@xn--bcher-kva.de", "complaint", T0),
    ]
    assert spool.suppressions(limit=1) == [("ann.lee@example.com", "complaint", T0 + 10)]
    assert spool.unsuppress("Ann.Lee@example.com") is True
    assert spool.unsuppress("ann.lee@example.com") is False
    assert not spool.is_suppressed("ann.lee@example.com")


def test_suppressed_among_checks_in_chunks(spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (spool_sqlite, spool_postgres):
        monkeypatch.setattr(module, "SUPPRESSION_CHUNK", 1000)
    for i in range(0, 2500, 100):
        spool.suppress(f"user{i}@example.com", "bounce")
    addresses = [f"User{i}@Example.com" for i in range(2500)] + ["user0@example.com", "x@y"]
    found = spool.suppressed_among(addresses)
    assert found == {f"User{i}@Example.com" for i in range(0, 2500, 100)} | {"user0@example.com"}
    assert spool.suppressed_among([]) == set()


# ---- suspended sites ----


def test_suspensions_are_kept_until_they_end_or_are_lifted(spool: Spool, clock: Clock) -> None:
    spool.suspend("mx.a.test:25", T0 + 600, "421 4.7.0 slow down", ["b.test", "a.test"])
    spool.suspend("mx.c.test:25", T0 + 60, "every MX host failed: refused", ["c.test"])
    spool.suspend("mx.d.test:25", T0 + 300, "421 busy", ["d.test"])
    status = spool.status()
    assert [(s.site, s.until, s.domains) for s in status.suspended] == [
        ("mx.c.test:25", T0 + 60, ["c.test"]),
        ("mx.d.test:25", T0 + 300, ["d.test"]),
        ("mx.a.test:25", T0 + 600, ["a.test", "b.test"]),
    ]
    assert status.suspended[2].reason == "421 4.7.0 slow down"
    assert status.suspended[2].since == T0
    clock.advance(120)  # one has ended
    assert [s.site for s in spool.suspensions()] == ["mx.d.test:25", "mx.a.test:25"]
    # Suspended again: the new end and reason replace the old.
    spool.suspend("mx.d.test:25", T0 + 900, "421 still busy", ["d.test"])
    assert [(s.site, s.reason) for s in spool.suspensions()] == [
        ("mx.a.test:25", "421 4.7.0 slow down"),
        ("mx.d.test:25", "421 still busy"),
    ]
    # `flush DOMAIN` lifts the sites the domain was among (as typed by an operator).
    assert spool.lift("B.Test.") == ["mx.a.test:25"]
    assert spool.lift("b.test") == []
    assert spool.lift() == ["mx.d.test:25"]
    assert spool.suspensions() == []


# SQLite only: a file of an older SQLite schema (PostgreSQL's schema starts at version 1).
def test_a_version_1_spool_is_brought_up_to_date(path: Path, clock: Clock) -> None:
    def version_1(spool_file: Path) -> None:
        """The file as ferrymail 0.1 (schema version 1) left it: no key index, no
        suspension table, no interrupted."""
        with closing(sqlite3.connect(spool_file)) as db:
            db.execute("DROP INDEX recipient_key")
            db.execute("DROP TABLE suspension")
            db.execute("ALTER TABLE recipient DROP COLUMN interrupted")
            db.execute("DROP TABLE rate_bucket")  # version 7's
            db.execute("DROP TABLE fleet_node")
            db.execute("DROP TABLE webhook_outbox")  # version 6's
            db.execute("DROP TABLE api_key")  # version 5's
            db.execute("ALTER TABLE campaign DROP COLUMN cancelled_at")
            db.execute("DROP TABLE shaping_action")  # version 4's
            db.execute("DROP TABLE warmup_sent")
            db.execute("DROP TABLE feedback")  # and version 3's tables as version 2 had them
            db.execute("DROP TABLE suppression")
            db.execute(
                "CREATE TABLE suppression (address TEXT PRIMARY KEY, reason TEXT NOT NULL,"
                " added_at REAL NOT NULL) WITHOUT ROWID"
            )
            db.execute("PRAGMA user_version = 1")
            db.commit()

    with SqliteSpool(path, clock=clock) as spool:
        spool.put_campaign("c1", b"spec-1")
        spool.insert("c1", [new("a@x.test"), new("b@x.test")])
    version_1(path)
    with SqliteSpool(path, clock=clock) as spool:
        assert spool.insert("c1", [new("a@x.test"), new("c@x.test")]) == [None, 4]
        assert spool.suspensions() == []
        assert [r.interrupted for r in spool.lease(10, "me", 60)] == [0, 0, 0]
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)

    # Version 1 allowed a key twice in a campaign: such a file is refused, unchanged.
    twice = path.with_name("twice.db")
    with SqliteSpool(twice, clock=clock) as spool:
        spool.put_campaign("c1", b"spec-1")
        spool.insert("c1", [new("a@x.test")])
    version_1(twice)
    with closing(sqlite3.connect(twice)) as db:
        db.execute(
            "INSERT INTO recipient (id, campaign, state, submitted_at, updated_at, recipient,"
            " address, domain, key) SELECT 2, campaign, 3, submitted_at, updated_at,"
            " recipient, address, domain, key FROM recipient WHERE id = 1"
        )
        db.commit()
    with pytest.raises(ConfigError, match=r"campaign 'c1' has recipient key 'a@x\.test' twice"):
        SqliteSpool(twice)
    with closing(sqlite3.connect(twice)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (1,)
        assert db.execute("SELECT count(*) FROM recipient").fetchone() == (2,)


# ---- the file (SQLite only, but for reopening) ----


def test_reopening_keeps_everything(spool_at: str, clock: Clock) -> None:
    with open_spool(spool_at, clock=clock) as spool:
        spool.put_campaign("c1", b"spec-1")
        mixed_campaign(spool, clock)
        spool.suppress("gone@a.test", "complaint")
        before = (spool.report("c1"), spool.counts(), list(spool.iter_recipients("c1")))
    with open_spool(spool_at, clock=clock) as spool:
        assert (spool.report("c1"), spool.counts(), list(spool.iter_recipients("c1"))) == before
        assert spool.campaign_spec("c1") == b"spec-1" and spool.campaign_spec("c2") == b"spec-2"
        assert spool.suppressions() == [("gone@a.test", "complaint", T0)]
        # The in-flight ones of the closed process come back when their lease ends.
        assert [r.address for r in spool.lease(10, "new", 600)] == ["r9@a.test", "other@c.test"]
        clock.advance(60)
        assert [r.address for r in spool.lease(10, "new", 60)] == ["r8@c.test"]
    if spool_at.startswith("postgresql://"):
        return
    with closing(sqlite3.connect(spool_at)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


def test_files_that_are_not_spools_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(random.Random(1).randbytes(8192))
    with pytest.raises(ConfigError, match=f"{garbage} is not a usable ferrymail spool"):
        SqliteSpool(garbage)

    foreign = tmp_path / "foreign.db"
    with closing(sqlite3.connect(foreign)) as db:
        db.execute("CREATE TABLE notes (text)")
    with pytest.raises(ConfigError, match=f"{foreign} is an SQLite file but not a ferrymail"):
        SqliteSpool(foreign)

    newer = tmp_path / "newer.db"
    SqliteSpool(newer).close()
    with closing(sqlite3.connect(newer)) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ConfigError, match=f"schema version {SCHEMA_VERSION + 1}, written by a"):
        SqliteSpool(newer)

    with pytest.raises(ConfigError, match=r"cannot open the spool|not a usable") as e:
        SqliteSpool(tmp_path / "missing" / "spool.db")
    assert str(tmp_path / "missing" / "spool.db") in str(e.value)


def test_a_corrupt_spool_is_refused(path: Path) -> None:
    with SqliteSpool(path) as spool:
        spool.put_campaign("c1", b"spec")
        spool.insert("c1", [new(f"r{i}@x.test") for i in range(100)])
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything into the main file
    data = bytearray(path.read_bytes())
    data[100:4096] = bytes(4096 - 100)  # the schema page, after the 100-byte header
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=f"{path} is not a usable ferrymail spool"):
        SqliteSpool(path)


# ---- crash safety (SQLite only: the file after SIGKILL, integrity_check) ----

CHUNK = 50
# A child that writes to the spool in a loop as the engine would, and says on stdout
# what each call returned (after it returned): what it says must be in the file.
CHILD = f"""
import os, random, sys, time
from ferrymail.spool import NewRecipient, SqliteSpool, Update
path, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
spool = SqliteSpool(path)
spool.put_campaign("crash", b"spec")
owner = f"child-{{os.getpid()}}"
print("ready", flush=True)
inserts = 0
while True:
    roll = rng.random()
    if roll < 0.35:
        inserts += 1
        rows = []
        for i in range({CHUNK}):
            domain = f"d{{rng.randrange(20)}}.test"
            rejected = rng.random() < 0.05
            key = f"{{seed}}.{{inserts}}.{{i}}"  # each once: a key is queued once per campaign
            rows.append(NewRecipient(rng.randbytes(40), f"u{{i}}@{{domain}}", domain, key,
                "rejected" if rejected else "queued", 553 if rejected else None))
        ids = spool.insert("crash", rows)
        print("insert", ids[0], ids[-1], flush=True)
    elif roll < 0.9:
        updates = []
        for r in spool.lease(rng.randrange(1, 200), owner, 0.2):
            state = rng.choice(["delivered", "bounced", "deferred", "expired", "queued", None])
            if state is None:
                continue  # left in flight: its lease ends and another lease takes it
            attempts = r.attempts + (state != "queued")
            due = time.time() + rng.random() * 0.2
            updates.append(Update(r.id, state, attempts, due, 250, "2.0.0", "ok", None,
                "mx", "127.0.0.1"))
        spool.record(updates)
        final = [f"{{u.id}}:{{u.state}}" for u in updates if u.state not in ("queued", "deferred")]
        print("final", *final, flush=True)
    elif roll < 0.95:
        spool.release_owner(owner)
    else:
        spool.flush()
        spool.suppress(f"u{{rng.randrange(50)}}@d1.test", "bounce")
"""

INVARIANTS = """
SELECT count(*) FROM recipient WHERE NOT (
    (state IN (0, 2) AND due IS NOT NULL AND due = next_attempt AND lease_until IS NULL
        AND lease_owner IS NULL AND leased_from IS NULL)
    OR (state = 1 AND due = lease_until AND lease_owner IS NOT NULL
        AND leased_from IN (0, 2) AND next_attempt IS NOT NULL)
    OR (state BETWEEN 3 AND 8 AND due IS NULL AND next_attempt IS NULL
        AND lease_until IS NULL AND lease_owner IS NULL AND leased_from IS NULL)
)
"""


def check_consistent(path: Path, inserted: set[int], final: dict[int, str]) -> int:
    """The file opens, passes integrity_check, every row is in exactly one state with the
    fields of that state, and whatever the child was told it has is there."""
    with SqliteSpool(path) as spool:
        counts = spool.counts()
        states: dict[int, str] = {}
        if spool.campaign_spec("crash") is not None:  # else killed before it was stored
            states = {id_: state for id_, _, _, state, _ in spool.iter_recipients("crash")}
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute(INVARIANTS).fetchone() == (0,)
        (total,) = db.execute("SELECT count(*) FROM recipient").fetchone()
        (top,) = db.execute("SELECT coalesce(max(id), 0) FROM recipient").fetchone()
        (unattempted,) = db.execute(
            "SELECT count(*) FROM recipient WHERE state IN (3, 4, 5) AND attempts < 1"
        ).fetchone()
    assert total == top == len(states) == sum(counts.values())
    assert total % CHUNK == 0  # whole inserts only
    assert unattempted == 0
    assert inserted <= set(states)
    assert {id_: states[id_] for id_ in final} == final
    return int(total)


def test_sigkill_at_random_moments_leaves_a_consistent_spool(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    rng = random.Random(5321)
    inserted: set[int] = set()
    final: dict[int, str] = {}
    totals = []
    for run in range(8):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), str(run)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        # The first runs die at once (while the file is being created or opened), the
        # others once they have worked for a random while.
        if run >= 2:
            assert child.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.0, 0.1) if run < 2 else rng.uniform(0.05, 0.6))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate(timeout=30)
        assert child.returncode == -signal.SIGKILL
        for line in out.splitlines(keepends=True):
            if not line.endswith("\n"):
                continue  # cut off by the kill: not acknowledged
            word, *rest = line.split()
            if word == "insert":
                inserted.update(range(int(rest[0]), int(rest[1]) + 1))
            elif word == "final":
                final.update((int(i), s) for i, s in (item.split(":") for item in rest))
        totals.append(check_consistent(path, inserted, final))
    assert totals[-1] > 0 and len(final) > 0  # the children got work done between kills


# ---- a million recipients (SQLite only: the embedded spool's memory) ----

MILLION = """
import resource, sys, time
from ferrymail.spool import NewRecipient, SqliteSpool
N, CHUNK = 1_000_000, 10_000
BLOB = bytes(60)
spool = SqliteSpool(sys.argv[1])
spool.put_campaign("big", b"spec")

def chunk(start):  # made when needed: a generator of a million never sits in memory
    return [NewRecipient(BLOB, f"user{i}@d{i % 5000}.example", f"d{i % 5000}.example",
                         str(i), "queued") for i in range(start, start + CHUNK)]

def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

spool.insert("big", chunk(0))
base = rss()
started = time.perf_counter()
for start in range(CHUNK, N, CHUNK):
    spool.insert("big", chunk(start))
inserted = time.perf_counter() - started
streamed = sum(1 for _ in spool.iter_recipients("big"))
leased = len(spool.lease(1000, "me", 60))
print(base, rss(), spool.pending("big"), streamed, leased, round(inserted, 1))
"""


# 10 to 15 s on the 2-core CI machine (the insert of a million rows is most of it).
@pytest.mark.slow
def test_a_million_recipients_in_flat_memory(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", MILLION, str(tmp_path / "big.db")],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    base, peak, pending, streamed, leased, seconds = result.stdout.split()
    assert (int(pending), int(streamed), int(leased)) == (1_000_000, 1_000_000, 1000)
    growth_mib = (int(peak) - int(base)) / 1024
    assert growth_mib < 100, f"RSS grew {growth_mib:.0f} MiB over 99 chunks ({seconds} s)"
