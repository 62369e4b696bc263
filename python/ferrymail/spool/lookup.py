"""Finding the recipient an inbound signal is about: by row id (VERP), by key, by address."""

from __future__ import annotations

import sqlite3

import msgspec

from .states import NAME

#: How many of the newest campaigns a search by address looks in: a bounce or a
#: complaint is about recent mail (receivers report within days; feedback loops within
#: hours), and each campaign costs one index probe.
RECENT_CAMPAIGNS = 200


class Found(msgspec.Struct, frozen=True, gc=False):
    """A recipient row of the spool, as inbound matching needs it."""

    id: int
    campaign: str
    key: str
    address: str
    domain: str
    #: Its state's name ("delivered", "deferred" …).
    state: str


_COLUMNS = "r.id, c.name, r.key, r.address, r.domain, r.state"
_BY_ID = f"SELECT {_COLUMNS} FROM recipient r JOIN campaign c ON c.id = r.campaign WHERE r.id = ?"
_BY_CAMPAIGN_KEY = f"""
SELECT {_COLUMNS} FROM recipient r JOIN campaign c ON c.id = r.campaign
WHERE c.name = ? AND r.key = ?
"""
# Through recipient_key (campaign, key): one probe per recent campaign, newest first.
_BY_KEY_RECENT = f"""
SELECT {_COLUMNS} FROM campaign c JOIN recipient r ON r.campaign = c.id AND r.key = ?1
WHERE c.id IN (SELECT id FROM campaign ORDER BY id DESC LIMIT ?2)
ORDER BY c.id DESC
"""


def _found(row: tuple[int, str, str, str, str, int]) -> Found:
    rid, campaign, key, address, domain, state = row
    return Found(rid, campaign, key, address, domain, NAME[state])


def by_id(db: sqlite3.Connection, row_id: int) -> Found | None:
    row = db.execute(_BY_ID, (row_id,)).fetchone()
    return None if row is None else _found(row)


def by_campaign_key(db: sqlite3.Connection, campaign: str, key: str) -> Found | None:
    row = db.execute(_BY_CAMPAIGN_KEY, (campaign, key)).fetchone()
    return None if row is None else _found(row)


def by_address(db: sqlite3.Connection, address: str) -> list[Found]:
    """The recipients whose key is `address` (recipients submitted without an id are
    keyed by their address as given) in the newest RECENT_CAMPAIGNS campaigns, newest
    first; the address is tried as written and in lower case (a report may change the
    case of what was sent). Recipients with an id of the ESP's are not found this way:
    VERP, or a token quoted in the report, finds them."""
    found: dict[int, Found] = {}
    for form in dict.fromkeys((address, address.lower())):
        for row in db.execute(_BY_KEY_RECENT, (form, RECENT_CAMPAIGNS)):
            found.setdefault(row[0], _found(row))
    return sorted(found.values(), key=lambda f: -f.id)
