"""The SQL the PostgresSpool runs on recipients (statements.py's, in PostgreSQL's words)."""

from __future__ import annotations

from .states import (
    CANCELLED,
    CODE,
    DEFERRED,
    FAILED,
    IN_FLIGHT,
    PENDING_SQL,
    QUEUED,
    REJECTED,
    SUPPRESSED,
)

_QUEUED = CODE[QUEUED]
_IN_FLIGHT = CODE[IN_FLIGHT]
_DEFERRED = CODE[DEFERRED]
_CANCELLED = CODE[CANCELLED]
_FINAL_FROM = 3  # states.PENDING_BELOW

# Submit: the rows of one insert are copied into a temporary table (COPY, binary), then
# moved into recipient in one statement that leaves out keys the campaign has.
# ON COMMIT DELETE ROWS: the staging table is empty again after each insert.
STAGE = """
CREATE TEMPORARY TABLE IF NOT EXISTS recipient_stage (
    id bigint, state smallint, recipient bytea, address text, domain text, key text,
    code integer, enhanced text, text text
) ON COMMIT DELETE ROWS
"""
COPY_STAGE = (
    "COPY recipient_stage (id, state, recipient, address, domain, key, code, enhanced, text)"
    " FROM STDIN (FORMAT BINARY)"
)
STAGE_TYPES = ["int8", "int2", "bytea", "text", "text", "text", "int4", "text", "text"]
FROM_STAGE = f"""
INSERT INTO recipient (id, campaign, state, due, next_attempt, submitted_at, updated_at,
    recipient, address, domain, key, code, enhanced, text)
SELECT id, %(campaign)s::int8, state,
    CASE WHEN state = {_QUEUED} THEN %(now)s::float8 END,
    CASE WHEN state = {_QUEUED} THEN %(now)s::float8 END,
    %(now)s::float8, %(now)s::float8, recipient, address, domain, key, code, enhanced, text
FROM recipient_stage ORDER BY id
ON CONFLICT (campaign, key) DO NOTHING
"""
# The same row by row (executemany in pipeline mode): the other way measured for submit.
INSERT_ROW = f"""
INSERT INTO recipient (id, campaign, state, due, next_attempt, submitted_at, updated_at,
    recipient, address, domain, key, code, enhanced, text)
VALUES (%s, %s, %s, CASE WHEN %s = {_QUEUED} THEN %s::float8 END,
    CASE WHEN %s = {_QUEUED} THEN %s::float8 END, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (campaign, key) DO NOTHING
"""

_LEASED = (
    "r.id, r.campaign, r.recipient, r.address, r.domain, r.key, r.attempts, r.submitted_at,"
    " r.interrupted"
)
# Oldest due first; rows another node is leasing at this moment are skipped, not waited
# for. The old due time comes back with each row: RETURNING gives rows in no order.
# `r.id = ANY(ARRAY(…))` makes the planner find the batch's rows by the primary key: on
# `r.id = due.id` alone it hash-joined the batch against a sequential scan of the whole
# table (it cannot tell the CTE holds 1,000 rows), a cost that grows with the spool.
_LEASE = f"""
WITH due AS (
    SELECT id, due AS was_due FROM recipient
    WHERE {PENDING_SQL} AND due <= %(now)s::float8 {{domains}}
    ORDER BY due, id LIMIT %(limit)s::int8 FOR UPDATE SKIP LOCKED
)
UPDATE recipient r SET state = {_IN_FLIGHT},
    leased_from = CASE WHEN r.state = {_IN_FLIGHT} THEN r.leased_from ELSE r.state END,
    lease_until = %(until)s::float8, due = %(until)s::float8, lease_owner = %(owner)s::text,
    updated_at = %(now)s::float8
FROM due WHERE r.id = ANY(ARRAY(SELECT id FROM due)) AND r.id = due.id
RETURNING {_LEASED}, due.was_due
"""
LEASE = _LEASE.format(domains="")
LEASE_IN_DOMAINS = _LEASE.format(domains="AND domain = ANY(%(domains)s)")
# A row of a batch is in flight where it has a lease owner (the table's CHECK: only an
# in-flight row has one). Said so rather than `state = 1`, which implies the partial
# index's `state < 3`: the planner then read the whole pending index (every queued row)
# to AND it with the batch's ids, a cost that grows with the queue.
_HELD = "lease_owner IS NOT NULL"
STARTED = f"""
UPDATE recipient SET interrupted = interrupted + 1
WHERE id = ANY(%s) AND {_HELD}
"""
RENEW = f"""
UPDATE recipient SET lease_until = %s, due = %s
WHERE id = ANY(%s) AND {_HELD}
"""
# One statement for a whole batch of outcomes (arrays, unnested): only in-flight rows
# change, as in statements.RECORD; a release ("queued") keeps the last reply. Prepared,
# its generic plan reads the arrays and finds each row by the primary key (a nested
# loop, the arrays outside). Not `AND r.id = ANY(ids)`: the generic plan then put the
# arrays inside the loop, re-read whole for every row (quadratic in the batch: measured,
# a million recipients through three nodes stalled at 700,000). The arrays go binary
# (%b): psycopg's text arrays cost twice the client CPU.
RECORD = f"""
UPDATE recipient r SET state = u.state, attempts = u.attempts,
    due = CASE WHEN u.state < {_FINAL_FROM} THEN u.due END,
    next_attempt = CASE WHEN u.state < {_FINAL_FROM} THEN u.due END,
    code = CASE WHEN u.state = {_QUEUED} THEN r.code ELSE u.code END,
    enhanced = CASE WHEN u.state = {_QUEUED} THEN r.enhanced ELSE u.enhanced END,
    text = CASE WHEN u.state = {_QUEUED} THEN r.text ELSE u.text END,
    category = CASE WHEN u.state = {_QUEUED} THEN r.category ELSE u.category END,
    mx = CASE WHEN u.state = {_QUEUED} THEN r.mx ELSE u.mx END,
    ip = CASE WHEN u.state = {_QUEUED} THEN r.ip ELSE u.ip END,
    updated_at = %s::float8, lease_until = NULL, lease_owner = NULL, leased_from = NULL,
    interrupted = CASE WHEN u.state = {_QUEUED} THEN r.interrupted ELSE 0 END
FROM unnest(%b::int8[], %b::int2[], %b::int4[], %b::float8[], %b::int4[], %b::text[],
    %b::text[], %b::text[], %b::text[], %b::text[])
    AS u (id, state, attempts, due, code, enhanced, text, category, mx, ip)
WHERE r.id = u.id AND r.{_HELD}
"""
RELEASE_OWNER = f"""
UPDATE recipient SET state = leased_from, due = next_attempt, updated_at = %s,
    lease_until = NULL, lease_owner = NULL, leased_from = NULL
WHERE {PENDING_SQL} AND state = {_IN_FLIGHT} AND lease_owner = %s
"""
ATTEMPTED = f"""
SELECT count(*) FROM recipient WHERE campaign = %s
    AND (state NOT IN ({_QUEUED}, {CODE[REJECTED]}, {CODE[SUPPRESSED]}, {CODE[FAILED]})
        OR (state = {_QUEUED} AND (attempts > 0 OR interrupted > 0)))
"""
FORGET_FAILED = f"DELETE FROM recipient WHERE campaign = %s AND state = {CODE[FAILED]}"
LEASES = f"""
SELECT lease_owner, count(*), min(lease_until) FROM recipient
WHERE {PENDING_SQL} AND state = {_IN_FLIGHT}
GROUP BY lease_owner ORDER BY 2 DESC, lease_owner COLLATE "C"
"""
END_LEASES = f"""
UPDATE recipient SET lease_until = %(now)s, due = %(now)s
WHERE {PENDING_SQL} AND state = {_IN_FLIGHT} AND lease_owner = %(owner)s
    AND lease_until > %(now)s
"""
_RELEASE_ENDED = f"""
UPDATE recipient SET state = leased_from, due = %(now)s, next_attempt = %(now)s,
    updated_at = %(now)s, lease_until = NULL, lease_owner = NULL, leased_from = NULL
WHERE {PENDING_SQL} AND state = {_IN_FLIGHT} AND lease_until <= %(now)s
"""
_FLUSH = f"""
UPDATE recipient SET due = %(now)s, next_attempt = %(now)s, updated_at = %(now)s
WHERE {PENDING_SQL} AND state IN ({_QUEUED}, {_DEFERRED}) AND due > %(now)s
"""
RELEASE_ENDED = _RELEASE_ENDED
RELEASE_ENDED_DOMAIN = _RELEASE_ENDED + " AND domain = %(domain)s"
FLUSH = _FLUSH
FLUSH_DOMAIN = _FLUSH + " AND domain = %(domain)s"
PAGE = """
SELECT id, key, address, state, attempts FROM recipient
WHERE campaign = %s AND id > %s ORDER BY id LIMIT %s
"""

# ---- feedback ----

RECIPIENT_BY_KEY = "SELECT address, domain FROM recipient WHERE campaign = %s AND key = %s"
RECIPIENTS_BY_KEY = """
SELECT key, address, domain FROM recipient WHERE campaign = %s AND key = ANY(%s)
"""
# Which of these (kind, key, link) marks a person's signal had before: an index seek each
# (feedback_signal; an open's NULL link by the (campaign, key, kind) prefix), however many
# signals the campaign has.
PEOPLE_BEFORE = """
SELECT m.kind, m.key, m.link FROM unnest(%s::text[], %s::text[], %s::int8[]) AS m(kind, key, link)
WHERE EXISTS (
    SELECT 1 FROM feedback f WHERE f.campaign = %s AND f.key = m.key AND f.kind = m.kind
    AND (f.link = m.link OR (f.link IS NULL AND m.link IS NULL)) AND NOT f.machine
)
"""
PERSON_BEFORE = """
SELECT 1 FROM feedback WHERE campaign = %s AND kind = %s AND key = %s
    AND link IS NOT DISTINCT FROM %s::int8 AND NOT machine
LIMIT 1
"""
INSERT_FEEDBACK = """
INSERT INTO feedback (campaign, key, kind, at, machine, repeat, address, domain, link, url,
    user_agent, detail) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""
UPSERT_SUPPRESSION = """
INSERT INTO suppression (address, scope, reason, added_at) VALUES (%s, %s, %s, %s)
ON CONFLICT (address, scope) DO UPDATE SET reason = excluded.reason, added_at = excluded.added_at
"""

# ---- cancel (version 2): statements.py's, in PostgreSQL's words ----
_TO_CANCELLED = f"""
UPDATE recipient SET state = {_CANCELLED}, due = NULL, next_attempt = NULL,
    lease_until = NULL, lease_owner = NULL, leased_from = NULL, updated_at = %(now)s
"""
# What every statement that ends rows as cancelled returns: the fields of their events
# (see cancelled.py), then the id.
_ENDED = " RETURNING campaign, key, address, domain, attempts, submitted_at, id"
_CANCELLED_CAMPAIGNS = "SELECT id FROM campaign WHERE cancelled_at IS NOT NULL"
CANCEL_MARK = (
    "UPDATE campaign SET cancelled_at = coalesce(cancelled_at, %(now)s) WHERE id = %(campaign)s"
)
CANCEL_PAGE = (
    _TO_CANCELLED
    + " WHERE id IN (SELECT id FROM recipient"
    + f" WHERE {PENDING_SQL} AND state IN ({_QUEUED}, {_DEFERRED}) AND campaign = %(campaign)s"
    + " LIMIT %(limit)s FOR UPDATE)"
    + _ENDED
)
UNSTARTED_CANCELLED = (
    f"SELECT id FROM recipient WHERE id = ANY(%(ids)s) AND {_HELD}"
    f" AND campaign IN ({_CANCELLED_CAMPAIGNS})"
)
CANCEL_IDS = _TO_CANCELLED + f" WHERE id = ANY(%(ids)s) AND state = {_IN_FLIGHT}" + _ENDED
CANCEL_REQUEUED = (
    _TO_CANCELLED
    + f" WHERE id = ANY(%(ids)s) AND {PENDING_SQL} AND state IN ({_QUEUED}, {_DEFERRED})"
    + f" AND campaign IN ({_CANCELLED_CAMPAIGNS})"
    + _ENDED
)
CANCEL_OWNER = (
    _TO_CANCELLED
    + f" WHERE {PENDING_SQL} AND state = {_IN_FLIGHT} AND lease_owner = %(owner)s"
    + f" AND campaign IN ({_CANCELLED_CAMPAIGNS})"
    + _ENDED
)
CANCEL_SWEEP = (
    _TO_CANCELLED
    + f" WHERE {PENDING_SQL} AND state IN ({_QUEUED}, {_DEFERRED})"
    + f" AND campaign IN ({_CANCELLED_CAMPAIGNS})"
    + _ENDED
)
API_KEY_ADD = (
    "INSERT INTO api_key (name, hash, read_only, created_at) VALUES (%s, %s, %s, %s)"
    " ON CONFLICT (name) DO NOTHING"
)
API_KEY_FIND = "SELECT name, read_only, hash FROM api_key WHERE hash = %s"
API_KEY_LIST = "SELECT name, read_only, created_at FROM api_key ORDER BY name"
API_KEY_DELETE = "DELETE FROM api_key WHERE name = %s"

# The fleet's share of a site's limits (SqliteSpool.take_tokens, fleet_heartbeat). The
# bucket, refilled by the server's clock (node clocks do not matter), capped at one
# second's worth (at least one token), in one statement: a new bucket starts full; an
# existing one, locked by ON CONFLICT, is refilled from `filled_at` (never moved back:
# a statement that waited for the lock may carry an earlier time) and gives what it
# has, up to `want`. `granted` carries the grant to RETURNING.
_BURST = "greatest(1, %(rate)s::float8)"
_LEVEL = (
    f"least({_BURST}, b.tokens + greatest(0, excluded.filled_at - b.filled_at) * %(rate)s::float8)"
)
_GRANT = f"least(%(want)s::integer, floor({_LEVEL}))::integer"
TAKE_TOKENS = f"""
INSERT INTO rate_bucket AS b (key, tokens, filled_at, granted)
VALUES (%(key)s, {_BURST} - least(%(want)s::integer, floor({_BURST})),
    extract(epoch FROM clock_timestamp()), least(%(want)s::integer, floor({_BURST})))
ON CONFLICT (key) DO UPDATE SET
    granted = {_GRANT},
    tokens = {_LEVEL} - {_GRANT},
    filled_at = greatest(b.filled_at, excluded.filled_at)
RETURNING granted
"""
# An engine's heartbeat: its row's seen_at is the server's time now (returned).
FLEET_BEAT = """
INSERT INTO fleet_node (owner, node, seen_at)
VALUES (%s, %s, extract(epoch FROM clock_timestamp()))
ON CONFLICT (owner) DO UPDATE SET node = excluded.node, seen_at = excluded.seen_at
RETURNING seen_at
"""
