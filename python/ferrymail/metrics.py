"""Prometheus metrics: counters and histograms of the events this process sees, gauges
read from the spool at each scrape, and the ASGI app that serves them at /metrics.

Names follow Prometheus' conventions (`ferrymail_<what>_<unit>_total`, base units). Label
values are bounded: `site` is the MX host an attempt went to, the first MAX_SITES distinct
ones by name and "other" for the rest (a campaign to a million domains has a few thousand
MX hosts, mostly the same big ones); `source` is the egress address (the sources of the
shaping file: few); `state`, `outcome` and `endpoint` come from fixed or configured sets.
No address and no domain is ever a label value.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from .events import Event, FeedbackEvent
from .spool import Spool, open_spool

#: Distinct `site` label values kept; later ones are counted under "other".
MAX_SITES = 50
OTHER = "other"
#: The event types counted as ferrymail_messages_<type>_total{site, source}.
OUTCOMES = ("delivered", "bounced", "deferred", "expired", "failed")
#: What submit decides, counted as ferrymail_recipients_<type>_total.
SUBMITTED = ("queued", "rejected", "suppressed")
FINAL = ("delivered", "bounced", "expired", "failed")
#: Submit to delivered (and to any final state): seconds to days, as email goes. No
#: bucket spans more than about a factor of 3 to 5: histogram_quantile interpolates
#: linearly inside one, so a wide one (60 to 300 s) shows minutes that nobody waited.
LATENCY_BUCKETS = (
    0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 1800, 3600, 4 * 3600, 86400, 5 * 86400,
)  # fmt: skip


class Metrics:
    """The metrics of one process. `observe(event)` counts an event; the spool at
    `spool_at` is read at each scrape (recipients by state, and pending ones by state and
    site, suspensions, shaping actions in force, the webhook outbox); `webhook_posts`
    returns the webhook sender's POSTs {(endpoint, "ok"|"failed"): n}, when the process
    runs one; `watch_connections` gives the engine's open SMTP connections."""

    def __init__(
        self,
        spool_at: str | os.PathLike[str] | None = None,
        webhook_posts: Callable[[], Mapping[tuple[str, str], int]] | None = None,
    ) -> None:
        # No auto_describe: describing would read the spool at registration.
        self.registry = CollectorRegistry()
        self._sites: set[str] = set()
        self._sites_lock = threading.Lock()  # the scrape's thread names sites too
        self._messages = {
            kind: Counter(
                f"ferrymail_messages_{kind}",
                f"Recipients' attempts that ended {kind}, by site (MX host) and source",
                ["site", "source"],
                registry=self.registry,
            )
            for kind in OUTCOMES
        }
        self._submitted = {
            kind: Counter(
                f"ferrymail_recipients_{kind}",
                f"Recipients submit made {kind}",
                registry=self.registry,
            )
            for kind in SUBMITTED
        }
        self._feedback = Counter(
            "ferrymail_feedback",
            "Feedback events (clicked, opened, unsubscribed, bounced-late, complained, "
            "auto-reply) of people, machines excluded",
            ["type"],
            registry=self.registry,
        )
        self._delivery = Histogram(
            "ferrymail_delivery_seconds",
            "From submit to delivered",
            ["site"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._final = Histogram(
            "ferrymail_submit_to_final_seconds",
            "From submit to a final state",
            ["outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        if spool_at is not None or webhook_posts is not None:
            self.registry.register(_SpoolCollector(spool_at, webhook_posts, self.site))

    def watch_connections(self, connections: Callable[[], tuple[int, int]]) -> None:
        """Serve `connections()` (busy, idle: an engine's `connections`) at each scrape
        as ferrymail_connections_open{state}."""
        self.registry.register(_ConnectionsCollector(connections))

    def site(self, mx: str | None) -> str:
        """The `site` label of an MX host: itself among the first MAX_SITES, else OTHER
        ("none": no MX host, e.g. a recipient not tried yet)."""
        if mx is None:
            return "none"
        if mx in self._sites:
            return mx
        with self._sites_lock:
            if len(self._sites) < MAX_SITES:
                self._sites.add(mx)
                return mx
        return OTHER

    def observe(self, event: Event | FeedbackEvent) -> None:
        if isinstance(event, FeedbackEvent):
            if not event.machine:
                self._feedback.labels(event.type).inc()
            return
        if event.type in SUBMITTED:
            self._submitted[event.type].inc()
            return
        counter = self._messages.get(event.type)
        if counter is None:
            return
        site = self.site(event.mx)
        counter.labels(site, event.source or "default").inc()
        if event.type == "delivered":
            self._delivery.labels(site).observe(event.since_submit)
        if event.type in FINAL:
            self._final.labels(event.type).observe(event.since_submit)

    def exposition(self) -> bytes:
        """The text format a scrape gets (reads the spool: call it off the event loop)."""
        return generate_latest(self.registry)

    def app(self) -> Callable[..., Any]:
        """An ASGI app answering GET /metrics (the spool is read on a worker thread)."""
        metrics = self

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":  # served with lifespan="off"
                return
            if scope["path"] != "/metrics" or scope["method"] not in ("GET", "HEAD"):
                await _answer(send, 404, b"not found\n", "text/plain")
                return
            body = await asyncio.get_running_loop().run_in_executor(None, metrics.exposition)
            await _answer(send, 200, body, CONTENT_TYPE_LATEST)

        return app


async def _answer(send: Any, status: int, body: bytes, content_type: str) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _SpoolCollector(Collector):
    """Gauges read from the spool at scrape time, so they are right whichever process
    changed the spool (another engine of the fleet, `ferrymail flush`)."""

    def __init__(
        self,
        spool_at: str | os.PathLike[str] | None,
        webhook_posts: Callable[[], Mapping[tuple[str, str], int]] | None,
        site: Callable[[str | None], str],
    ) -> None:
        self._site = site
        self._spool_at = spool_at
        self._spool: Spool | None = None
        self._lock = threading.Lock()
        self._posts = webhook_posts

    def collect(self) -> Iterator[Any]:
        if self._spool_at is not None:
            with self._lock:
                if self._spool is None:
                    self._spool = open_spool(self._spool_at, read_only=True, light=True)
                counts = self._spool.counts()
                pending = self._spool.pending_by_site()
                suspensions = len(self._spool.suspensions())
                actions = len(self._spool.actions())
                backlog = self._spool.webhook_backlog()
            queue = GaugeMetricFamily(
                "ferrymail_queue_recipients", "Recipients in the spool by state", labels=["state"]
            )
            for state, n in counts.items():
                queue.add_metric([state], n)
            yield queue
            yield self._by_site(pending)
            yield GaugeMetricFamily(
                "ferrymail_suspensions", "Sites suspended now", value=suspensions
            )
            yield GaugeMetricFamily(
                "ferrymail_shaping_actions",
                "Shaping automation actions in force (and restoring)",
                value=actions,
            )
            waiting = GaugeMetricFamily(
                "ferrymail_webhook_backlog_events",
                "Events in the webhook outbox: waiting, or dead letters",
                labels=["endpoint", "state"],
            )
            for b in backlog:
                waiting.add_metric([b.endpoint, "waiting"], b.pending)
                waiting.add_metric([b.endpoint, "dead"], b.dead)
            yield waiting
        if self._posts is not None:
            posts = CounterMetricFamily(
                "ferrymail_webhook_posts",
                "Webhook POSTs by this process, by endpoint and result",
                labels=["endpoint", "result"],
            )
            for (endpoint, result), n in sorted(self._posts().items()):
                posts.add_metric([endpoint, result], n)
            yield posts

    def _by_site(self, pending: list[tuple[str, str | None, int]]) -> GaugeMetricFamily:
        # The biggest queues claim the free site labels first; the rest add up in "other".
        by: Tally[tuple[str, str]] = Tally()
        for state, mx, n in sorted(pending, key=lambda row: -row[2]):
            by[state, self._site(mx)] += n
        family = GaugeMetricFamily(
            "ferrymail_queue_pending_recipients",
            "Pending recipients by state and site (the MX host of their last attempt; "
            '"none": not tried yet)',
            labels=["state", "site"],
        )
        for (state, site), n in sorted(by.items()):
            family.add_metric([state, site], n)
        return family


class _ConnectionsCollector(Collector):
    """The engine's open SMTP connections, asked at scrape time."""

    def __init__(self, connections: Callable[[], tuple[int, int]]) -> None:
        self._connections = connections

    def collect(self) -> Iterator[Any]:
        busy, idle = self._connections()
        family = GaugeMetricFamily(
            "ferrymail_connections_open",
            "SMTP connections open: busy (in a delivery, being opened or closing) or idle "
            "(kept for the next batch)",
            labels=["state"],
        )
        family.add_metric(["busy"], busy)
        family.add_metric(["idle"], idle)
        yield family
