"""The SQLite spool's file: its tables and indexes, its version, and opening it safely."""

from __future__ import annotations

import contextlib
import os
import pathlib
import sqlite3
from collections.abc import Iterator

from ..errors import ConfigError
from .states import CODE, FINAL_SQL, PENDING_SQL, QUEUED

#: The version of the tables below, kept in PRAGMA user_version. Raise it with every
#: change to them, with a migration from the one before.
SCHEMA_VERSION = 7
#: PRAGMA application_id ("FMSP"): marks the file as a ferrymail spool, so that another
#: program's SQLite file is refused instead of getting our tables added to it.
APPLICATION_ID = 0x464D5350
#: iif() came in SQLite 3.32, the name sqlite_schema in 3.33. (The JSON functions, for
#: lists bound as one parameter, are built in since 3.38 and compiled in by most builds
#: before; connect() checks.)
MIN_SQLITE = (3, 33, 0)
#: Page cache (KiB) of a connection that works across the whole spool (the engine's:
#: submit, lease, record): the pending indexes of a million-row spool stay in memory,
#: while the RSS of a million-recipient submit stays well under 100 MB.
CACHE_KIB = 32768
#: Page cache (KiB) of a connection that reads reports or writes a few rows (the API's
#: keys and reads, tracking, the webhook outbox, metrics, the CLI): SQLite's default.
#: Every connection keeps its own copy of the pages it read, so a service with six
#: connections at CACHE_KIB would grow by up to 192 MiB as its spool grows; the pages
#: these read are in the OS page cache anyway.
LIGHT_CACHE_KIB = 2000
#: How long a writer waits for another process's transaction (`ferrymail status` reading
#: while the engine writes needs no wait in WAL mode; two writers do).
BUSY_TIMEOUT_MS = 10_000

# Invariants every row keeps, checked by SQLite on every write so that no bug can store
# a half-changed recipient:
# - pending, not leased (queued, deferred): due = next_attempt, no lease;
# - in flight: due = lease_until, with its owner and the state it was leased from
#   (queued or deferred: where release_owner puts it back), next_attempt kept;
# - final: due, next_attempt and the lease are all NULL.
# Version 2: a recipient key is in a campaign once, so that submitting a list again
# (after a crash during submit, or by mistake) queues nobody twice; the sites the engine
# suspended, so that `ferrymail status` shows them, a restart keeps them and `ferrymail
# flush` lifts them; and recipient.interrupted (in the table above for a new spool,
# added by the migration for an older one).
_V2 = """
-- The campaign's recipient key (the ESP's id, or the address): its Message-ID and its
-- tokens are made from it, so two rows with one key would be one message twice.
CREATE UNIQUE INDEX recipient_key ON recipient (campaign, key);
-- A site (the MX hosts a set of domains share) the engine stopped sending to until
-- `until`: every MX was unreachable, or it said 421 or that we send too fast. `domains`
-- (a JSON list) are the domains it had recipients of, for `ferrymail flush DOMAIN`.
CREATE TABLE suspension (
    site TEXT PRIMARY KEY,
    until REAL NOT NULL,
    reason TEXT NOT NULL,
    domains TEXT NOT NULL,
    since REAL NOT NULL
) WITHOUT ROWID;
"""
# Version 3: what comes back from recipients and receivers (clicks, opens, unsubscribes,
# late bounces, complaints, auto-replies), each signal a row of its own beside the
# recipient's final state, never over it; and suppressions scoped to a list (a
# campaign's List-Id) or global.
FEEDBACK_KINDS = ("clicked", "opened", "unsubscribed", "bounced-late", "complained", "auto-reply")
_FEEDBACK = f"""
-- One signal about one recipient of one campaign. `key` is the recipient key (the
-- token's recipient): the recipient row may be missing (another spool's campaign), so
-- its address and domain are copied here when known. `machine`: a scanner, prefetcher
-- or image proxy, not a person (never counted as a click or a human open). `repeat`: the
-- recipient had a person's signal of this kind (and link) before. `link` and `url` for
-- clicks; `detail` (JSON) for what the inbound signals carry (status, feedback type).
CREATE TABLE feedback (
    id INTEGER PRIMARY KEY,
    campaign INTEGER NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ({", ".join(repr(k) for k in FEEDBACK_KINDS)})),
    at REAL NOT NULL,
    machine INTEGER NOT NULL DEFAULT 0 CHECK (machine IN (0, 1)),
    repeat INTEGER NOT NULL DEFAULT 0 CHECK (repeat IN (0, 1)),
    address TEXT,
    domain TEXT,
    link INTEGER,
    url TEXT,
    user_agent TEXT,
    detail TEXT
);
-- A campaign's signals (reports); a recipient's earlier ones ("first or repeat", the
-- unsubscribe's check), covered.
CREATE INDEX feedback_signal ON feedback (campaign, key, kind, link, machine);
"""
# Version 4: the actions of shaping's automation rules in force (shaping/automation.py),
# so that they outlast a restart, show in `ferrymail status` and `ferrymail flush`
# lifts them (a row is kept until its limits have come back up: `until + restore`);
# and what each egress source sent per provider per day, for warm-up schedules.
_V4 = """
-- What a rule did to a site (scope "site"), to the site from one source ("source"),
-- or to one campaign there ("campaign"), from `started` until `until`: suspend it,
-- bounce what is queued for it, and/or hold its limits at `limits` (a JSON object,
-- rates as written: {"max_message_rate": "10/min"}); they come back over `restore`
-- seconds. `reply` is the reply that fired the rule; `domains` (a JSON list) the site's
-- domains, for `ferrymail flush DOMAIN`. '' for no source or campaign.
CREATE TABLE shaping_action (
    rule TEXT NOT NULL,
    scope TEXT NOT NULL,
    site TEXT NOT NULL,
    source TEXT NOT NULL,
    campaign TEXT NOT NULL,
    started REAL NOT NULL,
    until REAL NOT NULL,
    restore REAL NOT NULL,
    reply TEXT NOT NULL,
    suspend INTEGER NOT NULL CHECK (suspend IN (0, 1)),
    bounce INTEGER NOT NULL CHECK (bounce IN (0, 1)),
    limits TEXT NOT NULL,
    domains TEXT NOT NULL,
    PRIMARY KEY (rule, scope, site, source, campaign)
) WITHOUT ROWID;
-- Messages each egress source delivered to each provider (or site) per UTC day: what
-- its warm-up schedule allows is counted against this, across restarts.
CREATE TABLE warmup_sent (
    source TEXT NOT NULL,
    provider TEXT NOT NULL,
    day TEXT NOT NULL,
    sent INTEGER NOT NULL,
    PRIMARY KEY (source, provider, day)
) WITHOUT ROWID;
"""
# Scope '' is global; any other value is a list name (see SqliteSpool.campaign_list).
_SUPPRESSION = """
CREATE TABLE suppression (
    address TEXT NOT NULL,
    scope TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL,
    added_at REAL NOT NULL,
    PRIMARY KEY (address, scope)
) WITHOUT ROWID;
"""
# Version 5: a campaign can be cancelled (its pending recipients end as "cancelled", a
# new state: code 9, which the recipient table's CHECK of a version 4 file refuses, so
# the migration widens it), and the service API's keys.
_V5 = """
-- When the campaign was cancelled (POST /v1/campaigns/{id}/cancel, Engine.cancel): its
-- recipients are never sent again, and one put back in the queue ends as cancelled.
ALTER TABLE campaign ADD COLUMN cancelled_at REAL;
-- The service API's keys (ferrymail keys create): never the token, only its SHA-256.
CREATE TABLE api_key (
    name TEXT PRIMARY KEY,
    hash BLOB NOT NULL UNIQUE,
    read_only INTEGER NOT NULL CHECK (read_only IN (0, 1)),
    created_at REAL NOT NULL
) WITHOUT ROWID;
"""
# Version 6: the webhook outbox (ferrymail.webhooks): every event a `[[webhook]]` of the
# service config wants, one row per endpoint, written in the transaction that records
# the recipient's new state, and deleted once the endpoint has taken it.
_V6 = """
-- One event waiting for one endpoint (the webhook's name). `event_id` is the event's
-- stable id (the same for every endpoint, and in the body), `body` its JSON. `batch`:
-- the id of the first row of the batch it went out in, set at the first POST and kept,
-- so a retry sends the same batch under the same webhook-id. `first_failed`: when its
-- batch first failed (retries stop at first_failed + retry_for); `dead`: retries gave
-- up, it waits for `ferrymail webhooks replay`.
CREATE TABLE webhook_outbox (
    id INTEGER PRIMARY KEY,
    endpoint TEXT NOT NULL,
    event_id TEXT NOT NULL,
    body BLOB NOT NULL,
    created_at REAL NOT NULL,
    batch INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL,
    first_failed REAL,
    last_error TEXT,
    dead INTEGER NOT NULL DEFAULT 0 CHECK (dead IN (0, 1))
);
-- An endpoint's rows in order: its open batch, then the rows after it.
CREATE INDEX webhook_outbox_endpoint ON webhook_outbox (endpoint, dead, batch, id);
"""
# Version 7: what the engines sharing one spool share of each site's limits
# (shaping/grants.py, shaping/fleet.py): a token bucket per site for its message rate,
# taken from in grants, and the engines alive now, among which its connections are split.
_V7 = """
-- A site's message rate as tokens (take_tokens): `tokens` as of `filled_at`, refilled at
-- the rate the caller passes, holding at most one second's worth.
CREATE TABLE rate_bucket (
    key TEXT PRIMARY KEY,
    tokens REAL NOT NULL,
    filled_at REAL NOT NULL
) WITHOUT ROWID;
-- An engine using the spool (its owner name, `Engine.owner`), seen alive at `seen_at`
-- (heartbeat); `node` is its Config.node, for people.
CREATE TABLE fleet_node (
    owner TEXT PRIMARY KEY,
    node TEXT NOT NULL,
    seen_at REAL NOT NULL
) WITHOUT ROWID;
"""
#: The recipient table's state CHECK as versions 1 to 4 wrote it, and as 5 writes it.
_STATE_CHECK_V4 = "CHECK (state BETWEEN 0 AND 8)"
_STATE_CHECK = f"CHECK (state BETWEEN 0 AND {len(CODE) - 1})"


_SCHEMA = f"""
CREATE TABLE campaign (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    spec BLOB NOT NULL,
    created_at REAL NOT NULL,
    -- Where the campaign's recipients start: iter_recipients walks the table from here.
    first_id INTEGER
);
CREATE TABLE recipient (
    id INTEGER PRIMARY KEY,
    campaign INTEGER NOT NULL,
    state INTEGER NOT NULL CHECK (state BETWEEN 0 AND {len(CODE) - 1}),
    due REAL,
    next_attempt REAL,
    lease_until REAL,
    lease_owner TEXT,
    leased_from INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- Attempts in a row under way when their process died (Leased.interrupted).
    interrupted INTEGER NOT NULL DEFAULT 0,
    submitted_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    domain TEXT NOT NULL,
    key TEXT NOT NULL,
    address TEXT NOT NULL,
    code INTEGER,
    enhanced TEXT,
    text TEXT,
    category TEXT,
    mx TEXT,
    ip TEXT,
    -- Last: the largest column, so reading the ones before it never touches its pages.
    recipient BLOB NOT NULL,
    CHECK (CASE
        WHEN state = {CODE["in-flight"]} THEN due = lease_until AND lease_owner IS NOT NULL
            AND leased_from IN ({CODE[QUEUED]}, {CODE["deferred"]})
            AND next_attempt IS NOT NULL
        WHEN {PENDING_SQL} THEN due = next_attempt AND lease_until IS NULL
            AND lease_owner IS NULL AND leased_from IS NULL
        ELSE due IS NULL AND next_attempt IS NULL AND lease_until IS NULL
            AND lease_owner IS NULL AND leased_from IS NULL
    END)
);
-- Two partial indexes, so that a row is in one of them at a time, and changes of state
-- while pending (leased, deferred, released) touch only the first; each index costs every
-- submitted row a microsecond or two, and so does a lease or a record for each.
--
-- The pending rows by due time: leasing and next_due read it alone, and millions of
-- final rows cost them nothing. With the id, rows submitted together (one due time) are
-- leased in submission order (domains mixed as the ESP's list mixes them) without a
-- sort. Domain, state and campaign make it covering for status, pending counts, flush
-- and leasing of given domains, which scan it instead of having an index of their own.
CREATE INDEX recipient_pending ON recipient (due, id, domain, state, campaign)
    WHERE {PENDING_SQL};
-- The final rows by campaign and state: counts and reports. A row enters it once, when
-- it becomes final, and never leaves.
CREATE INDEX recipient_final ON recipient (campaign, state) WHERE {FINAL_SQL};
{_V2}-- The key is the normalized address (see suppression.py): one row per address and
-- scope.
{_SUPPRESSION}{_FEEDBACK}{_V4}{_V5}{_V6}{_V7}"""


def connect(
    path: str | os.PathLike[str], *, read_only: bool = False, cache_kib: int = CACHE_KIB
) -> sqlite3.Connection:
    """Open (creating if need be) the spool at `path`; ConfigError naming the path when
    it is not a ferrymail spool, is corrupt, or is from a newer version.

    `read_only`: open an existing spool without writing anything, for a spool on a
    read-only mount or a file this user may not write (`ferrymail status`).
    `cache_kib`: the connection's page cache (CACHE_KIB or LIGHT_CACHE_KIB)."""
    if read_only:
        db = _connect_read_only(os.fspath(path))
        db.execute(f"PRAGMA cache_size = -{int(cache_kib)}")
        return db
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        raise ConfigError(
            "the spool needs SQLite 3.33 or later; "
            f"Python's sqlite3 module has {sqlite3.sqlite_version}"
        )
    name = os.fspath(path)
    try:
        # isolation_level=None: no implicit transactions; every method opens its own
        # (BEGIN IMMEDIATE for writes), so a transaction is exactly one call.
        # check_same_thread=False: the engine creates the spool on one thread and uses it
        # from its spool worker thread, one thread at a time.
        db = sqlite3.connect(name, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as e:
        raise ConfigError(f"cannot open the spool {name}: {e}", "path") from None
    with _closed_on_failure(db, name):
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # Identified before anything is changed: another program's file stays as it was.
        new = _is_empty(db, name)
        _configure(db, name, cache_kib)
        if new:
            _create(db, name)
        else:
            _migrate(db, name)
    return db


@contextlib.contextmanager
def _closed_on_failure(db: sqlite3.Connection, name: str) -> Iterator[None]:
    """Closes `db` if its checks fail; a database error is a ConfigError naming `name`."""
    try:
        yield
    except sqlite3.DatabaseError as e:
        db.close()
        raise ConfigError(f"{name} is not a usable ferrymail spool: {e}", "path") from None
    except BaseException:
        db.close()
        raise


def _connect_read_only(name: str) -> sqlite3.Connection:
    # A WAL spool needs its -shm file: SQLite can open one read-only without it only as
    # "immutable" (nobody writes it meanwhile, which a read-only directory promises; a
    # log left by a killed engine is then not read, and its last commits not seen).
    directory = os.path.dirname(os.path.abspath(name))
    immutable = not os.path.exists(name + "-shm") and (
        not os.access(directory, os.W_OK) or bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    )
    uri = f"{pathlib.Path(os.path.abspath(name)).as_uri()}?mode=ro"
    if immutable:
        uri += "&immutable=1"
    try:
        db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as e:
        raise ConfigError(f"cannot open the spool {name} read-only: {e}", "path") from None
    with _closed_on_failure(db, name):
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if _is_empty(db, name):
            raise ConfigError(f"{name} is empty: not a ferrymail spool", "path")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version < SCHEMA_VERSION:
            raise ConfigError(
                f"{name} is a spool of schema version {version}: open it once where it "
                "can be written (any command that delivers) to bring it up to date",
                "path",
            )
    return db


def _configure(db: sqlite3.Connection, name: str, cache_kib: int) -> None:
    # WAL: a commit is one append to the log (and one fsync), readers (`ferrymail status`)
    # never block the engine, and a process killed at any moment leaves the last
    # committed state (the log's uncommitted tail is ignored when the file is opened).
    mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise ConfigError(f"{name}: the spool needs WAL mode, SQLite gave {mode!r}", "path")
    # FULL: the log is fsynced at every commit, so that when insert (submit) or record
    # returns, its rows survive a power loss, not only a crash of the process (NORMAL
    # in WAL mode may lose the last commits). Each call is one large transaction, so
    # the cost of the fsync is shared by thousands of rows. (Writes whose loss changes
    # nothing, leases, commit with NORMAL: SqliteSpool._transaction.)
    db.execute("PRAGMA synchronous = FULL")
    db.execute(f"PRAGMA cache_size = -{int(cache_kib)}")
    try:
        db.execute("SELECT json_valid('[]')")
    except sqlite3.OperationalError:
        raise ConfigError("the spool needs SQLite's JSON functions (built in since 3.38)") from None
    # The recipient table refers to campaigns by their small integer id; nothing is ever
    # deleted, so foreign-key checks would only cost time on every insert.
    db.execute("PRAGMA foreign_keys = OFF")


def _is_empty(db: sqlite3.Connection, name: str) -> bool:
    """True for a new (empty) file; ConfigError unless it is a spool this code reads."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    app = db.execute("PRAGMA application_id").fetchone()[0]
    tables = db.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
    if app == 0 and version == 0 and tables == 0:
        return True
    if app != APPLICATION_ID:
        raise ConfigError(f"{name} is an SQLite file but not a ferrymail spool", "path")
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"{name} is a spool of schema version {version}, written by a newer "
            f"ferrymail; this one reads up to version {SCHEMA_VERSION}",
            "path",
        )
    if version < 1:
        raise ConfigError(f"{name}: a spool without a schema version", "path")
    return False


def _create(db: sqlite3.Connection, name: str) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have created it since it was found empty.
        if _is_empty(db, name):
            for statement in _statements(_SCHEMA):
                db.execute(statement)
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _migrate(db: sqlite3.Connection, name: str) -> None:
    """Brings a spool of an older schema version up to this one, in one transaction."""
    if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]  # another may have done it
        if version == 1:
            duplicate = db.execute(
                "SELECT c.name, r.key FROM recipient r JOIN campaign c ON c.id = r.campaign"
                " GROUP BY r.campaign, r.key HAVING count(*) > 1 LIMIT 1"
            ).fetchone()
            if duplicate is not None:
                raise ConfigError(
                    f"{name}: campaign {duplicate[0]!r} has recipient key {duplicate[1]!r} "
                    "twice, which this version refuses; finish the spool with the "
                    "ferrymail that wrote it (schema version 1), or start a new one",
                    "path",
                )
            for statement in _statements(_V2):
                db.execute(statement)
            db.execute("ALTER TABLE recipient ADD COLUMN interrupted INTEGER NOT NULL DEFAULT 0")
            db.execute("PRAGMA user_version = 2")
            version = 2
        if version == 2:
            db.execute("ALTER TABLE suppression RENAME TO suppression_v2")
            for statement in _statements(_SUPPRESSION + _FEEDBACK):
                db.execute(statement)
            # Every suppression of version 2 was global.
            db.execute(
                "INSERT INTO suppression (address, scope, reason, added_at)"
                " SELECT address, '', reason, added_at FROM suppression_v2"
            )
            db.execute("DROP TABLE suppression_v2")
            db.execute("PRAGMA user_version = 3")
            version = 3
        if version == 3:
            for statement in _statements(_V4):
                db.execute(statement)
            db.execute("PRAGMA user_version = 4")
            version = 4
        if version == 4:
            for statement in _statements(_V5):
                db.execute(statement)
            _widen_state_check(db)
            db.execute("PRAGMA user_version = 5")
            version = 5
        if version == 5:
            for statement in _statements(_V6):
                db.execute(statement)
            db.execute("PRAGMA user_version = 6")
            version = 6
        if version == 6:
            for statement in _statements(_V7):
                db.execute(statement)
            db.execute("PRAGMA user_version = 7")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _widen_state_check(db: sqlite3.Connection) -> None:
    """Lets recipient.state take the codes added since version 4 (cancelled).

    SQLite cannot ALTER a CHECK constraint; rebuilding a table of millions of rows would
    take minutes. Its documented alternative (https://sqlite.org/lang_altertable.html,
    "making other kinds of table schema changes") edits the table's CREATE statement in
    sqlite_schema, which is safe for a constraint every stored row already meets: the
    wider range holds every row of the narrower one. Done in the migration's
    transaction, with the schema version bumped so that other connections reload it."""
    (version,) = db.execute("PRAGMA schema_version").fetchone()
    db.execute("PRAGMA writable_schema = ON")
    try:
        db.execute(
            "UPDATE sqlite_schema SET sql = replace(sql, ?, ?)"
            " WHERE type = 'table' AND name = 'recipient'",
            (_STATE_CHECK_V4, _STATE_CHECK),
        )
        db.execute(f"PRAGMA schema_version = {version + 1}")
    finally:
        db.execute("PRAGMA writable_schema = OFF")


def _statements(script: str) -> list[str]:
    """The statements of `script`, one by one: executescript would commit the transaction
    they are meant to be part of."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending)
            pending = ""
    if pending.strip():  # a statement of ours without its ";": a bug, said plainly
        raise ValueError(f"an SQL statement of the schema is not complete: {pending!r}")
    return statements
