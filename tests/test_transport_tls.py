"""STARTTLS under each policy: opportunistic (any certificate, plaintext when TLS is
broken), required (a certificate valid for the MX name, else the next host), off."""

from __future__ import annotations

import ssl
from collections.abc import Callable

import ferrymail
from smtp_peers import RawServer, ScriptedServer, TlsFiles
from transport_support import deliver, recipients, route, statuses

Scripted = Callable[..., ScriptedServer]


def test_opportunistic_tls_is_used_when_offered(
    scripted_server: Scripted, mx_tls: TlsFiles
) -> None:
    server = scripted_server(tls=mx_tls.server_context)
    outcomes = deliver(route(server), recipients(3), tls="opportunistic")
    assert statuses(outcomes) == ["delivered"] * 3
    assert {o.tls for o in outcomes} == {"TLSv1.3"}
    assert len(server.delivered) == 3 and all(m.tls for m in server.delivered)


def test_opportunistic_tls_takes_any_certificate(
    scripted_server: Scripted, wrong_name_tls: TlsFiles
) -> None:
    server = scripted_server(tls=wrong_name_tls.server_context)
    (outcome,) = deliver(route(server), recipients(1), tls="opportunistic")
    assert (outcome.status, outcome.tls) == ("delivered", "TLSv1.3")


def test_opportunistic_falls_back_to_plaintext_when_the_handshake_fails(
    scripted_server: Scripted, mx_tls: TlsFiles
) -> None:
    # A server whose TLS cannot meet rustls (TLS 1.2 with only a non-forward-secret CBC
    # suite): the handshake fails, and the message goes in plaintext on a new
    # connection, as Postfix does at security level "may".
    broken = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    broken.load_cert_chain(mx_tls.chain_pem, mx_tls.key_pem)
    broken.maximum_version = ssl.TLSVersion.TLSv1_2
    broken.set_ciphers("AES128-SHA")
    server = scripted_server(tls=broken)
    (outcome,) = deliver(route(server), recipients(1), tls="opportunistic")

    assert (outcome.status, outcome.tls) == ("delivered", None)
    server.wait_closed()
    first, second = server.connections
    assert "STARTTLS" in first.commands and "STARTTLS" not in second.commands
    assert server.delivered[0].connection == 1 and not server.delivered[0].tls


def test_required_tls_with_a_trusted_certificate(
    scripted_server: Scripted, mx_tls: TlsFiles
) -> None:
    server = scripted_server(tls=mx_tls.server_context)
    outcomes = deliver(
        route(server, name="mx.test"), recipients(2), tls="required", ca_file=str(mx_tls.ca_pem)
    )
    assert statuses(outcomes) == ["delivered"] * 2
    assert {o.tls for o in outcomes} == {"TLSv1.3"}


def test_required_tls_refuses_a_certificate_for_another_name_and_fails_over(
    scripted_server: Scripted, mx_tls: TlsFiles, wrong_name_tls: TlsFiles
) -> None:
    impostor = scripted_server(host="127.0.0.2", tls=wrong_name_tls.server_context)
    good = scripted_server(host="127.0.0.3", tls=mx_tls.server_context)
    hosts = [
        ferrymail.MxHost("mx.test", [impostor.host], impostor.port),
        ferrymail.MxHost("mx.test", [good.host], good.port),
    ]
    outcomes = deliver(
        ferrymail.Route(hosts), recipients(2), tls="required", ca_file=str(mx_tls.ca_pem)
    )
    assert statuses(outcomes) == ["delivered"] * 2
    assert {o.address for o in outcomes} == {"127.0.0.3"}
    assert impostor.messages == []

    (alone,) = deliver(
        ferrymail.Route(hosts[:1]), recipients(1), tls="required", ca_file=str(mx_tls.ca_pem)
    )
    assert (alone.status, alone.stage, alone.code) == ("transient", "starttls", None)
    assert alone.kind == "tls" and "certificate" in alone.text.lower()


def test_required_tls_without_the_ca_does_not_trust_a_private_certificate(
    scripted_server: Scripted, mx_tls: TlsFiles
) -> None:
    server = scripted_server(tls=mx_tls.server_context)
    (outcome,) = deliver(route(server), recipients(1), tls="required")
    assert (outcome.status, outcome.stage, outcome.kind) == ("transient", "starttls", "tls")
    assert server.messages == []


def test_required_tls_without_starttls_is_transient(scripted_server: Scripted) -> None:
    server = scripted_server()
    (outcome,) = deliver(route(server), recipients(1), tls="required")
    assert (outcome.status, outcome.stage, outcome.kind) == ("transient", "starttls", "tls")
    assert "does not offer STARTTLS" in outcome.text and server.messages == []


def test_tls_off_never_sends_starttls(scripted_server: Scripted, mx_tls: TlsFiles) -> None:
    server = scripted_server(tls=mx_tls.server_context)
    (outcome,) = deliver(route(server), recipients(1), tls="off")
    assert (outcome.status, outcome.tls) == ("delivered", None)
    server.wait_closed()
    assert all("STARTTLS" not in c.commands for c in server.connections)


def test_plaintext_sent_with_the_starttls_go_ahead_is_refused(
    raw_server: Callable[..., RawServer],
) -> None:
    # CVE-2011-0411's shape: bytes that arrive with the 220 to STARTTLS came in the
    # clear; a client must not read them as if the TLS session had sent them.
    from smtp_peers import Fault

    server = raw_server(
        capabilities=["PIPELINING", "STARTTLS"],
        faults=[Fault("STARTTLS", reply=b"220 go ahead\r\n250 injected\r\n")],
    )
    (outcome,) = deliver(route(server), recipients(1), tls="required")
    assert (outcome.status, outcome.stage) == ("transient", "starttls")
    assert "before the handshake" in outcome.text
