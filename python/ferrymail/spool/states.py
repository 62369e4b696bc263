"""A recipient's states: their names in the API, and the small integers the spool stores."""

from __future__ import annotations

# Not final: the engine still owes the recipient an attempt.
QUEUED = "queued"  # due at `next_attempt` (at once when submitted)
IN_FLIGHT = "in-flight"  # leased: an attempt is under way until `lease_until`
DEFERRED = "deferred"  # a temporary failure; due again at `next_attempt`
# Final: the row never changes again.
DELIVERED = "delivered"  # a 2xx to the final dot
BOUNCED = "bounced"  # a permanent failure (5xx, null MX, NXDOMAIN …)
EXPIRED = "expired"  # deferred until its age passed the retry policy's max_age
REJECTED = "rejected"  # refused at submit: not a valid address
SUPPRESSED = "suppressed"  # refused at submit: on the suppression list
FAILED = "failed"  # ferrymail could not make the message (a render error)
CANCELLED = "cancelled"  # its campaign was cancelled before an attempt reached it

PENDING: frozenset[str] = frozenset({QUEUED, IN_FLIGHT, DEFERRED})
FINAL: frozenset[str] = frozenset(
    {DELIVERED, BOUNCED, EXPIRED, REJECTED, SUPPRESSED, FAILED, CANCELLED}
)
#: Every state, pending first, in the order reports list them.
ALL: tuple[str, ...] = (
    QUEUED,
    IN_FLIGHT,
    DEFERRED,
    DELIVERED,
    BOUNCED,
    EXPIRED,
    REJECTED,
    SUPPRESSED,
    FAILED,
    CANCELLED,  # code 9, schema version 5 (SQLite) / 2 (PostgreSQL)
)

# The stored codes. Pending states are the codes below PENDING_BELOW, so "state < 3" and
# "state >= 3" are literal terms that a partial index and the queries over its rows both
# say: SQLite uses a partial index only when the query's WHERE repeats the index's term.
# The numbers are in the file format: never renumber, only add.
CODE: dict[str, int] = {name: code for code, name in enumerate(ALL)}
NAME: tuple[str, ...] = ALL
PENDING_BELOW = 3
PENDING_SQL = f"state < {PENDING_BELOW}"
FINAL_SQL = f"state >= {PENDING_BELOW}"
