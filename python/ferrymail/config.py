"""ferrymail.Config: everything an Engine needs to know, with documented defaults."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

import msgspec

from .bounce import BounceRule
from .retry import RetryPolicy
from .wire import SmtpOptions

if TYPE_CHECKING:
    from .shaping import Shaping
    from .webhooks import Webhook

# Recipients of one site and one campaign per call into Rust: large enough that the
# crossing and the Python bookkeeping are a small share, small enough that outcomes
# (and their spool writes and events) flow steadily.
BATCH_SIZE = 500
# Recipients held in memory, leased from the spool: Postfix's active queue idea (its
# qmgr_message_recipient_limit is 20,000), so a campaign of millions stays flat in memory.
WINDOW = 20_000
# A lease outlives any sane attempt (RFC 5321's timeouts add up to ~20 minutes only for
# a pathological server); after a crash, leased recipients come back this much later.
LEASE_FOR = 1800.0
# How long a site stays suspended after every MX was unreachable or it answered 421 or
# a rate-limit reply: Postfix's dead-destination backoff is of the same order.
SUSPEND_FOR = 300.0


class SiteLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Shaping for one site (a set of domains sharing MX hosts): connections at once,
    messages per connection, and messages per second (None: unlimited)."""

    connections: int = 10
    messages_per_connection: int = 100
    messages_per_second: float | None = None

    def __post_init__(self) -> None:
        if self.connections < 1:
            raise ValueError(f"SiteLimits.connections {self.connections}: must be at least 1")
        if self.messages_per_connection < 1:
            raise ValueError(
                f"SiteLimits.messages_per_connection {self.messages_per_connection}: "
                "must be at least 1"
            )
        if self.messages_per_second is not None and not self.messages_per_second > 0:
            raise ValueError(
                f"SiteLimits.messages_per_second {self.messages_per_second}: must be above 0"
            )


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An engine's settings. Nothing points at port 25 or real DNS unless left so:

    - `helo_name`: this host's name for EHLO (and the default `smtp.helo_name`).
    - `dns_servers`: None for the system resolver, or ["127.0.0.1:5353", ...].
    - `smtp`: the transport's options; None builds them from `helo_name`.
    - `mx_port`: the port MX hosts are connected on (25; tests use others).
    - `smarthost`: "host:port" to relay everything through (no MX lookups).
    - `routes`: {"example.com": "host:port"} per-domain overrides.
    - `retry`: the retry schedule; `bounce_rules`: classification rules tried first.
    - `suppress_hard_bounces`: add addresses whose bounce is bad-mailbox, bad-domain or
      inactive-mailbox to the suppression list.
    - `site_limits` and `site_overrides` ({"mx.example.com": SiteLimits(...)}, keyed by
      any MX host name of the site): shaping per site.
    - `event_log`: a JSON-lines file every event is appended to.
    - `node`: this engine's name among the engines sharing one spool (a fleet on
      PostgreSQL), carried by every event it makes; None: the host name.
    - `shaping`: a shaping file (its path) or a compiled `ferrymail.shaping.Shaping`; a
      path is loaded and checked when the Config is made (a bad file raises ConfigError
      naming file, line and key), so that afterwards this holds the compiled Shaping or
      None. Its limits, retry policy, bounce rules and automation rules apply per site;
      `site_limits`, `site_overrides` and `retry` apply where it sets none (README,
      "Traffic shaping").
    - `webhooks`: the `[[webhook]]`s of a service config (`ferrymail.webhooks.load`):
      the events they want are written to the spool's webhook outbox in the transaction
      that records each outcome; a `ferrymail.webhooks.WebhookSender` sends them.
    """

    helo_name: str
    dns_servers: list[str] | None = None
    dns_timeout: float = 5.0
    smtp: SmtpOptions | None = None
    mx_port: int = 25
    smarthost: str | None = None
    routes: dict[str, str] = {}
    retry: RetryPolicy = RetryPolicy()
    bounce_rules: list[BounceRule] = []
    suppress_hard_bounces: bool = True
    site_limits: SiteLimits = SiteLimits()
    site_overrides: dict[str, SiteLimits] = {}
    suspend_for: float = SUSPEND_FOR
    batch_size: int = BATCH_SIZE
    window: int = WINDOW
    lease_for: float = LEASE_FOR
    event_log: str | None = None
    shaping: Shaping | str | None = None
    node: str | None = None
    webhooks: tuple[Webhook, ...] = ()

    def __post_init__(self) -> None:
        if self.shaping is not None:
            # Imported here: the shaping package reads this module's defaults.
            from .shaping import Shaping, load

            if isinstance(self.shaping, str | os.PathLike):
                msgspec.structs.force_setattr(self, "shaping", load(self.shaping))
            elif not isinstance(self.shaping, Shaping):
                raise ValueError(
                    f"Config.shaping {self.shaping!r}: a shaping file's path or a Shaping"
                )
        for name in ("batch_size", "window"):
            if getattr(self, name) < 1:
                raise ValueError(f"Config.{name}: must be at least 1")
        for name in ("suspend_for", "lease_for", "dns_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Config.{name}: must be above 0 seconds")
        if self.node is None:
            msgspec.structs.force_setattr(self, "node", socket.gethostname())
        elif not self.node.strip():
            raise ValueError("Config.node: must not be empty (None: the host name)")
        if not 0 < self.mx_port < 65536:
            raise ValueError(f"Config.mx_port {self.mx_port}: not a TCP port")

    @property
    def smtp_options(self) -> SmtpOptions:
        return self.smtp if self.smtp is not None else SmtpOptions(self.helo_name)
