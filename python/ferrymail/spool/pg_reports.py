"""The PostgreSQL spool's aggregate queries: counts by state, status, campaign reports,
suspensions and automation actions (reports.py and actions.py's, in PostgreSQL's words)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from .actions import ShapingAction
from .reports import REPORT_REPLIES, STATUS_DOMAINS, assemble_report
from .rows import DomainStatus, Report, Status, Suspension
from .states import BOUNCED, CODE, DEFERRED, EXPIRED, FINAL_SQL, IN_FLIGHT, NAME, PENDING_SQL

# (A psycopg connection or cursor: both have execute().)
Db = Any

_IN_FLIGHT = CODE[IN_FLIGHT]
_DEFERRED = CODE[DEFERRED]

_DOMAINS = f"""
SELECT domain, count(*), count(*) FILTER (WHERE state = {_IN_FLIGHT}),
    count(*) FILTER (WHERE state = {_DEFERRED}), min(due) FILTER (WHERE state = {_DEFERRED})
FROM recipient WHERE {PENDING_SQL} GROUP BY domain ORDER BY 2 DESC, domain COLLATE "C" LIMIT %s
"""
_GROUPS = """
SELECT domain, state, category, count(*) FROM recipient WHERE campaign = %s
GROUP BY domain, state, category
"""
_REPLIES = f"""
SELECT code, enhanced, text, count(*) FROM recipient
WHERE campaign = %s AND state IN ({CODE[BOUNCED]}, {CODE[EXPIRED]}, {_DEFERRED})
    AND coalesce(code::text, enhanced, text) IS NOT NULL
GROUP BY code, enhanced, text
ORDER BY 4 DESC, code NULLS FIRST, enhanced COLLATE "C" NULLS FIRST,
    text COLLATE "C" NULLS FIRST LIMIT %s
"""
_FEEDBACK = """
SELECT kind, machine, count(*), count(DISTINCT key) FROM feedback WHERE campaign = %s
GROUP BY kind, machine
"""
_COMPLAINTS_BY_DOMAIN = """
SELECT coalesce(domain, ''), count(DISTINCT key) FROM feedback
WHERE campaign = %s AND kind = 'complained' GROUP BY 1
"""
ACTION_COLUMNS = (
    "rule, scope, site, source, campaign, started, until, restore, reply, suspend, bounce,"
    " limits, domains"
)


def counts(db: Db) -> dict[str, int]:
    """Recipients by state, every state included."""
    found: Counter[int] = Counter()
    for where in (PENDING_SQL, FINAL_SQL):
        found.update(
            dict(db.execute(f"SELECT state, count(*) FROM recipient WHERE {where} GROUP BY state"))
        )
    return {name: found[code] for code, name in enumerate(NAME)}


def pending_by_site(db: Db) -> list[tuple[str, str | None, int]]:
    """Pending recipients as (state, the MX host of their last attempt or None, count)."""
    rows = db.execute(
        f"SELECT state, mx, count(*) FROM recipient WHERE {PENDING_SQL} GROUP BY 1, 2"
    )
    return [(NAME[state], mx, n) for state, mx, n in rows]


def suspensions(db: Db, now: float) -> list[Suspension]:
    rows = db.execute(
        "SELECT site, until, reason, domains, since FROM suspension WHERE until > %s"
        ' ORDER BY until, site COLLATE "C"',
        (now,),
    )
    return [
        Suspension(site, until, reason, list(domains), since)
        for site, until, reason, domains, since in rows
    ]


def actions_in_force(db: Db, now: float) -> list[ShapingAction]:
    rows = db.execute(
        f"SELECT {ACTION_COLUMNS} FROM shaping_action WHERE until + restore > %s"
        ' ORDER BY until, site COLLATE "C", rule COLLATE "C"',
        (now,),
    )
    return [
        ShapingAction(
            rule, scope, site, source, campaign, started, until, restore, reply,
            bool(suspend), bool(bounce), json.loads(limits), list(domains),
        )
        for (
            rule, scope, site, source, campaign, started, until, restore, reply, suspend,
            bounce, limits, domains,
        ) in rows
    ]  # fmt: skip


def put_actions(db: Db, actions: Sequence[ShapingAction], now: float) -> None:
    db.execute("DELETE FROM shaping_action WHERE until + restore <= %s", (now,))
    with db.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO shaping_action ({ACTION_COLUMNS})"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (rule, scope, site, source, campaign) DO UPDATE SET"
            " started = excluded.started, until = excluded.until, restore = excluded.restore,"
            " reply = excluded.reply, suspend = excluded.suspend, bounce = excluded.bounce,"
            " limits = excluded.limits, domains = excluded.domains",
            [
                (
                    a.rule, a.scope, a.site, a.source, a.campaign, a.started, a.until,
                    a.restore, a.reply, a.suspend, a.bounce, json.dumps(a.limits),
                    sorted(a.domains),
                )
                for a in actions
            ],
        )  # fmt: skip


def lift_actions(db: Db, domain: str | None) -> list[ShapingAction]:
    lifted = [
        a for a in actions_in_force(db, float("-inf")) if domain is None or domain in a.domains
    ]
    with db.cursor() as cursor:
        cursor.executemany(
            "DELETE FROM shaping_action WHERE rule = %s AND scope = %s AND site = %s"
            " AND source = %s AND campaign = %s",
            [(a.rule, a.scope, a.site, a.source, a.campaign) for a in lifted],
        )
    return lifted


def status(db: Db, now: float) -> Status:
    domains = [
        DomainStatus(domain, pending, in_flight, deferred, next_attempt)
        for domain, pending, in_flight, deferred, next_attempt in db.execute(
            _DOMAINS, (STATUS_DOMAINS,)
        )
    ]
    pending_domains, next_due = db.execute(
        f"SELECT count(DISTINCT domain), min(due) FROM recipient WHERE {PENDING_SQL}"
    ).fetchone()
    return Status(
        counts(db),
        domains,
        pending_domains,
        next_due,
        suspensions(db, now),
        actions_in_force(db, now),
    )


def report(db: Db, name: str, campaign: int) -> Report:
    """As reports.report, from PostgreSQL's rows."""
    return assemble_report(
        name,
        db.execute(_GROUPS, (campaign,)).fetchall(),
        db.execute(_REPLIES, (campaign, REPORT_REPLIES)).fetchall(),
        db.execute(_FEEDBACK, (campaign,)).fetchall(),
        db.execute(_COMPLAINTS_BY_DOMAIN, (campaign,)).fetchall(),
    )
