"""Per-route egress: each batch leaves from its route's source address with its HELO name,
TLS policy and timeouts, as the peer sees it; unusable settings fail only their batch."""

from __future__ import annotations

from collections.abc import Callable

import ferrymail
import msgspec
import pytest
from smtp_peers import RawServer, ScriptedServer, TlsFiles, slow
from transport_support import campaign, options, recipients, route, run, statuses

Scripted = Callable[..., ScriptedServer]
Raw = Callable[..., RawServer]

SOURCES = ["127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.24"]


def egress(to: ferrymail.Route, **settings: object) -> ferrymail.Route:
    return msgspec.structs.replace(to, **settings)


def test_each_batch_leaves_from_its_routes_source_with_its_helo_name(
    scripted_server: Scripted,
) -> None:
    server = scripted_server()
    routes = [
        egress(route(server), source_address=ip, helo_name=f"mta{ip.rsplit('.', 1)[1]}.example.com")
        for ip in SOURCES
    ]

    async def main() -> list[list[ferrymail.Outcome]]:
        async with ferrymail.Transport(options()) as transport:
            return [
                await transport.deliver(campaign(), recipients(3, f"d{i}.test"), r)
                for i, r in enumerate(routes)
            ]

    batches = run(main)
    server.wait_closed()
    for ip, outcomes in zip(SOURCES, batches, strict=True):
        assert statuses(outcomes) == ["delivered"] * 3
        assert {o.source for o in outcomes} == {ip}
    assert len(server.delivered) == 12
    for message in server.delivered:
        connection = server.connections[message.connection]
        domain = message.rcpt_tos[0].rsplit("@", 1)[1]
        ip = SOURCES[int(domain[1])]
        assert connection.client[0] == ip
        assert connection.helo == f"mta{ip.rsplit('.', 1)[1]}.example.com"


def test_a_route_without_egress_settings_takes_the_transports(scripted_server: Scripted) -> None:
    server = scripted_server()

    async def main() -> list[ferrymail.Outcome]:
        o = options(source_address="127.0.0.9", helo_name="default.example.com")
        async with ferrymail.Transport(o) as transport:
            return await transport.deliver(campaign(), recipients(2), route(server))

    outcomes = run(main)
    assert statuses(outcomes) == ["delivered"] * 2
    assert {o.source for o in outcomes} == {"127.0.0.9"}
    server.wait_closed()
    assert {(c.client[0], c.helo) for c in server.connections} == {
        ("127.0.0.9", "default.example.com")
    }


def test_a_source_the_host_lacks_defers_locally_and_the_transport_goes_on(
    scripted_server: Scripted,
) -> None:
    server = scripted_server()
    # 192.0.2.1 (TEST-NET-1) is on no interface here: bind() fails, nothing leaves.
    lacking = egress(route(server), source_address="192.0.2.1", helo_name="mta.example.com")

    async def main() -> tuple[list[ferrymail.Outcome], list[ferrymail.Outcome]]:
        async with ferrymail.Transport(options()) as transport:
            failed = await transport.deliver(campaign(), recipients(3), lacking)
            good = egress(route(server), source_address="127.0.0.21")
            return failed, await transport.deliver(campaign(), recipients(2), good)

    failed, delivered = run(main)
    for o in failed:
        assert (o.status, o.kind, o.stage) == ("transient", "local", "connect")
        assert "192.0.2.1" in o.text
        assert o.source is None
    assert statuses(delivered) == ["delivered"] * 2
    server.wait_closed()
    assert {c.client[0] for c in server.connections} == {"127.0.0.21"}


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"source_address": "eth0"}, "source_address"),
        ({"source_address": "127.0.0.300"}, "source_address"),
        ({"helo_name": "mta 21.example.com"}, "helo_name"),
        ({"helo_name": "mta21.example.com\r\nRSET"}, "helo_name"),
        ({"helo_name": "a" * 250 + ".example"}, "helo_name"),
        ({"tls": "sometimes"}, "tls"),
        ({"timeouts": ferrymail.SessionTimeouts(rcpt_timeout=0)}, "rcpt_timeout"),
        ({"timeouts": ferrymail.SessionTimeouts(dot_timeout=-5.0)}, "dot_timeout"),
        ({"idle_timeout": 0.0}, "idle_timeout"),
        ({"idle_timeout": float("nan")}, "idle_timeout"),
    ],
)
def test_a_bad_egress_setting_fails_only_its_batch(
    scripted_server: Scripted, settings: dict[str, object], named: str
) -> None:
    server = scripted_server()
    bad = egress(route(server), **settings)

    async def main() -> tuple[list[ferrymail.Outcome], list[ferrymail.Outcome]]:
        async with ferrymail.Transport(options()) as transport:
            failed = await transport.deliver(campaign(), recipients(3), bad)
            return failed, await transport.deliver(campaign(), recipients(1), route(server))

    failed, delivered = run(main)
    assert len(failed) == 3
    for o in failed:
        assert (o.status, o.kind) == ("transient", "local")
        assert f"route {named}" in o.text or f"route timeouts: {named}" in o.text
    assert statuses(delivered) == ["delivered"]
    server.wait_closed()
    assert len(server.connections) == 1  # the good batch's only


def test_a_bad_egress_setting_is_an_outcome_in_the_stream_too(scripted_server: Scripted) -> None:
    from transport_support import collect, start

    server = scripted_server()
    bad = egress(route(server), tls="sometimes")

    async def main() -> dict[int, ferrymail.Outcome]:
        async with ferrymail.Transport(options()) as transport:
            got: dict[int, ferrymail.Outcome] = {}
            await collect(start(transport, recipients(4), bad), got)
            return got

    got = run(main)
    assert sorted(got) == [0, 1, 2, 3]
    assert {(o.kind, o.status) for o in got.values()} == {("local", "transient")}


def test_tls_required_on_one_route_and_off_on_another(scripted_server: Scripted) -> None:
    server = scripted_server()  # no STARTTLS offered
    required = egress(route(server), tls="required", source_address="127.0.0.21")
    off = egress(route(server), tls="off", source_address="127.0.0.22")

    async def main() -> tuple[list[ferrymail.Outcome], list[ferrymail.Outcome]]:
        async with ferrymail.Transport(options(tls="opportunistic")) as transport:
            refused = await transport.deliver(campaign(), recipients(2), required)
            return refused, await transport.deliver(campaign(), recipients(2), off)

    refused, delivered = run(main)
    for o in refused:
        assert (o.status, o.kind, o.stage) == ("transient", "tls", "starttls")
        assert "does not offer STARTTLS" in o.text
        assert o.source == "127.0.0.21"
    assert statuses(delivered) == ["delivered"] * 2
    assert len(server.delivered) == 2


def test_tls_required_by_a_route_checks_the_certificate(
    scripted_server: Scripted, mx_tls: TlsFiles, wrong_name_tls: TlsFiles
) -> None:
    # The transport is opportunistic (any certificate); a route that requires TLS gets
    # the certificate checked against the transport's ca_file, never any certificate.
    good = scripted_server(tls=mx_tls.server_context)
    wrong = scripted_server(tls=wrong_name_tls.server_context)

    async def main() -> tuple[list[ferrymail.Outcome], list[ferrymail.Outcome]]:
        o = options(tls="opportunistic", ca_file=str(mx_tls.ca_pem))
        async with ferrymail.Transport(o) as transport:
            checked = await transport.deliver(
                campaign(), recipients(1), egress(route(good, name="mx.test"), tls="required")
            )
            refused = await transport.deliver(
                campaign(), recipients(1), egress(route(wrong, name="mx.test"), tls="required")
            )
            return checked, refused

    (checked,), (refused,) = run(main)
    assert (checked.status, checked.tls) == ("delivered", "TLSv1.3")
    assert (refused.status, refused.kind, refused.stage) == ("transient", "tls", "starttls")
    assert not wrong.delivered


def test_a_routes_short_greeting_timeout_applies_to_its_batch_only(raw_server: Raw) -> None:
    # The banner comes after 1 s: the route's 0.3 s gives up, the transport's default
    # (300 s) waits for it.
    server = raw_server(faults=[slow("BANNER", 1.0)])
    short = egress(
        route(server),
        source_address="127.0.0.23",
        timeouts=ferrymail.SessionTimeouts(greeting_timeout=0.3),
    )

    async def main() -> tuple[list[ferrymail.Outcome], list[ferrymail.Outcome]]:
        async with ferrymail.Transport(options()) as transport:
            cut = await transport.deliver(campaign(), recipients(1), short)
            return cut, await transport.deliver(campaign(), recipients(1), route(server))

    (cut,), (waited,) = run(main)
    assert (cut.status, cut.kind, cut.stage) == ("transient", "timeout", "banner")
    assert cut.source == "127.0.0.23"  # a connection was made
    assert waited.status == "delivered"
