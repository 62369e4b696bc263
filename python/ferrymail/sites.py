"""A site's in-memory state: its ready queues per source (lanes), its connection budget
and rate shared by them, its suspension."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import msgspec

from .config import SiteLimits
from .shaping.bucket import Bucket, TokenBucket
from .shaping.lane import Lane
from .spool import Leased
from .wire import ConnectionRate, Route

if TYPE_CHECKING:
    from .shaping.in_force import Limits
    from .shaping.site_shape import SiteShape
    from .shaping.units import Rate


class Site:
    """Domains sharing one set of MX hosts (every Google Workspace domain is one site):
    one set of limits, one suspension, one lane per source sending to it.

    The site's connection limit and message rate are the site's whole: its lanes send at
    once, each batch's connections a share of what the batches in flight leave free, and
    every message takes a token from the site's bucket and from its lane's (the source's
    own rate there, `per_source` in the shaping file)."""

    def __init__(
        self, key: str, route: Route, limits: SiteLimits, bucket: Bucket | None = None
    ) -> None:
        self.key = key
        self.route = route
        self.limits = limits
        self.lanes: dict[str, Lane] = {}
        # Every domain routed here so far: what `ferrymail flush DOMAIN` finds it by.
        self.domains: set[str] = set()
        self.suspended_until = 0.0
        # What the shaping file (or the Config) says for it; set by the engine.
        self.shape: SiteShape | None = None
        # In force now: the shape's, as automation's actions lower them (`apply`).
        self.connections = max(1, limits.connections)
        self.messages_per_connection = max(1, limits.messages_per_connection)
        self.connection_rate: Rate | None = None
        # The site's rate: this engine's own, or the fleet's (shaping/grants.py).
        self.bucket: Bucket = bucket if bucket is not None else TokenBucket()
        self.bucket.set_rate(limits.messages_per_second)

    @property
    def messages_per_second(self) -> float | None:
        return self.bucket.per_second

    def add(self, source: str, campaign: str, leased: Leased) -> None:
        lane = self.lanes.get(source)
        if lane is None:
            lane = self.lanes[source] = Lane(source)
        lane.add(campaign, leased)

    @property
    def waiting(self) -> int:
        return sum(lane.waiting for lane in self.lanes.values())

    def queued(self) -> Iterator[Leased]:
        """Every recipient waiting in the site's lanes."""
        for lane in self.lanes.values():
            yield from lane

    def suspended(self, now: float) -> bool:
        return now < self.suspended_until

    def connections_free(self) -> int:
        return self.connections - sum(
            lane.connections for lane in self.lanes.values() if lane.in_flight
        )

    def ready_lanes(self) -> list[Lane]:
        """Lanes with recipients and no batch in flight, the one that waited longest first."""
        ready = [lane for lane in self.lanes.values() if not lane.in_flight and lane.queues]
        ready.sort(key=lambda lane: lane.last_batch_at)
        return ready

    def next_start_at(self, now: float) -> float | None:
        """When a lane may start a batch (after a suspension, when the rates allow);
        None when only a batch ending (it wakes the engine) or new recipients can make
        one start."""
        if self.suspended(now):
            return self.suspended_until if self.lanes else None
        ready = self.ready_lanes()
        if not ready or self.connections_free() < 1:
            return None
        lanes_at = min(lane.bucket.next_token_at(now) for lane in ready)
        return max(self.bucket.next_token_at(now), lanes_at)

    def apply(self, limits: Limits) -> None:
        """Sets the site's limits in force (the shape's, lowered by automation, and this
        engine's share of the fleet's connections: 0 when it has none now)."""
        self.connections = max(0, limits.connections)
        self.messages_per_connection = max(1, limits.messages_per_connection)
        self.connection_rate = limits.connection_rate
        self.bucket.set_rate(limits.rate.per_second if limits.rate is not None else None)

    def start(
        self, lane: Lane, limits: Limits, batch_size: int, now: float
    ) -> tuple[str, list[Leased], Route] | None:
        """A batch for `lane` within the site's and the lane's limits (`limits`: the
        source's at this site): its campaign, recipients and route without the source's
        egress; None when the connections or the rates allow nothing yet."""
        free = self.connections_free()
        if free < 1:
            return None
        lane.bucket.set_rate(limits.rate.per_second if limits.rate is not None else None)
        most = min(batch_size, self.bucket.allowance(now), lane.bucket.allowance(now))
        if most < 1:
            return None
        taken = lane.take(most)
        if taken is None:
            return None
        campaign, batch = taken
        self.bucket.spend(len(batch))
        lane.bucket.spend(len(batch))
        # Each lane gets an even share of the site's connections, at most what the
        # batches in flight leave free and the source's own limit. Even when the other
        # lanes are idle: the transport keeps their connections open (pooled, counted
        # per source) for their next batch, and the receiver counts those too.
        share = -(-self.connections // len(self.lanes))
        lane.connections = max(1, min(free, share, limits.connections))
        lane.in_flight = True
        lane.sending = len(batch)
        lane.last_batch_at = now
        rates = self._connection_rates(lane.source, limits.connection_rate)
        route = self._route(lane.connections, limits.messages_per_connection, rates)
        return campaign, batch, route

    def finished(self, lane: Lane) -> None:
        """The lane's batch ended: its connections are the site's again."""
        lane.in_flight = False
        lane.connections = 0
        lane.sending = 0

    def _connection_rates(self, source: str, own: Rate | None) -> list[ConnectionRate]:
        """The buckets a batch's new connections wait on in the transport: the site's
        (shared by all its lanes) and the source's own there (`per_source`)."""
        rates = []
        if self.connection_rate is not None:
            rates.append(ConnectionRate(self.key, self.connection_rate.per_second))
        if own is not None:
            rates.append(ConnectionRate(f"{self.key}\x00{source}", own.per_second))
        return rates

    def _route(self, connections: int, per_connection: int, rates: list[ConnectionRate]) -> Route:
        """The site's route with the limits of one batch, its TLS policy, timeouts,
        connection rates and idle timeout."""
        per_connection = max(1, min(self.messages_per_connection, per_connection))
        route = self.route
        shape = self.shape
        tls = shape.tls if shape is not None else None
        timeouts = shape.timeouts if shape is not None else None
        idle = shape.idle_timeout if shape is not None else None
        wanted = (connections, per_connection, tls, timeouts, rates, idle)
        if (
            route.max_connections,
            route.max_messages_per_connection,
            route.tls,
            route.timeouts,
            route.connection_rates,
            route.idle_timeout,
        ) == wanted:
            return route
        return msgspec.structs.replace(
            route,
            max_connections=connections,
            max_messages_per_connection=per_connection,
            tls=tls,
            timeouts=timeouts,
            connection_rates=rates,
            idle_timeout=idle,
        )

    def hold(self, campaign: str) -> list[Leased]:
        """Takes a campaign's waiting recipients out (automation suspended the campaign
        here); they go back to the spool."""
        return [r for lane in self.lanes.values() for r in lane.hold(campaign)]

    def take_all(self) -> list[Leased]:
        """Every waiting recipient, out of the lanes (automation bounces them, or a
        suspension sends them back to the spool)."""
        return [r for lane in self.lanes.values() for r in lane.take_all()]

    def suspend(self, until: float) -> list[Leased]:
        """Suspends the site (why is in the spool: suspensions.py); returns its waiting
        recipients, which go back to the spool due when the suspension ends."""
        self.suspended_until = max(self.suspended_until, until)
        return self.take_all()

    def lift(self) -> None:
        self.suspended_until = 0.0
