"""The spool's share of each site's limits for a fleet: take_tokens (a site's rate bucket:
starts full, refills at the rate, holds one second's worth, by the spool's clock) and
the engines' heartbeats (who is alive, who left), on SQLite and on PostgreSQL."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import psycopg
import pytest
from ferrymail.spool import Spool, SqliteSpool, open_spool
from ferrymail.spool.postgres import PostgresSpool
from test_spool import T0, Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def spool(spool_at: str, clock: Clock) -> Iterator[Spool]:
    with open_spool(spool_at, clock=clock) as spool:
        yield spool


def age(spool: Spool, seconds: float) -> None:
    """Moves the spool's clock `seconds` on for the buckets and heartbeats: SQLite's is the
    engine's (the fake clock), PostgreSQL's the server's, which the test cannot move, so
    the rows are moved back instead (what time passing does to them)."""
    if isinstance(spool, PostgresSpool):
        with psycopg.connect(spool.url, autocommit=True) as db:
            db.execute("UPDATE rate_bucket SET filled_at = filled_at - %s", (seconds,))
            db.execute("UPDATE fleet_node SET seen_at = seen_at - %s", (seconds,))
    else:
        clock = spool._clock
        assert isinstance(clock, Clock)
        clock.advance(seconds)


def test_a_new_bucket_starts_full_with_one_seconds_worth(spool: Spool) -> None:
    # 2/s: one second's worth is 2 tokens; a grant takes what there is, up to `want`.
    assert spool.take_tokens("mx.a.test:25", 2.0, 5) == 2
    # Empty now (at 2/s, a token takes half a second to come: more than this test).
    assert spool.take_tokens("mx.a.test:25", 2.0, 5) == 0
    # Another site has its own bucket.
    assert spool.take_tokens("mx.b.test:25", 2.0, 1) == 1


def test_a_bucket_refills_at_the_rate_and_holds_at_most_one_second(spool: Spool) -> None:
    assert spool.take_tokens("s", 2.0, 2) == 2
    age(spool, 0.75)  # 1.5 tokens refilled: one whole one
    assert spool.take_tokens("s", 2.0, 10) == 1
    age(spool, 0.25)  # the half token left and half a token more: one
    assert spool.take_tokens("s", 2.0, 10) == 1
    age(spool, 3600)  # an hour idle: still one second's worth, no more
    assert spool.take_tokens("s", 2.0, 100) == 2
    # A grant smaller than what there is leaves the rest for the others.
    age(spool, 3600)
    assert spool.take_tokens("s", 2.0, 1) == 1
    assert spool.take_tokens("s", 2.0, 1) == 1
    assert spool.take_tokens("s", 2.0, 1) == 0


def test_a_rate_under_one_a_second_holds_one_token(spool: Spool) -> None:
    assert spool.take_tokens("slow", 0.1, 5) == 1  # at least one token: one message
    age(spool, 5)  # half a token
    assert spool.take_tokens("slow", 0.1, 5) == 0
    age(spool, 3600)
    assert spool.take_tokens("slow", 0.1, 5) == 1


def test_the_postgresql_bucket_runs_on_the_servers_clock(pg_url: str, clock: Clock) -> None:
    """Engines' clocks may disagree: the bucket's time is the server's, whatever the
    spool's own clock says (here years ahead)."""
    with open_spool(pg_url, clock=clock) as spool:
        before = time.time()
        assert spool.take_tokens("s", 10.0, 3) == 3
        with psycopg.connect(pg_url) as db:
            row = db.execute("SELECT tokens, filled_at FROM rate_bucket WHERE key = 's'")
            tokens, filled_at = row.fetchone() or (None, None)
        assert tokens == 7.0
        assert before - 60 < filled_at < time.time() + 60  # the server's time, not T0
        spool.take_tokens("s", 10.0, 7)
        age(spool, 0.5)  # by the server's clock: 5 tokens
        assert spool.take_tokens("s", 10.0, 100) in (5, 6)  # (and what the test took)


def test_several_engines_take_from_one_bucket(spool_at: str, clock: Clock) -> None:
    """Two engines (connections) share a site's bucket: what one takes, the other does
    not get."""
    with open_spool(spool_at, clock=clock) as one, open_spool(spool_at, clock=clock) as two:
        assert one.take_tokens("s", 4.0, 3) == 3
        assert two.take_tokens("s", 4.0, 3) == 1
        assert one.take_tokens("s", 4.0, 3) == 0


def test_heartbeats_say_which_engines_are_alive(spool_at: str, clock: Clock) -> None:
    with open_spool(spool_at, clock=clock) as one, open_spool(spool_at, clock=clock) as two:
        _, live = one.fleet_heartbeat("host:1:aa", "node-1", 5.0)
        assert live == ["host:1:aa"]
        _, live = two.fleet_heartbeat("host:2:bb", "node-2", 5.0)
        assert live == ["host:1:aa", "host:2:bb"]
        age(one, 3)
        now, live = two.fleet_heartbeat("host:2:bb", "node-2", 5.0)
        assert live == ["host:1:aa", "host:2:bb"]
        age(one, 3)  # engine 1 not seen for 6 s: counted out
        _, live = two.fleet_heartbeat("host:2:bb", "node-2", 5.0)
        assert live == ["host:2:bb"]
        _, live = one.fleet_heartbeat("host:1:aa", "node-1", 5.0)  # back
        assert live == ["host:1:aa", "host:2:bb"]
        one.fleet_leave("host:1:aa")  # it stopped
        _, live = two.fleet_heartbeat("host:2:bb", "node-2", 5.0)
        assert live == ["host:2:bb"]
        if isinstance(two, SqliteSpool):
            assert now == T0 + 3  # the spool's clock: SQLite's is the engine's


def test_a_spool_of_the_version_before_gets_the_fleet_tables(tmp_path: Path, pg_url: str) -> None:
    """SQLite version 6 and PostgreSQL version 3 (before the fleet's tables) are brought
    up to date when opened to be written."""
    from ferrymail.spool.pg_schema import SCHEMA_VERSION as PG_VERSION
    from ferrymail.spool.schema import SCHEMA_VERSION

    path = tmp_path / "spool.db"
    SqliteSpool(path).close()
    with closing(sqlite3.connect(path)) as db:
        db.execute("DROP TABLE rate_bucket")
        db.execute("DROP TABLE fleet_node")
        db.execute("PRAGMA user_version = 6")
        db.commit()
    open_spool(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as pg:
        pg.execute("DROP TABLE rate_bucket")
        pg.execute("DROP TABLE fleet_node")
        pg.execute("UPDATE ferrymail_spool SET version = 3")
    for where in (str(path), pg_url):
        with open_spool(where) as spool:
            assert spool.take_tokens("s", 1.0, 1) == 1
            assert spool.fleet_heartbeat("me", "node", 5.0)[1] == ["me"]
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    with psycopg.connect(pg_url) as pg:
        assert pg.execute("SELECT version FROM ferrymail_spool").fetchone() == (PG_VERSION,)
