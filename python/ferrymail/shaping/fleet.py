"""Fleet connections: each site's connection limit split among the engines alive on one
spool, so that together they never hold more than the limit (a receiver counts the ESP's
connections, not each process's).

Each engine heartbeats in the spool (`fleet_heartbeat`, the spool's clock) every
HEARTBEAT_EVERY seconds; the engines seen within LIVE_FOR are the fleet. A site's limit C
is split exactly among the N live engines: each gets C // N, and the C % N left over go
to the first engines of an order drawn per site (so different sites favour different
engines) and per ROTATE_EVERY seconds of the spool's clock (so none keeps the extra one
for good). The shares add up to C, never more. With more engines than C, C of them get
one connection each for ROTATE_EVERY seconds and the others none: their recipients of
that site wait in their queues (leases renewed) until the rotation gives them one.

A share that shrinks applies at once (to the next batch: one in flight keeps its
connections until it ends, and idle pooled ones over the new share are closed when the
next batch asks for the site, or at the idle timeout). A share that grows (an engine
left, or this one just joined) applies SETTLE seconds after it is known, when every
other engine has had a heartbeat to see the same fleet and shrink its own. An engine
that finds itself alone at its first heartbeat takes its shares at once: heartbeats are
serialised in the spool, so an engine starting at the same moment sees this one.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable

_log = logging.getLogger(__name__)

#: How often an engine writes its heartbeat (the pump does it, between its rounds).
HEARTBEAT_EVERY = 1.0
#: An engine not seen for this long is counted out of the fleet. Longer than a pump
#: round can take (a large record under way), so a busy engine is not counted out.
LIVE_FOR = 5.0
#: How long after it is known a share that grows takes effect: the other engines have
#: each had a heartbeat (HEARTBEAT_EVERY) to see the same fleet, with a margin.
SETTLE = 3 * HEARTBEAT_EVERY
#: The order that gives out the connections left over is drawn again this often.
ROTATE_EVERY = 60.0

#: (owner, node, live_for) -> (the spool's time, the live engines' owners, sorted):
#: Spool.fleet_heartbeat, on the spool thread.
Heartbeat = Callable[[str, str, float], Awaitable[tuple[float, list[str]]]]


def share_of(site: str, limit: int, live: list[str], owner: str, rotation: int) -> int:
    """`owner`'s share of `site`'s connection `limit` among the engines `live` (owner
    among them), in the rotation period `rotation`."""
    if owner not in live:
        live = [*live, owner]
    base, extra = divmod(limit, len(live))
    if not extra:
        return base

    def drawn(o: str) -> bytes:
        return hashlib.blake2b(f"{site}\0{rotation}\0{o}".encode(), digest_size=8).digest()

    rank = sorted(live, key=drawn).index(owner)
    return base + (rank < extra)


class FleetConnections:
    """One engine's shares of its sites' connection limits: `beat` keeps the fleet in
    step with the spool (call it every pump round: it writes once per HEARTBEAT_EVERY);
    `share` is what a site's limit is for this engine now."""

    def __init__(self, owner: str, node: str, heartbeat: Heartbeat) -> None:
        self._owner = owner
        self._node = node
        self._heartbeat = heartbeat
        self._live: list[str] = [owner]
        self._rotation = 0
        self._beat_at = float("-inf")  # this engine's clock, at the last heartbeat
        self._joined_at: float | None = None  # None: not in the fleet yet
        self._alone_at_join = False
        # Site -> (the share in force, a larger one waiting and since when it is known).
        self._shares: dict[str, tuple[int, int, float]] = {}

    @property
    def live(self) -> int:
        """The engines of the fleet, this one included, as last seen."""
        return len(self._live)

    async def beat(self, now: float) -> None:
        """Writes this engine's heartbeat and reads the fleet, once per HEARTBEAT_EVERY."""
        if now - self._beat_at < HEARTBEAT_EVERY:
            return
        if self._joined_at is not None and now - self._beat_at > LIVE_FOR:
            # The others counted this engine out meanwhile (and may have grown their
            # shares): it joins again, as a new engine does.
            _log.warning(
                "ferrymail: no heartbeat for %.1f s: this engine joins the fleet again",
                now - self._beat_at,
            )
            self._joined_at = None
            self._shares.clear()
        self._beat_at = now
        spool_now, live = await self._heartbeat(self._owner, self._node, LIVE_FOR)
        self._rotation = int(spool_now // ROTATE_EVERY)
        if live != self._live:
            _log.info("ferrymail: %d engines share the spool's site limits", len(live))
        self._live = live
        if self._joined_at is None:
            self._joined_at = now
            self._alone_at_join = live == [self._owner]

    def share(self, site: str, limit: int, now: float) -> int:
        """This engine's connections of `site`, whose limit is `limit` for the fleet."""
        joined = self._joined_at
        if joined is None:
            return 0  # not in the fleet yet (before the first heartbeat)
        target = share_of(site, limit, self._live, self._owner, self._rotation)
        known = self._shares.get(site)
        if known is None:
            # A site new here: the others' shares have counted this engine since they
            # saw it join, unless it joined a moment ago.
            if self._alone_at_join or now - joined >= SETTLE:
                self._shares[site] = (target, target, now)
                return target
            known = (0, target, joined)
        in_force, waiting, since = known
        if target <= in_force:
            in_force, waiting, since = target, target, now
        elif target != waiting:
            waiting, since = target, now
        elif now - since >= SETTLE:
            in_force = target
        self._shares[site] = (in_force, waiting, since)
        return in_force
