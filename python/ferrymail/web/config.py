"""WebConfig: the tracking server's settings (a TOML file for `ferrymail serve --config`)."""

from __future__ import annotations

import ipaddress
import os
from typing import Literal

import msgspec

from ..errors import ConfigError
from ..settings_file import load_settings
from .agents import APPLE_NETWORKS, IMAGE_PROXIES, SCANNERS

#: Secrets are at least this long (bytes), as a campaign's are.
MIN_SECRET = 16


class WebConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What `ferrymail.web.app` serves and how.

    In TOML (`ferrymail serve --config web.toml`), the same names at the top level:

        tracking_secrets = ["the campaign's Tracking secret"]
        unsubscribe_secrets = ["its Unsubscribe secret, if it has its own"]
        tracking_path = "/t"       # the path of Tracking.base_url
        unsubscribe_path = "/u"    # the path of Unsubscribe.url
        suppression_scope = "list"
    """

    #: The campaigns' `Tracking.secret`s. A token is tried with each in turn, so that
    #: secrets can be rotated: put the new one first and keep the old ones while mail
    #: that carries their tokens may still be clicked.
    tracking_secrets: list[str]
    #: The campaigns' `Unsubscribe.secret`s; empty: the tracking secrets (as a campaign
    #: without an unsubscribe secret makes its tokens with the tracking one).
    unsubscribe_secrets: list[str] = []
    #: Where click and open tokens are served: the path of the campaigns'
    #: `Tracking.base_url` (one base gives both: the token says which it is).
    tracking_path: str = "/t"
    #: Where one-click unsubscribe tokens are served: the path of `Unsubscribe.url`.
    unsubscribe_path: str = "/u"
    #: What an unsubscribe suppresses: "list", the address for the campaigns of the
    #: campaign's list (its List-Id, else its id: SqliteSpool.campaign_list); "global",
    #: for every campaign.
    suppression_scope: Literal["list", "global"] = "list"
    #: Parts of User-Agents (any case) of link scanners and prefetchers: their clicks
    #: are recorded as machine clicks. The default is agents.SCANNERS.
    scanners: list[str] = msgspec.field(default_factory=lambda: list(SCANNERS))
    #: Parts of User-Agents of image proxies, whose opens are machine opens.
    image_proxies: list[str] = msgspec.field(default_factory=lambda: list(IMAGE_PROXIES))
    #: Networks from which a bare "Mozilla/5.0" open is Apple Mail Privacy Protection's.
    apple_networks: list[str] = msgspec.field(default_factory=lambda: list(APPLE_NETWORKS))
    #: The largest unsubscribe request body read (bytes); larger ones get 413.
    max_body: int = 16384

    def __post_init__(self) -> None:
        if not self.tracking_secrets:
            raise ConfigError("tracking_secrets: give at least one secret", "tracking_secrets")
        for field in ("tracking_secrets", "unsubscribe_secrets"):
            for i, secret in enumerate(getattr(self, field)):
                if len(secret.encode()) < MIN_SECRET:
                    raise ConfigError(
                        f"{field}[{i}]: a secret is {MIN_SECRET} bytes or more", field
                    )
        for field in ("tracking_path", "unsubscribe_path"):
            path = getattr(self, field)
            if not path.startswith("/") or path.endswith("/") or "?" in path or "#" in path:
                raise ConfigError(
                    f"{field}: a path such as '/t' (a leading '/', no final '/', no query),"
                    f" not {path!r}",
                    field,
                )
        if self.tracking_path == self.unsubscribe_path:
            raise ConfigError(
                "unsubscribe_path: must differ from tracking_path", "unsubscribe_path"
            )
        for network in self.apple_networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ConfigError(
                    f"apple_networks: {network!r} is not a network such as 17.0.0.0/8",
                    "apple_networks",
                ) from None
        if self.max_body < 64:
            raise ConfigError("max_body: at least 64 bytes", "max_body")


def load(path: str | os.PathLike[str]) -> WebConfig:
    """Reads a WebConfig from a TOML file; ConfigError naming the file and what is wrong."""
    return load_settings(path, WebConfig)
