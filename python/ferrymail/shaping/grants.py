"""Fleet rates: a site's message rate shared by every engine on one PostgreSQL spool, taken
from a bucket in the spool in grants of a fraction of a second's worth, never a round
trip per message.

Each site has one token bucket in the spool (`rate_bucket`), refilled at the site's rate
and holding at most one second's worth, as a local bucket does. An engine takes a grant
of GRANT_SECONDS' worth of tokens when its own runs low (half a grant left), and spends
them locally; tokens it has not spent after GRANT_TTL are dropped, so an engine that
went quiet cannot come back with a burst. The fleet therefore sends at most the rate
plus one second's burst, like one engine, and falls short of the rate only by what its
engines drop: at most one grant per engine per GRANT_TTL when their queues run dry.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable

_log = logging.getLogger(__name__)

#: A grant is this many seconds of the site's rate (and at least one token).
GRANT_SECONDS = 0.25
#: Granted tokens not spent within this long are dropped.
GRANT_TTL = 1.0
#: After the spool's bucket gave nothing, or a grant failed, ask again after this long.
RETRY_AFTER = 0.05

#: Takes up to `want` tokens from the spool's bucket `key` refilled at `per_second`;
#: returns how many it got (SqliteSpool/PostgresSpool.take_tokens, on the spool thread).
Take = Callable[[str, float, int], Awaitable[int]]


class FleetBucket:
    """A site's rate, shared through the spool: the same methods as TokenBucket, so the
    site does not know which it has."""

    __slots__ = (
        "_asking",
        "_granted_at",
        "_key",
        "_retry_at",
        "_take",
        "_tokens",
        "_wake",
        "per_second",
    )

    def __init__(
        self, key: str, per_second: float | None, take: Take, wake: Callable[[], None]
    ) -> None:
        self._key = key
        self.per_second = per_second
        self._take = take
        self._wake = wake
        self._tokens = 0
        self._granted_at = 0.0
        self._asking: asyncio.Task[None] | None = None
        self._retry_at = 0.0

    def allowance(self, now: float) -> int:
        if self.per_second is None:
            return 1 << 30
        if self._tokens and now - self._granted_at > GRANT_TTL:
            self._tokens = 0  # a quiet engine does not keep a burst for later
        if self._tokens < self._grant() / 2:
            self._ask(now)
        return self._tokens

    def spend(self, tokens: int) -> None:
        if self.per_second is not None:
            self._tokens -= tokens

    def next_token_at(self, now: float) -> float:
        if self.per_second is None or self._tokens >= 1:
            return now
        # A grant on its way wakes the engine when it comes; otherwise ask again soon.
        return max(now, self._retry_at) if self._asking is None else now + GRANT_TTL

    def set_rate(self, per_second: float | None) -> None:
        if per_second != self.per_second:
            self.per_second = per_second
            if per_second is not None:
                self._tokens = min(self._tokens, self._grant())

    def _grant(self) -> int:
        return max(1, math.ceil((self.per_second or 0) * GRANT_SECONDS))

    def _ask(self, now: float) -> None:
        if self._asking is not None or now < self._retry_at or self.per_second is None:
            return
        self._asking = asyncio.get_running_loop().create_task(
            self._fetch(self.per_second, self._grant())
        )

    async def _fetch(self, per_second: float, want: int) -> None:
        try:
            got = await self._take(self._key, per_second, want)
        except Exception as e:  # the spool is unreachable: the site waits, nothing is lost
            _log.warning("ferrymail: no rate grant for site %s: %s", self._key, e)
            got = 0
        finally:
            self._asking = None
        now = time.time()  # the engine's clock
        if got:
            self._tokens += got
            self._granted_at = now
        if got < want:
            # The spool's bucket ran dry (the fleet takes all the rate): ask again when
            # it has refilled a little, not at once (every pump round would ask).
            self._retry_at = now + max(RETRY_AFTER, 1 / per_second)
        self._wake()
