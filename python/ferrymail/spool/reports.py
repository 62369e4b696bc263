"""The spool's aggregate queries: counts by state, `ferrymail status`, campaign reports."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterable

from .actions import in_force
from .rows import DomainStatus, FeedbackCounts, Report, Status, Suspension
from .states import ALL, BOUNCED, CODE, DEFERRED, EXPIRED, FINAL_SQL, IN_FLIGHT, NAME, PENDING_SQL

#: How many domains `status` lists, and how many replies a report lists.
STATUS_DOMAINS = 50
REPORT_REPLIES = 20

_IN_FLIGHT = CODE[IN_FLIGHT]
_DEFERRED = CODE[DEFERRED]
# The states whose last reply says why a recipient is not delivered (yet): the replies
# of a report.
_BOUNCED = CODE[BOUNCED]
_EXPIRED = CODE[EXPIRED]

# Over the pending index alone (covering), grouped by domain.
_DOMAINS = f"""
SELECT domain, count(*), sum(state = {_IN_FLIGHT}), sum(state = {_DEFERRED}),
    min(iif(state = {_DEFERRED}, due, NULL))
FROM recipient WHERE {PENDING_SQL} GROUP BY domain ORDER BY 2 DESC, domain LIMIT ?
"""
# A campaign's pending rows are found through the pending index (the few pending rows of
# the whole spool), not through recipient_key (every row of the campaign), which SQLite,
# without statistics, would take for the better one.
PENDING_ROWS = "INDEXED BY recipient_pending"
# A campaign's rows are in one partial index or the other: each part is read through its
# own, then the parts are added up.
_GROUPS = f"""
SELECT domain, state, category, count(*) FROM recipient WHERE {FINAL_SQL} AND campaign = ?1
GROUP BY domain, state, category
UNION ALL
SELECT domain, state, category, count(*) FROM recipient {PENDING_ROWS}
WHERE {PENDING_SQL} AND campaign = ?1
GROUP BY domain, state, category
"""
_REPLIES = f"""
SELECT code, enhanced, text, count(*) FROM (
    SELECT code, enhanced, text FROM recipient
    WHERE {FINAL_SQL} AND campaign = ?1 AND state IN ({_BOUNCED}, {_EXPIRED})
    UNION ALL
    SELECT code, enhanced, text FROM recipient {PENDING_ROWS}
    WHERE {PENDING_SQL} AND campaign = ?1 AND state = {_DEFERRED}
)
WHERE coalesce(code, enhanced, text) IS NOT NULL
GROUP BY code, enhanced, text ORDER BY 4 DESC, 1, 2, 3 LIMIT ?2
"""
# Through feedback_signal (campaign first, covering).
_FEEDBACK = """
SELECT kind, machine, count(*), count(DISTINCT key) FROM feedback WHERE campaign = ?
GROUP BY kind, machine
"""
_COMPLAINTS_BY_DOMAIN = """
SELECT coalesce(domain, ''), count(DISTINCT key) FROM feedback
WHERE campaign = ? AND kind = 'complained' GROUP BY 1
"""


def counts(db: sqlite3.Connection) -> dict[str, int]:
    """Recipients by state, every state included: a scan of each partial index."""
    found: Counter[int] = Counter()
    for where in (PENDING_SQL, FINAL_SQL):
        found.update(
            dict(db.execute(f"SELECT state, count(*) FROM recipient WHERE {where} GROUP BY state"))
        )
    return {name: found[code] for code, name in enumerate(NAME)}


def pending_by_site(db: sqlite3.Connection) -> list[tuple[str, str | None, int]]:
    """Pending recipients as (state, the MX host of their last attempt or None, count)."""
    rows = db.execute(
        f"SELECT state, mx, count(*) FROM recipient WHERE {PENDING_SQL} GROUP BY 1, 2"
    )
    return [(NAME[state], mx, n) for state, mx, n in rows]


def suspensions(db: sqlite3.Connection, now: float) -> list[Suspension]:
    """The sites suspended at `now`, the one whose suspension ends soonest first."""
    rows = db.execute(
        "SELECT site, until, reason, domains, since FROM suspension WHERE until > ?"
        " ORDER BY until, site",
        (now,),
    )
    return [
        Suspension(site, until, reason, json.loads(domains), since)
        for site, until, reason, domains, since in rows
    ]


def status(db: sqlite3.Connection, now: float) -> Status:
    domains = [
        DomainStatus(domain, pending, in_flight, deferred, next_attempt)
        for domain, pending, in_flight, deferred, next_attempt in db.execute(
            _DOMAINS, (STATUS_DOMAINS,)
        )
    ]
    pending_domains = db.execute(
        f"SELECT count(DISTINCT domain) FROM recipient WHERE {PENDING_SQL}"
    ).fetchone()[0]
    next_due = db.execute(f"SELECT min(due) FROM recipient WHERE {PENDING_SQL}").fetchone()[0]
    return Status(
        counts(db), domains, pending_domains, next_due, suspensions(db, now), in_force(db, now)
    )


def report(db: sqlite3.Connection, name: str, campaign: int) -> Report:
    return assemble_report(
        name,
        db.execute(_GROUPS, (campaign,)).fetchall(),
        db.execute(_REPLIES, (campaign, REPORT_REPLIES)).fetchall(),
        db.execute(_FEEDBACK, (campaign,)).fetchall(),
        db.execute(_COMPLAINTS_BY_DOMAIN, (campaign,)).fetchall(),
    )


def assemble_report(
    name: str,
    groups: Iterable[tuple[str, int, str | None, int]],
    replies: Iterable[tuple[int | None, str | None, str | None, int]],
    feedback: Iterable[tuple[str, object, int, int]],
    complaints_by_domain: Iterable[tuple[str, int]],
) -> Report:
    """A campaign's Report from its rows, whichever spool read them: (domain, state
    code, category, count) groups, (code, enhanced, text, count) replies, (kind,
    machine, signals, recipients) feedback, (domain, complaining recipients)."""
    states: Counter[str] = Counter({state: 0 for state in ALL})
    domains: dict[str, dict[str, int]] = {}
    categories: Counter[str] = Counter()
    # One pass over each index's rows of the campaign gives all three.
    for domain, code, category, count in groups:
        state = NAME[code]
        states[state] += count
        by_state = domains.setdefault(domain, {})
        by_state[state] = by_state.get(state, 0) + count
        if category is not None:
            categories[category] += count
    shown = [
        (" ".join(str(part) for part in (code, enhanced, text) if part is not None), count)
        for code, enhanced, text, count in replies
    ]
    counts = feedback_counts(feedback, complaints_by_domain, states["delivered"], domains)
    return Report(name, dict(states), domains, dict(categories), shown, counts)


def feedback_counts(
    rows: Iterable[tuple[str, object, int, int]],
    complaints_by_domain: Iterable[tuple[str, int]],
    delivered: int,
    domains: dict[str, dict[str, int]],
) -> FeedbackCounts:
    """A campaign's signals by kind; complaint rates against its deliveries (a late
    bounce leaves a recipient delivered: it was, and the receiver judged the mail)."""
    total: Counter[tuple[str, bool]] = Counter()
    unique: Counter[tuple[str, bool]] = Counter()
    for kind, machine, count, recipients in rows:
        total[kind, bool(machine)] += count
        unique[kind, bool(machine)] += recipients

    def people(kind: str) -> int:
        # Unsubscribes and inbound signals are never machine ones: one of the two is 0.
        return unique[kind, False] + unique[kind, True]

    by_domain = {}
    for domain, complained in complaints_by_domain:
        sent = domains.get(domain, {}).get("delivered", 0)
        if sent:  # (a complaint about a recipient this spool has no delivery of: no rate)
            by_domain[domain] = complained / sent
    complaints = people("complained")
    return FeedbackCounts(
        clicks=total["clicked", False],
        unique_clicks=unique["clicked", False],
        machine_clicks=total["clicked", True],
        opens=total["opened", False],
        unique_opens=unique["opened", False],
        machine_opens=total["opened", True],
        unsubscribes=people("unsubscribed"),
        late_bounces=people("bounced-late"),
        complaints=complaints,
        auto_replies=total["auto-reply", False] + total["auto-reply", True],
        complaint_rate=complaints / delivered if delivered else 0.0,
        complaint_rate_by_domain=dict(sorted(by_domain.items())),
    )
