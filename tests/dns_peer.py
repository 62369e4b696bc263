"""Real DNS peers on loopback for the MX tests: Knot DNS serving zones a test writes, and
a raw nameserver that stays silent or answers garbage.

`DnsServer` runs knotd (Debian's knot package) as a subprocess on 127.0.0.1 and ::1 on
one free high port, UDP and TCP, authoritative for the zones added with `add_zone`. A
zone can be changed while the server runs (`add_zone` again), made to answer SERVFAIL
(`set_servfail`: knot answers SERVFAIL for a zone it is configured for but has no
contents of) and mended (`fix`). Every change returns only once the server answers with
it, so a test never races a reload. Knot counts queries per zone and type
(mod-stats), which `queries()` reads: the proof that a cache or a shared query works.

`RawNameserver` holds a UDP socket and a TCP listener on loopback and never answers (a
resolver pointed at it times out), or answers with whatever bytes a test gives it (a
broken or hostile answer); it records what it received. It is how a test gets a
timeout: a delegation to a dead address would only time out through a recursive
resolver, and the resolver under test talks to the authoritative server directly, so
it would just see the referral.

Both are context managers; the conftest fixtures start them and stop them at teardown,
also when a test fails. Nothing here sends a packet beyond loopback: the servers listen
on loopback only, zone data may only hold loopback addresses, and knot is given no
remote to notify or transfer from.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import idna
from peer_process import STARTUP_TIMEOUT, end_process
from smtp_peers import loopback

KNOTD = "/usr/sbin/knotd"
KNOTC = "/usr/sbin/knotc"
#: The zone every server carries, whose TXT record proves that the knotd answering on
#: the port is this one and not some other process that took the port first.
SENTINEL_ZONE = "dns-peer.test."
#: Where SOA and NS point: outside every test zone, a name nobody looks up.
NAMESERVER = "ns.invalid."
#: A unix socket path may be at most 107 bytes (sun_path): a deep tmp dir gets a short one.
MAX_SOCKET_PATH = 100


@dataclass
class Zone:
    """One zone as the test wrote it. Records are zone-file lines relative to the
    origin ("@ MX 10 mx1", "mx1 A 127.0.0.2", "www 60 CNAME @"); SOA and NS are added."""

    origin: str  # absolute, A-label form: "example.test."
    records: list[str]
    ttl: int  # the default TTL of the records ($TTL)
    negative_ttl: int  # the SOA minimum: how long NXDOMAIN and NODATA may be cached
    serial: int
    servfail: bool = False


class DnsServer:
    """Knot DNS 3.2 authoritative on 127.0.0.1:PORT (and [::1]:PORT), files in `directory`.

    `add_zone(origin, records)` adds or replaces a zone; `set_servfail(origin)` makes the
    zone answer SERVFAIL to every query, `fix(origin)` serves its records again.
    `address` ("127.0.0.1:PORT") and `address6` ("[::1]:PORT", None without IPv6) are in
    the form ferrymail's MxResolver takes. `query()` asks the server directly (no cache,
    no fallback), `queries()` reads knot's per-zone query counters, which restart at 0
    whenever knot reloads its configuration (a zone added, a zone fixed).
    """

    def __init__(self, directory: Path, host: str = "127.0.0.1", *, ipv6: bool = True) -> None:
        self.directory = directory
        self.host = loopback(host)
        self.ipv6 = ipv6 and _can_bind("::1")
        self.port = 0
        self.zones: dict[str, Zone] = {}
        self.process: subprocess.Popen[bytes] | None = None
        self._serial = int(time.time())  # any start; only ever increases
        self._token = os.urandom(8).hex()
        self._socket_dir: str | None = None
        self.socket = directory / "knot.sock"
        if len(str(self.socket)) > MAX_SOCKET_PATH:
            self._socket_dir = tempfile.mkdtemp(prefix="knot-")
            self.socket = Path(self._socket_dir) / "knot.sock"
        for sub in ("zones", "db"):
            (directory / sub).mkdir(exist_ok=True)
        self.add_zone(SENTINEL_ZONE, [f'@ TXT "{self._token}"'])

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def address6(self) -> str | None:
        return f"[::1]:{self.port}" if self.ipv6 else None

    @property
    def log(self) -> Path:
        return self.directory / "knotd.log"

    def errors(self) -> str:
        """The last lines knotd logged: what a failed start or zone change says."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        except FileNotFoundError:
            return ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- zones ------------------------------------------------------------------------

    def add_zone(
        self,
        origin: str,
        records: Iterable[str],
        *,
        ttl: int = 300,
        negative_ttl: int = 60,
    ) -> Zone:
        """Adds the zone, or replaces its records (and mends it if it answered SERVFAIL).
        Returns once the server answers with the new records."""
        name = _origin(origin)
        lines = list(records)
        for line in lines:
            _check_loopback(name, line)
        zone = Zone(name, lines, ttl, negative_ttl, self._next_serial())
        known = self.zones.get(name)
        self.zones[name] = zone
        self._write(zone)
        if self.process is not None:
            if known is None or known.servfail:
                self.reload()  # a new zone is a configuration change
            else:
                self._knotc("zone-reload", name)
                self._wait_served(zone)
        return zone

    def set_servfail(self, origin: str) -> None:
        """From now on every query for a name in the zone gets SERVFAIL (the zone is
        configured but its file does not load). A zone not added yet is added empty."""
        name = _origin(origin)
        if name not in self.zones:
            self.add_zone(name, [])
        zone = self.zones[name]
        zone.servfail = True
        self._write(zone)
        if self.process is not None:
            # knot keeps serving the last good contents when a reload fails: expire the
            # zone so that it has none, and the broken file keeps it that way on reloads.
            self._knotc("-f", "zone-purge", name, "+expire")
            self._wait_served(zone)

    def fix(self, origin: str) -> None:
        """Serves the zone's records again after `set_servfail`."""
        zone = self.zones[_origin(origin)]
        zone.servfail = False
        zone.serial = self._next_serial()
        self._write(zone)
        if self.process is not None:
            self.reload()  # knot will not zone-reload an expired zone; a full reload loads it

    def reload(self) -> None:
        """Rewrites knot's configuration, reloads it with every zone, and waits until each
        zone is served as written (query counters restart at 0)."""
        self._write_config()
        self._knotc("reload")
        for zone in self.zones.values():
            self._wait_served(zone)

    def _next_serial(self) -> int:
        self._serial += 1
        return self._serial

    def _zone_file(self, zone: Zone) -> Path:
        return self.directory / "zones" / f"{zone.origin}zone"

    def _write(self, zone: Zone) -> None:
        head = [
            f"$ORIGIN {zone.origin}",
            f"$TTL {zone.ttl}",
            f"@ SOA {NAMESERVER} hostmaster.invalid. {zone.serial} 3600 600 86400 "
            f"{zone.negative_ttl}",
        ]
        if zone.servfail:
            # An unclosed "(": a fatal parse error, so the zone never loads.
            body = [*head, "@ TXT ( broken"]
        else:
            body = [*head, f"@ NS {NAMESERVER}", *zone.records]
        path = self._zone_file(zone)
        temporary = path.with_suffix(".tmp")
        temporary.write_text("\n".join(body) + "\n")
        temporary.replace(path)  # knot never reads a half-written file

    def _write_config(self) -> None:
        listen = [f"{self.host}@{self.port}"] + ([f"::1@{self.port}"] if self.ipv6 else [])
        zones = "".join(
            f"  - domain: {zone.origin}\n    file: {self._zone_file(zone)}\n"
            for zone in self.zones.values()
        )
        # Two workers of each kind are plenty for tests; journal and zone file sync are
        # off so the zone files stay exactly what the test wrote. No remotes, no notify:
        # knot sends nothing anywhere.
        config = f"""\
server:
    rundir: {self.directory}
    listen: [{", ".join(listen)}]
    udp-workers: 2
    tcp-workers: 2
    background-workers: 1
database:
    storage: {self.directory / "db"}
control:
    listen: {self.socket}
log:
  - target: {self.log}
    any: info
mod-stats:
  - id: counts
    query-type: on
template:
  - id: default
    journal-content: none
    zonefile-sync: -1
    zonefile-load: whole
    module: mod-stats/counts
zone:
{zones}"""
        (self.directory / "knot.conf").write_text(config)

    # --- the process ------------------------------------------------------------------

    def start(self) -> Self:
        for _ in range(5):  # another process may take the free port before knotd binds it
            self.port = _free_port(self.host, self.ipv6)
            self._write_config()
            with open(self.log, "ab") as log:
                command = [KNOTD, "-c", str(self.directory / "knot.conf")]
                self.process = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=log, stderr=log
                )
            if self._wait_started():
                for zone in self.zones.values():
                    self._wait_served(zone)
                return self
            self._end_process()
        errors = self.errors()
        self.stop()
        raise RuntimeError(f"knotd did not start:\n{errors}")

    def _wait_started(self) -> bool:
        assert self.process is not None
        servers = [self.host] + (["::1"] if self.ipv6 else [])
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False  # e.g. "cannot bind address": the port was taken
            if all(self._answers_token(server) for server in servers):
                return True
            time.sleep(0.01)
        return False

    def _answers_token(self, server: str) -> bool:
        request = dns.message.make_query(SENTINEL_ZONE, "TXT")
        try:
            # Both transports: knot binds UDP and TCP, and both must be this knotd.
            udp = dns.query.udp(request, server, port=self.port, timeout=0.2)
            tcp = dns.query.tcp(request, server, port=self.port, timeout=0.2)
        except (OSError, dns.exception.DNSException):
            return False
        return all(self._token in r.to_text() for r in (udp, tcp))

    def stop(self) -> None:
        self._end_process()
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

    def _end_process(self) -> None:
        end_process(self.process)
        self.process = None

    def _knotc(self, *arguments: str) -> str:
        # -b: zone commands wait until knot has done them.
        command = [KNOTC, "-s", str(self.socket), "-t", str(int(STARTUP_TIMEOUT)), "-b"]
        done = subprocess.run(
            [*command, *arguments], capture_output=True, text=True, timeout=STARTUP_TIMEOUT + 5
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"knotc {' '.join(arguments)}: {done.stdout}{done.stderr}\n{self.errors()}"
            )
        return done.stdout

    def _wait_served(self, zone: Zone) -> None:
        """Waits until the server answers for the zone as written: SERVFAIL for a broken
        zone, else its SOA with the zone's serial."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                response = self.query(zone.origin, "SOA")
            except dns.exception.Timeout:
                response = None
            if response is not None:
                if zone.servfail and response.rcode() == dns.rcode.SERVFAIL:
                    return
                if not zone.servfail and _serial(response) == zone.serial:
                    return
            if time.monotonic() > deadline:
                state = "SERVFAIL" if zone.servfail else f"serial {zone.serial}"
                raise RuntimeError(
                    f"knotd: {zone.origin} not served with {state}:\n{self.errors()}"
                )
            time.sleep(0.005)

    # --- asking it ----------------------------------------------------------------------

    def query(self, name: str, rdtype: str = "A", *, tcp: bool = False) -> dns.message.Message:
        """The server's own answer to one query (no resolver, no cache, no fallback)."""
        request = dns.message.make_query(name, rdtype)
        if tcp:
            return dns.query.tcp(request, self.host, port=self.port, timeout=2.0)
        return dns.query.udp(request, self.host, port=self.port, timeout=2.0)

    def queries(self, origin: str, rdtype: str = "MX") -> int:
        """How many queries of `rdtype` for names in the zone knot has answered since the
        last reload (its mod-stats counters)."""
        name = _origin(origin)
        try:
            out = self._knotc("zone-stats", name, "mod-stats.query-type")
        except RuntimeError as e:
            if "not exists" in str(e):  # no query of any type counted yet
                return 0
            raise
        wanted = f"mod-stats.query-type[{rdtype.upper()}] = "
        for line in out.splitlines():
            # "[example.test.] mod-stats.query-type[MX] = 3"
            _, _, counter = line.partition("] ")
            if counter.startswith(wanted):
                return int(counter[len(wanted) :])
        return 0


class RawNameserver:
    """A hand-written nameserver on loopback, for what knot will not do: by default it
    never answers (queries to `address` time out), or it answers every UDP query with the
    bytes `reply(query)` returns (a malformed or hostile answer). It records each UDP
    query's arrival as (monotonic time, wire bytes) in `received`. Its TCP listener never
    answers either (the kernel's backlog accepts connections; nobody reads them)."""

    def __init__(
        self, host: str = "127.0.0.1", *, reply: Callable[[bytes], bytes] | None = None
    ) -> None:
        self.host = loopback(host)
        self.port = 0
        self.reply = reply
        self.received: list[tuple[float, bytes]] = []
        self._sockets: list[socket.socket] = []
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def __enter__(self) -> Self:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # UDP and TCP on one port: the UDP port the kernel gives may be taken for TCP
        # (by another test's listener), so another is tried.
        for attempt in range(20):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            udp.bind((self.host, 0))
            self.port = udp.getsockname()[1]
            tcp = socket.socket(family, socket.SOCK_STREAM)
            try:
                tcp.bind((self.host, self.port))
                break
            except OSError:
                udp.close()
                tcp.close()
                if attempt == 19:
                    raise
        tcp.listen(64)
        udp.settimeout(0.05)  # so the thread notices stop() soon
        self._sockets = [udp, tcp]
        self._thread = threading.Thread(
            target=self._serve, args=(udp,), name="raw-dns", daemon=True
        )
        self._thread.start()
        return self

    def _serve(self, udp: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                query, client = udp.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.received.append((time.monotonic(), query))
            if self.reply is not None:
                udp.sendto(self.reply(query), client)

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(STARTUP_TIMEOUT)
        for s in self._sockets:
            s.close()
        self._sockets = []


def _origin(origin: str) -> str:
    """The zone's absolute name in A-labels: "Bücher.test" → "xn--bcher-kva.test."."""
    name = origin.strip().rstrip(".")
    if not name.isascii():
        name = idna.encode(name, uts46=True).decode("ascii")
    return dns.name.from_text(name).to_text().lower()


def _check_loopback(origin: str, line: str) -> None:
    """Refuses an A or AAAA record outside loopback: test data never points elsewhere."""
    tokens = line.partition(";")[0].split()
    # An A/AAAA record ends "A address": its type is the one-but-last token.
    if len(tokens) >= 2 and tokens[-2].upper() in ("A", "AAAA"):
        try:
            address = ipaddress.ip_address(tokens[-1])
        except ValueError as e:
            raise ValueError(f"{origin}: {line!r}: not an address") from e
        if not address.is_loopback:
            raise ValueError(f"{origin}: {line!r}: test zones hold loopback addresses only")


def _serial(response: dns.message.Message) -> int | None:
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.SOA:
            soa = rrset[0]
            assert isinstance(soa, dns.rdtypes.ANY.SOA.SOA)
            return int(soa.serial)
    return None


def _can_bind(host: str) -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
        return True
    except OSError:
        return False


def _free_port(host: str, ipv6: bool) -> int:
    """A port free for UDP and TCP on host (and ::1): knot binds all of them."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((host, 0))
            port = int(probe.getsockname()[1])
        wanted = [(socket.AF_INET, host)] + ([(socket.AF_INET6, "::1")] if ipv6 else [])
        try:
            for family, address in wanted:
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    with socket.socket(family, kind) as s:
                        s.bind((address, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free for UDP and TCP on loopback")


class DnsForwarder:
    """A forwarding nameserver on loopback in front of a real one (a `DnsServer`): each
    UDP query is passed on and its answer passed back, except queries for names under
    `blackholed` domains, which are dropped (the resolver under test times out on them,
    as it does on a domain whose name servers are down). Each query is forwarded on a
    thread of its own, so a slow answer never holds up another. Records the names it
    dropped in `dropped`."""

    def __init__(self, upstream: DnsServer, blackholed: Iterable[str] = ()) -> None:
        self.upstream = upstream
        self.blackholed = [dns.name.from_text(d) for d in blackholed]
        self.dropped: list[str] = []
        self.port = 0
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(0.05)  # so the thread notices stop() soon
        self.port = self._socket.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="dns-forwarder", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        assert self._socket is not None
        while not self._stopping.is_set():
            try:
                wire, client = self._socket.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(wire)
                name = query.question[0].name
            except (dns.exception.DNSException, IndexError):
                continue
            if any(name.is_subdomain(d) for d in self.blackholed):
                self.dropped.append(name.to_text())
                continue
            threading.Thread(target=self._forward, args=(query, client), daemon=True).start()

    def _forward(self, query: dns.message.Message, client: tuple[str, int]) -> None:
        try:
            answer = dns.query.udp(query, self.upstream.host, timeout=2.0, port=self.upstream.port)
            if self._socket is not None:
                self._socket.sendto(answer.to_wire(), client)
        except (dns.exception.DNSException, OSError):
            pass  # the resolver under test sees a timeout, as for a lost packet

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(STARTUP_TIMEOUT)
        if self._socket is not None:
            self._socket.close()
            self._socket = None
