"""Shaping: the compiled file, immutable, and the lookup of a site's limits on the hot path."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType

from .model import BUILTIN, Entry, Limits, Resolved
from .sources import DEFAULT_POOL, Pool, Source

#: Resolutions kept per Shaping (one per domain x site seen); past this the memo starts
#: over, so a run over millions of domains stays flat in memory.
MEMO_SIZE = 100_000


class Shaping:
    """A shaping file, compiled. Never changed after load: a reload compiles a new one and
    the engine swaps its reference (one assignment, atomic for every reader).

    `resolve(domain, site, mx_hosts)` is the hot-path lookup: the merged limits of the
    entries that apply, memoized per (domain, site, MX hosts), so a site's batches pay
    one dict lookup. Precedence, field by field (an entry overrides only what it sets):
    site > domain > provider > default > ferrymail's built-in defaults. Bounce rules and
    automation rules are not overridden but gathered, the most specific entry's first
    (bounce rules are tried in order, the first that matches decides).
    """

    def __init__(
        self,
        *,
        name: str,
        default: Entry,
        providers: Sequence[Entry] = (),
        domains: Mapping[str, Entry] | None = None,
        sites: Mapping[str, Entry] | None = None,
        sources: Mapping[str, Source] | None = None,
        pools: Mapping[str, Pool] | None = None,
    ) -> None:
        self.name = name
        self.default = default
        self.providers = tuple(providers)
        # Read-only views: a compiled file is shared by every reader until it is swapped.
        self.domains: Mapping[str, Entry] = MappingProxyType(dict(domains or {}))
        self.sites: Mapping[str, Entry] = MappingProxyType(dict(sites or {}))
        self.sources: Mapping[str, Source] = MappingProxyType(dict(sources or {}))
        self.pools: Mapping[str, Pool] = MappingProxyType(dict(pools or {}))
        self._memo: dict[tuple[str, str, tuple[str, ...]], Resolved] = {}

    @property
    def entries(self) -> list[Entry]:
        return [self.default, *self.providers, *self.domains.values(), *self.sites.values()]

    def provider(self, mx_hosts: Iterable[str]) -> tuple[Entry, str] | None:
        """The first provider entry (in file order) one of whose `mx_suffix` ends an MX
        host name at a label boundary (".google.com" matches aspmx.l.google.com and
        google.com itself, not notgoogle.com), with the host that matched."""
        hosts = [_host(h) for h in mx_hosts]
        for entry in self.providers:
            for host in hosts:
                for suffix in entry.mx_suffix:
                    if host == suffix or host.endswith("." + suffix):
                        return entry, host
        return None

    def resolve(self, domain: str, site: str = "", mx_hosts: Sequence[str] = ()) -> Resolved:
        """The shaping for mail to `domain` at `site` (ferrymail's site key, see
        routing.py) whose MX hosts are `mx_hosts`. A site entry matches by the site key
        itself or by any of the site's MX host names."""
        key = (domain, site, tuple(mx_hosts))
        found = self._memo.get(key)
        if found is None:
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            found = self._memo[key] = self._resolve(_host(domain), site, key[2])
        return found

    def _resolve(self, domain: str, site: str, mx_hosts: tuple[str, ...]) -> Resolved:
        chain: list[Entry] = [self.default]
        matched = self.provider(mx_hosts)
        if matched is not None:
            chain.append(matched[0])
        if domain in self.domains:
            chain.append(self.domains[domain])
        site_entry = self.sites.get(site.lower()) or next(
            (self.sites[h] for h in map(_host, mx_hosts) if h in self.sites), None
        )
        if site_entry is not None:
            chain.append(site_entry)
        values: dict[str, object] = dict(BUILTIN)
        origin = dict.fromkeys(BUILTIN, "builtin")
        for entry in chain:
            values.update(entry.values)
            origin.update(dict.fromkeys(entry.values, entry.name))
        specific_first = chain[::-1]
        limits = Limits.from_values(
            values,
            tuple(r for e in specific_first for r in e.bounce_rules),
            tuple(r for e in specific_first for r in e.automation),
        )
        return Resolved(
            limits=limits,
            entries=tuple(e.name for e in chain),
            origin=origin,
            values=values,
            provider=matched[0].name if matched else None,
            provider_mx=matched[1] if matched else None,
        )

    def pool(self, name: str = DEFAULT_POOL) -> Pool:
        """A pool by name; KeyError names the pools there are."""
        try:
            return self.pools[name]
        except KeyError:
            raise KeyError(
                f"no pool {name!r} in {self.name} (pools: {', '.join(self.pools)})"
            ) from None


def _host(name: str) -> str:
    return name.strip().rstrip(".").lower()
