"""Site suspensions kept in step with the spool: set here, seen by `ferrymail status`,
kept across restarts, lifted by `ferrymail flush` from another process, and shared by
every engine on one spool."""

from __future__ import annotations

import time
from collections.abc import Iterable

from .sites import Site
from .spool import domain_key
from .spooler import Spooler

# How often, while a site is suspended, the spool is read for suspensions lifted from
# outside (`ferrymail flush` in another process).
CHECK_EVERY = 1.0


class Suspensions:
    """The engine's view of the spool's suspension table. A Site holds its own
    suspension for the scheduler; this keeps the table and the Sites in step."""

    def __init__(self, spooler: Spooler) -> None:
        self._spooler = spooler
        # Site key -> until, as last read or written: what a Site created later (after
        # a restart, when its first recipient is routed) starts with.
        self._known: dict[str, float] = {}
        self._read_at = 0.0
        self._writes = 0  # suspensions written: a read begun before one is out of date

    async def load(self) -> None:
        """Reads the table (at open)."""
        rows = await self._spooler.call(self._spooler.spool.suspensions)
        self._known = {s.site: s.until for s in rows}

    def restore(self, site: Site) -> None:
        """Gives a newly created Site the suspension the spool has for it."""
        until = self._known.get(site.key, 0.0)
        if until > time.time():
            site.suspended_until = until

    def holds(self, sites: dict[str, Site], key: str, now: float) -> bool:
        """Whether the site `key` is suspended, as far as this engine knows."""
        site = sites.get(key)
        if site is not None:
            return site.suspended(now)
        return self._known.get(key, 0.0) > now

    async def suspend(self, site: Site, until: float, why: str) -> None:
        """Suspends the site in the spool, then here: in this order, a read of the table
        cannot find it missing and lift it."""
        self._writes += 1
        spool = self._spooler.spool
        await self._spooler.call(spool.suspend, site.key, until, why, list(site.domains))
        self._known[site.key] = until

    async def refresh(self, sites: Iterable[Site], now: float, *, due: bool = False) -> bool:
        """Keeps the Sites in step with the table: lifts those whose suspension is gone
        (lifted from outside), and suspends those another engine on the spool suspended
        (a fleet on PostgreSQL: a site suspended by one node is suspended for all).
        Reads at most every CHECK_EVERY seconds unless `due`; True when a Site was
        lifted."""
        if not due and now - self._read_at < CHECK_EVERY:
            return False  # the pump calls this every round: most return here
        self._read_at = now
        sites = list(sites)
        writes = self._writes
        rows = await self._spooler.call(self._spooler.spool.suspensions)
        if writes != self._writes:
            return False  # a site was suspended meanwhile: the next read sees it
        self._known = {s.site: s.until for s in rows}
        lifted = [s for s in sites if s.suspended(now) and s.key not in self._known]
        for site in lifted:
            site.lift()
        for site in sites:
            until = self._known.get(site.key, 0.0)
            if until > now and until > site.suspended_until:
                # Suspended elsewhere: its recipients here wait in its queue (their
                # leases renewed) and no batch starts before `until`.
                site.suspended_until = until
        return bool(lifted)

    async def lift(self, sites: Iterable[Site], domain: str | None) -> None:
        """Ends the suspensions of every site, or of those `domain` was routed to, in
        the spool and here."""
        lifted = set(await self._spooler.call(self._spooler.spool.lift, domain))
        for site in sites:
            if domain is None or site.key in lifted or domain_key(domain) in site.domains:
                site.lift()
        self._known = {k: v for k, v in self._known.items() if k not in lifted}
