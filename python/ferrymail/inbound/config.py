"""InboundConfig: the bounce domain listener's settings (a TOML file for `ferrymail inbound`)."""

from __future__ import annotations

import os
from typing import Literal

import msgspec

from ..errors import ConfigError
from ..settings_file import load_settings
from ..web.config import MIN_SECRET

#: Postfix's message_size_limit default: a bounce quotes the original, and a feedback
#: report carries it whole, so the limit is the size of the mail ferrymail sends.
MAX_MESSAGE_SIZE = 10_240_000
#: Connections served at once; more get 421 (Postfix's smtpd process limit is 100).
MAX_CONNECTIONS = 100
#: Recipients of one message: a DSN or a report goes to one address.
MAX_RECIPIENTS = 100
#: Seconds a client may take per command or data line: RFC 5321 §4.5.3.2.7 asks a
#: server for 5 minutes; a bounce domain may be stricter (Postfix's smtpd_timeout).
TIMEOUT = 300.0


class InboundConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What `ferrymail inbound` accepts and how it acts on it.

    In TOML (`ferrymail inbound --config inbound.toml`), the same names at the top
    level:

        domains = ["bounces.example.com"]
        verp_secrets = ["the campaigns' VERP (or Tracking) secret"]
        tracking_secrets = ["the campaigns' Tracking secret"]
        unsubscribe_secrets = []
        unsubscribe_scope = "list"
    """

    #: The domains it receives mail for (the campaigns' bounce domain, the domain of
    #: `Unsubscribe.mailto`): RCPT TO any other domain gets 550 5.7.1 (no relay).
    domains: list[str]
    #: The campaigns' VERP secrets (`Verp.secret`, else their tracking or unsubscribe
    #: secret): a token is tried with each, so that secrets can be rotated. Empty: the
    #: tracking and unsubscribe secrets.
    verp_secrets: list[str] = []
    #: The campaigns' `Tracking.secret`s: a complaint quoting the original's links is
    #: matched by the tracking token in them.
    tracking_secrets: list[str] = []
    #: The campaigns' `Unsubscribe.secret`s (mailto unsubscribes, the quoted
    #: List-Unsubscribe); empty: the tracking secrets.
    unsubscribe_secrets: list[str] = []
    #: What a mailto unsubscribe suppresses: "list" (the campaign's list) or "global".
    unsubscribe_scope: Literal["list", "global"] = "list"
    #: Add the address of a late hard bounce (bad mailbox, bad domain, inactive) to the
    #: suppression list, as bounces in the SMTP session are.
    suppress_hard_bounces: bool = True
    #: Add a complaining address to the global suppression list: a person who reported
    #: the mail as spam must not get the next campaign, whatever its list (Gmail's and
    #: Yahoo's sender rules count every complaint).
    suppress_complaints: bool = True
    max_message_size: int = MAX_MESSAGE_SIZE
    max_connections: int = MAX_CONNECTIONS
    max_recipients: int = MAX_RECIPIENTS
    timeout: float = TIMEOUT

    def __post_init__(self) -> None:
        if not self.domains:
            raise ConfigError("domains: give at least one domain to receive mail for", "domains")
        for i, domain in enumerate(self.domains):
            if not domain or "@" in domain or " " in domain or domain.startswith("."):
                raise ConfigError(
                    f"domains[{i}]: a domain such as bounces.example.com, not {domain!r}",
                    "domains",
                )
        for field in ("verp_secrets", "tracking_secrets", "unsubscribe_secrets"):
            for i, secret in enumerate(getattr(self, field)):
                if len(secret.encode()) < MIN_SECRET:
                    raise ConfigError(
                        f"{field}[{i}]: a secret is {MIN_SECRET} bytes or more", field
                    )
        if not (self.verp_secrets or self.tracking_secrets or self.unsubscribe_secrets):
            raise ConfigError(
                "verp_secrets: give the campaigns' secrets (verp_secrets, tracking_secrets"
                " or unsubscribe_secrets), or no bounce can be matched to its recipient",
                "verp_secrets",
            )
        for field, least in (
            ("max_message_size", 1024),
            ("max_connections", 1),
            ("max_recipients", 1),
        ):
            if getattr(self, field) < least:
                raise ConfigError(f"{field}: at least {least}", field)
        if not self.timeout > 0:
            raise ConfigError("timeout: seconds, more than 0", "timeout")

    @property
    def verp_keys(self) -> list[bytes]:
        return _bytes(self.verp_secrets or self.tracking_secrets + self.unsubscribe_secrets)

    @property
    def tracking_keys(self) -> list[bytes]:
        return _bytes(self.tracking_secrets)

    @property
    def unsubscribe_keys(self) -> list[bytes]:
        return _bytes(self.unsubscribe_secrets or self.tracking_secrets)

    def receives(self, address: str) -> bool:
        """Whether mail to `address` is for one of its domains (any case, a final dot)."""
        domain = address.rpartition("@")[2].strip().rstrip(".").lower()
        return any(domain == d.lower().rstrip(".") for d in self.domains)


def _bytes(secrets: list[str]) -> list[bytes]:
    return [s.encode() for s in secrets]


def load(path: str | os.PathLike[str]) -> InboundConfig:
    """Reads a InboundConfig from a TOML file; ConfigError naming the file and what is wrong."""
    return load_settings(path, InboundConfig)
