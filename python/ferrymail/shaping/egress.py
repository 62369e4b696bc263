"""Egress: the source each recipient leaves from (its campaign's pool, warm-up allowances,
sources blocked at the site), and what each source sent per provider today."""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Callable, Mapping

from ..spooler import Spooler
from .shaping import Shaping
from .sources import DEFAULT_POOL, HOST_SOURCE, Pool, Source

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class Assignment:
    """The lanes (source names, "" for the host's own address) of the first
    `len(lanes)` recipients of a group; the others wait until `wait_until`."""

    lanes: list[str]
    wait_until: float | None = None


class Egress:
    """Chooses sources for one engine. Each recipient routed to a site is given a source
    of its campaign's pool there, going round the pool's schedule message by message
    (smooth weighted round-robin, so a 3:1 pool splits 3:1 however the batches fall),
    skipping the sources blocked at the site and those whose warm-up allowance for the
    provider is used up today (UTC), counting what they have queued already. Counts of
    what each source delivered per provider today live in the spool, so a restart does
    not give a warming source a second allowance."""

    def __init__(self, spooler: Spooler) -> None:
        self._spooler = spooler
        self._day = ""
        self._sent: dict[tuple[str, str], int] = {}
        self._counters: dict[tuple[str, str], int] = {}
        self._warned: set[str] = set()

    async def load(self, now: float) -> None:
        self._day = _day(now)
        self._sent = await self._spooler.call(self._spooler.spool.warmup_sent, self._day)

    def assign(
        self,
        shaping: Shaping,
        pool_name: str | None,
        site: str,
        provider: str,
        count: int,
        blocked: Mapping[str, float],
        pending: Callable[[str], int],
        now: float,
    ) -> Assignment:
        """Sources for `count` recipients of one campaign at `site`. `blocked`: source
        -> until, for those taken out of their pools there; `pending(name)`: how many
        recipients the source has queued or in flight for `provider`, which its
        allowance must cover too."""
        day = _day(now)
        if day != self._day:  # a new day: yesterday's counts no longer limit anyone
            self._day, self._sent = day, {}
        pool = self._pool(shaping, pool_name)
        if len(pool.weights) == 1:  # the common case, one source: no round to go
            only = shaping.sources[pool.weights[0][0]]
            if only.warmup is None and only.name not in blocked:
                return Assignment([lane_of(only)] * count)
        date = datetime.date.fromisoformat(day)
        left: dict[str, int | None] = {}
        for name, _ in pool.weights:
            source = shaping.sources[name]
            if name in blocked:
                left[name] = 0
            elif source.warmup is None:
                left[name] = None
            else:
                sent = self._sent.get((name, provider), 0) + pending(lane_of(source))
                left[name] = source.allowance(date, sent)

        def can_take(name: str) -> bool:
            room = left[name]
            return room is None or room > 0

        key = (pool.name, site)
        counter = self._counters.get(key, 0)
        if all(room is None for room in left.values()):  # no source capped nor blocked
            size = len(pool.schedule)
            order = [lane_of(shaping.sources[name]) for name in pool.schedule]
            self._counters[key] = counter + count
            return Assignment([order[(counter + i) % size] for i in range(count)])
        lanes: list[str] = []
        for _ in range(count):
            chosen = pool.choose(counter, can_take)
            if chosen is None:
                break
            counter += 1
            room = left[chosen]
            if room is not None:
                left[chosen] = room - 1
            lanes.append(lane_of(shaping.sources[chosen]))
        self._counters[key] = counter
        if len(lanes) == count:
            return Assignment(lanes)
        # Every source is blocked here or has its allowance queued: wait for the first
        # block to end, or for tomorrow's allowances.
        tomorrow = datetime.datetime.combine(
            date + datetime.timedelta(days=1), datetime.time(), datetime.UTC
        ).timestamp()
        ends = [until for name, until in blocked.items() if name in left]
        return Assignment(lanes, wait_until=min([tomorrow, *ends]))

    def _pool(self, shaping: Shaping, wanted: str | None) -> Pool:
        name = wanted or DEFAULT_POOL
        pool = shaping.pools.get(name)
        if pool is None:
            if name not in self._warned:
                self._warned.add(name)
                _log.warning(
                    "ferrymail: pool %r is not in the shaping file %s: sending from the "
                    "default pool",
                    name,
                    shaping.name,
                )
            pool = shaping.pools[DEFAULT_POOL]
        return pool

    async def sent(self, source: Source, provider: str, messages: int, now: float) -> None:
        """Counts messages a source delivered to a provider (only sources with a
        warm-up schedule need counting)."""
        if messages <= 0 or source.warmup is None:
            return
        day = _day(now)
        if day == self._day:
            key = (source.name, provider)
            self._sent[key] = self._sent.get(key, 0) + messages
        spool = self._spooler.spool
        await self._spooler.call(spool.add_warmup_sent, [(source.name, provider, day, messages)])


def lane_of(source: Source) -> str:
    """The name of a source's lanes: "" for the host's own address."""
    return "" if is_host(source) else source.name


def is_host(source: Source | None) -> bool:
    """The host's own address: the transport's settings, no source in the route."""
    return source is None or (source.name == HOST_SOURCE and source.address is None)


def _day(now: float) -> str:
    return datetime.datetime.fromtimestamp(now, datetime.UTC).date().isoformat()


def source_of(shaping: Shaping, lane: str) -> Source | None:
    """The source a lane sends from; None when the shaping file in force no longer has
    it (a reload took it out: its recipients go to the pool's other sources)."""
    if lane:
        return shaping.sources.get(lane)
    host = shaping.sources.get(HOST_SOURCE)
    return host if host is not None and is_host(host) else Source(HOST_SOURCE)
