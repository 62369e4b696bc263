"""pytest setup: hypothesis settings for the property tests, and fixtures that start real
SMTP peers on loopback (tests/smtp_peers.py) and stop them at teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest
from hypothesis import HealthCheck, settings
from smtp_peers import PrivateCa, RawServer, ScriptedServer, SmtpSink, TlsFiles

# Rendering is fast, but the first call in a process builds thread pools; a deadline
# would flake on that. Example counts are set per test.
settings.register_profile("ferrymail", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ferrymail")


@pytest.fixture(scope="session")
def private_ca(tmp_path_factory: pytest.TempPathFactory) -> PrivateCa:
    """A throwaway CA whose files live in a session tmp dir; it issues the peers' certificates."""
    return PrivateCa(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def mx_tls(private_ca: PrivateCa) -> TlsFiles:
    """A certificate for mx.test and 127.0.0.1 from private_ca: a verifying client accepts it."""
    return private_ca.issue(["mx.test"], ["127.0.0.1"])


@pytest.fixture(scope="session")
def wrong_name_tls(private_ca: PrivateCa) -> TlsFiles:
    """A certificate from the same CA for wrong.test only: required TLS to mx.test refuses it."""
    return private_ca.issue(["wrong.test"])


# Each peer fixture is a factory, so that a test picks the peer's options (and may start
# several); the ExitStack stops every peer started, in reverse order, pass or fail.


@pytest.fixture
def scripted_server() -> Iterator[Callable[..., ScriptedServer]]:
    """scripted_server(**options) starts a ScriptedServer (aiosmtpd with scripted replies)."""
    with ExitStack() as peers:
        yield lambda **options: peers.enter_context(ScriptedServer(**options))


@pytest.fixture
def raw_server() -> Iterator[Callable[..., RawServer]]:
    """raw_server(**options) starts a RawServer (hand-written SMTP that misbehaves on cue)."""
    with ExitStack() as peers:
        yield lambda **options: peers.enter_context(RawServer(**options))


@pytest.fixture
def smtp_sink() -> Iterator[Callable[..., SmtpSink]]:
    """smtp_sink(**options) starts Postfix's smtp-sink on a free loopback port."""
    with ExitStack() as peers:
        yield lambda **options: peers.enter_context(SmtpSink(**options))


# --- DNS peers (tests/dns_peer.py): knot authoritative for test zones, a raw nameserver --
# Imported here rather than at the top so that this block stays one piece of the file.
from dns_peer import DnsServer, RawNameserver  # noqa: E402


@pytest.fixture(scope="session")
def dns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    """Knot DNS on 127.0.0.1 (and ::1) for the whole session, stopped at its end. Tests
    add zones of their own names (zones outlive the test that added them)."""
    with DnsServer(tmp_path_factory.mktemp("dns")) as server:
        yield server


@pytest.fixture
def raw_nameserver() -> Iterator[Callable[..., RawNameserver]]:
    """raw_nameserver(reply=None) starts a RawNameserver on 127.0.0.1: silent (queries
    time out), or answering every query with reply(query)."""
    with ExitStack() as peers:
        yield lambda **options: peers.enter_context(RawNameserver(**options))


# --- PostgreSQL (tests/pg_peer.py): one throwaway cluster per session, a fresh database
# per test; the spool tests run against SQLite and PostgreSQL through `spool_at`.
from pg_peer import PgCluster, find_bin  # noqa: E402


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A PostgreSQL cluster on a free loopback port for the whole session (skipped, with
    the reason, only where PostgreSQL is not installed)."""
    bindir = find_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no initdb on PATH nor in /usr/lib/postgresql)")
    with PgCluster(bindir) as cluster:
        yield cluster


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    """postgresql://… of a new, empty database of the session's cluster."""
    return pg_cluster.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def spool_at(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Where a spool lives, for `ferrymail.spool.open_spool`: a new SQLite file's path, or
    a new PostgreSQL database's URL (the test runs once with each)."""
    if request.param == "sqlite":
        return str(tmp_path_factory.mktemp("spool") / "spool.db")
    return str(request.getfixturevalue("pg_url"))
