"""Traffic: the sites an engine sends to, their lanes, and which lane sends what next under
the shaping file in force, automation's actions and the pools' sources."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import msgspec

from ..config import Config, SiteLimits
from ..errors import Error
from ..routing import Destination
from ..shaping import Shaping
from ..shaping.bucket import Bucket
from ..shaping.egress import Egress, source_of
from ..shaping.in_force import ActionsInForce
from ..shaping.lane import Lane
from ..shaping.site_shape import SiteShapes
from ..shaping.sources import Source
from ..sites import Site
from ..spool import Leased
from ..wire import Route
from .campaigns import Campaigns

#: Recipients going back to the spool, each with when it is due again.
Back = list[tuple[Leased, float]]


@dataclasses.dataclass(frozen=True, slots=True)
class Start:
    """A batch a lane may send now: its recipients (one campaign) and the route with
    the site's and the source's limits and egress."""

    site: Site
    lane: Lane
    campaign: str
    batch: list[Leased]
    route: Route
    source: Source


class Traffic:
    """The engine's sites (by key) and their shaping. Recipients routed to a site are
    given sources (`assign`); `plan` says which lanes start a batch now."""

    def __init__(
        self,
        config: Config,
        shaping: Shaping,
        actions: ActionsInForce,
        egress: Egress,
        campaigns: Campaigns,
        fleet_bucket: Callable[[str], Bucket] | None = None,
        connection_share: Callable[[str, int, float], int] | None = None,
    ) -> None:
        self.sites: dict[str, Site] = {}
        # Makes a site's rate bucket shared by the fleet (None: each engine its own).
        self._fleet_bucket = fleet_bucket
        # (site, the fleet's connection limit, now) -> this engine's share of it
        # (shaping/fleet.py; None: the whole limit is this engine's).
        self._connection_share = connection_share
        self.shaping = shaping
        self._shapes = SiteShapes(config)
        self._batch_size = config.batch_size
        self._actions = actions
        self._egress = egress
        self._campaigns = campaigns

    def site(self, dest: Destination, domain: str) -> tuple[Site, bool]:
        """The site a domain's destination is, and whether it is new here."""
        route = dest.route
        if route is None:
            raise Error(f"{domain}: a destination without a route has no site")
        site = self.sites.get(dest.site)
        new = site is None
        if site is None:
            bucket = self._fleet_bucket(dest.site) if self._fleet_bucket is not None else None
            site = self.sites[dest.site] = Site(dest.site, route, dest.limits, bucket)
        else:
            site.route = route  # addresses may have changed with DNS
        site.domains.add(domain)
        if site.shape is None:
            self._shape(site, domain, dest.limits)
        return site, new

    def reload(self, shaping: Shaping) -> None:
        """Puts a new shaping file in force; each site is shaped again by it."""
        self.shaping = shaping
        for site in self.sites.values():
            if site.domains:
                self._shape(site, next(iter(site.domains)), site.limits)

    def _shape(self, site: Site, domain: str, fallback: SiteLimits) -> None:
        resolved = self.shaping.resolve(domain, site.key, [h.name for h in site.route.hosts])
        site.shape = self._shapes.shape(resolved, fallback)

    def queued(self) -> Iterator[Leased]:
        """Every recipient waiting in a lane."""
        for site in self.sites.values():
            yield from site.queued()

    def assign(self, site: Site, waiting: list[Leased], now: float) -> Back:
        """Puts recipients in the lanes of the sources their campaigns' pools give them
        at the site; returns those no source can take now, with when to try again."""
        provider = provider_of(site)
        blocked = self._actions.blocked(site.key, now, _provider(site))
        by_campaign: dict[str, list[Leased]] = {}
        for r in waiting:
            by_campaign.setdefault(r.campaign, []).append(r)
        back: Back = []
        for campaign_id, recipients in by_campaign.items():
            assignment = self._egress.assign(
                self.shaping,
                self._campaigns.pool(campaign_id),
                site.key,
                provider,
                len(recipients),
                blocked,
                lambda lane: self._pending(lane, provider),
                now,
            )
            for r, lane in zip(recipients, assignment.lanes, strict=False):
                site.add(lane, campaign_id, r)
            until = assignment.wait_until or now
            back += [(r, until) for r in recipients[len(assignment.lanes) :]]
        return back

    def _pending(self, lane: str, provider: str) -> int:
        """Recipients a source has queued or in flight for a provider's sites."""
        count = 0
        for site in self.sites.values():
            found = site.lanes.get(lane)
            if found is not None and provider_of(site) == provider:
                count += found.waiting + found.sending
        return count

    def plan(self, now: float) -> tuple[list[Start], Back]:
        """The batches the lanes may start now, within their sites' and sources' limits;
        and the recipients of sources taken out of their pools that no other source can
        take now (they go back to the spool)."""
        starts: list[Start] = []
        back: Back = []
        for site in self.sites.values():
            shape = site.shape
            if shape is None or site.suspended(now) or not site.lanes:
                continue
            back += self._reassign(site, now)
            limits = self._actions.limits(site.key, shape.site_limits, now)
            if self._connection_share is not None:
                share = self._connection_share(site.key, limits.connections, now)
                limits = dataclasses.replace(limits, connections=share)
            site.apply(limits)
            for lane in site.ready_lanes():
                source = source_of(self.shaping, lane.source)
                if source is None:  # reassigned above: cannot happen
                    continue
                limits = self._actions.limits(
                    site.key, shape.source_limits, now, lane.source, shape.provider
                )
                started = site.start(lane, limits, self._batch_size, now)
                if started is None:
                    if site.connections_free() < 1:
                        break
                    continue
                campaign, batch, route = started
                if lane.source:
                    route = msgspec.structs.replace(
                        route, source_address=source.address, helo_name=source.ehlo
                    )
                starts.append(Start(site, lane, campaign, batch, route, source))
        return starts, back

    def _reassign(self, site: Site, now: float) -> Back:
        """Moves the recipients of sources taken out of their pools at the site (a
        receiver blocked them, or a reload removed them) to the pools' other sources."""
        blocked = self._actions.blocked(site.key, now, _provider(site))
        moved: list[Leased] = []
        for lane in list(site.lanes.values()):
            gone = source_of(self.shaping, lane.source) is None
            if lane.queues and (gone or lane.source in blocked):
                moved += lane.take_all()
            if gone and not lane.in_flight:  # its share of connections is the others'
                del site.lanes[lane.source]
        return self.assign(site, moved, now) if moved else []


def provider_of(site: Site) -> str:
    """What a site's warm-up counts go by: its provider entry, or the site itself."""
    shape = site.shape
    return (shape.provider if shape is not None else None) or site.key


def _provider(site: Site) -> str | None:
    """The provider entry a site matched ("provider.google"), None for none."""
    return site.shape.provider if site.shape is not None else None
