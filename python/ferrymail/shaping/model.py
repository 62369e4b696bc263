"""The compiled shaping data: entries, the limits they resolve to, and automation rules."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

import msgspec

from .. import config, retry, wire
from ..bounce import BounceRule
from ..retry import RetryPolicy
from .units import Rate

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
#: TLS policies, as SmtpOptions.tls names them.
TLS_POLICIES = ("off", "opportunistic", "required")
#: The SMTP timeouts an entry may set: SmtpOptions' names (wire.py), in seconds.
TIMEOUTS = (
    "connect_timeout",
    "greeting_timeout",
    "ehlo_timeout",
    "starttls_timeout",
    "mail_timeout",
    "rcpt_timeout",
    "data_timeout",
    "data_block_timeout",
    "dot_timeout",
    "idle_timeout",
)
#: The limits that exist per site and per site x source, and that an automation rule
#: may `set`.
LIMITS = (
    "connection_limit",
    "max_connection_rate",
    "max_message_rate",
    "max_deliveries_per_connection",
)
RETRY_FIELDS = ("first_retry", "multiplier", "max_interval", "jitter", "max_age")
#: What an automation rule acts on: the whole site, the site from one source (the
#: source that got the reply), or one campaign at the site.
SCOPES = ("site", "source", "campaign")

#: The values in force where no entry sets them: ferrymail's own defaults (config.py
#: SiteLimits, wire.py SmtpOptions, retry.py RetryPolicy), shown as "builtin".
BUILTIN: Mapping[str, object] = {
    "connection_limit": config.SiteLimits().connections,
    "max_connection_rate": None,
    "max_message_rate": None,
    "max_deliveries_per_connection": config.SiteLimits().messages_per_connection,
    "tls": "opportunistic",
    "connect_timeout": wire.CONNECT_TIMEOUT,
    "greeting_timeout": wire.GREETING_TIMEOUT,
    "ehlo_timeout": wire.EHLO_TIMEOUT,
    "starttls_timeout": wire.STARTTLS_TIMEOUT,
    "mail_timeout": wire.MAIL_TIMEOUT,
    "rcpt_timeout": wire.RCPT_TIMEOUT,
    "data_timeout": wire.DATA_TIMEOUT,
    "data_block_timeout": wire.DATA_BLOCK_TIMEOUT,
    "dot_timeout": wire.DOT_TIMEOUT,
    "idle_timeout": wire.IDLE_TIMEOUT,
    "retry.first_retry": retry.FIRST_RETRY,
    "retry.multiplier": retry.MULTIPLIER,
    "retry.max_interval": retry.MAX_INTERVAL,
    "retry.jitter": retry.JITTER,
    "retry.max_age": retry.MAX_AGE,
    **{f"per_source.{name}": None for name in LIMITS},
}


class SourceLimits(msgspec.Struct, frozen=True):
    """Limits of one site from one source (a site x source path); None: only the site's
    own limits apply."""

    connection_limit: int | None = None
    max_connection_rate: Rate | None = None
    max_message_rate: Rate | None = None
    max_deliveries_per_connection: int | None = None


class Limits(msgspec.Struct, frozen=True):
    """What applies to one site (for one recipient domain): the merged values of every
    entry that matched. Rates are None when unlimited. Times are in seconds."""

    connection_limit: int
    max_connection_rate: Rate | None
    max_message_rate: Rate | None
    max_deliveries_per_connection: int
    tls: str
    connect_timeout: float
    greeting_timeout: float
    ehlo_timeout: float
    starttls_timeout: float
    mail_timeout: float
    rcpt_timeout: float
    data_timeout: float
    data_block_timeout: float
    dot_timeout: float
    idle_timeout: float
    retry: RetryPolicy
    per_source: SourceLimits
    bounce_rules: tuple[BounceRule, ...]
    automation: tuple[AutomationRule, ...]

    @classmethod
    def from_values(
        cls,
        values: Mapping[str, object],
        bounce_rules: tuple[BounceRule, ...],
        automation: tuple[AutomationRule, ...],
    ) -> Limits:
        """From merged flat values ("retry.first_retry", "per_source.max_message_rate");
        ValueError when the retry fields do not fit together."""
        plain = {k: v for k, v in values.items() if "." not in k}
        retry_policy = RetryPolicy(
            **{k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("retry.")}  # type: ignore[arg-type]
        )
        per_source = SourceLimits(
            **{k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("per_source.")}  # type: ignore[arg-type]
        )
        return cls(
            **plain,  # type: ignore[arg-type]
            retry=retry_policy,
            per_source=per_source,
            bounce_rules=bounce_rules,
            automation=automation,
        )


class AutomationRule(msgspec.Struct, frozen=True):
    """A reaction to receivers' replies. `regex` is searched (case-insensitively) in the
    reply as automation.subject() writes it: "CODE ENHANCED TEXT" ("421 4.7.28 Our
    system has detected …"), "CODE TEXT" without an enhanced code, line breaks of a
    multi-line reply as single spaces. `threshold` matches within `window` seconds fire
    it (1 and 0.0: `immediate`). It then acts on its `scope` for `duration` seconds:
    `suspend`, `set` lower limits (LIMITS' names), and/or `bounce` what is queued.
    After it ends, `set` limits and suspensions come back over `restore` seconds.
    `id` names it where it is in the file ("provider.google.automation[0]"), `name` as
    the file names it (the id when it does not)."""

    id: str
    name: str
    regex: str
    threshold: int
    window: float
    duration: float
    scope: str = "site"
    suspend: bool = False
    set: Mapping[str, object] = {}
    bounce: bool = False
    restore: float = 0.0
    pattern: re.Pattern[str] | None = None

    def __post_init__(self) -> None:
        if self.pattern is None:
            msgspec.structs.force_setattr(self, "pattern", re.compile(self.regex, re.IGNORECASE))

    @property
    def immediate(self) -> bool:
        return self.threshold == 1


class Entry(msgspec.Struct, frozen=True):
    """One section of the file: `kind` "default", "provider", "domain" or "site", its
    `name` in the file ("provider.google"), the flat values it sets, and its rules."""

    kind: str
    key: str
    values: Mapping[str, object]
    bounce_rules: tuple[BounceRule, ...] = ()
    automation: tuple[AutomationRule, ...] = ()
    mx_suffix: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """As its table header names it: default, provider.google, domain."gmail.com"."""
        return entry_name(self.kind, self.key)


def entry_name(kind: str, key: str) -> str:
    if kind == "default":
        return kind
    return f"{kind}.{key}" if _BARE_KEY.fullmatch(key) else f'{kind}."{key}"'


@dataclasses.dataclass(frozen=True, slots=True)
class Resolved:
    """A site's (and domain's) shaping with where each value came from: `entries`
    applied from least to most specific, `origin[field]` the entry whose value is in
    force ("builtin": ferrymail's default), `provider` the matched provider entry and
    the MX host it matched by."""

    limits: Limits
    entries: tuple[str, ...]
    origin: Mapping[str, str]
    values: Mapping[str, object]
    provider: str | None = None
    provider_mx: str | None = None
