"""ActionsInForce: the automation actions the engine applies, kept in step with the spool
(`ferrymail status` shows them, a restart keeps them, `ferrymail flush` lifts them)."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable

from ..spool import ShapingAction
from ..spooler import Spooler
from .automation import Action, restored_limit, restored_rate
from .units import Rate, parse_rate

#: How often the spool is read for actions lifted from outside (`ferrymail flush`).
CHECK_EVERY = 1.0


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """A site's limits at one moment: the configured ones, lowered by the actions in
    force and by those whose limits are still coming back up."""

    connections: int
    messages_per_connection: int
    rate: Rate | None
    #: New connections' rate (`max_connection_rate`; the transport applies it).
    connection_rate: Rate | None = None


class ActionsInForce:
    """The engine's view of the spool's shaping_action table.

    An action on a site (scope "site") lowers its limits (`set`) or suspends it; on a
    source there (scope "source") lowers that source's limits at the site, or takes the
    source out of its pools there (`blocked`; the host's own address, which has no
    pool to leave, suspends the site instead); on a campaign (scope
    "campaign") holds that campaign's recipients there; `bounce` bounces what is queued
    for the site while it is in force. When an action ends, what it lowered climbs back
    to the configured value over its `restore` period (automation.restored_rate); after
    a suspension, from a quarter of it.
    """

    def __init__(self, spooler: Spooler) -> None:
        self._spooler = spooler
        self._by_site: dict[str, list[ShapingAction]] = {}
        self._read_at = 0.0
        self._writes = 0

    async def load(self) -> None:
        self._set(await self._spooler.call(self._spooler.spool.actions))

    def _set(self, actions: Iterable[ShapingAction]) -> None:
        by_site: dict[str, list[ShapingAction]] = {}
        for action in actions:
            by_site.setdefault(action.site, []).append(action)
        self._by_site = by_site

    async def fire(self, fired: list[Action], domains: Collection[str]) -> list[ShapingAction]:
        """Stores actions that fired (replacing those of the same rule on the same
        thing); returns them as stored."""
        stored = [_stored(a, domains) for a in fired]
        self._writes += 1
        await self._spooler.call(self._spooler.spool.put_actions, stored)
        for action in stored:
            kept = [a for a in self._by_site.get(action.site, []) if _key(a) != _key(action)]
            self._by_site[action.site] = [*kept, action]
        return stored

    async def refresh(self, now: float) -> bool:
        """Reads the table at most every CHECK_EVERY seconds; True when an action this
        engine applied is gone (lifted from outside)."""
        if not self._by_site or now - self._read_at < CHECK_EVERY:
            return False
        self._read_at = now
        writes = self._writes
        rows = await self._spooler.call(self._spooler.spool.actions)
        if writes != self._writes:
            return False  # one fired meanwhile: the next read sees it
        before = {_key(a) for actions in self._by_site.values() for a in actions}
        self._set(rows)
        after = {_key(a) for a in rows}
        return bool(before - after)

    async def lift(self, domain: str | None) -> None:
        lifted = await self._spooler.call(self._spooler.spool.lift_actions, domain)
        gone = {_key(a) for a in lifted}
        self._set(a for actions in self._by_site.values() for a in actions if _key(a) not in gone)

    def limits(
        self,
        site: str,
        configured: Limits,
        now: float,
        source: str | None = None,
        provider: str | None = None,
    ) -> Limits:
        """The limits in force at `now`: the site's (`source` None; `configured` from
        its shape), lowered by the site's actions; or one source's at the site (its
        name, "" for the host's own address; `configured` from the shape's per_source),
        lowered by the actions on that source there and at the site's `provider`."""
        connections, per_connection, rate, connection_rate = (
            configured.connections,
            configured.messages_per_connection,
            configured.rate,
            configured.connection_rate,
        )
        for action in self._at(site, provider if source is not None else None):
            if action.scope == "campaign":
                continue
            if (action.scope == "source") != (source is not None) or (
                source is not None and action.source != source
            ):
                continue
            if now >= action.until + action.restore:
                continue
            lowered = action.limits
            if action.suspend:
                if now < action.until:
                    continue  # suspended: the site (or source) sends nothing meanwhile
                # After a suspension, everything climbs back from a quarter.
                lowered = {
                    "connection_limit": None,
                    "max_message_rate": None,
                    "max_connection_rate": None,
                    **lowered,
                }
            for name, value in lowered.items():
                if name == "connection_limit":
                    connections = min(
                        connections, _limit(configured.connections, value, action, now)
                    )
                elif name == "max_deliveries_per_connection":
                    per_connection = min(
                        per_connection,
                        _limit(configured.messages_per_connection, value, action, now),
                    )
                elif name == "max_message_rate":
                    rate = _lower(rate, _rate(configured.rate, value, action, now))
                elif name == "max_connection_rate":
                    connection_rate = _lower(
                        connection_rate, _rate(configured.connection_rate, value, action, now)
                    )
        return Limits(connections, per_connection, rate, connection_rate)

    def blocked(self, site: str, now: float, provider: str | None = None) -> dict[str, float]:
        """Source -> until, for the sources suspended at the site or at its `provider`
        (taken out of their pool there; the pool's other sources carry the traffic)."""
        return {
            a.source: a.until
            for a in self._at(site, provider)
            if a.scope == "source" and a.source and a.suspend and a.started <= now < a.until
        }

    def _at(self, site: str, provider: str | None) -> list[ShapingAction]:
        """The actions on a site, and on its provider's sites (a source's, stored under
        the provider entry's name: see engine/automate.py)."""
        found = list(self._by_site.get(site, ()))
        if provider is not None:
            found += self._by_site.get(provider, ())
        return found

    def held(self, site: str, now: float) -> dict[str, float]:
        """Campaign -> until, for the campaigns suspended at the site."""
        return {
            a.campaign: a.until
            for a in self._by_site.get(site, ())
            if a.scope == "campaign" and a.suspend and a.started <= now < a.until
        }

    def bouncing(self, site: str, now: float) -> ShapingAction | None:
        """The action that bounces what is queued for the site, while one is in force."""
        return next(
            (
                a
                for a in self._by_site.get(site, ())
                if a.bounce and a.scope != "campaign" and a.started <= now < a.until
            ),
            None,
        )


def _key(a: ShapingAction) -> tuple[str, str, str, str, str]:
    return (a.rule, a.scope, a.site, a.source, a.campaign)


def _stored(action: Action, domains: Collection[str]) -> ShapingAction:
    return ShapingAction(
        rule=action.rule,
        scope=action.scope,
        site=action.site,
        source=action.source or "",
        campaign=action.campaign or "",
        started=action.started,
        until=action.until,
        restore=action.restore,
        reply=action.reply,
        suspend=action.suspend,
        bounce=action.bounce,
        limits={name: str(v) if isinstance(v, Rate) else v for name, v in action.set},
        domains=sorted(domains),
    )


def _limit(configured: int, value: object, action: ShapingAction, now: float) -> int:
    floor = value if isinstance(value, int) else None
    if now < action.until and floor is not None:
        return floor
    return restored_limit(configured, floor, ended=action.until, restore=action.restore, now=now)


def _rate(configured: Rate | None, value: object, action: ShapingAction, now: float) -> Rate | None:
    floor = parse_rate(value) if isinstance(value, str) else None
    if now < action.until and floor is not None:
        return floor
    return restored_rate(configured, floor, ended=action.until, restore=action.restore, now=now)


def _lower(a: Rate | None, b: Rate | None) -> Rate | None:
    """The lower of two rates (None: unlimited)."""
    if a is None:
        return b
    if b is None:
        return a
    return a if a.per_second <= b.per_second else b
