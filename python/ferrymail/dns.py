"""MX resolution: a recipient domain to the mail hosts and addresses to try, cached by TTL.

RFC 5321 §5.1 with dnspython's async stub resolver: MX records by preference (random
order among equal ones), no MX records → the domain's own A/AAAA as an implicit MX, a
null MX (RFC 7505) → permanent failure, NXDOMAIN → permanent, SERVFAIL or no answer →
temporary. Each MX host's addresses are looked up here too, because the Rust transport
connects to addresses and resolves no names. Look-ups never raise: every outcome,
broken or hostile DNS answers included, is a `Resolution` that the retry policy reads
(`code` and `enhanced` say bounce or defer, like an SMTP reply would).

Caching: an answer lives as long as the smallest TTL of the records it was built from
(capped at MAX_TTL); NXDOMAIN, "no records" and null MX at most `negative_ttl`, or less
when the zone's SOA says so (RFC 2308: the smaller of the SOA's TTL and its minimum);
temporary failures `failure_ttl`. MX hosts' addresses are cached per host name, so the
many domains of one mail provider share one look-up of its hosts. Concurrent resolve()
calls for one domain (or host) share one query, and at most `max_concurrent` queries
are in flight.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import idna
import msgspec

from .errors import ConfigError
from .wire import MxHost

# Defaults of MxResolver, with where they come from.
DNS_PORT = 53
TIMEOUT = 5.0  # dnspython's Resolver.lifetime: one query, all servers and retries
SERVER_TIMEOUT = 2.0  # dnspython's Resolver.timeout: one server's turn before the next
# Unbound's default num-queries-per-thread is 1024 for a whole site; 64 in flight per
# engine keeps a burst of new domains from flooding a shared recursive resolver.
MAX_CONCURRENT = 64
NEGATIVE_TTL = 60.0  # short: a domain that was just registered or fixed is retried soon
FAILURE_TTL = 30.0  # a SERVFAIL storm is not re-queried per recipient, yet heals fast
MAX_TTL = 86400.0  # Unbound's cache-max-ttl: a day, whatever a zone asks for
# MX names resolved per domain, in preference order. Postfix tries 5 addresses
# (smtp_mx_address_limit); 10 names covers every real MX set and keeps a hostile answer
# with hundreds of MX records from fanning out into hundreds of queries.
MAX_MX_HOSTS = 10

# What a failed look-up reports: the code and enhanced status code a bounce or deferral
# carries, as if a receiving server had said it.
NULL_MX = (556, "5.1.10")  # RFC 7505 §4.1: the domain accepts no mail
NO_SUCH_DOMAIN = (550, "5.1.2")  # RFC 3463 X.1.2: bad destination system address
NO_ADDRESS = (550, "5.1.2")  # no MX and no A/AAAA: no destination system either
NO_MAIL_HOST = (550, "5.4.4")  # RFC 3463 X.4.4: unable to route (no MX host exists)
DNS_FAILURE = (451, "4.4.3")  # RFC 3463 X.4.3: directory server failure
BAD_DOMAIN = (553, "5.1.3")  # RFC 3463 X.1.3: bad destination address syntax

MAX_DOMAIN = 253  # characters; 255 octets on the wire (RFC 1035 §2.3.4)
# RFC 5321 §4.1.2 sub-domain, in A-labels: letters, digits, inner hyphens.
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
# Expired cache entries are dropped once the cache doubles (at least this many entries).
_SWEEP_MIN = 1024


class Resolution(msgspec.Struct, frozen=True):
    """Where mail for one domain goes, or why it cannot go there now.

    `status`, which the retry policy reacts to:
    - "ok": `hosts` are the MX hosts with their addresses, in the order to try (MX
      preference; equal preferences in a new random order on every resolve());
      `implicit` when the domain has no MX and its own A/AAAA is the host.
    - "null-mx" (556 5.1.10), "nxdomain" (550 5.1.2), "no-mail-host" (550 5.4.4 when
      no MX host has an address, 550 5.1.2 when the domain has neither MX nor A/AAAA),
      "invalid" (553 5.1.3: not a domain): permanent, bounce.
    - "temporary" (451 4.4.3): SERVFAIL, no answer, a broken answer: defer.
    `code`/`enhanced` are None for "ok". `text` names the domain and what DNS said.
    `site`: the sorted names of the domain's MX set (as published, up to MAX_MX_HOSTS):
    domains with the same site share one queue and its limits.
    """

    domain: str  # A-label form, lower case, no final dot
    status: str
    hosts: list[MxHost]
    code: int | None
    enhanced: str | None
    text: str
    implicit: bool = False
    site: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Reply:
    """One query's outcome, flattened from dnspython's answer or exception."""

    outcome: str  # "answer", "nodata", "nxdomain" or "temporary"
    records: tuple[Any, ...]  # the answer's rdatas ("answer" only)
    ttl: float  # how long it may be cached (negative: RFC 2308; temporary: failure_ttl)
    reason: str  # what DNS said, for texts: "NXDOMAIN", "SERVFAIL from 127.0.0.1:53"
    canonical: str  # the name the records belong to, after any CNAME


@dataclass(frozen=True, slots=True)
class _Addresses:
    """One host name's addresses, or why it has none."""

    canonical: str
    addresses: list[str]
    temporary: bool  # a query for it failed: the host may have addresses after all
    reason: str  # why it has no (or only some) addresses; "" when all queries answered


@dataclass(frozen=True, slots=True)
class _Entry:
    """A cached domain: its Resolution, hosts in preference order, and their preferences
    (resolve() shuffles equal ones on every call, so that load spreads over them)."""

    resolution: Resolution
    preferences: tuple[int, ...]


V = TypeVar("V")


class _SharedCache(Generic[V]):
    """Values cached until they expire; a miss runs one look-up, however many callers
    wait for it. A look-up returns the value and how many seconds it may be kept."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._values: dict[str, tuple[float, V]] = {}
        self._pending: dict[str, asyncio.Task[tuple[V, float]]] = {}
        self._generation = 0  # flush() bumps it: look-ups begun before do not store
        self._sweep_at = _SWEEP_MIN

    async def get(
        self, key: str, lookup: Callable[[], Awaitable[tuple[V, float]]]
    ) -> tuple[V, float]:
        """The value and the clock time it expires at."""
        hit = self._values.get(key)
        if hit is not None and hit[0] > self._clock():
            return hit[1], hit[0]
        task = self._pending.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fill(key, lookup))
            self._pending[key] = task
        # Shielded: a caller cancelled while waiting does not cancel the others' look-up.
        return await asyncio.shield(task)

    async def _fill(
        self, key: str, lookup: Callable[[], Awaitable[tuple[V, float]]]
    ) -> tuple[V, float]:
        generation = self._generation
        try:
            value, ttl = await lookup()
        finally:
            if self._pending.get(key) is asyncio.current_task():
                del self._pending[key]
        now = self._clock()
        expires = now + ttl
        if ttl > 0 and generation == self._generation:
            self._values[key] = (expires, value)
            if len(self._values) >= self._sweep_at:
                self._values = {k: v for k, v in self._values.items() if v[0] > now}
                self._sweep_at = max(_SWEEP_MIN, 2 * len(self._values))
        return value, expires

    def clear(self) -> None:
        self._values.clear()
        self._pending.clear()  # their waiters still get the answers; nobody new does
        self._generation += 1


class MxResolver:
    """Resolves recipient domains to MX hosts and their addresses (see the module doc).

    `nameservers`: None reads the system's /etc/resolv.conf; else IP addresses, each
    with an optional port ("127.0.0.1:5353", "::1", "[::1]:5353"); `port` is the port of
    those without one. `timeout`: seconds one query may take over all servers and
    retries (a domain takes its MX query, then its hosts' queries: up to twice that).
    `negative_ttl`, `failure_ttl`: how long NXDOMAIN / no-record / null MX answers, and
    temporary failures, are cached. `ipv6`: also look up AAAA records (IPv4 addresses
    come first). `clock`: the cache's time source, seconds.

    One resolver per event loop; resolve() may be called concurrently from its tasks.
    """

    def __init__(
        self,
        nameservers: list[str] | None = None,
        *,
        port: int = DNS_PORT,
        timeout: float = TIMEOUT,
        max_concurrent: int = MAX_CONCURRENT,
        negative_ttl: float = NEGATIVE_TTL,
        failure_ttl: float = FAILURE_TTL,
        ipv6: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _check_port(port, "port")
        for field, value in (("timeout", timeout), ("max_concurrent", max_concurrent)):
            if not value > 0:
                raise ConfigError(f"{field} must be positive, not {value!r}", field)
        for field, value in (("negative_ttl", negative_ttl), ("failure_ttl", failure_ttl)):
            if not value >= 0:
                raise ConfigError(f"{field} must be 0 or more, not {value!r}", field)
        if nameservers is None:
            resolver = dns.asyncresolver.Resolver()
            resolver.port = port
        else:
            if not nameservers:
                raise ConfigError("nameservers: give at least one, or None", "nameservers")
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [_nameserver(text, port) for text in nameservers]
        resolver.timeout = min(SERVER_TIMEOUT, timeout)
        resolver.lifetime = timeout
        resolver.cache = None  # ours caches whole resolutions and host addresses
        self._resolver = resolver
        self._servers = ", ".join(
            _server(str(ns), ns.port if isinstance(ns, dns.nameserver.Do53Nameserver) else port)
            for ns in resolver.nameservers
        )
        self.timeout = timeout
        self.negative_ttl = float(negative_ttl)
        self.failure_ttl = float(failure_ttl)
        self.ipv6 = ipv6
        self._clock = clock
        self._semaphore = asyncio.Semaphore(max_concurrent)
        self._domains: _SharedCache[_Entry] = _SharedCache(clock)
        self._hosts: _SharedCache[_Addresses] = _SharedCache(clock)
        self._random = random.Random()

    def flush(self) -> None:
        """Forgets every cached answer and failure."""
        self._domains.clear()
        self._hosts.clear()

    async def resolve(self, domain: str) -> Resolution:
        """Where mail for `domain` goes (a recipient address's part after the "@"; any
        case, a final dot, or Unicode). Never raises: a failure is a Resolution."""
        try:
            name = _a_label_domain(domain)
        except ValueError as e:
            # Shortened: a hostile input of megabytes does not travel on into events.
            given = domain.strip().lower()[:MAX_DOMAIN] if isinstance(domain, str) else ""
            shown = repr(domain) if len(repr(domain)) <= 80 else repr(domain)[:79] + "…"
            return _failure(given, "invalid", BAD_DOMAIN, f"{shown} is not a domain: {e}")
        try:
            entry, _ = await self._domains.get(name, lambda: self._lookup_domain(name))
        except Exception as e:  # a bug or an answer nothing expected: defer, never crash
            return _failure(name, "temporary", DNS_FAILURE, f"MX lookup for {name} failed: {e!r}")
        return self._ordered(entry)

    def _ordered(self, entry: _Entry) -> Resolution:
        hosts = list(entry.resolution.hosts)  # a copy: the cached list stays as it is
        preferences, start = entry.preferences, 0
        for end in range(1, len(hosts) + 1):
            if end == len(hosts) or preferences[end] != preferences[start]:
                if end - start > 1:  # RFC 5321 §5.1: equal preferences in random order
                    group = hosts[start:end]
                    self._random.shuffle(group)
                    hosts[start:end] = group
                start = end
        return msgspec.structs.replace(entry.resolution, hosts=hosts)

    # --- one domain -----------------------------------------------------------------

    async def _lookup_domain(self, domain: str) -> tuple[_Entry, float]:
        mx = await self._query(domain, dns.rdatatype.MX)
        if mx.outcome == "temporary":
            text = f"MX lookup for {domain} failed: {mx.reason}"
            return _Entry(_failure(domain, "temporary", DNS_FAILURE, text), ()), mx.ttl
        negative_ttl = min(self.negative_ttl, mx.ttl)
        if mx.outcome == "nxdomain":
            text = f"{domain} does not exist (NXDOMAIN)"
            return _Entry(_failure(domain, "nxdomain", NO_SUCH_DOMAIN, text), ()), negative_ttl
        if mx.outcome == "nodata":
            return await self._implicit_mx(domain, negative_ttl)
        # RFC 7505: "0 ." says the domain takes no mail. An MX to "." of another
        # preference, or next to real hosts (which §3 forbids), is read the same way, as
        # Postfix does: the owner said no, and "." has no address anyway.
        if any(record.exchange == dns.name.root for record in mx.records):
            text = f"{domain} publishes a null MX (RFC 7505): it accepts no mail"
            return _Entry(_failure(domain, "null-mx", NULL_MX, text), ()), negative_ttl
        best: dict[str, int] = {}  # a name listed twice keeps its lowest preference
        for record in sorted(mx.records, key=lambda r: r.preference):
            best.setdefault(record.exchange.to_text(omit_final_dot=True).lower(), record.preference)
        chosen = sorted(best.items(), key=lambda item: (item[1], item[0]))[:MAX_MX_HOSTS]
        # RFC 5321 §2.3.5: an MX names a host. Anything else (binary, underscores) is not
        # looked up, and never reaches logs, SNI or the transport as a host name.
        lookups = [name for name, _ in chosen if _is_host_name(name)]
        found = dict(
            zip(lookups, await asyncio.gather(*map(self._addresses, lookups)), strict=True)
        )
        now = self._clock()
        ttl = min([mx.ttl, *(expires - now for _, expires in found.values())])
        hosts, preferences, skipped = [], [], []
        for name, preference in chosen:
            if name not in found:
                skipped.append(f"{name}: not a host name")
                continue
            addresses = found[name][0]
            if addresses.addresses:
                hosts.append(MxHost(name, addresses.addresses))
                preferences.append(preference)
            else:
                skipped.append(f"{name}: {addresses.reason}")
        site = tuple(sorted(name for name, _ in chosen))
        if not hosts:
            if any(addresses.temporary for addresses, _ in found.values()):
                text = f"no MX host of {domain} resolved: {'; '.join(skipped)}"
                failure = _failure(domain, "temporary", DNS_FAILURE, text)
                return _Entry(failure, ()), min(ttl, self.failure_ttl)
            text = f"no MX host of {domain} has an address: {'; '.join(skipped)}"
            failure = _failure(domain, "no-mail-host", NO_MAIL_HOST, text)
            return _Entry(failure, ()), min(ttl, self.negative_ttl)
        listed = ", ".join(f"{host.name} ({p})" for host, p in zip(hosts, preferences, strict=True))
        text = f"{domain}: MX {listed}" + (f"; skipped {'; '.join(skipped)}" if skipped else "")
        resolution = Resolution(domain, "ok", hosts, None, None, text, site=site)
        return _Entry(resolution, tuple(preferences)), ttl

    async def _implicit_mx(self, domain: str, negative_ttl: float) -> tuple[_Entry, float]:
        """RFC 5321 §5.1: no MX records, so the domain itself is the one mail host."""
        found, expires = await self._addresses(domain)
        ttl = min(negative_ttl, expires - self._clock())
        if found.addresses:
            # After a CNAME, the canonical name is the host (§5.1), and what TLS checks.
            host = MxHost(found.canonical, found.addresses)
            text = f"{domain}: no MX, its own address (implicit MX): {found.canonical}"
            resolution = Resolution(
                domain, "ok", [host], None, None, text, implicit=True, site=(found.canonical,)
            )
            return _Entry(resolution, (0,)), ttl
        if found.temporary:
            text = f"{domain} has no MX; its address lookup failed: {found.reason}"
            return _Entry(_failure(domain, "temporary", DNS_FAILURE, text), ()), ttl
        text = f"{domain} has no MX record and no address ({found.reason}): no mail host"
        return _Entry(_failure(domain, "no-mail-host", NO_ADDRESS, text), ()), ttl

    # --- one host ---------------------------------------------------------------------

    async def _addresses(self, host: str) -> tuple[_Addresses, float]:
        return await self._hosts.get(host, lambda: self._lookup_addresses(host))

    async def _lookup_addresses(self, host: str) -> tuple[_Addresses, float]:
        kinds = [dns.rdatatype.A, dns.rdatatype.AAAA] if self.ipv6 else [dns.rdatatype.A]
        replies = await asyncio.gather(*(self._query(host, kind) for kind in kinds))
        addresses: list[str] = []
        for reply in replies:
            for record in reply.records:
                address = str(record.address)
                # Nothing listens on 0.0.0.0 or a multicast group: not a mail server.
                ip = ipaddress.ip_address(address)
                if not (ip.is_unspecified or ip.is_multicast) and address not in addresses:
                    addresses.append(address)
        negative = ("nodata", "nxdomain")
        ttls = [min(r.ttl, self.negative_ttl) if r.outcome in negative else r.ttl for r in replies]
        failed = [
            f"{dns.rdatatype.to_text(kind)} lookup: {reply.reason}"
            for kind, reply in zip(kinds, replies, strict=True)
            if reply.outcome == "temporary"
        ]
        if failed:
            reason = "; ".join(failed)
        elif any(r.outcome == "nxdomain" for r in replies):
            reason = "NXDOMAIN"
        elif not addresses:
            reason = "no A or AAAA record" if self.ipv6 else "no A record"
        else:
            reason = ""
        canonical = next((r.canonical for r in replies if r.outcome == "answer"), host)
        return _Addresses(canonical, addresses, bool(failed), reason), min(ttls)

    # --- one query --------------------------------------------------------------------

    async def _query(self, name: str, rdtype: dns.rdatatype.RdataType) -> _Reply:
        """One query through dnspython, every exception turned into a _Reply."""
        qname = dns.name.from_text(name)
        async with self._semaphore:
            try:
                answer = await self._resolver.resolve(
                    qname, rdtype, search=False, raise_on_no_answer=False
                )
            except dns.resolver.NXDOMAIN as e:
                responses = list(e.responses().values())
                ttl = _negative_ttl(responses[0]) if responses else self.negative_ttl
                return _Reply("nxdomain", (), ttl, "NXDOMAIN", name)
            except dns.resolver.NoNameservers as e:
                return self._temporary(name, _server_errors(e.kwargs.get("errors", [])))
            except dns.exception.Timeout:
                return self._temporary(
                    name, f"no answer from {self._servers} within {self.timeout:g} s"
                )
            except Exception as e:  # a malformed or hostile answer dnspython rejected
                return self._temporary(name, f"{type(e).__name__}: {e}")
        canonical = answer.canonical_name.to_text(omit_final_dot=True).lower()
        ttl = _capped(answer.chaining_result.minimum_ttl)
        if answer.rrset is None:
            return _Reply("nodata", (), ttl, "no records", canonical)
        return _Reply("answer", tuple(answer.rrset), ttl, "", canonical)

    def _temporary(self, name: str, reason: str) -> _Reply:
        return _Reply("temporary", (), self.failure_ttl, reason, name)


def _failure(domain: str, status: str, code: tuple[int, str], text: str) -> Resolution:
    return Resolution(domain, status, [], code[0], code[1], text)


def _a_label_domain(text: str) -> str:
    """The domain in A-labels, lower case, without the final dot; ValueError says why
    it is not a domain. IDNA 2008 with UTS #46 mapping, non-transitional (so "Bücher.DE"
    and "bücher.de." are one domain, and "ß" stays "ß"), as browsers and MTAs do. The
    idna package directly: dnspython uses IDNA 2008 only with idna 3.20 or later."""
    if not isinstance(text, str):
        raise ValueError("not a string")
    domain = text.strip()
    if domain.startswith("["):
        raise ValueError("an address literal, not a domain name")
    if not domain.isascii():
        try:
            # Case-folds, normalizes, and maps the ideographic and fullwidth full stops.
            domain = idna.uts46_remap(domain, std3_rules=False, transitional=False)
        except idna.IDNAError as e:
            raise ValueError(f"not a valid internationalized name ({e})") from None
    domain = domain.removesuffix(".")
    if not domain:
        raise ValueError("it is empty")
    labels = []
    for label in domain.split("."):
        if not label:
            raise ValueError("it has an empty label")
        if label.isascii():
            a_label = label.lower()
        else:
            try:
                a_label = idna.alabel(label).decode("ascii")
            except (idna.IDNAError, UnicodeError) as e:
                raise ValueError(
                    f"{label!r} is not a valid internationalized label ({e})"
                ) from None
        if len(a_label) > 63:
            raise ValueError(f"{a_label[:20]}…: a label is longer than 63 octets")
        if not _LDH_LABEL.match(a_label):
            raise ValueError(f"{a_label!r}: only letters, digits and inner hyphens are allowed")
        if a_label.startswith("xn--"):
            try:
                idna.decode(a_label)
            except (idna.IDNAError, UnicodeError):
                raise ValueError(f"{a_label!r} is not a valid A-label") from None
        labels.append(a_label)
    if labels[-1].isdigit():  # no top-level domain is numeric (RFC 3696 §2)
        raise ValueError("an IP address, not a domain name")
    result = ".".join(labels)
    if len(result) > MAX_DOMAIN:
        raise ValueError("longer than 253 characters")
    return result


def _is_host_name(name: str) -> bool:
    labels = name.split(".")
    return all(_LDH_LABEL.match(label) for label in labels) and not labels[-1].isdigit()


def _nameserver(text: str, default_port: int) -> dns.nameserver.Do53Nameserver:
    """ "192.0.2.1", "192.0.2.1:5353", "::1", "[::1]:5353" → a UDP/TCP nameserver."""
    host, port = text.strip(), str(default_port)
    if host.startswith("["):
        host, bracket, rest = host[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ConfigError(f"nameserver {text!r}: write IPv6 as [::1]:53", "nameservers")
        port = rest[1:] or port
    elif host.count(":") == 1:  # one colon: IPv4:port; more: a bare IPv6 address
        host, _, port = host.partition(":")
    try:
        address = str(ipaddress.ip_address(host))
        number = int(port)
    except ValueError:
        raise ConfigError(
            f"nameserver {text!r}: an IP address with an optional port", "nameservers"
        ) from None
    _check_port(number, "nameservers")
    return dns.nameserver.Do53Nameserver(address, number)


def _check_port(port: int, field: str) -> None:
    if not 0 < port < 65536:
        raise ConfigError(f"{field}: port {port} is not 1..65535", field)


def _server_errors(errors: list[Any]) -> str:
    """dnspython's per-server errors as "SERVFAIL from 127.0.0.1:53; …"."""
    said: list[str] = []
    for error in errors:
        # (str(nameserver), tcp, port, error, response)
        where, what = _server(str(error[0]), error[2]), error[3]
        if isinstance(what, str):
            text = what  # an rcode: "SERVFAIL", "REFUSED"
        elif isinstance(what, OSError) and what.strerror:
            text = what.strerror.lower()
        else:
            text = f"{type(what).__name__}: {what}" if str(what) else type(what).__name__
        line = f"{text} from {where}"
        if line not in said:
            said.append(line)
    return "; ".join(said) or "no nameserver answered"


def _server(nameserver: str, port: int) -> str:
    """ "Do53:::1@53" (dnspython's str() of a nameserver) or "::1" → "[::1]:53"."""
    address = nameserver.removeprefix("Do53:").rpartition("@")[0] or nameserver
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _negative_ttl(response: dns.message.Message) -> float:
    """RFC 2308 §5: a negative answer lives min(SOA TTL, SOA minimum)."""
    if not isinstance(response, dns.message.QueryMessage):
        return MAX_TTL
    try:
        return _capped(response.resolve_chaining().minimum_ttl)
    except Exception:  # no usable SOA or chain: the caller's negative_ttl applies
        return MAX_TTL


def _capped(ttl: float) -> float:
    return min(max(float(ttl), 0.0), MAX_TTL)
