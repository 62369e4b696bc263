"""The automation actions in force (shaping_action): written by the engine, listed by
`ferrymail status`, lifted by `ferrymail flush`."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

import msgspec


class ShapingAction(msgspec.Struct, frozen=True):
    """An automation rule's action as the spool keeps it (see schema.py, version 4)."""

    #: The rule's name, as the shaping file names it.
    rule: str
    #: "site", "source" or "campaign": what it acts on.
    scope: str
    site: str
    #: The source (scope "source") or campaign (scope "campaign") it acts on; "" else.
    source: str
    campaign: str
    started: float
    until: float
    #: Seconds over which its limits come back up after `until`.
    restore: float
    #: The reply that fired it ("421 4.7.28 Our system has detected …").
    reply: str
    suspend: bool
    bounce: bool
    #: The limits it holds the site at, as written ({"max_message_rate": "10/min"}).
    limits: dict[str, object]
    #: The site's domains when it fired.
    domains: list[str]


_COLUMNS = (
    "rule, scope, site, source, campaign, started, until, restore, reply, suspend, bounce,"
    " limits, domains"
)


def put(db: sqlite3.Connection, actions: Sequence[ShapingAction], now: float) -> None:
    """Stores actions; one that fired again on the same thing replaces (extends) it.
    Rows whose limits have come back up are deleted on the way."""
    db.execute("DELETE FROM shaping_action WHERE until + restore <= ?", (now,))
    db.executemany(
        f"INSERT OR REPLACE INTO shaping_action ({_COLUMNS})"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                a.rule, a.scope, a.site, a.source, a.campaign, a.started, a.until, a.restore,
                a.reply, int(a.suspend), int(a.bounce), json.dumps(a.limits),
                json.dumps(sorted(a.domains)),
            )
            for a in actions
        ],
    )  # fmt: skip


def in_force(db: sqlite3.Connection, now: float) -> list[ShapingAction]:
    """The actions in force or whose limits are still coming back up at `now`, the one
    that ends soonest first."""
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM shaping_action WHERE until + restore > ?"
        " ORDER BY until, site, rule",
        (now,),
    )
    return [
        ShapingAction(
            rule, scope, site, source, campaign, started, until, restore, reply,
            bool(suspend), bool(bounce), json.loads(limits), json.loads(domains),
        )
        for (
            rule, scope, site, source, campaign, started, until, restore, reply, suspend,
            bounce, limits, domains,
        ) in rows
    ]  # fmt: skip


def lift(db: sqlite3.Connection, domain: str | None) -> list[ShapingAction]:
    """Deletes every action, or those on the sites `domain` was among; returns them."""
    lifted = [a for a in in_force(db, float("-inf")) if domain is None or domain in a.domains]
    db.executemany(
        "DELETE FROM shaping_action WHERE rule = ? AND scope = ? AND site = ? AND source = ?"
        " AND campaign = ?",
        [(a.rule, a.scope, a.site, a.source, a.campaign) for a in lifted],
    )
    return lifted
