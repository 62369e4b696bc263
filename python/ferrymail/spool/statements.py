"""The SQL the SqliteSpool runs on recipients, and the parameters its writes bind."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from .rows import NewRecipient, Update
from .states import CANCELLED, CODE, DEFERRED, FINAL, IN_FLIGHT, PENDING_BELOW, PENDING_SQL, QUEUED

_QUEUED = CODE[QUEUED]
_IN_FLIGHT = CODE[IN_FLIGHT]
_DEFERRED = CODE[DEFERRED]
_CANCELLED = CODE[CANCELLED]
_REJECTED = CODE["rejected"]
_SUPPRESSED = CODE["suppressed"]
_FAILED = CODE["failed"]
#: The states a recipient may have when submitted, and after an attempt (or a release).
_SUBMIT_CODES = {name: CODE[name] for name in (QUEUED, *FINAL)}
_RECORD_CODES = {
    name: CODE[name] for name in (QUEUED, DEFERRED, "delivered", "bounced", "expired", "failed")
}

# Queued rows, the bulk of every submit, bind only what differs between them: every
# bound parameter costs Python's sqlite3 module time, and this is the hot path of submit.
# A key the campaign has already (the recipient_key index) is left out, not an error;
# any other broken constraint still is (OR IGNORE would drop such a row in silence).
_KEY_TAKEN = "ON CONFLICT (campaign, key) DO NOTHING"
INSERT_QUEUED = f"""
INSERT INTO recipient (id, campaign, state, due, next_attempt, submitted_at, updated_at,
    recipient, address, domain, key)
VALUES (?1, ?2, {_QUEUED}, ?3, ?3, ?3, ?3, ?4, ?5, ?6, ?7) {_KEY_TAKEN}
"""
INSERT_FINAL = f"""
INSERT INTO recipient (id, campaign, state, submitted_at, updated_at,
    recipient, address, domain, key, code, enhanced, text)
VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) {_KEY_TAKEN}
"""
# Oldest due first; in-flight rows are due when their lease ends (their owner died).
# Read whole here, then leased by id (LEASE), in one transaction: cheaper than UPDATE …
# RETURNING, which copies every returned row once more and returns them in no order.
_LEASED = "id, campaign, recipient, address, domain, key, attempts, submitted_at, interrupted"
DUE = f"""
SELECT {_LEASED} FROM recipient WHERE {PENDING_SQL} AND due <= ? ORDER BY due, id LIMIT ?
"""
# Without an index by domain: the pending index is scanned in due order and its domain
# column checked, which is cheap while the given domains have many of the due rows.
DUE_IN_DOMAINS = f"""
SELECT {_LEASED} FROM recipient WHERE {PENDING_SQL} AND due <= ?
    AND domain IN (SELECT value FROM json_each(?))
ORDER BY due, id LIMIT ?
"""
# A row re-leased after its lease expired keeps the state it was first leased from.
LEASE = f"""
UPDATE recipient SET state = {_IN_FLIGHT},
    leased_from = iif(state = {_IN_FLIGHT}, leased_from, state),
    lease_until = ?1, due = ?1, lease_owner = ?2, updated_at = ?3
WHERE id IN (SELECT value FROM json_each(?4))
"""
# Counted before the attempt, so that it stands if the process dies during it; the
# attempt's outcome (RECORD) sets it back to 0.
STARTED = f"""
UPDATE recipient SET interrupted = interrupted + 1
WHERE id IN (SELECT value FROM json_each(?1)) AND state = {_IN_FLIGHT}
"""
RENEW = f"""
UPDATE recipient SET lease_until = ?1, due = ?1
WHERE id IN (SELECT value FROM json_each(?2)) AND state = {_IN_FLIGHT}
"""
# Only in-flight rows: a final row never changes, so a replayed or late record is
# harmless. A release ("queued") keeps the last reply: no attempt, no new outcome. The
# state decides whether there is a due time (a final row has none, whatever ?3 is):
# binding None costs Python's sqlite3 module a failed adapter lookup, a float does not.
RECORD = f"""
UPDATE recipient SET state = ?1, attempts = ?2,
    due = iif(?1 < {PENDING_BELOW}, ?3, NULL), next_attempt = iif(?1 < {PENDING_BELOW}, ?3, NULL),
    code = iif(?1 = {_QUEUED}, code, ?4), enhanced = iif(?1 = {_QUEUED}, enhanced, ?5),
    text = iif(?1 = {_QUEUED}, text, ?6), category = iif(?1 = {_QUEUED}, category, ?7),
    mx = iif(?1 = {_QUEUED}, mx, ?8), ip = iif(?1 = {_QUEUED}, ip, ?9),
    updated_at = ?10, lease_until = NULL, lease_owner = NULL, leased_from = NULL,
    interrupted = iif(?1 = {_QUEUED}, interrupted, 0)
WHERE id = ?11 AND state = {_IN_FLIGHT}
"""
RELEASE_OWNER = f"""
UPDATE recipient SET state = leased_from, due = next_attempt, updated_at = ?,
    lease_until = NULL, lease_owner = NULL, leased_from = NULL
WHERE {PENDING_SQL} AND state = {_IN_FLIGHT} AND lease_owner = ?
"""
# The recipients of a campaign that an attempt may have reached: all but queued ones
# never tried and those final at submit or at render (failed: no message was made).
ATTEMPTED = f"""
SELECT count(*) FROM recipient WHERE campaign = ?
    AND (state NOT IN ({_QUEUED}, {_REJECTED}, {_SUPPRESSED}, {_FAILED})
        OR (state = {_QUEUED} AND (attempts > 0 OR interrupted > 0)))
"""
# A campaign's failed recipients, when its spec is replaced: no message was made of them,
# and submitted again they are queued with the new one.
FORGET_FAILED = f"DELETE FROM recipient WHERE campaign = ? AND state = {_FAILED}"
# The leases of in-flight rows by owner: (owner, recipients, when the first lease ends).
LEASES = f"""
SELECT lease_owner, count(*), min(lease_until) FROM recipient
WHERE {PENDING_SQL} AND state = {_IN_FLIGHT} GROUP BY lease_owner ORDER BY 2 DESC, 1
"""
# A dead owner's leases end now: the rows stay in flight (their attempt may have been
# under way: Leased.interrupted counts it) and are due at once.
END_LEASES = f"""
UPDATE recipient SET lease_until = ?1, due = ?1
WHERE {PENDING_SQL} AND state = {_IN_FLIGHT} AND lease_owner = ?2 AND lease_until > ?1
"""
# Leases that have ended (their owner is gone) back to the state they were leased from,
# due now, as release_owner does for a live owner.
RELEASE_ENDED = f"""
UPDATE recipient SET state = leased_from, due = ?1, next_attempt = ?1, updated_at = ?1,
    lease_until = NULL, lease_owner = NULL, leased_from = NULL
WHERE {PENDING_SQL} AND state = {_IN_FLIGHT} AND lease_until <= ?1
"""
RELEASE_ENDED_DOMAIN = RELEASE_ENDED + " AND domain = ?2"
FLUSH = f"""
UPDATE recipient SET due = ?1, next_attempt = ?1, updated_at = ?1
WHERE {PENDING_SQL} AND state IN ({_QUEUED}, {_DEFERRED}) AND due > ?1
"""
FLUSH_DOMAIN = FLUSH + " AND domain = ?2"
# The table in id order (the rowid) from where the last page ended; "+campaign" keeps
# the planner from any index, whose order would need a sort for every page.
PAGE = """
SELECT id, key, address, state, attempts FROM recipient
WHERE +campaign = ? AND id > ? ORDER BY id LIMIT ?
"""


def insert_rows(
    rows: Sequence[NewRecipient | None], first: int, campaign: int, now: float
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """The parameters of the queued rows and of the final ones, with their ids (a None
    row is left out, its id unused)."""
    queued: list[tuple[object, ...]] = []
    final: list[tuple[object, ...]] = []
    for id_, row in enumerate(rows, first):
        if row is None:
            continue
        # A memoryview binds as a blob faster than bytes: Python's sqlite3 module binds
        # bytes only after a failed lookup for an adapter (about 1 µs a row).
        recipient = memoryview(row.recipient)
        if row.state == QUEUED:
            queued.append((id_, campaign, now, recipient, row.address, row.domain, row.key))
            continue
        state = _SUBMIT_CODES.get(row.state)
        if state is None:
            raise ValueError(f"{row.address!r}: a submitted recipient cannot be {row.state!r}")
        final.append(
            (
                id_,
                campaign,
                state,
                now,
                recipient,
                row.address,
                row.domain,
                row.key,
                row.code,
                row.enhanced,
                row.text,
            )
        )
    return queued, final


def record_rows(updates: Sequence[Update], now: float) -> Iterator[tuple[object, ...]]:
    """The parameters of RECORD for each update; ValueError for one no attempt can end."""
    codes = _RECORD_CODES
    for u in updates:
        state = codes.get(u.state)
        if state is None:
            raise ValueError(f"recipient {u.id}: an attempt cannot end {u.state!r}")
        due = 0.0  # no due time: RECORD stores NULL for a final state
        if state == _DEFERRED:
            if u.next_attempt is None:
                raise ValueError(f"recipient {u.id}: deferred without a next attempt")
            due = u.next_attempt
        elif state == _QUEUED:
            due = now if u.next_attempt is None else u.next_attempt
        yield (
            state,
            u.attempts,
            due,
            u.code,
            u.enhanced,
            u.text,
            u.category,
            u.mx,
            u.ip,
            now,
            u.id,
        )


# ---- feedback ----

RECIPIENT_BY_KEY = "SELECT address, domain FROM recipient WHERE campaign = ? AND key = ?"
# record_feedback's three statements each take or give a whole batch as one JSON value:
# one sqlite3_step each instead of one per row. Each step lets the GIL go and must win it
# back from a busy event loop (up to the 5 ms switch interval): per row, the spool thread
# of a loaded tracking server fell behind the clicks.
RECIPIENTS_BY_KEY = """
SELECT json_group_array(json_array(key, address, domain)) FROM recipient
WHERE campaign = ?1 AND key IN (SELECT value FROM json_each(?2))
"""
# Which of these [kind, key, link] marks a person's signal had before: one index seek each
# (feedback_signal), however many signals the campaign has.
PEOPLE_BEFORE = """
SELECT json_group_array(json(m.value)) FROM json_each(?2) AS m
WHERE EXISTS (
    SELECT 1 FROM feedback f WHERE f.campaign = ?1 AND f.key = json_extract(m.value, '$[1]')
    AND f.kind = json_extract(m.value, '$[0]') AND f.link IS json_extract(m.value, '$[2]')
    AND f.machine = 0
)
"""
# Rows of [key, kind, at, machine, repeat, address, domain, link, url, user_agent, detail].
INSERT_FEEDBACK_ROWS = """
INSERT INTO feedback (campaign, key, kind, at, machine, repeat, address, domain, link, url,
    user_agent, detail)
SELECT ?1, json_extract(value, '$[0]'), json_extract(value, '$[1]'),
    json_extract(value, '$[2]'), json_extract(value, '$[3]'), json_extract(value, '$[4]'),
    json_extract(value, '$[5]'), json_extract(value, '$[6]'), json_extract(value, '$[7]'),
    json_extract(value, '$[8]'), json_extract(value, '$[9]'), json_extract(value, '$[10]')
FROM json_each(?2)
"""
# A person's signal of this kind (and link: `IS`, since opens have none) came before.
PERSON_BEFORE = """
SELECT 1 FROM feedback WHERE campaign = ? AND kind = ? AND key = ? AND link IS ? AND machine = 0
LIMIT 1
"""
INSERT_FEEDBACK = """
INSERT INTO feedback (campaign, key, kind, at, machine, repeat, address, domain, link, url,
    user_agent, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

# ---- cancel (version 5) ----
# A cancelled campaign's rows end as "cancelled": no lease, no due time; the last reply
# (a deferred one's) is kept.
_TO_CANCELLED = f"""
UPDATE recipient SET state = {_CANCELLED}, due = NULL, next_attempt = NULL,
    lease_until = NULL, lease_owner = NULL, leased_from = NULL, updated_at = ?1
"""
# What every statement that ends rows as cancelled returns: the fields of their events
# (see cancelled.py), then the id.
_ENDED = " RETURNING campaign, key, address, domain, attempts, submitted_at, id"
_CANCELLED_CAMPAIGNS = "SELECT id FROM campaign WHERE cancelled_at IS NOT NULL"
CANCEL_MARK = "UPDATE campaign SET cancelled_at = coalesce(cancelled_at, ?1) WHERE id = ?2"
# A page of the campaign's queued and deferred rows end (in-flight ones finish their
# attempt).
CANCEL_PAGE = (
    _TO_CANCELLED
    + " WHERE id IN (SELECT id FROM recipient"
    + f" WHERE {PENDING_SQL} AND state IN ({_QUEUED}, {_DEFERRED}) AND campaign = ?2 LIMIT ?3)"
    + _ENDED
)
# Leased rows whose attempt has not started, of a cancelled campaign: `started` ends them
# instead of letting them be sent.
CANCEL_UNSTARTED = (
    _TO_CANCELLED
    + f" WHERE id IN (SELECT value FROM json_each(?2)) AND state = {_IN_FLIGHT}"
    + f" AND campaign IN ({_CANCELLED_CAMPAIGNS})"
    + _ENDED
)
# Rows put back in the queue (a deferral, a release) of a cancelled campaign.
CANCEL_REQUEUED = (
    _TO_CANCELLED
    + f" WHERE id IN (SELECT value FROM json_each(?2)) AND {PENDING_SQL}"
    + f" AND state IN ({_QUEUED}, {_DEFERRED}) AND campaign IN ({_CANCELLED_CAMPAIGNS})"
    + _ENDED
)
# An owner's leased rows of a cancelled campaign, before release_owner puts the rest back.
CANCEL_OWNER = (
    _TO_CANCELLED
    + f" WHERE {PENDING_SQL} AND state = {_IN_FLIGHT} AND lease_owner = ?2"
    + f" AND campaign IN ({_CANCELLED_CAMPAIGNS})"
    + _ENDED
)
# Every pending row of the cancelled campaigns that is not in flight (after leases ended).
CANCEL_SWEEP = (
    _TO_CANCELLED
    + f" WHERE {PENDING_SQL} AND state IN ({_QUEUED}, {_DEFERRED})"
    + f" AND campaign IN ({_CANCELLED_CAMPAIGNS})"
    + _ENDED
)
API_KEY_ADD = "INSERT INTO api_key (name, hash, read_only, created_at) VALUES (?, ?, ?, ?)"
API_KEY_FIND = "SELECT name, read_only, hash FROM api_key WHERE hash = ?"
API_KEY_LIST = "SELECT name, read_only, created_at FROM api_key ORDER BY name"
API_KEY_DELETE = "DELETE FROM api_key WHERE name = ?"
