"""The tracking server: click redirects, open pixels and one-click unsubscribes (ASGI)."""

from __future__ import annotations

from ..events import EventBus
from ..spool import Spool
from .agents import APPLE_NETWORKS, IMAGE_PROXIES, SCANNERS
from .app import TrackingApp
from .config import WebConfig, load


def app(*, spool: Spool, config: WebConfig, events: EventBus | None = None) -> TrackingApp:
    """The ASGI application serving `config`'s endpoints over `spool` (which stays the
    caller's: the app only uses it, from a spool thread of its own). `events`: a bus
    to publish the FeedbackEvents to (the web process's event log).

    Mount it in any ASGI server, or run `ferrymail serve`. Its lifespan shutdown (or
    `await app.aclose()`) commits the clicks and opens still queued."""
    return TrackingApp(spool, config, events)


__all__ = ["APPLE_NETWORKS", "IMAGE_PROXIES", "SCANNERS", "TrackingApp", "WebConfig", "app", "load"]
