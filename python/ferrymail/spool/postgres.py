"""PostgresSpool: the spool in a PostgreSQL database, shared by engines on many machines.

Driver: psycopg 3, its sync API. The spool's methods are synchronous and run on the
engine's one spool thread (spooler.py), so a sync driver fits them as they are; asyncpg
is async only and would need an event loop of its own on that thread (or every call
moved onto the engine's loop, where a slow query would stall the SMTP work). psycopg
also gives binary COPY, pipeline mode and server-side arrays (unnest) for the batch
paths. Measured (bench/spool_pg.py, 100,000 recipients, fsync on, two shared cores;
two runs), the drivers are level where the engine spends its time, within the runs'
noise: lease 31-41k/s with psycopg, 34-37k/s with asyncpg; record 22-29k/s and
23-24k/s; submit by COPY 47-67k/s and 53-55k/s. asyncpg spends less client CPU (1-3
ms per 1,000 recipients less), against 17-28 ms of server CPU per 1,000 either way: the
server, not the driver, is the cost. So the driver that fits the spool's synchronous
shape wins.

Submit moves rows by binary COPY into a staging table and one INSERT … SELECT … ON
CONFLICT DO NOTHING: about four times as fast as executemany in pipeline mode for
10,000-row chunks (47-67k/s against 12-16k/s), with an eighth of the client CPU.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import psycopg

from ..errors import ConfigError, SpoolUnavailableError
from . import outbox as webhook_outbox
from . import pg_reports as reports
from . import pg_statements as sql
from .actions import ShapingAction
from .campaigns import CampaignNames
from .cancelled import CancelledEvents
from .feedback_events import FeedbackEvents, unsubscribe_signal
from .lookup import RECENT_CAMPAIGNS, Found
from .outbox import OutboxBatch, OutboxRow, WebhookBacklog, pg
from .owners import dead_here
from .pg_reconnect import CutCommit, Reconnecting, reconnecting_methods
from .pg_schema import connect, redacted
from .rows import (
    CancelledRecipient,
    Leased,
    NewRecipient,
    Recorded,
    Report,
    Signal,
    Status,
    Suspension,
    Unsubscribed,
    Update,
)
from .sqlite import CANCEL_PAGE, FORGET_NODE_AFTER, RECLAIM_EVERY, _first_of_each_key
from .statements import record_rows
from .states import CODE, DEFERRED, FINAL, NAME, PENDING_SQL, QUEUED
from .suppression import domain_key, suppression_key

_log = logging.getLogger(__name__)

#: Rows a page of `iter_recipients` reads (as sqlite.PAGE).
PAGE = 1000
#: Addresses per query of `suppressed_among`.
SUPPRESSION_CHUNK = 10_000
#: How `insert` moves rows: "copy" (binary COPY into a staging table, then one INSERT …
#: SELECT) or "pipeline" (executemany of one INSERT a row, in pipeline mode). COPY
#: measured faster for 10,000-row chunks (bench/spool_pg.py).
INSERT_WITH = "copy"

#: The advisory lock key ("FMND") heartbeats serialise on, so that of two engines
#: starting at once the second sees the first (fleet_heartbeat).
FLEET_LOCK_KEY = 0x464D4E44

_SUBMIT_CODES = {name: CODE[name] for name in (QUEUED, *FINAL)}
_FOUND = "r.id, c.name, r.key, r.address, r.domain, r.state"


def _one(cursor: psycopg.Cursor[Any]) -> Any:
    """The first column of a query's one row."""
    row = cursor.fetchone()
    assert row is not None  # (an aggregate, or a row known to be there)
    return row[0]


def _found(row: tuple[Any, ...]) -> Found:
    rid, campaign, key, address, domain, state = row
    return Found(rid, campaign, key, address, domain, NAME[state])


def record_columns(updates: Sequence[Update], now: float) -> list[list[Any]]:
    """RECORD's arrays (id, state, attempts, due, code, enhanced, text, category, mx, ip)
    for `updates`; ValueError for one no attempt can end (statements.record_rows)."""
    columns: list[list[Any]] = [[] for _ in range(10)]
    seen: set[object] = set()
    for state, attempts, due, code, enhanced, text, category, mx, ip, _, id_ in record_rows(
        updates, now
    ):
        if id_ in seen:
            continue  # the first outcome of a row applies, a second finds it final
        seen.add(id_)
        for column, value in zip(
            columns,
            (id_, state, attempts, due, code, enhanced, text, category, mx, ip),
            strict=True,
        ):
            column.append(value)
    return columns


@reconnecting_methods
class PostgresSpool(Reconnecting, CampaignNames, CancelledEvents, FeedbackEvents):
    """The spool in a PostgreSQL database (see SqliteSpool for every method's contract:
    the same states, codes and rules, method by method).

    Every method is one transaction, on one connection (autocommit outside them). Many
    processes on many machines may use one database: leases are taken with SELECT …
    FOR UPDATE SKIP LOCKED, so two nodes never lease one recipient, and a dead node's
    leases end in their time (or at once, for a dead process of this host).

    Writes whose loss changes nothing (leases, renewals, suspensions …) commit with
    synchronous_commit off, as the SQLite spool skips their fsync; submits, outcomes,
    suppressions and feedback wait for the commit to be durable.

    A lost connection (the server restarted, the network cut) makes the call under way
    raise SpoolUnavailableError, and the next call connects again (pg_reconnect.py: a
    write whose COMMIT was cut off is never run twice).
    """

    _PARAM = "%s"

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        read_only: bool = False,
    ) -> None:
        self.url = url
        self._read_only = read_only
        self._conn: psycopg.Connection[Any] | None = connect(url, read_only=read_only)
        self._xid: str | None = None
        self._committing = False
        self._result: Any = None
        self._cut: CutCommit | None = None
        self._calling = False
        self._clock = clock
        CampaignNames.__init__(self)
        CancelledEvents.__init__(self)
        self._reclaim_at = float("-inf")
        self._staged = False  # the staging table of COPY exists in this session

    def __repr__(self) -> str:
        return f"PostgresSpool({redacted(self.url)!r})"

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    @property
    def _db(self) -> psycopg.Connection[Any]:
        return self._connection()

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            db = connect(self.url, read_only=self._read_only)
        except ConfigError as e:
            raise SpoolUnavailableError(str(e), str(e).rpartition(": ")[2]) from None
        self._staged = False  # the staging table of COPY was the lost session's
        return db

    def _where(self) -> str:
        return redacted(self.url)

    def __enter__(self) -> PostgresSpool:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _transaction(
        self, *, durable: bool = True, snapshot: bool = False, once: bool = False
    ) -> Iterator[psycopg.Connection[Any]]:
        """One transaction. `durable=False`: its commit does not wait for the WAL flush
        (a crash of the server may lose it, never half of it). `snapshot`: every query
        of it reads one snapshot (REPEATABLE READ), for reports. `once`: a write that
        must not run twice (pg_reconnect.py): its transaction id is noted, and the
        method sets `self._result` before the block ends."""
        db = self._db
        try:
            with db.transaction():
                if snapshot:
                    db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                if not durable:
                    db.execute("SET LOCAL synchronous_commit = off")
                if once:
                    self._xid = str(_one(db.execute("SELECT pg_current_xact_id()::text")))
                yield db
                self._committing = True
        except BaseException:
            # (A COMMIT cut off that did commit: its cancelled recipients miss the event
            # log; their webhook events are in the outbox.)
            self._commit_cancelled(False)
            raise
        self._committing = False
        self._commit_cancelled(True)

    # ---- campaigns ----

    def put_campaign(self, campaign_id: str, spec: bytes) -> bool:
        with self._transaction() as db:
            created = db.execute(
                "INSERT INTO campaign (name, spec, created_at) VALUES (%s, %s, %s)"
                " ON CONFLICT (name) DO NOTHING RETURNING id",
                (campaign_id, bytes(spec), self._clock()),
            ).fetchone()
            if created is not None:
                return False
            # Locked: another node replacing the same spec waits for this one's answer.
            row = db.execute(
                "SELECT id, spec FROM campaign WHERE name = %s FOR UPDATE", (campaign_id,)
            ).fetchone()
            assert row is not None  # (campaigns are never deleted)
            campaign, stored = row
            return self._replace_spec(db, campaign_id, campaign, bytes(stored), spec, sql)

    # ---- submit ----

    def insert(
        self,
        campaign_id: str,
        rows: Sequence[NewRecipient],
        outbox: Callable[[list[int | None]], Sequence[OutboxRow]] | None = None,
    ) -> list[int | None]:
        now = self._clock()
        unique = _first_of_each_key(rows)
        staged = []
        for row in unique:
            if row is not None and row.state not in _SUBMIT_CODES:
                raise ValueError(f"{row.address!r}: a submitted recipient cannot be {row.state!r}")
        campaign = self._campaign(campaign_id)
        if not unique:
            return []
        if INSERT_WITH == "copy" and not self._staged:
            # Outside the insert's transaction: a rollback of it would drop the table.
            self._db.execute(sql.STAGE)
            self._staged = True
        with self._transaction(once=True) as db:
            first = int(_one(db.execute("SELECT take_recipient_ids(%s)", (len(unique),))))
            staged = [
                (id_, _SUBMIT_CODES[row.state], row.recipient, row.address, row.domain,
                 row.key, row.code, row.enhanced, row.text)
                for id_, row in enumerate(unique, first)
                if row is not None
            ]  # fmt: skip
            if staged:
                db.execute(
                    "UPDATE campaign SET first_id = %s WHERE id = %s AND first_id IS NULL",
                    (first, campaign),
                )
            if INSERT_WITH == "copy":
                added = self._insert_copy(db, staged, campaign, now)
            else:
                added = self._insert_pipeline(db, staged, campaign, now)
            ids: list[int | None] = [
                None if row is None else id_ for id_, row in enumerate(unique, first)
            ]
            if added < len(staged):
                present = {
                    id_
                    for (id_,) in db.execute(
                        "SELECT id FROM recipient WHERE id BETWEEN %s AND %s",
                        (first, first + len(unique) - 1),
                    )
                }
                ids = [id_ if id_ in present else None for id_ in ids]
            last = first + len(unique) - 1
            used = max((id_ for id_ in ids if id_ is not None), default=first - 1)
            if used < last:
                db.execute("SELECT give_back_recipient_ids(%s, %s)", (last, used))
            hooked = outbox(ids) if outbox is not None else ()
            if hooked:
                self._enqueue_rows(db, hooked, now)
            self._result = ids
        return ids

    def _insert_copy(
        self, db: psycopg.Connection[Any], staged: list[tuple[Any, ...]], campaign: int, now: float
    ) -> int:
        with db.cursor() as cursor:
            with cursor.copy(sql.COPY_STAGE) as copy:
                copy.set_types(sql.STAGE_TYPES)
                for row in staged:
                    copy.write_row(row)
            cursor.execute(sql.FROM_STAGE, {"campaign": campaign, "now": now})
            return cursor.rowcount

    def _insert_pipeline(
        self, db: psycopg.Connection[Any], staged: list[tuple[Any, ...]], campaign: int, now: float
    ) -> int:
        with db.pipeline(), db.cursor() as cursor:
            cursor.executemany(
                sql.INSERT_ROW,
                [
                    (id_, campaign, state, state, now, state, now, now, now, blob, address,
                     domain, key, code, enhanced, text)
                    for id_, state, blob, address, domain, key, code, enhanced, text in staged
                ],
            )  # fmt: skip
            return cursor.rowcount

    # ---- leasing ----

    def lease(
        self,
        limit: int,
        owner: str,
        lease_for: float,
        domains: Collection[str] | None = None,
    ) -> list[Leased]:
        if limit <= 0:
            return []
        now = self._clock()
        params: dict[str, object] = {
            "now": now,
            "limit": limit,
            "until": now + lease_for,
            "owner": owner,
        }
        statement = sql.LEASE
        if domains is not None:
            statement = sql.LEASE_IN_DOMAINS
            params["domains"] = list(domains)
        with self._transaction(durable=False) as db:
            if now >= self._reclaim_at:
                self._reclaim_at = now + RECLAIM_EVERY
                self._end_dead_leases(db, now, owner)
            # Binary results: the recipient blobs come as bytes, not hex to decode.
            with db.cursor(binary=True) as cursor:
                rows = cursor.execute(statement, params).fetchall()
        rows.sort(key=lambda r: (r[9], r[0]))
        name = self._campaign_name
        return [
            Leased(r[0], name(r[1]), bytes(r[2]), r[3], r[4], r[5], r[6], r[7], r[8]) for r in rows
        ]

    def _end_dead_leases(self, db: psycopg.Connection[Any], now: float, owner: str) -> int:
        ended = 0
        for holder, _, _ in db.execute(sql.LEASES).fetchall():
            if holder != owner and dead_here(holder):
                count = db.execute(sql.END_LEASES, {"now": now, "owner": holder}).rowcount
                _log.info("spool: %d leases of %s (a dead process) ended", count, holder)
                ended += count
        if ended:  # back in the queue: those of a cancelled campaign end there
            self._ended(db, db.execute(sql.CANCEL_SWEEP, {"now": now}).fetchall(), now)
        return ended

    def leases(self) -> list[tuple[str, int, float, bool]]:
        rows = self._db.execute(sql.LEASES).fetchall()
        return [(owner, n, until, dead_here(owner)) for owner, n, until in rows]

    def started(self, ids: Sequence[int]) -> list[int]:
        now = self._clock()
        with self._transaction(durable=False, once=True) as db:
            # The cancel's mark is read under the campaign row's lock (FOR SHARE in the
            # subquery would not lock it): a cancel committing meanwhile waits for this,
            # or this sees it.
            db.execute(
                "SELECT 1 FROM campaign WHERE id IN"
                " (SELECT DISTINCT campaign FROM recipient WHERE id = ANY(%s)) FOR SHARE",
                (list(ids),),
            )
            found = db.execute(sql.UNSTARTED_CANCELLED, {"ids": list(ids)}).fetchall()
            cancelled = [int(row[0]) for row in found]
            if cancelled:
                ended = db.execute(sql.CANCEL_IDS, {"now": now, "ids": cancelled}).fetchall()
                self._ended(db, ended, now)
            db.execute(sql.STARTED, (list(ids),))
            self._result = cancelled
        return cancelled

    def renew(self, ids: Sequence[int], lease_for: float) -> int:
        until = self._clock() + lease_for
        with self._transaction(durable=False) as db:
            return db.execute(sql.RENEW, (until, until, list(ids))).rowcount

    def record(self, updates: Sequence[Update], outbox: Sequence[OutboxRow] = ()) -> int:
        now = self._clock()
        columns = record_columns(updates, now)
        if not columns[0]:
            self.webhook_enqueue(outbox)
            return len(updates)
        with self._transaction(once=True) as db:
            applied = db.execute(sql.RECORD, (now, *columns)).rowcount
            requeued = [u.id for u in updates if u.state in (QUEUED, DEFERRED)]
            if outbox:
                self._enqueue_rows(db, outbox, now)
            if requeued:  # put back after their campaign was cancelled: they end there
                ended = db.execute(sql.CANCEL_REQUEUED, {"now": now, "ids": requeued}).fetchall()
                self._ended(db, ended, now)
            self._result = len(updates) - applied
        skipped = len(updates) - applied
        if skipped:
            _log.debug("spool: %d of %d updates skipped (not in flight)", skipped, len(updates))
        return skipped

    def release_owner(self, owner: str) -> int:
        now = self._clock()
        with self._transaction(durable=False) as db:
            owned = db.execute(sql.CANCEL_OWNER, {"now": now, "owner": owner}).fetchall()
            ended = self._ended(db, owned, now)
            return db.execute(sql.RELEASE_OWNER, (now, owner)).rowcount + len(ended)

    def flush(self, domain: str | None = None) -> int:
        now = self._clock()
        params: dict[str, object] = {"now": now}
        if domain is None:
            statement, release = sql.FLUSH, sql.RELEASE_ENDED
        else:
            statement, release = sql.FLUSH_DOMAIN, sql.RELEASE_ENDED_DOMAIN
            params["domain"] = domain_key(domain)
        with self._transaction(durable=False) as db:
            self._end_dead_leases(db, now, "")
            released = db.execute(release, params).rowcount
            self._ended(db, db.execute(sql.CANCEL_SWEEP, {"now": now}).fetchall(), now)
            return db.execute(statement, params).rowcount + released

    def cancel(self, campaign_id: str, limit: int = CANCEL_PAGE) -> list[CancelledRecipient]:
        now = self._clock()
        with self._transaction() as db:
            campaign = self._campaign(campaign_id)
            # The campaign row's lock: a node's `started` reading the mark waits for
            # this commit (see started).
            db.execute("SELECT 1 FROM campaign WHERE id = %s FOR UPDATE", (campaign,))
            params = {"now": now, "campaign": campaign, "limit": limit}
            db.execute(sql.CANCEL_MARK, params)
            return self._ended(db, db.execute(sql.CANCEL_PAGE, params).fetchall(), now)

    def cancelled_at(self, campaign_id: str) -> float | None:
        row = self._db.execute(
            "SELECT cancelled_at FROM campaign WHERE name = %s", (campaign_id,)
        ).fetchone()
        if row is None:
            raise KeyError(campaign_id)
        return None if row[0] is None else float(row[0])

    # ---- the service API's keys ----

    def add_api_key(self, name: str, digest: bytes, read_only: bool) -> bool:
        with self._transaction() as db:
            added = db.execute(sql.API_KEY_ADD, (name, digest, read_only, self._clock()))
            return added.rowcount == 1

    def find_api_key(self, digest: bytes) -> tuple[str, bool, bytes] | None:
        row = self._db.execute(sql.API_KEY_FIND, (digest,)).fetchone()
        return None if row is None else (str(row[0]), bool(row[1]), bytes(row[2]))

    def api_keys(self) -> list[tuple[str, bool, float]]:
        rows = self._db.execute(sql.API_KEY_LIST).fetchall()
        return [(str(n), bool(r), float(t)) for n, r, t in rows]

    def revoke_api_key(self, name: str) -> bool:
        with self._transaction() as db:
            return db.execute(sql.API_KEY_DELETE, (name,)).rowcount > 0

    # ---- suspended sites (shared by every node of the database) ----

    def suspend(self, site: str, until: float, reason: str, domains: Collection[str]) -> None:
        now = self._clock()
        with self._transaction(durable=False) as db:
            db.execute("DELETE FROM suspension WHERE until <= %s", (now,))
            db.execute(
                "INSERT INTO suspension (site, until, reason, domains, since)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (site) DO UPDATE"
                " SET until = excluded.until, reason = excluded.reason,"
                " domains = excluded.domains, since = excluded.since",
                (site, until, reason, sorted(domains), now),
            )

    def suspensions(self) -> list[Suspension]:
        return reports.suspensions(self._db, self._clock())

    def lift(self, domain: str | None = None) -> list[str]:
        now = self._clock()
        with self._transaction(durable=False) as db:
            if domain is None:
                rows = db.execute("DELETE FROM suspension WHERE until > %s RETURNING site", (now,))
            else:
                rows = db.execute(
                    "DELETE FROM suspension WHERE until > %s AND %s = ANY(domains) RETURNING site",
                    (now, domain_key(domain)),
                )
            return sorted(site for (site,) in rows)

    # ---- the fleet's share of each site's limits (shaping/grants.py, shaping/fleet.py) ----

    def take_tokens(self, key: str, per_second: float, want: int) -> int:
        # One statement, by the server's clock. Not `once`: a grant whose COMMIT was cut
        # and that is taken again only leaves its first tokens unspent (the fleet sends
        # less, never more).
        with self._transaction(durable=False) as db:
            params = {"key": key, "rate": float(per_second), "want": int(want)}
            return int(_one(db.execute(sql.TAKE_TOKENS, params)))

    def fleet_heartbeat(self, owner: str, node: str, live_for: float) -> tuple[float, list[str]]:
        with self._transaction(durable=False) as db:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (FLEET_LOCK_KEY,))
            now = float(_one(db.execute(sql.FLEET_BEAT, (owner, node))))
            db.execute("DELETE FROM fleet_node WHERE seen_at < %s", (now - FORGET_NODE_AFTER,))
            rows = db.execute(
                "SELECT owner FROM fleet_node WHERE seen_at > %s ORDER BY owner",
                (now - live_for,),
            )
            return now, [owner for (owner,) in rows]

    def fleet_leave(self, owner: str) -> None:
        with self._transaction(durable=False) as db:
            db.execute("DELETE FROM fleet_node WHERE owner = %s", (owner,))

    # ---- automation actions (shaping) ----

    def put_actions(self, actions: Sequence[ShapingAction]) -> None:
        with self._transaction(durable=False) as db:
            reports.put_actions(db, actions, self._clock())

    def actions(self) -> list[ShapingAction]:
        return reports.actions_in_force(self._db, self._clock())

    def lift_actions(self, domain: str | None = None) -> list[ShapingAction]:
        with self._transaction(durable=False) as db:
            return reports.lift_actions(db, None if domain is None else domain_key(domain))

    # ---- warm-up: messages per source, provider and day ----

    def add_warmup_sent(self, counts: Sequence[tuple[str, str, str, int]]) -> None:
        with self._transaction(durable=False, once=True) as db:
            db.cursor().executemany(
                "INSERT INTO warmup_sent (source, provider, day, sent) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (source, provider, day)"
                " DO UPDATE SET sent = warmup_sent.sent + excluded.sent",
                counts,
            )

    def warmup_sent(self, day: str) -> dict[tuple[str, str], int]:
        rows = self._db.execute(
            "SELECT source, provider, sent FROM warmup_sent WHERE day = %s", (day,)
        )
        return {(source, provider): int(sent) for source, provider, sent in rows}

    # ---- queries ----

    def next_due(self) -> float | None:
        row = self._db.execute(f"SELECT min(due) FROM recipient WHERE {PENDING_SQL}")
        return _one(row)  # type: ignore[no-any-return]

    def pending(self, campaign_id: str | None = None) -> int:
        if campaign_id is None:
            row = self._db.execute(f"SELECT count(*) FROM recipient WHERE {PENDING_SQL}")
        else:
            row = self._db.execute(
                f"SELECT count(*) FROM recipient WHERE {PENDING_SQL} AND campaign = %s",
                (self._campaign(campaign_id),),
            )
        return int(_one(row))

    def counts(self) -> dict[str, int]:
        with self._transaction(snapshot=True) as db:
            return reports.counts(db)

    def pending_by_site(self) -> list[tuple[str, str | None, int]]:
        with self._transaction(snapshot=True) as db:
            return reports.pending_by_site(db)

    def status(self) -> Status:
        now = self._clock()
        with self._transaction(snapshot=True) as db:
            return reports.status(db, now)

    def report(self, campaign_id: str) -> Report:
        campaign = self._campaign(campaign_id)
        with self._transaction(snapshot=True) as db:
            return reports.report(db, campaign_id, campaign)

    def iter_recipients(self, campaign_id: str) -> Iterator[tuple[int, str, str, str, int]]:
        campaign = self._campaign(campaign_id)
        return self._pages(campaign)

    def _pages(self, campaign: int) -> Iterator[tuple[int, str, str, str, int]]:
        first = self._db.execute("SELECT first_id FROM campaign WHERE id = %s", (campaign,))
        after = (_one(first) or 1) - 1
        while True:
            rows = self._db.execute(sql.PAGE, (campaign, after, PAGE)).fetchall()
            for id_, key, address, state, attempts in rows:
                yield id_, key, address, NAME[state], attempts
            if len(rows) < PAGE:
                return
            after = rows[-1][0]

    def final_states(self, campaign_id: str) -> dict[str, str]:
        return {key: state for _, key, _, state, _ in self.iter_recipients(campaign_id)}

    # ---- suppressions (shared by every node of the database) ----

    def suppress(self, address: str, reason: str, scope: str = "") -> None:
        with self._transaction() as db:
            db.execute(
                sql.UPSERT_SUPPRESSION, (suppression_key(address), scope, reason, self._clock())
            )

    def unsuppress(self, address: str, scope: str = "") -> bool:
        with self._transaction() as db:
            cursor = db.execute(
                "DELETE FROM suppression WHERE address = %s AND scope = %s",
                (suppression_key(address), scope),
            )
            return bool(cursor.rowcount)

    def is_suppressed(self, address: str, scope: str = "") -> bool:
        row = self._db.execute(
            "SELECT 1 FROM suppression WHERE address = %s AND scope IN ('', %s)",
            (suppression_key(address), scope),
        )
        return row.fetchone() is not None

    def suppressed_among(
        self, addresses: Sequence[str], campaign_id: str | None = None
    ) -> set[str]:
        scope = "" if campaign_id is None else self.campaign_list(campaign_id)
        given: dict[str, list[str]] = {}
        for address in addresses:
            given.setdefault(suppression_key(address), []).append(address)
        keys = list(given)
        found: set[str] = set()
        with self._transaction(snapshot=True) as db:
            for start in range(0, len(keys), SUPPRESSION_CHUNK):
                for (key,) in db.execute(
                    "SELECT DISTINCT address FROM suppression"
                    " WHERE address = ANY(%s) AND scope IN ('', %s)",
                    (keys[start : start + SUPPRESSION_CHUNK], scope),
                ):
                    found.update(given[key])
        return found

    def suppressions(
        self, limit: int | None = None, scope: str = ""
    ) -> list[tuple[str, str, float]]:
        rows = self._db.execute(
            "SELECT address, reason, added_at FROM suppression WHERE scope = %s"
            ' ORDER BY added_at DESC, address COLLATE "C" LIMIT %s',
            (scope, limit),
        )
        return [(address, reason, added_at) for address, reason, added_at in rows]

    # ---- feedback ----

    def record_feedback(self, signals: Sequence[Signal]) -> list[Recorded | None]:
        with self._transaction() as db:
            return self._record_feedback(db, signals)

    def _record_feedback(
        self, db: psycopg.Connection[Any], signals: Sequence[Signal]
    ) -> list[Recorded | None]:
        out: list[Recorded | None] = [None] * len(signals)
        by_campaign: dict[str, list[int]] = {}
        for i, signal in enumerate(signals):
            by_campaign.setdefault(signal.campaign, []).append(i)
        for name, indexes in by_campaign.items():
            try:
                campaign = self._campaign(name)
            except ConfigError:
                continue
            keys = list({signals[i].key for i in indexes})
            found = {
                key: (address, domain)
                for key, address, domain in db.execute(sql.RECIPIENTS_BY_KEY, (campaign, keys))
            }
            marks = list({(signals[i].kind, signals[i].key, signals[i].link) for i in indexes})
            kinds, marked_keys, links = (list(column) for column in zip(*marks, strict=True))
            before = db.execute(sql.PEOPLE_BEFORE, (kinds, marked_keys, links, campaign))
            seen = {(kind, key, link) for kind, key, link in before}
            new_rows = []
            for i in indexes:
                signal = signals[i]
                address, domain = found.get(signal.key, (None, None))
                mark = (signal.kind, signal.key, signal.link)
                first = mark not in seen
                if not signal.machine:
                    seen.add(mark)
                new_rows.append(
                    (campaign, signal.key, signal.kind, signal.at, signal.machine, not first,
                     address, domain, signal.link, signal.url, signal.user_agent, signal.detail)
                )  # fmt: skip
                out[i] = Recorded(first, address, domain)
            with db.cursor() as cursor:
                cursor.executemany(sql.INSERT_FEEDBACK, new_rows)
        self._feedback_outbox(db, signals, out, self._clock())
        return out

    def record_inbound(
        self,
        signals: Sequence[Signal],
        suppress: Sequence[tuple[str, str, str]] = (),
        told: Sequence[tuple[Signal, Recorded]] = (),
    ) -> list[Recorded | None]:
        if not signals and not suppress and self.on_feedback is None:
            return []  # only told signals, and no webhook wants them
        now = self._clock()
        with self._transaction() as db:
            recorded = self._record_feedback(db, signals)
            if told:
                self._feedback_outbox(db, [s for s, _ in told], [r for _, r in told], now)
            with db.cursor() as cursor:
                cursor.executemany(
                    sql.UPSERT_SUPPRESSION,
                    [(suppression_key(a), scope, reason, now) for a, reason, scope in suppress],
                )
        return recorded

    def find_recipient(self, row_id: int) -> Found | None:
        row = self._db.execute(
            f"SELECT {_FOUND} FROM recipient r JOIN campaign c ON c.id = r.campaign"
            " WHERE r.id = %s",
            (row_id,),
        ).fetchone()
        return None if row is None else _found(row)

    def find_by_key(self, campaign_id: str, key: str) -> Found | None:
        row = self._db.execute(
            f"SELECT {_FOUND} FROM recipient r JOIN campaign c ON c.id = r.campaign"
            " WHERE c.name = %s AND r.key = %s",
            (campaign_id, key),
        ).fetchone()
        return None if row is None else _found(row)

    def find_by_address(self, address: str) -> list[Found]:
        """As lookup.by_address: the address as written and in lower case, in the
        newest RECENT_CAMPAIGNS campaigns, newest first."""
        rows = self._db.execute(
            f"SELECT {_FOUND} FROM campaign c JOIN recipient r ON r.campaign = c.id"
            " AND r.key = ANY(%s)"
            " WHERE c.id IN (SELECT id FROM campaign ORDER BY id DESC LIMIT %s)",
            (list(dict.fromkeys((address, address.lower()))), RECENT_CAMPAIGNS),
        )
        return sorted((_found(row) for row in rows), key=lambda f: -f.id)

    def unsubscribe(
        self,
        campaign_id: str,
        key: str,
        *,
        scope: str = "list",
        user_agent: str | None = None,
        by: str | None = None,
    ) -> Unsubscribed | None:
        if scope not in ("list", "global"):
            raise ValueError(f"scope must be 'list' or 'global', not {scope!r}")
        now = self._clock()
        try:
            campaign = self._campaign(campaign_id)
        except ConfigError:
            return None
        name = "" if scope == "global" else self.campaign_list(campaign_id)
        with self._transaction() as db:
            found = db.execute(sql.RECIPIENT_BY_KEY, (campaign, key)).fetchone()
            if found is None:
                return None
            address, domain = found
            # Two nodes taking the same unsubscribe at once: one inserts, the other
            # finds the row (the insert does nothing on a conflict).
            suppressed = db.execute(
                "INSERT INTO suppression (address, scope, reason, added_at)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (address, scope) DO NOTHING RETURNING 1",
                (suppression_key(address), name, f"unsubscribed from {campaign_id}", now),
            ).fetchone()
            recorded = db.execute(
                sql.PERSON_BEFORE, (campaign, "unsubscribed", key, None)
            ).fetchone()
            signal = unsubscribe_signal(campaign_id, key, now, name, user_agent, by)
            if recorded is None:
                row = (campaign, key, "unsubscribed", now, False, False, address, domain)
                db.execute(sql.INSERT_FEEDBACK, (*row, None, None, user_agent, signal.detail))
            done = Unsubscribed(
                suppressed is not None or recorded is None, address, domain, name, signal
            )
            if done.new:
                self._feedback_outbox(db, [signal], [done.recorded], now)
        return done

    def feedback(self, campaign_id: str) -> list[tuple[str, str, bool, bool, int | None, float]]:
        rows = self._db.execute(
            "SELECT kind, key, machine, repeat, link, at FROM feedback WHERE campaign = %s"
            " ORDER BY id",
            (self._campaign(campaign_id),),
        )
        return [(k, key, bool(m), bool(r), link, at) for k, key, m, r, link, at in rows]

    # ---- the webhook outbox (SqliteSpool's methods say what each does) ----

    @staticmethod
    def _enqueue_rows(db: psycopg.Connection[Any], rows: Sequence[OutboxRow], now: float) -> None:
        with db.cursor() as cursor:
            cursor.executemany(pg(webhook_outbox.ENQUEUE), webhook_outbox.enqueue_params(rows, now))

    def webhook_enqueue(self, rows: Sequence[OutboxRow]) -> None:
        if not rows:
            return
        with self._transaction() as db:
            self._enqueue_rows(db, rows, self._clock())

    def webhook_take(self, endpoint: str, limit: int, older_than: float) -> OutboxBatch | None:
        with self._transaction() as db:
            return webhook_outbox.take(
                db.execute, endpoint, limit, older_than, self._clock(), postgres=True
            )

    def webhook_sent(self, endpoint: str, batch: int) -> int:
        with self._transaction() as db:
            return webhook_outbox.sent(db.execute, endpoint, batch, postgres=True)

    def webhook_failed(
        self, endpoint: str, batch: int, error: str, next_attempt: float | None
    ) -> None:
        with self._transaction() as db:
            webhook_outbox.failed(
                db.execute, endpoint, batch, error, next_attempt, self._clock(), postgres=True
            )

    def webhook_replay(self, endpoint: str | None = None) -> int:
        with self._transaction() as db:
            return webhook_outbox.replay(db.execute, endpoint, postgres=True)

    def webhook_backlog(self) -> list[WebhookBacklog]:
        with self._transaction(durable=False) as db:
            return webhook_outbox.backlog(db.execute)
