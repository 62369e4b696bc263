"""A site's in-memory queue and shaping: recipients by campaign, a batch in flight, rate."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import msgspec

from .config import SiteLimits
from .spool import Leased
from .wire import Route

if TYPE_CHECKING:
    from .shaping.site_shape import SiteShape


class Site:
    """Domains sharing one set of MX hosts (every Google Workspace domain is one site):
    one queue, one set of limits, one suspension. At most one batch is in flight: its
    worker count is the site's connection limit, so the site never has more
    connections than that."""

    def __init__(self, key: str, route: Route, limits: SiteLimits) -> None:
        self.key = key
        self.route = route
        self.limits = limits
        self.queues: dict[str, deque[Leased]] = {}
        # Every domain routed here so far: what `ferrymail flush DOMAIN` finds it by.
        self.domains: set[str] = set()
        self.in_flight = False
        self.suspended_until = 0.0
        # What the shaping file (or the Config) says for it; set by the engine.
        self.shape: SiteShape | None = None
        # In force now: the shape's, as automation's actions lower them (`apply`).
        self.messages_per_second = limits.messages_per_second
        # Token bucket for messages_per_second: at most one second's worth saved up.
        self._tokens = 0.0
        self._filled_at = 0.0

    def add(self, campaign: str, leased: Leased) -> None:
        self.queues.setdefault(campaign, deque()).append(leased)

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def suspended(self, now: float) -> bool:
        return now < self.suspended_until

    def ready(self, now: float) -> bool:
        return not self.in_flight and not self.suspended(now) and any(self.queues.values())

    def peek(self) -> str | None:
        """The campaign `take` would take a batch of next."""
        return next((campaign for campaign, queue in self.queues.items() if queue), None)

    def take(self, batch_size: int, now: float) -> tuple[str, list[Leased]] | None:
        """The next batch (one campaign, oldest campaign queue first), within the rate;
        None when the rate allows nothing yet."""
        allowed = min(batch_size, self._allowance(now))
        if allowed < 1:
            return None
        for campaign, queue in self.queues.items():
            if queue:
                batch = [queue.popleft() for _ in range(min(allowed, len(queue)))]
                if not queue:
                    del self.queues[campaign]
                self._tokens -= len(batch)
                return campaign, batch
        return None

    def next_token_at(self, now: float) -> float:
        """When the rate allows one more message."""
        rate = self.messages_per_second
        if rate is None or self._tokens >= 1:
            return now
        return now + (1 - self._tokens) / rate

    def _allowance(self, now: float) -> int:
        rate = self.messages_per_second
        if rate is None:
            self._tokens = float("inf")
            return 1 << 30
        if self._filled_at == 0.0:
            self._tokens, self._filled_at = max(1.0, rate), now
        self._tokens = min(max(1.0, rate), self._tokens + (now - self._filled_at) * rate)
        self._filled_at = now
        return int(self._tokens)

    def apply(self, connections: int, per_connection: int, per_second: float | None) -> None:
        """Sets the limits in force (the shape's, lowered by automation): the next batch's
        route carries the connection limits, TLS policy and timeouts, the token bucket
        the rate."""
        connections, per_connection = max(1, connections), max(1, per_connection)
        route = self.route
        tls = self.shape.tls if self.shape is not None else None
        timeouts = self.shape.timeouts if self.shape is not None else None
        wanted = (connections, per_connection, tls, timeouts)
        if (
            route.max_connections,
            route.max_messages_per_connection,
            route.tls,
            route.timeouts,
        ) != wanted:
            self.route = msgspec.structs.replace(
                route,
                max_connections=connections,
                max_messages_per_connection=per_connection,
                tls=tls,
                timeouts=timeouts,
            )
        if per_second != self.messages_per_second:
            self.messages_per_second = per_second
            if per_second is not None:  # a lower rate starts with at most its own burst
                self._tokens = min(self._tokens, max(1.0, per_second))

    def hold(self, campaign: str) -> list[Leased]:
        """Takes a campaign's waiting recipients out (automation suspended the campaign
        here); they go back to the spool."""
        return list(self.queues.pop(campaign, ()))

    def take_all(self) -> list[Leased]:
        """Every waiting recipient, out of the queues (automation bounces them)."""
        waiting = [r for q in self.queues.values() for r in q]
        self.queues.clear()
        return waiting

    def suspend(self, until: float) -> list[Leased]:
        """Suspends the site (why is in the spool: suspensions.py); returns its waiting
        recipients, which go back to the spool due when the suspension ends."""
        self.suspended_until = max(self.suspended_until, until)
        waiting = [r for q in self.queues.values() for r in q]
        self.queues.clear()
        return waiting

    def lift(self) -> None:
        self.suspended_until = 0.0
