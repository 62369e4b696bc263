"""SqliteSpool: the engine's durable store (campaigns, recipients' states, suppressions)
in one SQLite file."""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType

import orjson

from ..errors import ConfigError
from . import actions as actions_table
from . import lookup, reports
from . import outbox as webhook_outbox
from . import statements as sql
from .actions import ShapingAction
from .campaigns import CampaignNames
from .cancelled import CancelledEvents
from .feedback_events import FeedbackEvents, unsubscribe_signal
from .lookup import Found
from .outbox import OutboxBatch, OutboxRow, WebhookBacklog
from .owners import dead_here
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
from .schema import CACHE_KIB, connect
from .states import DEFERRED, NAME, PENDING_SQL, QUEUED
from .suppression import domain_key, suppression_key

_log = logging.getLogger(__name__)

#: Rows a page of `iter_recipients` reads: a short query each, so that no read
#: transaction stays open while the caller works through a million recipients.
PAGE = 1000
#: Recipients `cancel` ends per call (per transaction).
CANCEL_PAGE = 10_000
#: Addresses per query of `suppressed_among`.
SUPPRESSION_CHUNK = 10_000
#: How often `lease` looks for leases of dead processes of this host (and at its first
#: call): a scan of the in-flight rows, cheap but not free on a busy spool.
RECLAIM_EVERY = 60.0
#: An engine not seen for this long is forgotten by `fleet_heartbeat` (its row deleted);
#: one not seen within the caller's `live_for` is already not counted.
FORGET_NODE_AFTER = 3600.0


def _first_of_each_key(rows: Sequence[NewRecipient]) -> list[NewRecipient | None]:
    """`rows`, with None in place of a row whose key came earlier in them."""
    seen: set[str] = set()
    out: list[NewRecipient | None] = []
    for row in rows:
        if row.key in seen:
            out.append(None)
        else:
            seen.add(row.key)
            out.append(row)
    return out


class SqliteSpool(CampaignNames, CancelledEvents, FeedbackEvents):
    """The spool in one SQLite file (WAL mode; see schema.py).

    Every method is synchronous and is one transaction: a write either happens whole or
    not at all, also when the process is killed in the middle. One connection, used by
    one thread at a time: the engine calls the spool from its single spool worker
    thread (the connection is opened with check_same_thread=False so that it may be
    created elsewhere). Other processes may open the same file (`ferrymail status`
    reads while the engine writes).

    A write that returns is on disk (fsynced: it survives a power cut), except leases
    and other writes whose loss changes nothing (see `lease`).

    Times are seconds since the epoch from `clock`, read once per call.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        read_only: bool = False,
        cache_kib: int = CACHE_KIB,
    ) -> None:
        """`read_only`: open an existing spool to read it only (a read-only mount, a
        file of another user); every write then fails. `cache_kib`: the connection's
        page cache, CACHE_KIB for the engine's work across the whole spool,
        LIGHT_CACHE_KIB for a connection that reads reports or writes a few rows."""
        self.path = os.fspath(path)
        self._db = connect(path, read_only=read_only, cache_kib=cache_kib)
        self._clock = clock
        self._durable = True  # synchronous=FULL, as connect() leaves it
        # Campaigns are never renamed nor deleted: their ids can be cached forever.
        CampaignNames.__init__(self)
        CancelledEvents.__init__(self)
        self._reclaim_at = float("-inf")  # when lease() next looks for dead owners

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SqliteSpool:
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
        self, kind: str = "IMMEDIATE", *, durable: bool = True
    ) -> Iterator[sqlite3.Connection]:
        """One transaction: IMMEDIATE takes the write lock at once (a writer never fails
        half-way on a lock it could not upgrade to), DEFERRED reads one snapshot.

        `durable=False` commits without the fsync (synchronous=NORMAL), for writes whose
        loss to a power cut changes nothing (see lease): the process still cannot leave
        them half done, and the next durable commit's fsync of the log covers them too.
        """
        db = self._db
        if durable != self._durable:
            db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            self._durable = durable
        db.execute(f"BEGIN {kind}")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            self._commit_cancelled(False)
            if db.in_transaction:  # SQLite itself rolls back after some errors
                db.execute("ROLLBACK")
            raise
        self._commit_cancelled(True)

    def _enqueue_rows(self, db: sqlite3.Connection, rows: Sequence[OutboxRow], now: float) -> None:
        db.execute(webhook_outbox.ENQUEUE_JSON, (webhook_outbox.enqueue_json(rows), now))

    # ---- campaigns ----

    def put_campaign(self, campaign_id: str, spec: bytes) -> bool:
        """Store a campaign's spec (the MessagePack of wire.CampaignSpec). Storing the same
        spec again does nothing (a resubmit after a crash), also when a newer ferrymail
        encodes it with more fields (their defaults) than the stored bytes have.

        Other bytes under an id the spool has: when nothing of that campaign was ever
        attempted (its recipients are queued, failed, rejected or suppressed, none in
        flight, none leased before), the new spec replaces the old one (a template fixed
        after every recipient failed), and the recipients that failed are removed, so
        that submitting them again queues them; returns True then. Otherwise a message
        may have gone out with the old spec: ConfigError naming the id and what to do."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT id, spec FROM campaign WHERE name = ?", (campaign_id,)
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO campaign (name, spec, created_at) VALUES (?, ?, ?)",
                    (campaign_id, bytes(spec), self._clock()),
                )
                return False
            campaign, stored = row
            return self._replace_spec(db, campaign_id, campaign, stored, spec, sql)

    # ---- submit ----

    def insert(
        self,
        campaign_id: str,
        rows: Sequence[NewRecipient],
        outbox: Callable[[list[int | None]], Sequence[OutboxRow]] | None = None,
    ) -> list[int | None]:
        """Add recipients of a stored campaign in one transaction and return their ids, in
        order. Queued ones are due at once; final ones ("rejected", "suppressed" …) keep
        their code, enhanced code and text. When this returns, the rows are on disk.

        A recipient key is in a campaign once: a row whose key the campaign already has
        (from an earlier insert, or earlier in `rows`) is left out, and its id is None.
        So submitting a list again, after a crash or by mistake, queues nobody twice.

        `outbox(ids)` gives the webhook events of the rows that went in: they are added
        to the outbox in the same transaction (a crash keeps both or neither)."""
        now = self._clock()
        firsts = _first_of_each_key(rows)
        with self._transaction() as db:
            campaign = self._campaign(campaign_id)
            # Ids are given here, not by SQLite, so that they are known without reading
            # them back: the write lock is held, nobody else can take them meanwhile.
            first = db.execute("SELECT coalesce(max(id), 0) + 1 FROM recipient").fetchone()[0]
            if any(row is not None for row in firsts):
                db.execute(
                    "UPDATE campaign SET first_id = ? WHERE id = ? AND first_id IS NULL",
                    (first, campaign),
                )
            queued, final = sql.insert_rows(firsts, first, campaign, now)
            added = db.executemany(sql.INSERT_QUEUED, queued).rowcount
            added += db.executemany(sql.INSERT_FINAL, final).rowcount
            ids: list[int | None] = [
                None if row is None else id_ for id_, row in enumerate(firsts, first)
            ]
            if added < len(queued) + len(final):
                # Some keys were in the campaign already (rare: a resubmit): the ids
                # that are in the table now are the rows that went in.
                present = {
                    id_
                    for (id_,) in db.execute(
                        "SELECT id FROM recipient WHERE id BETWEEN ? AND ?",
                        (first, first + len(firsts) - 1),
                    )
                }
                ids = [id_ if id_ in present else None for id_ in ids]
            hooked = outbox(ids) if outbox is not None else ()
            if hooked:
                self._enqueue_rows(db, hooked, now)
        return ids

    # ---- leasing ----

    def lease(
        self,
        limit: int,
        owner: str,
        lease_for: float,
        domains: Collection[str] | None = None,
    ) -> list[Leased]:
        """Lease up to `limit` due recipients (of `domains` only, when given: lower-case
        A-labels, as stored), oldest due first, for `lease_for` seconds: they are in
        flight, owned by `owner`, until `record` gives their outcome or the lease ends
        (then they are due again).

        Due: queued or deferred recipients whose time has come, and in-flight ones whose
        lease has ended (a dead process's); the attempt of an expired lease is not
        counted, since its outcome is unknown. The leases of a process of this host that
        is no longer running end at once (looked for at the first call and every
        RECLAIM_EVERY seconds): a restart after a crash need not wait them out."""
        if limit <= 0:
            return []
        now = self._clock()
        # Not durable: a lease lost to a power cut leaves the recipients due, as they
        # would be when it ended, and nothing can have been recorded against it without
        # a durable commit after it. The engine's busiest call skips an fsync.
        with self._transaction(durable=False) as db:
            if now >= self._reclaim_at:
                self._reclaim_at = now + RECLAIM_EVERY
                self._end_dead_leases(db, now, owner)
            if domains is None:
                rows = db.execute(sql.DUE, (now, limit)).fetchall()
            else:
                some = (now, json.dumps(list(domains)), limit)
                rows = db.execute(sql.DUE_IN_DOMAINS, some).fetchall()
            if not rows:
                return []
            ids = json.dumps([row[0] for row in rows])
            db.execute(sql.LEASE, (now + lease_for, owner, now, ids))
        name = self._campaign_name
        return [Leased(r[0], name(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], r[8]) for r in rows]

    def _end_dead_leases(self, db: sqlite3.Connection, now: float, owner: str) -> int:
        """Ends now the leases of owners that are dead processes of this host; returns
        how many recipients they held."""
        ended = 0
        for holder, _, _ in db.execute(sql.LEASES).fetchall():
            if holder != owner and dead_here(holder):
                count = db.execute(sql.END_LEASES, (now, holder)).rowcount
                _log.info("spool: %d leases of %s (a dead process) ended", count, holder)
                ended += count
        if ended:  # back in the queue: those of a cancelled campaign end there
            self._ended(db, db.execute(sql.CANCEL_SWEEP, (now,)).fetchall(), now)
        return ended

    def leases(self) -> list[tuple[str, int, float, bool]]:
        """(owner, recipients, when its first lease ends, whether it is a dead process of
        this host) of every owner of in-flight recipients, the biggest first: who
        holds what a drain waits for."""
        rows = self._db.execute(sql.LEASES).fetchall()
        return [(owner, n, until, dead_here(owner)) for owner, n, until in rows]

    def started(self, ids: Sequence[int]) -> list[int]:
        """Note that attempts of these in-flight recipients begin: until `record` gives
        their outcomes, they count as interrupted (Leased.interrupted) if the process
        dies.

        Those of a cancelled campaign do not begin: they end as cancelled here, in the
        same transaction, and their ids are returned for the caller to leave out of the
        batch. So a recipient leased before a cancel (by this process or another) is
        never sent after the cancel commits; one whose attempt began before it finishes."""
        now = self._clock()
        # Not durable: lost to a power cut, an attempt is not counted as interrupted,
        # as before this existed (and a cancelled one is cancelled again by the sweeps).
        with self._transaction(durable=False) as db:
            listed = json.dumps(list(ids))
            rows = db.execute(sql.CANCEL_UNSTARTED, (now, listed)).fetchall()
            self._ended(db, rows, now)
            db.execute(sql.STARTED, (listed,))
        return [row[6] for row in rows]

    def renew(self, ids: Sequence[int], lease_for: float) -> int:
        """Extend the leases of in-flight recipients to `lease_for` seconds from now;
        returns how many were still in flight."""
        until = self._clock() + lease_for
        with self._transaction(durable=False) as db:  # as a lease
            return int(db.execute(sql.RENEW, (until, json.dumps(list(ids)))).rowcount)

    def record(self, updates: Sequence[Update], outbox: Sequence[OutboxRow] = ()) -> int:
        """Record attempts' outcomes in one transaction: state, attempts, next attempt,
        and the last reply (code, enhanced, text, category, MX, IP); the lease ends.
        `outbox`: the webhook events of these outcomes, written in the same transaction
        (both are durable, or neither).

        Only recipients still in flight change: a final one never does, so a replayed or
        late record is harmless. Returns how many updates were skipped for that."""
        now = self._clock()
        with self._transaction() as db:
            applied = db.executemany(sql.RECORD, sql.record_rows(updates, now)).rowcount
            # Put back in the queue (deferred, or released untried) after their
            # campaign was cancelled: they end there.
            requeued = [u.id for u in updates if u.state in (QUEUED, DEFERRED)]
            if outbox:
                self._enqueue_rows(db, outbox, now)
            if requeued:  # after the outbox rows: a cancelled event follows the deferral's
                ended = db.execute(sql.CANCEL_REQUEUED, (now, json.dumps(requeued))).fetchall()
                self._ended(db, ended, now)
        skipped = len(updates) - applied
        if skipped:
            _log.debug("spool: %d of %d updates skipped (not in flight)", skipped, len(updates))
        return skipped

    def release_owner(self, owner: str) -> int:
        """At a clean shutdown: put `owner`'s in-flight recipients back as they were before
        their lease (queued or deferred, due when they were due), without counting an
        attempt. Returns how many."""
        now = self._clock()
        # Not durable: if lost, the leases end by themselves. Closing the spool
        # checkpoints the log anyway.
        with self._transaction(durable=False) as db:
            ended = self._ended(db, db.execute(sql.CANCEL_OWNER, (now, owner)).fetchall(), now)
            return int(db.execute(sql.RELEASE_OWNER, (now, owner)).rowcount) + len(ended)

    def flush(self, domain: str | None = None) -> int:
        """Make every waiting recipient (deferred, or queued for later), of `domain` or
        of all domains, due now, like Postfix's `postqueue -f`, and put back those
        whose lease has ended or whose owner is a dead process of this host (a crash's
        leftovers). Returns how many."""
        now = self._clock()
        params: tuple[object, ...]
        if domain is None:
            statement, params = sql.FLUSH, (now,)
            release = sql.RELEASE_ENDED
        else:
            statement, params = sql.FLUSH_DOMAIN, (now, domain_key(domain))
            release = sql.RELEASE_ENDED_DOMAIN
        with self._transaction(durable=False) as db:  # if lost, they wait their time
            self._end_dead_leases(db, now, "")
            released = db.execute(release, params).rowcount
            self._ended(db, db.execute(sql.CANCEL_SWEEP, (now,)).fetchall(), now)
            return int(db.execute(statement, params).rowcount) + int(released)

    def cancel(self, campaign_id: str, limit: int = CANCEL_PAGE) -> list[CancelledRecipient]:
        """Cancel a campaign: it is marked so that none of its recipients is sent from
        now on (one leased and not yet started ends as cancelled at `started`; one put
        back in the queue, by a deferral, a release or an ended lease, ends as cancelled
        there; one whose attempt began finishes it, recorded as usual), and up to
        `limit` of its queued and deferred recipients end as "cancelled", returned.
        Fewer than `limit` returned: none is left; else call again (one transaction a
        page: a million recipients never hold the spool at once). ConfigError for a
        campaign the spool does not have.

        Every path that ends a recipient as cancelled writes its webhook events in its
        transaction and keeps it for `take_cancelled` (see cancelled.py)."""
        now = self._clock()
        with self._transaction() as db:
            campaign = self._campaign(campaign_id)
            db.execute(sql.CANCEL_MARK, (now, campaign))
            rows = db.execute(sql.CANCEL_PAGE, (now, campaign, limit)).fetchall()
            return self._ended(db, rows, now)

    def cancelled_at(self, campaign_id: str) -> float | None:
        """When the campaign was cancelled, or None; KeyError for no such campaign."""
        row = self._db.execute(
            "SELECT cancelled_at FROM campaign WHERE name = ?", (campaign_id,)
        ).fetchone()
        if row is None:
            raise KeyError(campaign_id)
        return None if row[0] is None else float(row[0])

    # ---- the service API's keys ----

    def add_api_key(self, name: str, digest: bytes, read_only: bool) -> bool:
        """Store a key's SHA-256 under `name`; False when the name is taken."""
        with self._transaction() as db:
            try:
                db.execute(sql.API_KEY_ADD, (name, digest, int(read_only), self._clock()))
            except sqlite3.IntegrityError:
                return False
        return True

    def find_api_key(self, digest: bytes) -> tuple[str, bool, bytes] | None:
        """(name, read_only, the stored digest) of the key whose SHA-256 is `digest`,
        or None."""
        row = self._db.execute(sql.API_KEY_FIND, (digest,)).fetchone()
        return None if row is None else (str(row[0]), bool(row[1]), bytes(row[2]))

    def api_keys(self) -> list[tuple[str, bool, float]]:
        """(name, read_only, created_at) of every key, by name."""
        return [(n, bool(r), float(t)) for n, r, t in self._db.execute(sql.API_KEY_LIST)]

    def revoke_api_key(self, name: str) -> bool:
        """Delete the key `name`; False when there is none."""
        with self._transaction() as db:
            return bool(db.execute(sql.API_KEY_DELETE, (name,)).rowcount)

    # ---- suspended sites ----

    def suspend(self, site: str, until: float, reason: str, domains: Collection[str]) -> None:
        """Note that the engine suspended `site` until `until` (a later suspension of the
        same site replaces it), with the domains it had recipients of."""
        now = self._clock()
        # Not durable: a suspension lost to a power cut only means the site is tried once
        # more after the restart, which suspends it again if it is still unwell.
        with self._transaction(durable=False) as db:
            db.execute("DELETE FROM suspension WHERE until <= ?", (now,))
            db.execute(
                "INSERT INTO suspension (site, until, reason, domains, since)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (site) DO UPDATE"
                " SET until = excluded.until, reason = excluded.reason,"
                " domains = excluded.domains, since = excluded.since",
                (site, until, reason, json.dumps(sorted(domains)), now),
            )

    def suspensions(self) -> list[Suspension]:
        """The sites suspended now, the one whose suspension ends soonest first."""
        return reports.suspensions(self._db, self._clock())

    def lift(self, domain: str | None = None) -> list[str]:
        """End the suspensions of every site, or of the sites `domain` was among, as
        `flush` does: a running engine sends to them again within a second. Returns
        the sites."""
        now = self._clock()
        with self._transaction(durable=False) as db:
            if domain is None:
                rows = db.execute("SELECT site FROM suspension WHERE until > ?", (now,))
            else:
                rows = db.execute(
                    "SELECT site FROM suspension WHERE until > ? AND EXISTS"
                    " (SELECT 1 FROM json_each(domains) WHERE value = ?)",
                    (now, domain_key(domain)),
                )
            sites = sorted(site for (site,) in rows)
            # (No DELETE … RETURNING: that needs SQLite 3.35, the spool asks for 3.33.)
            db.executemany("DELETE FROM suspension WHERE site = ?", [(s,) for s in sites])
        return sites

    # ---- the fleet's share of each site's limits (shaping/grants.py, shaping/fleet.py) ----

    def take_tokens(self, key: str, per_second: float, want: int) -> int:
        """Take up to `want` tokens from the bucket `key` (a site's message rate), refilled
        at `per_second` and holding at most one second's worth (at least one token); a
        new bucket starts full. Returns how many were taken: 0 when it has not one whole
        token yet. Every engine on the spool takes from the one bucket, in grants of a
        fraction of a second's worth, so that together they send at the rate without a
        write per message. Not durable: a grant lost to a power cut is tokens nobody
        spends."""
        now = self._clock()
        burst = max(1.0, per_second)
        with self._transaction(durable=False) as db:
            row = db.execute(
                "SELECT tokens, filled_at FROM rate_bucket WHERE key = ?", (key,)
            ).fetchone()
            if row is None:
                level, filled_at = burst, now
            else:
                # Never moved back in time (another process's clock read may be later).
                filled_at = max(now, row[1])
                level = min(burst, row[0] + max(0.0, now - row[1]) * per_second)
            got = max(0, min(want, math.floor(level)))
            db.execute(
                "INSERT INTO rate_bucket (key, tokens, filled_at) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE"
                " SET tokens = excluded.tokens, filled_at = excluded.filled_at",
                (key, level - got, filled_at),
            )
        return got

    def fleet_heartbeat(self, owner: str, node: str, live_for: float) -> tuple[float, list[str]]:
        """Note that the engine `owner` (`Engine.owner`, on node `node`) is alive now;
        returns the spool's time now and the owners of the engines seen alive within
        `live_for` seconds, this one among them, sorted. Engines share each site's
        connection limit among the live ones (shaping/fleet.py). Heartbeats are
        serialised (one write lock), so of two engines starting at once the second sees
        the first. Not durable: a heartbeat lost is the next one's to make."""
        now = self._clock()
        with self._transaction(durable=False) as db:
            db.execute(
                "INSERT INTO fleet_node (owner, node, seen_at) VALUES (?, ?, ?)"
                " ON CONFLICT (owner) DO UPDATE"
                " SET node = excluded.node, seen_at = excluded.seen_at",
                (owner, node, now),
            )
            db.execute("DELETE FROM fleet_node WHERE seen_at < ?", (now - FORGET_NODE_AFTER,))
            rows = db.execute(
                "SELECT owner FROM fleet_node WHERE seen_at > ? ORDER BY owner", (now - live_for,)
            )
            return now, [owner for (owner,) in rows]

    def fleet_leave(self, owner: str) -> None:
        """The engine `owner` stopped: the others count it out at their next heartbeat."""
        with self._transaction(durable=False) as db:
            db.execute("DELETE FROM fleet_node WHERE owner = ?", (owner,))

    # ---- automation actions (shaping) ----

    def put_actions(self, actions: Sequence[ShapingAction]) -> None:
        """Store automation actions that fired (see actions.py). Not durable: one lost
        to a power cut fires again at the receiver's next such reply."""
        with self._transaction(durable=False) as db:
            actions_table.put(db, actions, self._clock())

    def actions(self) -> list[ShapingAction]:
        """The automation actions in force, or whose limits are still coming back up."""
        return actions_table.in_force(self._db, self._clock())

    def lift_actions(self, domain: str | None = None) -> list[ShapingAction]:
        """End every automation action, or those on the sites `domain` was among (as
        `flush` does); returns them. A running engine sees it within a second."""
        with self._transaction(durable=False) as db:
            return actions_table.lift(db, None if domain is None else domain_key(domain))

    # ---- warm-up: messages per source, provider and day ----

    def add_warmup_sent(self, counts: Sequence[tuple[str, str, str, int]]) -> None:
        """Add (source, provider, day "YYYY-MM-DD", messages) to the day's counts. Not
        durable: a count lost to a power cut lets a source send that many more once."""
        with self._transaction(durable=False) as db:
            db.executemany(
                "INSERT INTO warmup_sent (source, provider, day, sent) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (source, provider, day) DO UPDATE SET sent = sent + excluded.sent",
                counts,
            )

    def warmup_sent(self, day: str) -> dict[tuple[str, str], int]:
        """(source, provider) -> messages sent on `day` ("YYYY-MM-DD")."""
        rows = self._db.execute(
            "SELECT source, provider, sent FROM warmup_sent WHERE day = ?", (day,)
        )
        return {(source, provider): sent for source, provider, sent in rows}

    def next_due(self) -> float | None:
        """The earliest time a pending recipient is (or was) due: a queued or deferred
        one's next attempt, or the end of an in-flight one's lease. A time in the past
        means something is due now; None, that nothing is pending."""
        row = self._db.execute(f"SELECT min(due) FROM recipient WHERE {PENDING_SQL}")
        return row.fetchone()[0]  # type: ignore[no-any-return]

    def pending(self, campaign_id: str | None = None) -> int:
        """How many recipients (of the campaign, or of all) are not final yet."""
        if campaign_id is None:
            row = self._db.execute(f"SELECT count(*) FROM recipient WHERE {PENDING_SQL}")
        else:
            row = self._db.execute(
                f"SELECT count(*) FROM recipient {reports.PENDING_ROWS}"
                f" WHERE {PENDING_SQL} AND campaign = ?",
                (self._campaign(campaign_id),),
            )
        return int(row.fetchone()[0])

    def counts(self) -> dict[str, int]:
        """The whole spool's recipients by state, every state included."""
        return reports.counts(self._db)

    def pending_by_site(self) -> list[tuple[str, str | None, int]]:
        """Pending recipients as (state, MX host of the last attempt or None, count)."""
        with self._transaction("DEFERRED") as db:
            return reports.pending_by_site(db)

    def status(self) -> Status:
        """Counts by state, the busiest domains' pending recipients and the suspended
        sites, from one snapshot."""
        now = self._clock()
        with self._transaction("DEFERRED") as db:
            return reports.status(db, now)

    def report(self, campaign_id: str) -> Report:
        """Where a campaign stands, from one snapshot (ConfigError for an unknown id)."""
        with self._transaction("DEFERRED") as db:
            return reports.report(db, campaign_id, self._campaign(campaign_id))

    def iter_recipients(self, campaign_id: str) -> Iterator[tuple[int, str, str, str, int]]:
        """(id, key, address, state, attempts) of every recipient of the campaign, in id
        order, read a page at a time: memory stays flat for any campaign size."""
        campaign = self._campaign(campaign_id)  # an unknown id raises here, not when read
        return self._pages(campaign)

    def _pages(self, campaign: int) -> Iterator[tuple[int, str, str, str, int]]:
        first = self._db.execute("SELECT first_id FROM campaign WHERE id = ?", (campaign,))
        after = (first.fetchone()[0] or 1) - 1
        while True:
            rows = self._db.execute(sql.PAGE, (campaign, after, PAGE)).fetchall()
            for id_, key, address, state, attempts in rows:
                yield id_, key, address, NAME[state], attempts
            if len(rows) < PAGE:
                return
            after = rows[-1][0]

    def final_states(self, campaign_id: str) -> dict[str, str]:
        """Key -> state of every recipient of the campaign (pending ones included). All
        in memory: for tests and small campaigns; `iter_recipients` streams."""
        return {key: state for _, key, _, state, _ in self.iter_recipients(campaign_id)}

    # ---- suppressions (compared as suppression.suppression_key says) ----
    #
    # A suppression has a scope: "" (the default) is global, every campaign; any other
    # scope is a list's name (`campaign_list`), and suppresses the address for the
    # campaigns of that list only (an unsubscribe from one newsletter).

    def suppress(self, address: str, reason: str, scope: str = "") -> None:
        """Add an address to the suppression list (global, or the list `scope`); an
        address already on it gets the new reason and time."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO suppression (address, scope, reason, added_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (address, scope) DO UPDATE"
                " SET reason = excluded.reason, added_at = excluded.added_at",
                (suppression_key(address), scope, reason, self._clock()),
            )

    def unsuppress(self, address: str, scope: str = "") -> bool:
        """Remove an address from the list (global, or the list `scope`); False when it
        was not on it."""
        with self._transaction() as db:
            cursor = db.execute(
                "DELETE FROM suppression WHERE address = ? AND scope = ?",
                (suppression_key(address), scope),
            )
            return bool(cursor.rowcount)

    def is_suppressed(self, address: str, scope: str = "") -> bool:
        """Whether the address is suppressed globally, or in the list `scope`."""
        row = self._db.execute(
            "SELECT 1 FROM suppression WHERE address = ? AND scope IN ('', ?)",
            (suppression_key(address), scope),
        )
        return row.fetchone() is not None

    def suppressed_among(
        self, addresses: Sequence[str], campaign_id: str | None = None
    ) -> set[str]:
        """The addresses (as given) that are suppressed globally, or (with
        `campaign_id`) in that campaign's list: one query per SUPPRESSION_CHUNK
        addresses, for submit's check of a whole chunk."""
        scope = "" if campaign_id is None else self.campaign_list(campaign_id)
        given: dict[str, list[str]] = {}
        for address in addresses:
            given.setdefault(suppression_key(address), []).append(address)
        keys = list(given)
        found: set[str] = set()
        with self._transaction("DEFERRED") as db:
            for start in range(0, len(keys), SUPPRESSION_CHUNK):
                chunk = json.dumps(keys[start : start + SUPPRESSION_CHUNK])
                for (key,) in db.execute(
                    "SELECT DISTINCT address FROM suppression"
                    " WHERE address IN (SELECT value FROM json_each(?)) AND scope IN ('', ?)",
                    (chunk, scope),
                ):
                    found.update(given[key])
        return found

    def suppressions(
        self, limit: int | None = None, scope: str = ""
    ) -> list[tuple[str, str, float]]:
        """(address, reason, added_at) of addresses suppressed globally (or in the list
        `scope`), newest first."""
        rows = self._db.execute(
            "SELECT address, reason, added_at FROM suppression WHERE scope = ?"
            " ORDER BY added_at DESC, address LIMIT ?",
            (scope, -1 if limit is None else limit),
        )
        return [(address, reason, added_at) for address, reason, added_at in rows]

    # ---- feedback: what comes back from recipients and receivers ----

    def record_feedback(self, signals: Sequence[Signal]) -> list[Recorded | None]:
        """Record signals in one transaction (a group commit of many requests' clicks
        and opens), each a row of its own: a recipient's state is never changed by
        one. Returns, for each, whether it was the recipient's first of its kind (and
        link) by a person, and the recipient's address and domain; None for a signal of
        a campaign the spool does not have (a genuine token of another spool's
        campaign: nothing to record it against)."""
        # Set-wise, a few queries per campaign of the batch and one executemany (a row
        # by row lookup costs ~17 us a signal; this ~3): the web's hot path.
        with self._transaction() as db:
            return self._record_feedback(db, signals)

    def _record_feedback(
        self, db: sqlite3.Connection, signals: Sequence[Signal]
    ) -> list[Recorded | None]:
        out: list[Recorded | None] = [None] * len(signals)
        by_campaign: dict[str, list[int]] = {}
        for i, signal in enumerate(signals):
            by_campaign.setdefault(signal.campaign, []).append(i)
        for name, indexes in by_campaign.items():
            try:
                campaign = self._campaign(name)
            except ConfigError:
                continue  # (out stays None for them)
            keys = orjson.dumps(list({signals[i].key for i in indexes})).decode()
            (found_json,) = db.execute(sql.RECIPIENTS_BY_KEY, (campaign, keys)).fetchone()
            found = {key: (address, domain) for key, address, domain in orjson.loads(found_json)}
            marks = list({(signals[i].kind, signals[i].key, signals[i].link) for i in indexes})
            marked = orjson.dumps(marks).decode()
            (seen_json,) = db.execute(sql.PEOPLE_BEFORE, (campaign, marked)).fetchone()
            seen = {(kind, key, link) for kind, key, link in orjson.loads(seen_json)}
            new_rows = []
            for i in indexes:
                signal = signals[i]
                address, domain = found.get(signal.key, (None, None))
                mark = (signal.kind, signal.key, signal.link)
                first = mark not in seen
                if not signal.machine:
                    seen.add(mark)
                new_rows.append(
                    (
                        signal.key,
                        signal.kind,
                        signal.at,
                        int(signal.machine),
                        int(not first),
                        address,
                        domain,
                        signal.link,
                        signal.url,
                        signal.user_agent,
                        signal.detail,
                    )
                )
                out[i] = Recorded(first, address, domain)
            db.execute(sql.INSERT_FEEDBACK_ROWS, (campaign, orjson.dumps(new_rows).decode()))
        self._feedback_outbox(db, signals, out, self._clock())
        return out

    def record_inbound(
        self,
        signals: Sequence[Signal],
        suppress: Sequence[tuple[str, str, str]] = (),
        told: Sequence[tuple[Signal, Recorded]] = (),
    ) -> list[Recorded | None]:
        """What one inbound message said, in one durable transaction: its signals (late
        bounces, complaints, auto-replies; see `record_feedback`) and the suppressions
        they call for, (address, reason, scope) each. The listener answers the message's
        sender only after this returns, so a crash before makes it send the message
        again, never loses it. `told`: signals that are not stored (a delay report),
        with what their events say of the recipient: only their webhook events are
        written, in the same transaction."""
        if not signals and not suppress and self.on_feedback is None:
            return []  # only told signals, and no webhook wants them
        now = self._clock()
        with self._transaction() as db:
            recorded = self._record_feedback(db, signals)
            if told:
                self._feedback_outbox(db, [s for s, _ in told], [r for _, r in told], now)
            db.executemany(
                "INSERT INTO suppression (address, scope, reason, added_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (address, scope) DO UPDATE"
                " SET reason = excluded.reason, added_at = excluded.added_at",
                [(suppression_key(a), scope, reason, now) for a, reason, scope in suppress],
            )
        return recorded

    def find_recipient(self, row_id: int) -> Found | None:
        """The recipient row `row_id` (the row a VERP token names), or None."""
        return lookup.by_id(self._db, row_id)

    def find_by_key(self, campaign_id: str, key: str) -> Found | None:
        """The recipient of `campaign_id` keyed `key` (what a tracking token names)."""
        return lookup.by_campaign_key(self._db, campaign_id, key)

    def find_by_address(self, address: str) -> list[Found]:
        """The recent recipients keyed by `address`, newest first (lookup.by_address)."""
        return lookup.by_address(self._db, address)

    def unsubscribe(
        self,
        campaign_id: str,
        key: str,
        *,
        scope: str = "list",
        user_agent: str | None = None,
        by: str | None = None,
    ) -> Unsubscribed | None:
        """A recipient's unsubscribe (RFC 8058 one-click, or the mailto one), in one
        durable transaction: the address is suppressed in the campaign's list
        (`scope="list"`) or globally (`scope="global"`), and an "unsubscribed" signal
        recorded (its event's outbox rows too, see feedback_events.py; `by`: how it
        came, None for the one-click POST, "mailto" for mail). Idempotent: when both
        are there already, nothing changes and `Unsubscribed.new` is False. None when
        the spool has no such campaign or recipient (nothing to unsubscribe)."""
        if scope not in ("list", "global"):
            raise ValueError(f"scope must be 'list' or 'global', not {scope!r}")
        now = self._clock()
        with self._transaction() as db:
            try:
                campaign = self._campaign(campaign_id)
            except ConfigError:
                return None
            found = db.execute(sql.RECIPIENT_BY_KEY, (campaign, key)).fetchone()
            if found is None:
                return None
            address, domain = found
            name = "" if scope == "global" else self.campaign_list(campaign_id)
            suppressed = db.execute(
                "SELECT 1 FROM suppression WHERE address = ? AND scope = ?",
                (suppression_key(address), name),
            ).fetchone()
            recorded = db.execute(
                sql.PERSON_BEFORE, (campaign, "unsubscribed", key, None)
            ).fetchone()
            if suppressed is None:
                db.execute(
                    "INSERT INTO suppression (address, scope, reason, added_at)"
                    " VALUES (?, ?, ?, ?)",
                    (suppression_key(address), name, f"unsubscribed from {campaign_id}", now),
                )
            signal = unsubscribe_signal(campaign_id, key, now, name, user_agent, by)
            if recorded is None:
                row = (campaign, key, "unsubscribed", now, 0, 0, address, domain)
                db.execute(sql.INSERT_FEEDBACK, (*row, None, None, user_agent, signal.detail))
            done = Unsubscribed(
                suppressed is None or recorded is None, address, domain, name, signal
            )
            if done.new:
                self._feedback_outbox(db, [signal], [done.recorded], now)
        return done

    def feedback(self, campaign_id: str) -> list[tuple[str, str, bool, bool, int | None, float]]:
        """(kind, key, machine, repeat, link, at) of every signal of the campaign, in
        the order they were recorded: for tests and small campaigns."""
        rows = self._db.execute(
            "SELECT kind, key, machine, repeat, link, at FROM feedback WHERE campaign = ?"
            " ORDER BY id",
            (self._campaign(campaign_id),),
        )
        return [(k, key, bool(m), bool(r), link, at) for k, key, m, r, link, at in rows]

    # ---- the webhook outbox (ferrymail.webhooks) ----

    def webhook_enqueue(self, rows: Sequence[OutboxRow]) -> None:
        """Adds events for webhook endpoints in a transaction of their own (the others
        are written in the transaction of their change: see `record`, `insert`,
        cancelled.py, feedback_events.py)."""
        if not rows:
            return
        with self._transaction() as db:
            self._enqueue_rows(db, rows, self._clock())

    def webhook_take(self, endpoint: str, limit: int, older_than: float) -> OutboxBatch | None:
        """The endpoint's next batch: the one that failed (the same events again), else
        up to `limit` events, once there are `limit` or the oldest came before
        `older_than`; None when there is nothing to send yet. A new batch is marked in
        the outbox (it keeps its id and events until it is sent or dead)."""
        with self._transaction() as db:
            return webhook_outbox.take(
                db.execute, endpoint, limit, older_than, self._clock(), postgres=False
            )

    def webhook_sent(self, endpoint: str, batch: int) -> int:
        """The endpoint took the batch: its events leave the outbox. Returns how many."""
        with self._transaction() as db:
            return webhook_outbox.sent(db.execute, endpoint, batch, postgres=False)

    def webhook_failed(
        self, endpoint: str, batch: int, error: str, next_attempt: float | None
    ) -> None:
        """A POST of the batch failed (`error` says how): it is tried again at
        `next_attempt`, or, when None, becomes a dead letter."""
        with self._transaction() as db:
            webhook_outbox.failed(
                db.execute, endpoint, batch, error, next_attempt, self._clock(), postgres=False
            )

    def webhook_replay(self, endpoint: str | None = None) -> int:
        """Dead letters (of `endpoint`, or all) back to the outbox, first in line, with a
        new retry period. Returns how many events."""
        with self._transaction() as db:
            return webhook_outbox.replay(db.execute, endpoint, postgres=False)

    def webhook_backlog(self) -> list[WebhookBacklog]:
        """Per endpoint: events waiting, dead letters, the oldest waiting, the last error."""
        with self._transaction("DEFERRED", durable=False) as db:
            return webhook_outbox.backlog(db.execute)
