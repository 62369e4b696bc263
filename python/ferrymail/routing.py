"""Where a domain's mail goes (MX lookup or an override): its site, Route and limits."""

from __future__ import annotations

import dataclasses
import ipaddress

import msgspec

from .config import Config, SiteLimits
from .dns import MxResolver, Resolution
from .errors import ConfigError
from .wire import MxHost, Route


@dataclasses.dataclass(frozen=True, slots=True)
class Destination:
    """A domain's route, or why it has none. Domains with the same `site` share one
    queue, one set of limits and one suspension."""

    site: str
    route: Route | None
    limits: SiteLimits
    # For a domain without a route: the DNS answer's code, enhanced code and text, and
    # whether retrying can help.
    failure: Resolution | None = None


class Router:
    """Resolves domains to destinations: a smart host for everything, a per-domain
    override, or the domain's MX hosts (RFC 5321 §5.1, via MxResolver).

    An override is "host:port" ("[v6]:port" for IPv6). An IP address is connected to as
    it is; a name is looked up like a domain (MX, then its own address), as Postfix's
    relayhost without brackets is.
    """

    def __init__(self, config: Config) -> None:
        self._config = config
        self._resolver = MxResolver(config.dns_servers, timeout=config.dns_timeout)
        self._smarthost = (
            _parse_override("smarthost", config.smarthost) if config.smarthost else None
        )
        self._routes = {
            domain.lower().rstrip("."): _parse_override(f"routes[{domain!r}]", target)
            for domain, target in config.routes.items()
        }

    async def destination(self, domain: str) -> Destination:
        override = self._smarthost or self._routes.get(domain)
        if override is not None:
            host, port, literal = override
            if literal:
                hosts = [MxHost(host, [host], port)]
                return self._destination(f"{host}:{port}", hosts, [host])
            resolution = await self._resolver.resolve(host)
            return self._resolved(resolution, port, site_prefix=f"{host}:{port}")
        resolution = await self._resolver.resolve(domain)
        return self._resolved(resolution, self._config.mx_port)

    def flush(self) -> None:
        self._resolver.flush()

    def _resolved(self, resolution: Resolution, port: int, site_prefix: str = "") -> Destination:
        if resolution.status != "ok" or not resolution.hosts:
            site = site_prefix or f"domain:{resolution.domain}"
            return Destination(site, None, self._config.site_limits, resolution)
        hosts = [msgspec.structs.replace(h, port=port) for h in resolution.hosts]
        names = list(resolution.site) or [h.name for h in hosts]
        site = site_prefix or ",".join(names) + f":{port}"
        return self._destination(site, hosts, names)

    def _destination(self, site: str, hosts: list[MxHost], names: list[str]) -> Destination:
        limits = next(
            (self._config.site_overrides[n] for n in names if n in self._config.site_overrides),
            self._config.site_limits,
        )
        route = Route(
            hosts,
            max_connections=limits.connections,
            max_messages_per_connection=limits.messages_per_connection,
        )
        return Destination(site, route, limits)


def _parse_override(field: str, target: str) -> tuple[str, int, bool]:
    """(host, port, is an IP address) from "host:port", "[host]:port" or "[v6]:port"."""
    host, sep, port_text = target.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{field} {target!r}: expected host:port, e.g. 127.0.0.1:2525", field)
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        return bare, int(port_text), False
    return bare, int(port_text), True
