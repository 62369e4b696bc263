"""bench/spool_pg.py: the PostgreSQL spool's hot paths (submit, lease, record) with psycopg 3
and with asyncpg, and submit by COPY against executemany in pipeline mode.

Starts a throwaway PostgreSQL cluster (tests/pg_peer.py: initdb, pg_ctl on loopback,
fsync on unless --no-fsync) or uses --url, then for each driver in a fresh database:
submits --recipients queued recipients in chunks of --chunk, then leases --lease at a
time and records each batch delivered until none is left; then the same on an SQLite
spool (fsync on). Prints a table of wall time, recipients per second, this process's
CPU and the server's (every process of it, from /proc, so the server must run on this
machine), per 1,000 recipients, and their sum against SQLite's.

The asyncpg side runs the same SQL as PostgresSpool (pg_statements.py), with $n
parameters, on an asyncio loop: what the spool would cost were it written on asyncpg.

    python bench/spool_pg.py                 # 100,000 recipients, chunks of 10,000
    python bench/spool_pg.py --quick         # 20,000: a smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
from _common import cores, cpu_model, markdown_table, tree_cpu
from ferrymail.spool import NewRecipient, Spool, SqliteSpool, Update
from ferrymail.spool import pg_statements as sql
from ferrymail.spool import postgres as spool_postgres
from ferrymail.spool.postgres import PostgresSpool, record_columns

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pg_peer import PgCluster, find_bin

DOMAINS = 5000
BLOB = bytes(60)


def recipients(start: int, count: int) -> list[NewRecipient]:
    return [
        NewRecipient(
            BLOB, f"user{i}@d{i % DOMAINS}.example", f"d{i % DOMAINS}.example", str(i), "queued"
        )
        for i in range(start, start + count)
    ]


def postmaster(backend: int) -> int:
    """The server process of a backend (its parent)."""
    with open(f"/proc/{backend}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("PPid:"))


class Meter:
    """Wall, client CPU and the server's CPU (every process of it: the backend, the WAL
    writer, the checkpointer, autovacuum) of each phase, summed over its calls."""

    def __init__(self, postmaster: int | None) -> None:
        self.postmaster = postmaster  # None: no server (SQLite works in this process)
        self.totals: dict[str, list[float]] = {}

    def __enter__(self) -> Meter:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def start(self) -> tuple[float, float, float]:
        server = 0.0 if self.postmaster is None else tree_cpu(self.postmaster)
        return time.perf_counter(), time.process_time(), server

    def stop(self, phase: str, began: tuple[float, float, float]) -> None:
        wall, cpu, server = self.start()
        total = self.totals.setdefault(phase, [0.0, 0.0, 0.0])
        total[0] += wall - began[0]
        total[1] += cpu - began[1]
        total[2] += server - began[2]


def delivered(ids: list[int]) -> list[Update]:
    return [Update(i, "delivered", 1, None, 250, "2.0.0", "ok", None, "mx", "ip") for i in ids]


def phases(spool: Spool, meter: Meter, n: int, chunk: int, batch: int) -> None:
    """Submits n recipients in chunks, then leases and records them a batch at a time,
    timing each phase on `meter`."""
    for start in range(0, n, chunk):
        rows = recipients(start, chunk)
        began = meter.start()
        spool.insert("c1", rows)
        meter.stop("submit", began)
    while True:
        began = meter.start()
        leased = spool.lease(batch, "bench", 60)
        meter.stop("lease", began)
        if not leased:
            break
        updates = delivered([r.id for r in leased])
        began = meter.start()
        spool.record(updates)
        meter.stop("record", began)
    assert spool.counts()["delivered"] == n


def run_psycopg(url: str, n: int, chunk: int, batch: int, insert_with: str) -> Meter:
    spool_postgres.INSERT_WITH = insert_with
    with PostgresSpool(url) as spool:
        spool.put_campaign("c1", b"spec")
        meter = Meter(postmaster(int(spool._db.execute("SELECT pg_backend_pid()").fetchone()[0])))  # type: ignore[index]
        phases(spool, meter, n, chunk, batch)
    return meter


def run_sqlite(n: int, chunk: int, batch: int) -> Meter:
    """The same phases on the SQLite spool (the yardstick: its work is all client CPU)."""
    with (
        tempfile.TemporaryDirectory(prefix="ferrymail-bench-") as tmp,
        SqliteSpool(Path(tmp) / "spool.db") as spool,
    ):
        spool.put_campaign("c1", b"spec")
        meter = Meter(None)
        phases(spool, meter, n, chunk, batch)
    return meter


def dollars(statement: str) -> str:
    """psycopg's %s / %(name)s parameters as asyncpg's $1, $2 … (a name keeps its number)."""
    names: dict[str, int] = {}
    count = 0

    def number(match: re.Match[str]) -> str:
        nonlocal count
        name = match.group(1)
        if name is None or name not in names:
            count += 1
            if name is not None:
                names[name] = count
            return f"${count}"
        return f"${names[name]}"

    return re.sub(r"%(?:\((\w+)\))?s", number, statement)


async def run_asyncpg(url: str, n: int, chunk: int, batch: int) -> Meter:
    with PostgresSpool(url) as spool:  # the schema and the campaign, as the spool makes them
        spool.put_campaign("c1", b"spec")
    db: Any = await asyncpg.connect(url)
    try:
        meter = Meter(postmaster(await db.fetchval("SELECT pg_backend_pid()")))
        campaign = await db.fetchval("SELECT id FROM campaign WHERE name = 'c1'")
        await db.execute(sql.STAGE)
        from_stage = dollars(sql.FROM_STAGE)
        lease = dollars(sql.LEASE)
        record = dollars(sql.RECORD)
        columns = ["id", "state", "recipient", "address", "domain", "key", "code", "enhanced",
                   "text"]  # fmt: skip
        for start in range(0, n, chunk):
            rows = recipients(start, chunk)
            began = meter.start()
            now = time.time()
            async with db.transaction():
                first = await db.fetchval("SELECT take_recipient_ids($1)", len(rows))
                await db.copy_records_to_table(
                    "recipient_stage",
                    records=[
                        (i, 0, r.recipient, r.address, r.domain, r.key, None, None, None)
                        for i, r in enumerate(rows, first)
                    ],
                    columns=columns,
                )
                await db.execute(from_stage, campaign, now)
            meter.stop("submit", began)
        while True:
            began = meter.start()
            now = time.time()
            async with db.transaction():
                await db.execute("SET LOCAL synchronous_commit = off")
                leased = await db.fetch(lease, now, batch, now + 60, "bench")
            meter.stop("lease", began)
            if not leased:
                break
            # As PostgresSpool.record: the arrays made from Update structs, one statement.
            updates = delivered(sorted(r["id"] for r in leased))
            began = meter.start()
            now = time.time()
            async with db.transaction():
                await db.execute(record, now, *record_columns(updates, now))
            meter.stop("record", began)
        assert await db.fetchval("SELECT count(*) FROM recipient WHERE state = 3") == n
    finally:
        await db.close()
    return meter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--lease", type=int, default=1000, help="recipients per lease")
    parser.add_argument("--url", help="an existing server's maintenance database URL")
    parser.add_argument("--no-fsync", action="store_true", help="the test cluster's settings")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--runs",
        default="pipeline,asyncpg",
        help="besides psycopg with COPY and SQLite: pipeline, asyncpg (comma-separated; '' none)",
    )
    args = parser.parse_args()
    n = 20_000 if args.quick else args.recipients
    chunk = min(args.chunk, n)

    cluster: PgCluster | None = None
    if args.url is None:
        bindir = find_bin()
        if bindir is None:
            sys.exit("PostgreSQL is not installed (initdb, pg_ctl): give --url")
        cluster = PgCluster(bindir, durable=not args.no_fsync).__enter__()
        new_database: Callable[[], str] = cluster.new_database
    else:
        count = 0

        def new_database() -> str:
            nonlocal count
            count += 1
            name = f"ferrymail_bench_{os.getpid()}_{count}"
            with psycopg.connect(args.url, autocommit=True) as db:
                db.execute(f"CREATE DATABASE {name}")
            return args.url.rpartition("/")[0] + "/" + name

    try:
        # A warm-up: the cluster's first database pays for cold caches.
        run_psycopg(new_database(), chunk, chunk, args.lease, "copy")
        extra = set(args.runs.split(",")) - {""}
        runs = {"psycopg, COPY": run_psycopg(new_database(), n, chunk, args.lease, "copy")}
        if "pipeline" in extra:
            runs["psycopg, pipeline"] = run_psycopg(
                new_database(), n, chunk, args.lease, "pipeline"
            )
        if "asyncpg" in extra:
            runs["asyncpg, COPY"] = asyncio.run(run_asyncpg(new_database(), n, chunk, args.lease))
        runs["SQLite"] = run_sqlite(n, chunk, args.lease)
    finally:
        if cluster is not None:
            cluster.__exit__(None, None, None)
    lines = []
    per_1k = n / 1000
    phases = ("submit", "lease", "record")
    for phase in (*phases, "lease + record"):
        parts = ("lease", "record") if phase == "lease + record" else (phase,)
        yardstick = sum(runs["SQLite"].totals[p][1] for p in parts)
        for name, meter in runs.items():
            if phase != "submit" and name == "psycopg, pipeline":
                continue  # (the same lease and record as "psycopg, COPY")
            wall, cpu, server = (sum(meter.totals[p][i] for p in parts) for i in range(3))
            label = name if phase == "submit" else name.partition(",")[0]
            lines.append(
                [f"{phase}: {label}", f"{wall:.2f}", f"{n / wall:,.0f}",
                 f"{cpu * 1000 / per_1k:.1f}", f"{server * 1000 / per_1k:.1f}",
                 f"{(cpu + server) * 1000 / per_1k:.1f}", f"{(cpu + server) / yardstick:.2f}x"]
            )  # fmt: skip
    print(
        f"{n:,} recipients, submit in chunks of {chunk:,}, lease {args.lease:,} at a time;"
        f" fsync {'off' if args.no_fsync else 'on'}; {cores()} cores, {cpu_model()};"
        f" psycopg {psycopg.__version__} ({psycopg.pq.__impl__}), asyncpg {asyncpg.__version__}"
    )
    print()
    head = ["phase: driver", "wall s", "recipients/s", "client CPU ms/1k", "server CPU ms/1k",
            "total CPU ms/1k", "vs SQLite"]  # fmt: skip
    print(markdown_table(head, lines))


if __name__ == "__main__":
    main()
