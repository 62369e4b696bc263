"""When: the lease window on the spool, lease renewals, and how long the pump may sleep."""

from __future__ import annotations

import time
from collections.abc import Iterable

from ..config import Config
from ..sites import Site
from ..spool import Leased
from ..spooler import Spooler

# The longest the pump sleeps with nothing due: it also wakes for submits, finished
# batches, DNS answers, flushes and stops, so this only bounds how late a timer can be
# noticed.
IDLE_WAKE = 1.0


class Scheduler:
    """Postfix's active queue: a bounded window of leased recipients on a possibly huge
    spool. `active` counts the recipients leased and not yet settled (recorded or put
    back), wherever they are: waiting for DNS, in a site's queue or in flight."""

    def __init__(self, spooler: Spooler, config: Config, owner: str) -> None:
        self._spooler = spooler
        self._config = config
        self._owner = owner
        self.active = 0
        self._renewed_at = 0.0

    async def lease(self) -> list[Leased]:
        """Due recipients to fill the window (none when it is full)."""
        room = self._config.window - self.active
        if room <= 0:
            return []
        spool = self._spooler.spool
        leased = await self._spooler.call(spool.lease, room, self._owner, self._config.lease_for)
        self.active += len(leased)
        return leased

    def settled(self, count: int) -> None:
        """`count` leased recipients left the window (recorded or put back)."""
        self.active -= count

    async def renew(self, now: float, held: Iterable[Leased]) -> None:
        """Extends the leases of every recipient held here, a third of the way through
        each lease, so that one waiting long in memory (slow DNS, a slow or rate-limited
        site) is not taken for a dead process's."""
        if now - self._renewed_at <= self._config.lease_for / 3:
            return
        self._renewed_at = now
        ids = [r.id for r in held]
        if ids:
            spool = self._spooler.spool
            await self._spooler.call(spool.renew, ids, self._config.lease_for)

    async def idle_for(self, now: float, sites: Iterable[Site]) -> float:
        """How long nothing can happen unless woken: until the next due recipient, the
        end of a suspension or a rate token, at most IDLE_WAKE."""
        wake_at = now + IDLE_WAKE
        if self.active < self._config.window:
            due = await self._spooler.call(self._spooler.spool.next_due)
            if due is not None:
                wake_at = min(wake_at, due)
        for site in sites:
            start_at = site.next_start_at(now)
            if start_at is not None:
                wake_at = min(wake_at, start_at)
        return max(0.0, wake_at - time.time())
