"""bench/spool.py: the SQLite spool's speed at the sizes an ESP has: submit, leasing and
recording from a spool of a million recipients, mostly final, and the reports.

Builds a spool file in a temporary directory through the spool's own API, as the engine
would: --recipients queued recipients (5,000 domains, 60-byte recipient structs) in
chunks of --chunk, then lease and record rounds of 10,000 (delivered, bounced or
deferred, like a real campaign) until --pending queued recipients are left, next to the
deferred ones (5 % of the attempts, made due by a flush). Then times each
operation several times and prints the median and the worst, in milliseconds, with this
process's CPU time next to the wall time (other work on the machine shows as the gap).

    python bench/spool.py                    # 1,000,000 recipients, 10,000 queued
    python bench/spool.py --quick            # 100,000 recipients: a smoke test
"""

from __future__ import annotations

import argparse
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ferrymail.spool import Leased, NewRecipient, SqliteSpool, Update

DOMAINS = 5000
BLOB = bytes(60)  # about the size of a wire.Recipient with a few vars


def recipients(start: int, count: int) -> list[NewRecipient]:
    return [
        NewRecipient(
            BLOB, f"user{i}@d{i % DOMAINS}.example", f"d{i % DOMAINS}.example", str(i), "queued"
        )
        for i in range(start, start + count)
    ]


def update(
    r: Leased,
    state: str,
    next_attempt: float | None,
    reply: tuple[int, str, str],
    category: str | None,
) -> Update:
    code, enhanced, text = reply
    return Update(
        r.id,
        state,
        r.attempts + 1,
        next_attempt,
        code,
        enhanced,
        text,
        category,
        "mx.example",
        "192.0.2.1",
    )


def outcome(r: Leased, rng: random.Random, now: float) -> Update:
    """Like a real campaign's first attempts: 90 % delivered, 5 % bounced, 5 % deferred."""
    roll = rng.random()
    if roll < 0.9:
        return update(r, "delivered", None, (250, "2.0.0", "ok: queued as X"), None)
    if roll < 0.95:
        return update(r, "bounced", None, (550, "5.1.1", "user unknown"), "bad-mailbox")
    return update(r, "deferred", now + 3600, (451, "4.7.1", "greylisted"), "greylisting")


class Timer:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, list[float], list[float], str]] = []

    def run(
        self, name: str, size: str, fn: Callable[[], object], repeat: int = 5, note: str = ""
    ) -> object:
        walls, cpus, result = [], [], None
        for _ in range(repeat):
            wall, cpu = time.perf_counter(), time.process_time()
            result = fn()
            walls.append((time.perf_counter() - wall) * 1000)
            cpus.append((time.process_time() - cpu) * 1000)
        self.rows.append((name, size, walls, cpus, note))
        print(f"  {name} {size}: {statistics.median(walls):.1f} ms", file=sys.stderr)
        return result

    def print(self) -> None:
        print(f"{'operation':<34} {'rows':>10} {'median':>9} {'worst':>9} {'cpu':>9}  note")
        for name, size, walls, cpus, note in self.rows:
            print(
                f"{name:<34} {size:>10} {statistics.median(walls):>9.1f} {max(walls):>9.1f}"
                f" {statistics.median(cpus):>9.1f}  {note}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="100,000 recipients")
    args = parser.parse_args()
    total = 100_000 if args.quick else args.recipients
    rng = random.Random(1)
    timer = Timer()
    print(
        f"ferrymail spool, SQLite {sqlite3.sqlite_version}, Python {platform.python_version()},"
        f" {platform.machine()}; times in ms (wall median, wall worst, CPU median)\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        spool = SqliteSpool(Path(tmp) / "spool.db")
        spool.put_campaign("big", b"spec")

        # Submit: the first 100,000, timed as one, then the rest.
        first = min(100_000, total)
        chunks = iter(range(0, first, args.chunk))
        timer.run(
            f"insert {first:,} (chunks of {args.chunk:,})",
            f"{first:,}",
            lambda: [spool.insert("big", recipients(s, args.chunk)) for s in chunks],
            repeat=1,
            note="building the NewRecipient structs included",
        )
        started = time.perf_counter()
        for start in range(first, total, args.chunk):
            spool.insert("big", recipients(start, args.chunk))
        print(f"  rest inserted in {time.perf_counter() - started:.1f} s", file=sys.stderr)

        # Attempt all but --pending of the queued ones, as the engine would, 10,000 at a
        # time. The deferred ones (5 %) are not due for an hour: only queued ones lease.
        started = time.perf_counter()
        rounds, queued = 0, total
        while queued > args.pending:
            now = time.time()
            batch = spool.lease(min(10_000, queued - args.pending), "bench", 600)
            spool.record([outcome(r, rng, now) for r in batch])
            queued -= len(batch)
            rounds += 1
        print(
            f"  {rounds} lease+record rounds of 10,000 in {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
        spool.flush()  # the deferred ones are due now: leasing has work at any time
        size = f"{total:,}"
        note = f"spool of {total:,}, {spool.pending():,} pending"

        leased: list[list[Leased]] = []
        timer.run(
            "lease 1,000",
            size,
            lambda: leased.append(spool.lease(1000, "bench", 600)),
            repeat=9,
            note=note,
        )
        # Recorded as deferrals due at once, so that the pending rows stay pending. The
        # Updates are made before the clock starts.
        greylisted = (451, "4.7.1", "greylisted")
        deferrals = iter(
            [
                [update(r, "deferred", time.time(), greylisted, "greylisting") for r in batch]
                for batch in leased
            ]
        )
        timer.run(
            "record 1,000 (deferred)",
            size,
            lambda: spool.record(next(deferrals)),
            repeat=9,
            note="pending index entries move",
        )
        delivered = (250, "2.0.0", "ok")
        deliveries = iter(
            [
                [update(r, "delivered", None, delivered, None) for r in spool.lease(1000, "b", 600)]
                for _ in range(5)
            ]
        )
        timer.run(
            "record 1,000 (delivered)",
            size,
            lambda: spool.record(next(deliveries)),
            note="from the pending index to the final one",
        )
        held = spool.lease(1000, "bench", 600)
        timer.run("renew 1,000", size, lambda: spool.renew([r.id for r in held], 600))
        timer.run(
            "lease 100 of one domain",
            size,
            lambda: spool.lease(100, "bench", 600, {"d17.example"}),
            note="no domain index: the pending rows' index is scanned",
        )
        timer.run(
            "release_owner",
            size,
            lambda: spool.release_owner("bench"),
            repeat=1,
            note="the bench's leases back",
        )
        timer.run("next_due", size, spool.next_due)
        timer.run("pending()", size, spool.pending)
        timer.run("pending(campaign)", size, lambda: spool.pending("big"))
        timer.run("counts()", size, spool.counts, repeat=3)
        timer.run("status()", size, spool.status, repeat=3)
        timer.run("report(campaign)", size, lambda: spool.report("big"), repeat=3)
        timer.run("flush()", size, spool.flush, repeat=3)
        timer.run(
            "iter_recipients (all)",
            size,
            lambda: sum(1 for _ in spool.iter_recipients("big")),
            repeat=1,
        )
        for i in range(0, 10_000, 10):
            spool.suppress(f"user{i}@d{i % DOMAINS}.example", "bounce")
        addresses = [f"User{i}@D{i % DOMAINS}.example" for i in range(10_000)]
        timer.run(
            "suppressed_among 10,000",
            "1,000",
            lambda: spool.suppressed_among(addresses),
            note="1,000 suppressions",
        )
        spool.close()
    print()
    timer.print()


if __name__ == "__main__":
    main()
