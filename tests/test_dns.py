"""MX resolution (ferrymail.dns) against real nameservers on loopback: Knot DNS serving
zones each test writes, and a raw nameserver that stays silent or answers garbage."""

from __future__ import annotations

import asyncio
import functools
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
import uvloop
from dns_peer import DnsServer, RawNameserver
from ferrymail.dns import MAX_MX_HOSTS, MAX_TTL, MxResolver, Resolution
from ferrymail.errors import ConfigError
from ferrymail.wire import MxHost

RawFactory = Callable[..., RawNameserver]


def on_uvloop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Runs an async test on uvloop, the engine's loop; pytest still sees its fixtures."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        uvloop.run(test(*args, **kwargs))

    return run


class Clock:
    """The resolver's clock, moved by the test: cache expiry without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def resolver_for(server: DnsServer, clock: Clock | None = None, **options: Any) -> MxResolver:
    """A resolver that asks the test server only, never the system's resolver."""
    return MxResolver([server.address], timeout=2.0, clock=clock or Clock(), **options)


def names(resolution: Resolution) -> list[str]:
    return [host.name for host in resolution.hosts]


# --- MX records -----------------------------------------------------------------------


@on_uvloop
async def test_mx_hosts_come_in_preference_order(dns_server: DnsServer) -> None:
    dns_server.add_zone(
        "order.test",
        ["@ MX 30 c", "@ MX 10 a", "@ MX 20 b", "a A 127.0.0.2", "b A 127.0.0.3", "c A 127.0.0.4"],
    )
    resolution = await resolver_for(dns_server).resolve("order.test")
    assert resolution == Resolution(
        domain="order.test",
        status="ok",
        hosts=[
            MxHost("a.order.test", ["127.0.0.2"]),
            MxHost("b.order.test", ["127.0.0.3"]),
            MxHost("c.order.test", ["127.0.0.4"]),
        ],
        code=None,
        enhanced=None,
        text="order.test: MX a.order.test (10), b.order.test (20), c.order.test (30)",
        implicit=False,
        site=("a.order.test", "b.order.test", "c.order.test"),
    )


@on_uvloop
async def test_equal_preferences_come_in_random_order_on_every_call(dns_server: DnsServer) -> None:
    dns_server.add_zone(
        "equal.test",
        ["@ MX 10 a", "@ MX 10 b", "@ MX 20 c", "a A 127.0.0.2", "b A 127.0.0.3", "c A 127.0.0.4"],
    )
    resolver = resolver_for(dns_server)
    before = dns_server.queries("equal.test", "MX")
    orders = {tuple(names(await resolver.resolve("equal.test"))) for _ in range(200)}
    # Both orders of the two 10s (missing one by chance: 2**-199), the 20 always last.
    assert orders == {
        ("a.equal.test", "b.equal.test", "c.equal.test"),
        ("b.equal.test", "a.equal.test", "c.equal.test"),
    }
    # Shuffled per call from the cached answer: one query for all 200.
    assert dns_server.queries("equal.test", "MX") - before == 1


@on_uvloop
async def test_mx_host_addresses_a_then_aaaa(dns_server: DnsServer) -> None:
    dns_server.add_zone(
        "addr.test",
        [
            "@ MX 10 mx",
            "@ MX 20 v6",
            "mx A 127.0.0.2",
            "mx A 127.0.0.3",
            "mx AAAA ::1",
            "v6 AAAA ::1",
        ],
    )
    both = await resolver_for(dns_server).resolve("addr.test")
    assert names(both) == ["mx.addr.test", "v6.addr.test"]
    mx, v6 = both.hosts
    assert sorted(mx.addresses[:2]) == ["127.0.0.2", "127.0.0.3"]  # any order within A
    assert mx.addresses[2:] == ["::1"]
    assert (v6.addresses, mx.port) == (["::1"], 25)

    aaaa_before = dns_server.queries("addr.test", "AAAA")
    v4_only = await resolver_for(dns_server, ipv6=False).resolve("addr.test")
    # ipv6=False: no AAAA asked, and the IPv6-only host has no address to use.
    assert names(v4_only) == ["mx.addr.test"]
    assert sorted(v4_only.hosts[0].addresses) == ["127.0.0.2", "127.0.0.3"]
    assert "v6.addr.test: no A record" in v4_only.text
    assert dns_server.queries("addr.test", "AAAA") == aaaa_before


@on_uvloop
async def test_mx_hosts_are_capped(dns_server: DnsServer) -> None:
    count = MAX_MX_HOSTS + 5
    records = [f"@ MX {10 + i} mx{i}" for i in range(count)]
    records += [f"mx{i} A 127.0.1.{i + 1}" for i in range(count)]
    dns_server.add_zone("many.test", records)
    before = dns_server.queries("many.test", "A")
    resolution = await resolver_for(dns_server, ipv6=False).resolve("many.test")
    # A hostile MX set does not fan out: the lowest MAX_MX_HOSTS are looked up, no more.
    assert names(resolution) == [f"mx{i}.many.test" for i in range(MAX_MX_HOSTS)]
    assert dns_server.queries("many.test", "A") - before == MAX_MX_HOSTS


# --- no MX, null MX, names that do not exist ----------------------------------------------


@on_uvloop
async def test_no_mx_uses_the_domains_own_addresses(dns_server: DnsServer) -> None:
    dns_server.add_zone("implicit.test", ["@ A 127.0.0.5", "@ AAAA ::1", 'bare TXT "no address"'])
    resolver = resolver_for(dns_server)
    resolution = await resolver.resolve("implicit.test")
    assert (resolution.status, resolution.implicit, resolution.code) == ("ok", True, None)
    assert resolution.hosts == [MxHost("implicit.test", ["127.0.0.5", "::1"])]
    assert resolution.site == ("implicit.test",)

    # Neither MX nor an address: no mail host, permanently.
    bare = await resolver.resolve("bare.implicit.test")
    assert (bare.status, bare.code, bare.enhanced, bare.hosts) == ("no-mail-host", 550, "5.1.2", [])
    assert "bare.implicit.test has no MX record and no address" in bare.text


@on_uvloop
async def test_null_mx_is_a_permanent_failure(dns_server: DnsServer) -> None:
    dns_server.add_zone(
        "nullmx.test", ["@ MX 0 .", "mixed MX 0 .", "mixed MX 10 mx", "mx A 127.0.0.2"]
    )
    resolver = resolver_for(dns_server)
    resolution = await resolver.resolve("nullmx.test")
    assert resolution == Resolution(
        "nullmx.test",
        "null-mx",
        [],
        556,
        "5.1.10",
        "nullmx.test publishes a null MX (RFC 7505): it accepts no mail",
    )
    # A null MX next to a real host breaks RFC 7505 §3; the owner's "no mail" wins.
    assert (await resolver.resolve("mixed.nullmx.test")).status == "null-mx"


@on_uvloop
async def test_nxdomain_is_a_permanent_failure(dns_server: DnsServer) -> None:
    dns_server.add_zone("nx.test", ["@ MX 10 mx", "mx A 127.0.0.2"])
    resolution = await resolver_for(dns_server).resolve("nothing.nx.test")
    assert (resolution.status, resolution.code, resolution.enhanced) == ("nxdomain", 550, "5.1.2")
    assert resolution.text == "nothing.nx.test does not exist (NXDOMAIN)"
    assert resolution.hosts == []


@on_uvloop
async def test_mx_hosts_without_address_are_skipped(dns_server: DnsServer) -> None:
    dns_server.add_zone(
        "skip.test",
        [
            "@ MX 10 gone",  # NXDOMAIN
            "@ MX 20 noaddr",  # exists, no A/AAAA
            "@ MX 30 mx",
            'noaddr TXT "no address"',
            "mx A 127.0.0.2",
            "dead MX 10 gone",
            "dead MX 20 noaddr",
        ],
    )
    resolver = resolver_for(dns_server)
    resolution = await resolver.resolve("skip.test")
    assert resolution.hosts == [MxHost("mx.skip.test", ["127.0.0.2"])]
    assert resolution.site == ("gone.skip.test", "mx.skip.test", "noaddr.skip.test")
    assert "skipped gone.skip.test: NXDOMAIN; noaddr.skip.test: no A or AAAA record" in (
        resolution.text
    )

    dead = await resolver.resolve("dead.skip.test")
    assert (dead.status, dead.code, dead.enhanced, dead.hosts) == ("no-mail-host", 550, "5.4.4", [])
    assert dead.text == (
        "no MX host of dead.skip.test has an address: gone.skip.test: NXDOMAIN; "
        "noaddr.skip.test: no A or AAAA record"
    )


@on_uvloop
async def test_cnames_are_followed(dns_server: DnsServer) -> None:
    dns_server.add_zone(
        "cname.test",
        [
            "@ MX 10 mx",
            "mx CNAME real",  # an MX target should not be an alias; mail still flows
            "real A 127.0.0.6",
            "alias CNAME @",
            "imp A 127.0.0.7",
            "impalias CNAME imp",
        ],
    )
    resolver = resolver_for(dns_server)
    expected = [MxHost("mx.cname.test", ["127.0.0.6"])]  # named as the MX record names it
    assert (await resolver.resolve("cname.test")).hosts == expected
    assert (await resolver.resolve("alias.cname.test")).hosts == expected
    # RFC 5321 §5.1: the canonical name stands in for the alias, implicit MX too.
    implicit = await resolver.resolve("impalias.cname.test")
    assert implicit.implicit
    assert implicit.hosts == [MxHost("imp.cname.test", ["127.0.0.7"])]


# --- temporary failures ---------------------------------------------------------------


@on_uvloop
async def test_servfail_is_temporary_cached_then_recovers(dns_server: DnsServer) -> None:
    dns_server.add_zone("flaky.test", ["@ MX 10 mx", "mx A 127.0.0.2"])
    dns_server.set_servfail("flaky.test")
    assert dns_server.query("flaky.test", "MX").rcode() == dns.rcode.SERVFAIL
    assert dns_server.query("flaky.test", "MX", tcp=True).rcode() == dns.rcode.SERVFAIL
    clock = Clock()
    resolver = resolver_for(dns_server, clock, failure_ttl=30)

    failed = await resolver.resolve("flaky.test")
    assert (failed.status, failed.code, failed.enhanced, failed.hosts) == (
        "temporary",
        451,
        "4.4.3",
        [],
    )
    assert failed.text == f"MX lookup for flaky.test failed: SERVFAIL from {dns_server.address}"

    dns_server.fix("flaky.test")
    clock.advance(29)
    assert (await resolver.resolve("flaky.test")) == failed  # the failure is cached
    clock.advance(2)
    recovered = await resolver.resolve("flaky.test")
    assert recovered.hosts == [MxHost("mx.flaky.test", ["127.0.0.2"])]


@on_uvloop
async def test_servfail_of_an_mx_hosts_zone(dns_server: DnsServer) -> None:
    dns_server.add_zone("good-hosts.test", ["mx A 127.0.0.2"])
    dns_server.set_servfail("bad-hosts.test")
    dns_server.add_zone(
        "hostfail.test",
        [
            "@ MX 10 mx.good-hosts.test.",
            "@ MX 20 mx.bad-hosts.test.",
            "only-bad MX 10 mx.bad-hosts.test.",
        ],
    )
    clock = Clock()
    resolver = resolver_for(dns_server, clock, ipv6=False, failure_ttl=30)

    partial = await resolver.resolve("hostfail.test")
    assert names(partial) == ["mx.good-hosts.test"]
    assert "skipped mx.bad-hosts.test: A lookup: SERVFAIL" in partial.text
    # Every host failed, one of them temporarily: defer, do not bounce.
    only_bad = await resolver.resolve("only-bad.hostfail.test")
    assert (only_bad.status, only_bad.code, only_bad.enhanced) == ("temporary", 451, "4.4.3")

    dns_server.fix("bad-hosts.test")
    dns_server.add_zone("bad-hosts.test", ["mx A 127.0.0.3"])
    # The MX TTL is 300 s, but a partial answer lives only as long as a failure.
    clock.advance(31)
    assert names(await resolver.resolve("hostfail.test")) == [
        "mx.good-hosts.test",
        "mx.bad-hosts.test",
    ]
    assert (await resolver.resolve("only-bad.hostfail.test")).status == "ok"


@on_uvloop
async def test_timeout_is_temporary_and_cached(raw_nameserver: RawFactory) -> None:
    silent = raw_nameserver()
    resolver = MxResolver([silent.address], timeout=0.3, clock=Clock())
    started = time.monotonic()
    resolution = await resolver.resolve("slow.test")
    elapsed = time.monotonic() - started
    assert (resolution.status, resolution.code, resolution.enhanced) == ("temporary", 451, "4.4.3")
    assert resolution.text == (
        f"MX lookup for slow.test failed: no answer from {silent.address} within 0.3 s"
    )
    assert 0.25 < elapsed < 2.0
    asked = len(silent.received)
    assert asked >= 1

    started = time.monotonic()
    assert await resolver.resolve("slow.test") == resolution
    assert time.monotonic() - started < 0.1  # cached: not asked again
    assert len(silent.received) == asked


@on_uvloop
async def test_no_nameserver_listening_is_temporary() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    # Nothing listens on the port now: the query is refused (ICMP) or times out.
    resolution = await MxResolver([address], timeout=0.5).resolve("nobody.test")
    assert (resolution.status, resolution.code, resolution.enhanced) == ("temporary", 451, "4.4.3")


def _garbage(query: bytes) -> bytes:
    # The query's id and a response header claiming one answer, then no valid record.
    return query[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + b"\xff" * 7


def _wrong_question(query: bytes) -> bytes:
    # A well-formed response to the same id, for a question nobody asked.
    message = dns.message.from_wire(query)
    other = dns.message.make_query("elsewhere.test", "MX")
    other.id = message.id
    return dns.message.make_response(other).to_wire()


@pytest.mark.parametrize("reply", [_garbage, _wrong_question], ids=["garbage", "wrong-question"])
@on_uvloop
async def test_broken_answers_are_temporary(
    raw_nameserver: RawFactory, reply: Callable[[bytes], bytes]
) -> None:
    server = raw_nameserver(reply=reply)
    resolution = await MxResolver([server.address], timeout=0.3).resolve("broken.test")
    assert (resolution.status, resolution.code, resolution.enhanced) == ("temporary", 451, "4.4.3")
    assert server.received


def _hostile(query: bytes) -> bytes:
    # Well-formed, but hostile: the largest TTL there is (68 years), an MX host whose
    # name holds a NUL and a dot inside a label, and 127.0.0.2 or ::1 for any address.
    request = dns.message.from_wire(query)
    response = dns.message.make_response(request)
    question = request.question[0]
    forever = 2**31 - 1
    if question.rdtype == dns.rdatatype.MX:
        records = ["10 \\000odd\\.label.evil.", "20 mx.evil."]
        response.answer.append(
            dns.rrset.from_text_list(question.name, forever, "IN", "MX", records)
        )
    else:
        address = "127.0.0.2" if question.rdtype == dns.rdatatype.A else "::1"
        rdtype = dns.rdatatype.to_text(question.rdtype)
        response.answer.append(dns.rrset.from_text(question.name, forever, "IN", rdtype, address))
    return response.to_wire()


@on_uvloop
async def test_hostile_answers_are_contained(raw_nameserver: RawFactory) -> None:
    server = raw_nameserver(reply=_hostile)
    clock = Clock()
    resolver = MxResolver([server.address], timeout=0.3, clock=clock)
    resolution = await resolver.resolve("hostile.test")
    # The odd name is not looked up, nor handed on as a host.
    assert resolution.hosts == [MxHost("mx.evil", ["127.0.0.2", "::1"])]
    assert "\\000odd\\.label.evil: not a host name" in resolution.text
    # Cached a day at most (MAX_TTL), whatever the TTL says.
    asked = len(server.received)
    clock.advance(MAX_TTL - 1)
    assert await resolver.resolve("hostile.test") == resolution
    assert len(server.received) == asked
    clock.advance(2)
    assert await resolver.resolve("hostile.test") == resolution
    assert len(server.received) > asked


# --- caching and sharing ------------------------------------------------------------------


@on_uvloop
async def test_answers_are_cached_for_the_smallest_ttl(dns_server: DnsServer) -> None:
    dns_server.add_zone("ttl.test", ["@ 60 MX 10 mx", "mx 20 A 127.0.0.2"])
    clock = Clock()
    resolver = resolver_for(dns_server, clock, ipv6=False)
    first = await resolver.resolve("ttl.test")
    mx_queries = dns_server.queries("ttl.test", "MX")
    assert first.hosts == [MxHost("mx.ttl.test", ["127.0.0.2"])]

    dns_server.add_zone("ttl.test", ["@ 60 MX 10 mx", "mx 20 A 127.0.0.3"])
    clock.advance(19)
    # Still the cached answer though the server says otherwise now: it did not ask.
    assert (await resolver.resolve("ttl.test")).hosts == first.hosts
    assert dns_server.queries("ttl.test", "MX") == mx_queries
    clock.advance(2)  # past the A record's 20 s, though the MX's 60 s have not passed
    assert (await resolver.resolve("ttl.test")).hosts == [MxHost("mx.ttl.test", ["127.0.0.3"])]


@pytest.mark.parametrize(
    ("zone", "soa_minimum", "negative_ttl", "kept"),
    [("neg-soa.test", 5, 60.0, 5), ("neg-setting.test", 60, 2.0, 2)],
    ids=["soa-minimum-smaller", "negative-ttl-smaller"],
)
@on_uvloop
async def test_negative_answers_are_cached_for_the_smaller_of_soa_and_setting(
    dns_server: DnsServer, zone: str, soa_minimum: int, negative_ttl: float, kept: int
) -> None:
    dns_server.add_zone(zone, ["mx A 127.0.0.2"], negative_ttl=soa_minimum)
    clock = Clock()
    resolver = resolver_for(dns_server, clock, negative_ttl=negative_ttl)
    assert (await resolver.resolve(f"new.{zone}")).status == "nxdomain"

    dns_server.add_zone(zone, ["mx A 127.0.0.2", "new MX 10 mx"], negative_ttl=soa_minimum)
    clock.advance(kept - 0.5)
    assert (await resolver.resolve(f"new.{zone}")).status == "nxdomain"
    clock.advance(1)
    assert names(await resolver.resolve(f"new.{zone}")) == [f"mx.{zone}"]


@on_uvloop
async def test_flush_forgets_the_cache(dns_server: DnsServer) -> None:
    dns_server.add_zone("flush.test", ["@ MX 10 a", "a A 127.0.0.2", "b A 127.0.0.3"])
    resolver = resolver_for(dns_server)
    assert names(await resolver.resolve("flush.test")) == ["a.flush.test"]
    dns_server.add_zone("flush.test", ["@ MX 10 b", "a A 127.0.0.2", "b A 127.0.0.3"])
    assert names(await resolver.resolve("flush.test")) == ["a.flush.test"]
    resolver.flush()
    assert names(await resolver.resolve("flush.test")) == ["b.flush.test"]


@on_uvloop
async def test_concurrent_lookups_of_one_domain_share_one_query(dns_server: DnsServer) -> None:
    dns_server.add_zone("herd-hosts.test", ["mx A 127.0.0.2"])
    dns_server.add_zone("herd.test", ["@ MX 10 mx.herd-hosts.test."])
    dns_server.add_zone("herd2.test", ["@ MX 10 mx.herd-hosts.test."])
    mx_before = dns_server.queries("herd.test", "MX")
    a_before = dns_server.queries("herd-hosts.test", "A")
    resolver = resolver_for(dns_server, ipv6=False)

    results = await asyncio.gather(*(resolver.resolve("herd.test") for _ in range(100)))
    assert {tuple(names(r)) for r in results} == {("mx.herd-hosts.test",)}
    assert dns_server.queries("herd.test", "MX") - mx_before == 1
    assert dns_server.queries("herd-hosts.test", "A") - a_before == 1

    # Another domain on the same site: same site key, the host's addresses from the cache.
    other = await resolver.resolve("herd2.test")
    assert other.site == results[0].site == ("mx.herd-hosts.test",)
    assert dns_server.queries("herd-hosts.test", "A") - a_before == 1


@on_uvloop
async def test_a_cancelled_caller_does_not_cancel_the_shared_lookup(dns_server: DnsServer) -> None:
    dns_server.add_zone("cancel.test", ["@ MX 10 mx", "mx A 127.0.0.2"])
    resolver = resolver_for(dns_server)
    first = asyncio.ensure_future(resolver.resolve("cancel.test"))
    second = asyncio.ensure_future(resolver.resolve("cancel.test"))
    await asyncio.sleep(0)  # both are waiting for the one look-up now
    first.cancel()
    assert names(await second) == ["mx.cancel.test"]
    assert first.cancelled()


@on_uvloop
async def test_at_most_max_concurrent_queries_in_flight(raw_nameserver: RawFactory) -> None:
    silent = raw_nameserver()
    timeout = 0.3
    resolver = MxResolver([silent.address], timeout=timeout, max_concurrent=2)
    started = time.monotonic()
    results = await asyncio.gather(*(resolver.resolve(f"d{i}.test") for i in range(6)))
    assert {r.status for r in results} == {"temporary"}
    arrivals = sorted(at for at, _ in silent.received)
    assert len(arrivals) == 6
    # Two at a time: the third query waits until one of the first two has timed out.
    pairs = zip(arrivals, arrivals[2:], strict=False)
    assert all(later - earlier >= timeout * 0.8 for earlier, later in pairs)
    assert time.monotonic() - started >= 3 * timeout * 0.9


# --- the domain asked about -----------------------------------------------------------


@on_uvloop
async def test_idn_domains_are_asked_in_a_labels(dns_server: DnsServer) -> None:
    dns_server.add_zone("bücher.test", ["@ MX 10 mx", "mx A 127.0.0.2"])
    dns_server.add_zone("straße.test", ["@ MX 10 mx", "mx A 127.0.0.3"])
    resolver = resolver_for(dns_server)
    before = dns_server.queries("xn--bcher-kva.test", "MX")
    for spelling in ["Bücher.TEST.", " bücher.test ", "xn--BCHER-kva.test"]:
        resolution = await resolver.resolve(spelling)
        assert resolution.domain == "xn--bcher-kva.test"
        assert resolution.hosts == [MxHost("mx.xn--bcher-kva.test", ["127.0.0.2"])]
    assert dns_server.queries("xn--bcher-kva.test", "MX") - before == 1  # one cache entry
    # IDNA 2008: "ß" is a letter of its own, not "ss" as IDNA 2003 (Python's codec) has it.
    strasse = await resolver.resolve("Straße.test")
    assert (strasse.domain, names(strasse)) == ("xn--strae-oqa.test", ["mx.xn--strae-oqa.test"])


@pytest.mark.parametrize(
    "domain",
    [
        "",
        "   ",
        ".",
        "a..b.test",
        "-lead.test",
        "trail-.test",
        "under_score.test",
        "spa ce.test",
        "semi;colon.test",
        "127.0.0.1",
        "[127.0.0.1]",
        "x" * 64 + ".test",
        ("a" * 60 + ".") * 5 + "test",
        "xn--zz.test",
        "snow☃man.test",
    ],
)
@on_uvloop
async def test_invalid_domains_are_permanent_and_never_asked(
    raw_nameserver: RawFactory, domain: str
) -> None:
    server = raw_nameserver()  # silent: asking it would take the whole timeout
    resolution = await MxResolver([server.address], timeout=0.3).resolve(domain)
    assert (resolution.status, resolution.code, resolution.enhanced) == ("invalid", 553, "5.1.3")
    assert resolution.hosts == []
    assert resolution.text.startswith(repr(domain)[:70])
    assert " is not a domain: " in resolution.text
    assert server.received == []


# --- configuration ------------------------------------------------------------------------


@on_uvloop
async def test_nameserver_forms(dns_server: DnsServer) -> None:
    dns_server.add_zone("forms.test", ["@ MX 10 mx", "mx A 127.0.0.2"])
    spellings = [MxResolver(["127.0.0.1"], port=dns_server.port)]
    if dns_server.address6 is not None:
        spellings.append(MxResolver([dns_server.address6]))
    for resolver in spellings:
        assert names(await resolver.resolve("forms.test")) == ["mx.forms.test"]


@pytest.mark.parametrize(
    "nameservers",
    [[], ["mx.example.test"], ["127.0.0.1:0"], ["127.0.0.1:65536"], ["[::1"], ["[::1]x"]],
)
def test_bad_nameservers_are_config_errors(nameservers: list[str]) -> None:
    with pytest.raises(ConfigError) as error:
        MxResolver(nameservers)
    assert error.value.field == "nameservers"
