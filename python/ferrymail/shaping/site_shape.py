"""SiteShape: what a site's resolved shaping means to the engine, with the Config's values
where the shaping file sets none."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ..bounce import BounceClassifier
from ..config import Config, SiteLimits
from ..retry import RetryPolicy
from ..wire import SessionTimeouts
from .in_force import Limits as InForce
from .model import AutomationRule, Limits, Resolved, SourceLimits
from .units import Rate

_RETRY = ("first_retry", "multiplier", "max_interval", "jitter", "max_age")


@dataclasses.dataclass(frozen=True, slots=True)
class SiteShape:
    """A site's configured limits (before automation's actions), its retry policy, the
    bounce classifier its outcomes are judged with (None: the engine's own) and the
    automation rules its replies are matched against."""

    connections: int
    messages_per_connection: int
    rate: Rate | None
    retry: RetryPolicy
    classifier: BounceClassifier | None
    automation: tuple[AutomationRule, ...]
    #: The shaping file's entries that apply, least specific first ("default",
    #: "provider.google", …).
    entries: tuple[str, ...]
    #: The TLS policy and SMTP timeouts of the site's batches (Route.tls, .timeouts);
    #: None where the file sets none (the transport's). A file that sets some timeouts
    #: gets the transport's for the others.
    tls: str | None = None
    timeouts: SessionTimeouts | None = None
    #: The provider entry that matched ("provider.google"), None for none: a source's
    #: warm-up counts per provider, or per site where none matched.
    provider: str | None = None
    #: Limits of each source at the site (`[X.per_source]`); None: the site's.
    per_source: SourceLimits = dataclasses.field(default_factory=SourceLimits)
    #: The site's new connections' rate (`max_connection_rate`), None: unpaced.
    connection_rate: Rate | None = None
    #: How long its connections wait idle in the pool for the next batch; None where
    #: the file sets none (the transport's).
    idle_timeout: float | None = None

    @property
    def site_limits(self) -> InForce:
        """The site's configured limits, before automation."""
        return InForce(
            self.connections, self.messages_per_connection, self.rate, self.connection_rate
        )

    @property
    def source_limits(self) -> InForce:
        """One source's configured limits at the site, before automation: its own where
        the file sets them, else the site's (the site's whole caps them anyway)."""
        p = self.per_source
        return InForce(
            p.connection_limit or self.connections,
            p.max_deliveries_per_connection or self.messages_per_connection,
            p.max_message_rate or self.rate,
            # Only the source's own: the site's is paced by the site's bucket already.
            p.max_connection_rate,
        )


class SiteShapes:
    """Builds SiteShapes for one Config: a value the shaping file leaves at ferrymail's
    built-in default is the Config's (`site_limits`, `site_overrides`, `retry`), so that
    an engine without a shaping file behaves as before, and a file overrides only what
    it sets. Classifiers are shared by sites with the same bounce rules."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._classifiers: dict[tuple[object, ...], BounceClassifier] = {}

    def shape(self, resolved: Resolved, fallback: SiteLimits) -> SiteShape:
        limits, origin = resolved.limits, resolved.origin

        def set_by_file(name: str) -> bool:
            return origin.get(name, "builtin") != "builtin"

        rate: Rate | None
        if set_by_file("max_message_rate"):
            rate = limits.max_message_rate
        elif fallback.messages_per_second is not None:
            rate = Rate(fallback.messages_per_second, 1.0)
        else:
            rate = None
        retry = (
            limits.retry
            if any(set_by_file(f"retry.{name}") for name in _RETRY)
            else self._config.retry
        )
        return SiteShape(
            connections=(
                limits.connection_limit if set_by_file("connection_limit") else fallback.connections
            ),
            messages_per_connection=(
                limits.max_deliveries_per_connection
                if set_by_file("max_deliveries_per_connection")
                else fallback.messages_per_connection
            ),
            rate=rate,
            retry=retry,
            classifier=self._classifier(limits.bounce_rules),
            automation=limits.automation,
            entries=resolved.entries,
            tls=limits.tls if set_by_file("tls") else None,
            provider=resolved.provider,
            timeouts=self._timeouts(limits, set_by_file),
            per_source=limits.per_source,
            connection_rate=(
                limits.max_connection_rate if set_by_file("max_connection_rate") else None
            ),
            idle_timeout=limits.idle_timeout if set_by_file("idle_timeout") else None,
        )

    def _timeouts(
        self, limits: Limits, set_by_file: Callable[[str], bool]
    ) -> SessionTimeouts | None:
        names = [n for n in SessionTimeouts.__struct_fields__ if set_by_file(n)]
        if not names:
            return None
        transport = self._config.smtp_options
        return SessionTimeouts(
            **{
                n: getattr(limits if n in names else transport, n)
                for n in SessionTimeouts.__struct_fields__
            }
        )

    def _classifier(self, rules: tuple[object, ...]) -> BounceClassifier | None:
        """The file's rules first (most specific entry's first), then the Config's."""
        if not rules:
            return None
        found = self._classifiers.get(rules)
        if found is None:
            combined = [*rules, *self._config.bounce_rules]
            found = self._classifiers[rules] = BounceClassifier(combined)  # type: ignore[arg-type]
        return found
