"""What both spools know of campaigns without a query each time: the ids of campaign
names and back (cached: a campaign is never renamed nor deleted), and the list each
campaign sends for (its List-Id)."""

from __future__ import annotations

from typing import Any

import msgspec

from ..errors import ConfigError
from ..wire import CampaignSpec

_specs = msgspec.msgpack.Decoder(CampaignSpec)


def same_spec(stored: bytes, new: bytes) -> bool:
    """Whether two encodings are one CampaignSpec: the same bytes, or the same fields
    once decoded (a spec stored before a field was added lacks it; see wire.py)."""
    if stored == new:
        return True
    try:
        return _specs.decode(stored) == _specs.decode(new)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False


class CampaignNames:
    """The campaign lookups SqliteSpool and PostgresSpool share. The spool sets `_db`
    (a DB-API connection: `execute(...).fetchone()`), `_PARAM` (its placeholder) and
    has `campaign_spec`; it calls `_forget_list` when a campaign's spec is replaced."""

    _PARAM = "?"
    _db: Any

    def __init__(self) -> None:
        self._campaign_ids: dict[str, int] = {}
        self._campaign_names: dict[int, str] = {}
        self._campaign_lists: dict[str, str] = {}

    def campaign_spec(self, campaign_id: str) -> bytes | None:
        row = self._db.execute(
            f"SELECT spec FROM campaign WHERE name = {self._PARAM}", (campaign_id,)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def _replace_spec(
        self,
        db: Any,
        campaign_id: str,
        campaign: int,
        stored: bytes,
        spec: bytes,
        statements: Any,
    ) -> bool:
        """put_campaign's rule for a campaign the spool has (see SqliteSpool's), inside
        its transaction `db`: the same spec does nothing (False); another replaces it
        (True) while none of its recipients was attempted, else ConfigError.
        `statements`: the backend's module of SQL (ATTEMPTED, FORGET_FAILED)."""
        if same_spec(stored, spec):
            return False
        attempted = db.execute(statements.ATTEMPTED, (campaign,)).fetchone()[0]
        if attempted:
            raise ConfigError(
                f"campaign {campaign_id!r} is already in the spool with a different "
                f"spec, and {attempted:,} of its recipients were attempted with it "
                "(delivered, bounced, deferred or in flight): give the campaign a new "
                "id to send this spec",
                "id",
            )
        db.execute(
            f"UPDATE campaign SET spec = {self._PARAM} WHERE id = {self._PARAM}",
            (bytes(spec), campaign),
        )
        self._forget_list(campaign_id)  # its List-Id may have changed
        db.execute(statements.FORGET_FAILED, (campaign,))
        return True

    def campaign_list(self, campaign_id: str) -> str:
        """The list a campaign sends for: the suppression scope its unsubscribes go to.

        The id in its `List-Id` header (RFC 2919: "Name <id>", lower-cased) when the
        campaign gives one, else the campaign's id, which is what ferrymail writes as
        List-Id then. So an ESP that sends one newsletter as many campaigns gives them
        one List-Id and one list, and a recipient who unsubscribes from one is not sent
        the next; the recipient's mail program shows the same List-Id as the list they
        leave. ConfigError for an unknown campaign."""
        cached = self._campaign_lists.get(campaign_id)
        if cached is not None:
            return cached
        spec = self.campaign_spec(campaign_id)
        if spec is None:
            raise ConfigError(f"campaign {campaign_id!r} is not in the spool", "campaign")
        name = campaign_id
        try:
            headers = msgspec.msgpack.decode(spec, type=CampaignSpec).headers
        except (msgspec.DecodeError, msgspec.ValidationError):
            headers = []  # (a spec this version cannot read: the campaign's own list)
        for header, value in headers:
            if header.lower() == "list-id":
                inside = value.rpartition("<")[2].partition(">")[0] if "<" in value else value
                name = inside.strip().lower() or campaign_id
        self._campaign_lists[campaign_id] = name
        return name

    def _forget_list(self, campaign_id: str) -> None:
        """A campaign's spec was replaced: its List-Id may have changed."""
        self._campaign_lists.pop(campaign_id, None)

    def _campaign(self, name: str) -> int:
        """The id of the campaign `name`; ConfigError when the spool does not have it."""
        cached = self._campaign_ids.get(name)
        if cached is not None:
            return cached
        row = self._db.execute(
            f"SELECT id FROM campaign WHERE name = {self._PARAM}", (name,)
        ).fetchone()
        if row is None:
            raise ConfigError(f"campaign {name!r} is not in the spool", "campaign")
        self._campaign_ids[name] = int(row[0])
        self._campaign_names[int(row[0])] = name
        return int(row[0])

    def _campaign_name(self, campaign: int) -> str:
        """The name of the campaign whose id is `campaign` (an id the spool has)."""
        name = self._campaign_names.get(campaign)
        if name is None:
            row = self._db.execute(
                f"SELECT name FROM campaign WHERE id = {self._PARAM}", (campaign,)
            ).fetchone()
            name = str(row[0])
            self._campaign_ids[name] = campaign
            self._campaign_names[campaign] = name
        return name
