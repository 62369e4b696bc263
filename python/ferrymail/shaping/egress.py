"""Egress: the source each batch leaves from (its campaign's pool, warm-up allowances,
sources blocked at the site), and what each source sent per provider today."""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Mapping

from ..spooler import Spooler
from .shaping import Shaping
from .sources import DEFAULT_POOL, HOST_SOURCE, Source, choose_source

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class Choice:
    """A batch's source and how many messages it may carry (None: no warm-up cap); or,
    without a source, until when the batch's recipients wait."""

    source: Source | None
    allowance: int | None = None
    wait_until: float | None = None
    #: The (pool, site) whose round it is a step of (`Egress.taken`).
    round: tuple[str, str] = ("", "")


class Egress:
    """Chooses sources for one engine. Each (pool, site) goes round its pool's schedule
    batch by batch (smooth weighted round-robin), skipping the sources blocked at the
    site and those whose warm-up allowance for the provider is used up today (UTC).
    Counts of what each source delivered per provider today live in the spool, so a
    restart does not give a warming source a second allowance."""

    def __init__(self, spooler: Spooler) -> None:
        self._spooler = spooler
        self._day = ""
        self._sent: dict[tuple[str, str], int] = {}
        self._counters: dict[tuple[str, str], int] = {}
        self._warned: set[str] = set()

    async def load(self, now: float) -> None:
        self._day = _day(now)
        self._sent = await self._spooler.call(self._spooler.spool.warmup_sent, self._day)

    def choose(
        self,
        shaping: Shaping,
        pool_name: str | None,
        site: str,
        provider: str,
        blocked: Mapping[str, float],
        now: float,
    ) -> Choice:
        day = _day(now)
        if day != self._day:  # a new day: yesterday's counts no longer limit anyone
            self._day, self._sent = day, {}
        name = pool_name or DEFAULT_POOL
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
        key = (pool.name, site)
        counter = self._counters.get(key, 0)
        sent = {s: self._sent.get((s, provider), 0) for s, _ in pool.weights}
        date = datetime.date.fromisoformat(day)
        source = choose_source(
            pool, shaping.sources, counter, day=date, sent_today=sent, blocked=blocked
        )
        if source is None:
            # Every source is blocked here or has sent its allowance: wait for the
            # first block to end, or for tomorrow's allowances.
            tomorrow = datetime.datetime.combine(
                date + datetime.timedelta(days=1), datetime.time(), datetime.UTC
            ).timestamp()
            ends = [until for s, until in blocked.items() if s in sent]
            return Choice(None, wait_until=min([tomorrow, *ends]), round=key)
        return Choice(source, source.allowance(date, sent[source.name]), round=key)

    def taken(self, choice: Choice) -> None:
        """A batch left from the choice's source: its round moves on (a choice whose
        batch the rate did not allow yet is made again, the same)."""
        self._counters[choice.round] = self._counters.get(choice.round, 0) + 1

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


def is_host(source: Source | None) -> bool:
    """The host's own address: the transport's settings, no source in the route."""
    return source is None or (source.name == HOST_SOURCE and source.address is None)


def _day(now: float) -> str:
    return datetime.datetime.fromtimestamp(now, datetime.UTC).date().isoformat()
