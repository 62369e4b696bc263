"""The PostgreSQL spool's own behaviour: picking a backend by URL, clear errors for a bad
URL or a newer schema, and several nodes (connections) on one database sharing one queue,
one suppression list and one set of suspensions."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import psycopg
import pytest
from ferrymail import ConfigError
from ferrymail.spool import NewRecipient, SqliteSpool, Update, open_spool
from ferrymail.spool.pg_schema import SCHEMA_VERSION
from ferrymail.spool.postgres import PostgresSpool
from pg_peer import PASSWORD, PgCluster


def new(i: int, domain: str = "x.test") -> NewRecipient:
    return NewRecipient(b"blob", f"r{i}@{domain}", domain, f"r{i}", "queued")


def test_open_spool_picks_the_backend_by_url(tmp_path: Path, pg_url: str) -> None:
    with open_spool(tmp_path / "a.db") as a, open_spool(f"sqlite:///{tmp_path}/b.db") as b:
        assert isinstance(a, SqliteSpool) and isinstance(b, SqliteSpool)
        assert b.path == f"{tmp_path}/b.db"
    with open_spool(pg_url) as pg:
        assert isinstance(pg, PostgresSpool)
        assert PASSWORD not in repr(pg)
    with pytest.raises(ConfigError, match="not mysql://"):
        open_spool("mysql://u@h/db")


def test_both_spools_satisfy_the_protocol(tmp_path: Path) -> None:
    """mypy says SqliteSpool and PostgresSpool are both a Spool (a Protocol is checked
    by the type checker, not at run time)."""
    check = tmp_path / "check.py"
    check.write_text(
        textwrap.dedent(
            """
            from ferrymail.spool import Spool, SqliteSpool
            from ferrymail.spool.postgres import PostgresSpool

            def sqlite(s: SqliteSpool) -> Spool:
                return s

            def postgres(s: PostgresSpool) -> Spool:
                return s
            """
        )
    )
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--follow-imports=silent", str(check)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_bad_url_is_one_clear_line_without_the_password(pg_cluster: PgCluster) -> None:
    wrong = pg_cluster.url(password="not-the-password")
    with pytest.raises(ConfigError) as e:
        open_spool(wrong)
    message = str(e.value)
    assert "\n" not in message and "not-the-password" not in message
    assert "password authentication failed" in message
    assert f"postgres:***@127.0.0.1:{pg_cluster.port}/postgres" in message

    with pytest.raises(ConfigError, match='database "nowhere" does not exist') as e:
        open_spool(pg_cluster.url("nowhere"))
    assert "\n" not in str(e.value) and PASSWORD not in str(e.value)

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{closed}/db"
    with pytest.raises(
        ConfigError,
        match=rf"cannot connect to the spool postgresql://postgres:\*\*\*@127.0.0.1:{closed}/db: ",
    ) as e:
        open_spool(url)
    assert "\n" not in str(e.value) and str(e.value).endswith("Connection refused")


def test_a_spool_of_a_newer_version_is_refused(pg_url: str) -> None:
    open_spool(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute("UPDATE ferrymail_spool SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(
        ConfigError, match=f"schema version {SCHEMA_VERSION + 1}, written by a newer"
    ):
        open_spool(pg_url)
    with pytest.raises(ConfigError, match="has no ferrymail spool"):
        open_spool(pg_url.rpartition("/")[0] + "/postgres", read_only=True)


def test_nodes_lease_disjoint_recipients_and_share_suppressions_and_suspensions(
    pg_url: str,
) -> None:
    with open_spool(pg_url) as submit:
        submit.put_campaign("c1", b"spec")
        for start in range(0, 2000, 500):
            submit.insert("c1", [new(i, f"d{i % 7}.test") for i in range(start, start + 500)])
    taken: dict[str, list[int]] = {}

    def node(name: str) -> None:
        # Each node its own connection, leasing and recording as an engine would.
        with open_spool(pg_url) as spool:
            mine = taken.setdefault(name, [])
            while leased := spool.lease(37, name, 60):
                mine += [r.id for r in leased]
                spool.record(
                    [Update(r.id, "delivered", 1, None, 250, None, "ok", None, None, None)
                     for r in leased]
                )  # fmt: skip

    nodes = [threading.Thread(target=node, args=(f"node{n}",)) for n in range(3)]
    for thread in nodes:
        thread.start()
    for thread in nodes:
        thread.join()
    every = [id_ for ids in taken.values() for id_ in ids]
    assert sorted(every) == list(range(1, 2001))  # each exactly once, none left behind
    with open_spool(pg_url) as a, open_spool(pg_url) as b:
        assert a.counts()["delivered"] == 2000
        a.suppress("Gone@X.test", "complaint")
        assert b.is_suppressed("gone@x.test")
        a.suspend("mx.x.test:25", 4e9, "421 slow down", ["x.test"])
        assert [s.site for s in b.suspensions()] == ["mx.x.test:25"]
        assert b.lift("x.test") == ["mx.x.test:25"] and a.suspensions() == []


def test_two_nodes_submitting_one_list_queue_each_key_once(pg_url: str) -> None:
    with open_spool(pg_url) as a, open_spool(pg_url) as b:
        a.put_campaign("c1", b"spec")
        assert b.put_campaign("c1", b"spec") is False
        rows = [new(i) for i in range(300)]
        results: list[list[int | None]] = []
        threads = [
            threading.Thread(target=lambda s=s: results.append(s.insert("c1", rows)))
            for s in (a, b)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert a.pending("c1") == 300
        # Each key went in once, by one node or the other.
        went_in = [sum(ids[i] is not None for ids in results) for i in range(300)]
        assert went_in == [1] * 300


def test_a_failed_insert_leaves_nothing_and_the_next_one_works(pg_url: str) -> None:
    with open_spool(pg_url) as spool:
        spool.put_campaign("c1", b"spec")
        bad = NewRecipient(b"blob", "nul@x.test", "x.test", "nul\x00key", "queued")
        with pytest.raises(psycopg.DataError):  # PostgreSQL's text cannot hold NUL
            spool.insert("c1", [new(1), bad])
        assert spool.pending() == 0  # the whole insert rolled back
        assert spool.insert("c1", [new(1), new(2)]) == [3, 4]
        assert spool.final_states("c1") == {"r1": "queued", "r2": "queued"}


def test_read_only_reads_and_refuses_writes(pg_url: str) -> None:
    with open_spool(pg_url) as spool:
        spool.put_campaign("c1", b"spec")
        spool.insert("c1", [new(1)])
    with open_spool(pg_url, read_only=True) as reader:
        assert reader.status().states["queued"] == 1
        assert reader.report("c1").states["queued"] == 1
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            reader.suppress("r1@x.test", "complaint")


def test_a_dead_nodes_leases_end_and_another_node_takes_its_recipients(pg_url: str) -> None:
    now = [1_800_000_000.0]

    def clock() -> float:
        return now[0]

    dead = open_spool(pg_url, clock=clock)
    dead.put_campaign("c1", b"spec")
    dead.insert("c1", [new(i) for i in range(3)])
    held = dead.lease(10, "node-a.example:4242:00000000", 30)  # another host: no pid check
    dead.started([held[0].id, held[1].id])  # two attempts under way when it dies
    dead.close()
    with open_spool(pg_url, clock=clock) as alive:
        assert alive.lease(10, "node-b.example:1:11111111", 30) == []  # still leased
        now[0] += 30
        taken = alive.lease(10, "node-b.example:1:11111111", 30)
        # Taken over, no attempt counted; the interrupted ones say so (the crash rule).
        assert [(r.id, r.attempts, r.interrupted) for r in taken] == [
            (1, 0, 1),
            (2, 0, 1),
            (3, 0, 0),
        ]
        assert [(owner, n) for owner, n, _, _ in alive.leases()] == [
            ("node-b.example:1:11111111", 3)
        ]
