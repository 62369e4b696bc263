"""bench/e2e.py: a whole campaign through ferrymail's Engine, submit to all final, against
smtp-source's raw rate on the same sink and the engine a Python ESP would otherwise write.

One Knot DNS server on loopback serves --domains domains (d000.test …) whose MX records
point at --sites distinct MX sets (mx1/mx2.mail0.test …, preference 10 and 20), every MX
host's A record 127.0.0.1, where one smtp-sink listens (PIPELINING on). So the engine
resolves 200 domains, groups them into 10 sites by MX set and delivers to the sites in
parallel, all of them ending on the one sink, which on a 2-core machine is the ceiling
(bench/smtp.py). Recipients are user{i}@d{i % domains:03}.test with the sample campaign's
variables (python/ferrymail/sample.py: click and open tracking, one-click unsubscribe).

Each row runs in its own child process, so its peak RSS is its own; the child reports its
wall time, CPU (getrusage user + sys) and ru_maxrss, the parent adds the sink's counts:

- smtp-source (Postfix's C load generator) with as many sessions as the engine may open,
  each reused (-d), sending one message of the rendered sample's size: the limit.
- ferrymail's Engine: `submit` from a generator with `drain` beside it (as a service
  delivers while an ESP submits; `--submit-first` waits for the submit), on a fresh
  SQLite spool;
  every recipient must be delivered by the spool's report and the sink's count.
- The Python ESP: dnspython's async resolver (MX then A, cached), bench/render.py's
  Jinja2 + email.message rendering, aiosmtplib connections pooled per MX host and reused,
  --connections workers on one asyncio queue, on uvloop. No spool (it is favoured).
- ferrymail again with DKIM, Ed25519 and RSA-2048 (keys made with `cryptography`).
- --million: ferrymail with 1,000,000 recipients, for peak RSS against its goal.
- --spool postgresql://…/db (or `pg`: a throwaway cluster, fsync on, from
  tests/pg_peer.py): ferrymail on that PostgreSQL server with 1, 2 and 3 engine
  processes (rows pg1, pg2, pg3; each on a fresh database beside the URL's), submit
  beside drain in the first; CPU s/1k counts every engine process, "server CPU s/1k"
  the PostgreSQL server's processes (/proc/PID/stat of the postmaster and its
  children, ended backends included through the postmaster's cutime).

    python bench/e2e.py                 # 100,000 recipients a row (Python ESP: 10,000)
    python bench/e2e.py --quick         # 10,000 (Python ESP: 1,000): a smoke test
    python bench/e2e.py --quick --rows source --million     # peak RSS at 1,000,000
    python bench/e2e.py --rows source,ferrymail --connections 20 --repeat 3
    python bench/e2e.py --quick --no-dkim --rows ferrymail --spool pg   # beside SQLite
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import faulthandler
import importlib.metadata
import io
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Coroutine, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any, NoReturn

import aiosmtplib
import dns.asyncresolver
import dns.exception
import ferrymail
import msgspec
import uvloop
from _common import (
    cores,
    cpu_model,
    debian_version,
    high_water_kb,
    machine_busy,
    markdown_table,
    process_cpu,
    tree_cpu,
)
from ferrymail import sample

# The test peers: Knot (dns_peer.DnsServer) and smtp-sink (smtp_peers.SmtpSink).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from dns_peer import DnsServer
from smtp_peers import SmtpSink

SMTP_SOURCE = "/usr/sbin/smtp-source"
HOST = "127.0.0.1"  # the sink, and every MX host's A record
HELO = "bench.test"
#: Seconds the sink's counters may lag behind a client that has finished.
SINK_GRACE = 10.0
#: A row that has not finished after this many seconds per 1,000 recipients (at least
#: MIN_TIMEOUT) dumps its Python stacks and ends: a hang shows instead of stalling.
SECONDS_PER_1000 = 10.0
MIN_TIMEOUT = 120.0
#: Cores other processes may keep busy during a row before the goals get a caution.
BUSY = 0.25
#: Seconds between progress lines on stderr while a row runs.
PROGRESS_EVERY = 15.0
CAMPAIGN_ID = "autumn-2026"
ROWS = "source,ferrymail,shaped,python,ed25519,rsa,kumo"
# The shaped row's egress sources: every 127/8 address is the host's own.
SHAPED_SOURCES = ("127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.24")
HOW_TO_RUN = {
    "million": "--million",
    "rsa": "without --no-dkim, and in --rows",
    "kumo": "without --no-dkim, and in --rows",
}
# KumoMTA's published test profile: 100 KB messages, RSA-2048 DKIM, spool fsync on
# (ferrymail's SQLite spool always fsyncs its commits). KumoMTA reports 4.0 M/h on 8
# vCPU and 6.8 M/h on 96 vCPU with it.
KUMO_KB = 100


NOTES = """\
seconds: submit to all final (ferrymail: `submit` from a generator, `drain` beside
it; submit s is how long the submit took, "after submit" the rate of the rest). CPU s/1k: the row's
own process, every thread (ferrymail: rendering, SMTP, spool; smtp-source: its
rusage; PostgreSQL rows: every engine process, from when it was ready). server
CPU: the PostgreSQL server's processes (PostgreSQL rows). peak RSS: the process's
ru_maxrss (smtp-source: its VmHWM). sink: smtp-sink's CPU, its own count of final
dots and of sessions ended during the row. others' load: the cores other processes on
this shared machine kept busy during the row (/proc/stat less the row, the sink and
this script).
smtp-source sends one prepared message, unpipelined, and keeps no state; ferrymail
renders a unique message per recipient, resolves MX, pipelines (the next envelope
rides behind the final dot), and records every outcome in its SQLite spool. The Python
ESP keeps no spool and records nothing (favoured); it renders on its event loop, on
one core (email.message is most of its cost: bench/render.py), and aiosmtplib does not
pipeline. The machine is shared: compare rows of one run, not runs."""


# --- the site structure ---------------------------------------------------------------


def domain(i: int) -> str:
    return f"d{i:03}.test"


def zones(domains: int, sites: int) -> dict[str, list[str]]:
    """Zone origin -> records: each site's zone holds its two MX hosts, each recipient
    domain two MX records into site i % sites, as a hosted domain points at its provider."""
    out = {f"mail{s}.test": ["mx1 A " + HOST, "mx2 A " + HOST] for s in range(sites)}
    for i in range(domains):
        s = i % sites
        out[domain(i)] = [f"@ MX 10 mx1.mail{s}.test.", f"@ MX 20 mx2.mail{s}.test."]
    return out


def recipients(n: int, domains: int) -> Iterator[ferrymail.Recipient]:
    """The sample's recipients (its three variables), spread over the bench domains."""
    for r in sample.recipients(n):
        yield msgspec.structs.replace(r, address=f"user{r.id}@{domain(int(r.id or 0) % domains)}")


# --- a row, as the child sees it ------------------------------------------------------


class Spec(msgspec.Struct, kw_only=True):
    """What a child runs: sent as JSON on its command line."""

    kind: str  # "smtp-source", "ferrymail" or "python"
    recipients: int
    connections: int
    per_connection: int
    domains: int
    port: int
    dns: str
    workdir: str
    dkim: str | None = None  # "ed25519" or "rsa": a key file in workdir
    event_log: bool = False
    submit_first: bool = False
    timeout: float = MIN_TIMEOUT
    shaping: str | None = None  # a shaping file in workdir (the "shaped" row)
    body_kb: int = 0  # the HTML part padded to this many KB (the "kumo" row)
    spool: str | None = None  # a PostgreSQL URL (its server): None for an SQLite file
    nodes: int = 1  # engine processes on the PostgreSQL spool


class Result(msgspec.Struct, kw_only=True):
    """What a child reports: the timed section's wall and CPU seconds, the process's peak
    RSS, and its own count of delivered messages; `error` is a traceback if it failed."""

    seconds: float = 0.0
    cpu: float = 0.0
    maxrss_kb: int = 0
    delivered: int = 0
    submit_seconds: float | None = None
    states: dict[str, int] = {}
    replies: list[tuple[str, int]] = []
    error: str | None = None
    server_cpu: float | None = None  # the PostgreSQL server's CPU seconds meanwhile
    nodes_maxrss_kb: list[int] = []  # the other engine processes' peak RSS (VmHWM)


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def child(spec: Spec) -> Result:
    """Runs one row in this process and measures it."""
    # The last resort: a row that hangs outside drain's own timeout dumps every thread.
    faulthandler.dump_traceback_later(spec.timeout + 15, exit=True)
    try:
        if spec.kind == "smtp-source":
            result = run_smtp_source(spec)
        elif spec.kind == "ferrymail":
            result = asyncio_run(run_ferrymail(spec))
        else:
            result = asyncio_run(run_python(spec))
    except BaseException:
        result = Result(error=traceback.format_exc())
    if spec.kind != "smtp-source":
        result.maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return result


def asyncio_run(main: Coroutine[Any, Any, Result]) -> Result:
    return uvloop.run(main)


def run_smtp_source(spec: Spec) -> Result:
    """smtp-source with --connections sessions, each reused, sending the message file;
    the CPU and RSS are its own (this wrapper's children's rusage)."""
    message = Path(spec.workdir) / "message.txt"
    command = [
        SMTP_SOURCE,
        *("-s", str(spec.connections), "-m", str(spec.recipients)),
        "-d",  # keep each connection for the next message
        *("-F", str(message), "-M", HELO, "-f", sample.SENDER, "-t", f"user0@{domain(0)}"),
        f"{HOST}:{spec.port}",
    ]
    cpu, started = cpu_seconds(resource.RUSAGE_CHILDREN), time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # Its rusage's ru_maxrss would count this Python process it was forked from: read its
    # own high-water mark while it runs instead.
    peak = 0
    while process.poll() is None:
        peak = max(peak, high_water_kb(process.pid))
        time.sleep(0.02)
    seconds = time.perf_counter() - started
    assert process.stderr is not None
    if process.returncode != 0:
        errors = process.stderr.read().decode(errors="replace").strip()
        raise RuntimeError(f"smtp-source failed ({process.returncode}): {errors}")
    used = cpu_seconds(resource.RUSAGE_CHILDREN) - cpu
    return Result(seconds=seconds, cpu=used, maxrss_kb=peak, delivered=spec.recipients)


def padded_html(kb: int) -> str:
    """The sample's HTML grown to about `kb` KB by product paragraphs, as a long
    newsletter is (text that varies, so that nothing flatters its size)."""
    paragraphs, size, i = [], len(sample.HTML.encode()), 0
    while size < kb * 1000:
        line = (
            f'<p style="margin:0 0 12px">Item {i}: waxed cotton jacket, wool socks and '
            f"a thermos for the crossing, ref {i * 7919 % 100_003:06}.</p>\n"
        )
        paragraphs.append(line)
        size += len(line.encode())
        i += 1
    return sample.HTML.replace("</body>", "".join(paragraphs) + "</body>")


def campaign_of(dkim: str | None) -> str:
    """The campaign id of a row (its tokens carry it; the Python ESP uses the unsigned one)."""
    return f"{CAMPAIGN_ID}-{dkim or 'plain'}"


def dkim_keys(spec: Spec) -> list[ferrymail.DkimKey]:
    if spec.dkim is None:
        return []
    pem = (Path(spec.workdir) / f"{spec.dkim}.pem").read_text()
    return [ferrymail.DkimKey("example.com", f"s2026{spec.dkim}", pem)]


async def run_ferrymail(spec: Spec) -> Result:
    """Submit from a generator, then drain, on a fresh spool; the report says how it went."""
    campaign_id = campaign_of(spec.dkim)
    html = padded_html(spec.body_kb) if spec.body_kb else sample.HTML
    campaign = sample.campaign(campaign_id, dkim=dkim_keys(spec), html=html)
    work = Path(spec.workdir)
    spool: str | Path = work / f"{campaign_id}.db"
    for stale in work.glob(f"{campaign_id}.db*"):
        stale.unlink()
    server = None
    if spec.spool is not None:
        spool, server = fresh_database(spec.spool, f"{campaign_id}-{spec.nodes}")
    config = engine_config(spec, campaign_id)
    async with ferrymail.Engine(spool, config) as engine:
        others = [start_node(spec, str(spool)) for _ in range(spec.nodes - 1)]
        server_cpu = server.cpu() if server is not None else 0.0
        cpu, started = cpu_seconds(), time.perf_counter()
        # As a service does: delivery runs beside the submit, from its first chunk on
        # (--submit-first waits for the whole submit, then drains).
        draining = None if spec.submit_first else asyncio.ensure_future(engine.drain())
        submitted = await engine.submit(campaign, recipients(spec.recipients, spec.domains))
        submit_seconds = time.perf_counter() - started
        try:
            await asyncio.wait_for(
                draining if draining is not None else engine.drain(),
                spec.timeout - submit_seconds,
            )
        except TimeoutError:
            await stuck(engine, campaign_id, time.perf_counter() - started)
        seconds = time.perf_counter() - started
        for node in others:  # every recipient is final: the other nodes may stop
            node.send_signal(signal.SIGTERM)
        ended = [node_ended(node) for node in others]
        used = cpu_seconds() - cpu + sum(cpu for cpu, _ in ended)
        if server is not None:
            server_cpu = server.cpu() - server_cpu
        report = await engine.report(campaign_id)
    result = Result(
        seconds=seconds,
        cpu=used,
        delivered=report.states.get("delivered", 0),
        submit_seconds=submit_seconds,
        states={k: v for k, v in report.states.items() if v},
        replies=report.replies[:5],
        server_cpu=server_cpu if server is not None else None,
        nodes_maxrss_kb=[peak for _, peak in ended],
    )
    if submitted.accepted != spec.recipients:
        result.error = f"submit accepted {submitted} of {spec.recipients:,}"
    return result


def engine_config(spec: Spec, campaign_id: str) -> ferrymail.Config:
    work = Path(spec.workdir)
    # The shaped row's sources each have their share of the connections the others have
    # from the host's own address, so that both open as many to the sink.
    per_host = spec.connections
    if spec.shaping is not None:
        per_host = max(1, round(spec.connections / len(SHAPED_SOURCES)))
    return ferrymail.Config(
        helo_name=HELO,
        dns_servers=[spec.dns],
        mx_port=spec.port,
        shaping=str(work / spec.shaping) if spec.shaping is not None else None,
        smtp=ferrymail.SmtpOptions(
            HELO,
            tls="off",
            max_connections_per_host=per_host,
            max_messages_per_connection=spec.per_connection,
        ),
        site_limits=ferrymail.SiteLimits(
            connections=spec.connections, messages_per_connection=spec.per_connection
        ),
        # Nothing should be deferred here; if something is, retry soon and show it in the
        # report rather than wait the default five minutes.
        retry=ferrymail.RetryPolicy(first_retry=1.0, max_interval=2.0, jitter=0.0, max_age=30.0),
        event_log=str(work / f"{campaign_id}.jsonl") if spec.event_log else None,
    )


class PgServer:
    """The PostgreSQL server of a spool URL, on this machine: its CPU, from /proc."""

    def __init__(self, postmaster: int) -> None:
        self.postmaster = postmaster

    def cpu(self) -> float:
        """The postmaster's CPU, its ended children's (cutime, cstime: backends that
        ended, reaped by it) and its live children's (backends, walwriter, checkpointer)."""
        return tree_cpu(self.postmaster)


def fresh_database(url: str, name: str) -> tuple[str, PgServer]:
    """A new empty database beside `url`'s on its server (so every row starts alike),
    and the server, found through a backend's parent process (it must run here)."""
    import urllib.parse

    import psycopg

    database = "bench_" + "".join(c if c.isalnum() else "_" for c in name.lower())
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        db.execute(f"CREATE DATABASE {database} TEMPLATE template0")
        backend = db.execute("SELECT pg_backend_pid()").fetchone()
        assert backend is not None
        with open(f"/proc/{backend[0]}/status") as f:
            postmaster = next(int(line.split()[1]) for line in f if line.startswith("PPid:"))
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{database}")), PgServer(postmaster)


def start_node(spec: Spec, spool: str) -> subprocess.Popen[str]:
    """Another engine process on the spool, open and waiting for work when this returns:
    it delivers until SIGTERM."""
    node = msgspec.structs.replace(spec, spool=spool)
    process = subprocess.Popen(
        [sys.executable, __file__, "--node", msgspec.json.encode(node).decode()],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    process.ready_cpu = float(process.stdout.readline().split()[1])  # type: ignore[attr-defined]
    return process


def node_ended(process: subprocess.Popen[str]) -> tuple[float, int]:
    """The CPU seconds a node spent after it was ready (its start-up is not the row's),
    and its peak RSS in KiB (its own VmHWM, which it reads as it ends)."""
    out, _ = process.communicate(timeout=60)
    _, done, peak = out.split()[-3:]
    return float(done) - process.ready_cpu, int(peak)  # type: ignore[attr-defined]


async def run_node(spec: Spec) -> None:
    """One more engine on `spec.spool` (a database already made): `run` until SIGTERM."""
    assert spec.spool is not None
    config = engine_config(spec, campaign_of(spec.dkim))
    async with ferrymail.Engine(spec.spool, config) as engine:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, engine.stop)
        print("ready", cpu_seconds(), flush=True)
        await engine.run()
    print("done", cpu_seconds(), high_water_kb(os.getpid()), flush=True)


async def stuck(engine: ferrymail.Engine, campaign_id: str, seconds: float) -> NoReturn:
    """Reports a drain that did not finish (the spool's report and where every asyncio
    task waits) and ends the process at once: closing the engine might hang as well."""
    report = await engine.report(campaign_id)
    states = {k: v for k, v in report.states.items() if v}
    waits: Counter[str] = Counter()
    for task in asyncio.all_tasks():
        stack = io.StringIO()
        task.print_stack(file=stack)
        # The header names the task (its number, addresses); the innermost frame's two
        # lines say where it waits.
        waits["\n".join(stack.getvalue().rstrip().splitlines()[-2:])] += 1
    where = "".join(f"\n{n} task(s) waiting at\n{at}" for at, n in waits.most_common())
    error = (
        f"drain did not finish in {seconds:,.0f} s; the spool says {states}, replies"
        f" {report.replies[:5]}; asyncio tasks:{where}"
    )
    print(msgspec.json.encode(Result(seconds=seconds, error=error)).decode(), flush=True)
    os._exit(1)


async def run_python(spec: Spec) -> Result:
    """The Python ESP on the same campaign and recipients."""
    esp = PythonEsp(spec.dns, spec.port, spec.connections, spec.per_connection)
    cpu, started = cpu_seconds(), time.perf_counter()
    await esp.send(recipients(spec.recipients, spec.domains))
    seconds, used = time.perf_counter() - started, cpu_seconds() - cpu
    states = {"delivered": esp.delivered, "failed": esp.failed}
    result = Result(
        seconds=seconds,
        cpu=used,
        delivered=esp.delivered,
        states={k: v for k, v in states.items() if v},
    )
    if esp.failures:
        result.replies = list(esp.failures.most_common(5))
    return result


# --- the Python ESP -------------------------------------------------------------------


class HostPool:
    """aiosmtplib sessions to one MX host, reused for up to `per_connection` messages,
    at most `limit` open at once."""

    def __init__(self, address: str, port: int, limit: int, per_connection: int) -> None:
        self.address, self.port, self.per_connection = address, port, per_connection
        self.slots = asyncio.Semaphore(limit)
        self.idle: list[tuple[aiosmtplib.SMTP, int]] = []

    async def send(self, sender: str, rcpt: str, data: bytes) -> None:
        async with self.slots:
            if self.idle:
                client, sent = self.idle.pop()
            else:
                client, sent = self.connection(), 0
                await client.connect()
            try:
                await client.sendmail(sender, [rcpt], data)
            except BaseException:
                client.close()
                raise
            if sent + 1 < self.per_connection:
                self.idle.append((client, sent + 1))
            else:
                await client.quit()

    def connection(self) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(
            hostname=self.address, port=self.port, local_hostname=HELO, start_tls=False, timeout=30
        )

    async def close(self) -> None:
        while self.idle:
            client, _ = self.idle.pop()
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await client.quit()


class PythonEsp:
    """The engine a Python ESP writes without ferrymail, in its simplest fast form.

    `connections` workers take recipients from one asyncio queue. Per recipient: the
    domain's MX hosts by preference and their addresses from dnspython's async resolver
    (asked once per domain and once per host, then cached; concurrent askers share the
    query), the message from bench/render.py's PythonWay (Jinja2, tracked links and
    tokens, email.message), then aiosmtplib on a pooled session to the first MX host
    that takes it. No spool, no retries, no events.
    """

    def __init__(self, dns_server: str, port: int, connections: int, per_connection: int):
        from render import PythonWay  # bench/render.py: "the Python way" of rendering

        host, _, dns_port = dns_server.rpartition(":")
        self.resolver = dns.asyncresolver.Resolver(configure=False)
        self.resolver.nameservers = [host]
        self.resolver.port = int(dns_port)
        self.port, self.connections, self.per_connection = port, connections, per_connection
        self.way = PythonWay(campaign_of(None))
        self.routes: dict[str, asyncio.Future[list[str]]] = {}
        self.addresses: dict[str, asyncio.Future[list[str]]] = {}
        self.pools: dict[str, HostPool] = {}
        self.delivered = self.failed = 0
        self.failures: Counter[str] = Counter()
        self._date = (0, "")

    def date(self) -> str:
        """The Date header, made once a second."""
        second = int(time.time())
        if self._date[0] != second:
            self._date = (second, format_datetime(datetime.now(UTC)))
        return self._date[1]

    async def route(self, domain: str) -> list[str]:
        """MX host names by preference (RFC 5321 §5.1), cached."""
        if domain not in self.routes:
            self.routes[domain] = asyncio.ensure_future(self._mx(domain))
        return await self.routes[domain]

    async def _mx(self, domain: str) -> list[str]:
        answer = await self.resolver.resolve(domain, "MX")
        records = sorted(answer, key=lambda rr: rr.preference)
        return [rr.exchange.to_text(omit_final_dot=True) for rr in records]

    async def host_addresses(self, name: str) -> list[str]:
        if name not in self.addresses:
            self.addresses[name] = asyncio.ensure_future(self._a(name))
        return await self.addresses[name]

    async def _a(self, name: str) -> list[str]:
        return [rr.address for rr in await self.resolver.resolve(name, "A")]

    def pool(self, name: str, address: str) -> HostPool:
        key = f"{name}/{address}"
        if key not in self.pools:
            self.pools[key] = HostPool(address, self.port, self.connections, self.per_connection)
        return self.pools[key]

    async def deliver(self, recipient: ferrymail.Recipient) -> None:
        domain = recipient.address.rpartition("@")[2]
        error = "no MX host"
        try:
            hosts = await self.route(domain)
        except dns.exception.DNSException as e:
            hosts, error = [], f"DNS: {e}"
        data = self.way.render(recipient, self.date())
        for name in hosts:
            for address in await self.host_addresses(name):
                try:
                    await self.pool(name, address).send(sample.SENDER, recipient.address, data)
                except (aiosmtplib.SMTPException, OSError) as e:
                    error = f"{name} {address}: {type(e).__name__}: {e}"
                    continue
                self.delivered += 1
                return
        self.failed += 1
        self.failures[error] += 1

    async def send(self, recipients: Iterable[ferrymail.Recipient]) -> None:
        queue: asyncio.Queue[ferrymail.Recipient | None] = asyncio.Queue(4 * self.connections)

        async def worker() -> None:
            while (recipient := await queue.get()) is not None:
                await self.deliver(recipient)

        workers = [asyncio.create_task(worker()) for _ in range(self.connections)]
        for recipient in recipients:
            await queue.put(recipient)
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
        for pool in self.pools.values():
            await pool.close()


# --- the parent: peers, rows, the table -----------------------------------------------


@dataclasses.dataclass
class Row:
    """One row of the table: what ran, what the child reported, what the sink counted."""

    key: str  # one of ROWS, or "million"
    name: str
    spec: Spec
    result: Result = dataclasses.field(default_factory=Result)
    sink_messages: int = 0
    sink_sessions: int = 0
    sink_cpu: float = 0.0
    others: float = 0.0  # cores other processes kept busy meanwhile
    failures: list[str] = dataclasses.field(default_factory=list)  # of every run (--repeat)

    @property
    def ran(self) -> bool:
        return self.result.error is None and self.result.seconds > 0

    @property
    def rate(self) -> float:
        return self.spec.recipients / self.result.seconds if self.ran else 0.0

    @property
    def verified(self) -> bool:
        n = self.spec.recipients
        return self.ran and self.sink_messages == n and self.result.delivered == n

    def failure(self) -> str:
        """What went wrong, for a row that is not verified."""
        if self.result.error is not None:
            return self.result.error.rstrip()
        return (
            f"{self.result.delivered:,} delivered by its own account, the sink counted"
            f" {self.sink_messages:,} of {self.spec.recipients:,}; states {self.result.states};"
            f" replies {self.result.replies}"
        )


class Sink:
    """The run's one smtp-sink, and its CPU seconds from /proc/PID/stat."""

    def __init__(self, connections: int, sites: int) -> None:
        # Room for every session at once: the Python ESP may keep up to --connections
        # idle sessions per MX host it used; the backlog for all connecting at once.
        sessions = max(1024, 2 * connections * (sites + 1))
        self.peer = SmtpSink(
            HOST,
            hostname="sink.test",
            backlog=max(1024, 4 * connections),
            extra_args=["-m", str(sessions)],
        )

    def cpu(self) -> float:
        return process_cpu(self.peer.pid)


class Load:
    """How busy the rest of the machine was while a row ran, in cores: all CPU time
    (/proc/stat) less this process's, its children's (the row), the sink's."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.start = self.sample()

    def sample(self) -> tuple[float, float]:
        ours = cpu_seconds() + cpu_seconds(resource.RUSAGE_CHILDREN) + self.sink.cpu()
        return time.monotonic(), machine_busy() - ours

    def others(self) -> float:
        (t0, before), (t1, after) = self.start, self.sample()
        return max(0.0, after - before) / max(t1 - t0, 1e-9)


def run_row(row: Row, sink: Sink) -> None:
    """Runs the row's child and reads what the sink counted meanwhile."""
    before, sink_cpu, load = sink.peer.counters(), sink.cpu(), Load(sink)
    command = [sys.executable, __file__, "--child", msgspec.json.encode(row.spec).decode()]
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while True:
        try:
            out, err = process.communicate(timeout=PROGRESS_EVERY)
            break
        except subprocess.TimeoutExpired:
            counted = sink.peer.counters().messages - before.messages
            print(
                f"  {row.name}: {time.monotonic() - started:,.0f} s, sink has {counted:,}",
                file=sys.stderr,
            )
        if time.monotonic() - started > row.spec.timeout + 30:
            process.kill()
            out, err = process.communicate()
            break
    row.others = load.others()
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        row.result = msgspec.json.decode(lines[-1], type=Result)
    except (IndexError, msgspec.DecodeError):
        tail = "\n".join(err.decode(errors="replace").strip().splitlines()[-40:])
        code = process.returncode
        row.result = Result(error=f"the child exited {code} without a result:\n{tail}")
    if row.ran:
        with contextlib.suppress(AssertionError):  # a shortfall shows in the table
            sink.peer.wait_for(messages=before.messages + row.spec.recipients, timeout=SINK_GRACE)
    time.sleep(0.2)  # a session is counted when the sink sees it end
    after = sink.peer.counters()
    row.sink_messages = after.messages - before.messages
    row.sink_sessions = after.sessions - before.sessions
    row.sink_cpu = sink.cpu() - sink_cpu


def best_of(repeat: int, rows: list[Row], sink: Sink) -> list[Row]:
    """Runs every row `repeat` times, taking turns, so that a burst of other work on the
    shared machine slows one round of each rather than every run of one; keeps each
    row's fastest verified run (or its first failure)."""
    best: dict[str, Row] = {}
    failures: dict[str, list[str]] = {row.key: [] for row in rows}
    for round in range(1, repeat + 1):
        for row in rows:
            print(f"  running {row.name} ({row.spec.recipients:,})...", file=sys.stderr)
            trial = dataclasses.replace(row, result=Result())
            run_row(trial, sink)
            if not trial.verified:
                failures[row.key].append(f"run {round} of {repeat}: {trial.failure()}")
            kept = best.get(row.key)
            if kept is None or (trial.verified and (not kept.verified or trial.rate > kept.rate)):
                best[row.key] = trial
    return [dataclasses.replace(best[row.key], failures=failures[row.key]) for row in rows]


def table(rows: list[Row]) -> str:
    limit = next((r.rate for r in rows if r.spec.kind == "smtp-source" and r.ran), 0.0)
    head = (
        "row",
        "recipients",
        "seconds",
        "messages/s",
        "CPU s/1k",
        "peak RSS MB",
        "sink CPU s/1k",
        "server CPU s/1k",
        "sink counted",
        "sessions",
        "vs smtp-source",
        "submit s",
        "after submit, msg/s",
        "others' load",
    )
    lines: list[tuple[str, ...]] = []
    for r in rows:
        n, submit = r.spec.recipients, r.result.submit_seconds
        if not r.ran:
            lines.append((f"{r.name}: FAILED (below)", f"{n:,}", *([""] * (len(head) - 2))))
            continue
        lines.append(
            (
                r.name + (f" ({len(r.failures)} runs FAILED, below)" if r.failures else ""),
                f"{n:,}",
                f"{r.result.seconds:,.2f}",
                f"{r.rate:,.0f}",
                f"{1000 * r.result.cpu / n:.3f}",
                " / ".join(
                    f"{kb / 1024:,.0f}" for kb in (r.result.maxrss_kb, *r.result.nodes_maxrss_kb)
                ),
                f"{1000 * r.sink_cpu / n:.3f}",
                "" if r.result.server_cpu is None else f"{1000 * r.result.server_cpu / n:.3f}",
                f"{r.sink_messages:,}" + ("" if r.sink_messages == n else " MISMATCH"),
                f"{r.sink_sessions:,}",
                f"{r.rate / limit:.2f}x" if limit else "",
                "" if submit is None else f"{submit:,.2f}",
                "" if submit is None else f"{n / (r.result.seconds - submit):,.0f}",
                f"{r.others:.2f}",
            )
        )
    return markdown_table(head, lines)


def goals(rows: list[Row]) -> list[str]:
    """The issues' goals, each PASS or FAIL, or why it was not measured."""
    by_key = {r.key: r for r in rows}

    def missing(*keys: str) -> str | None:
        """Why a goal over these rows cannot be judged, or None."""
        for key in keys:
            row = by_key.get(key)
            if row is None:
                return f"the {key} row did not run ({HOW_TO_RUN.get(key, '--rows')})"
            if not row.verified:
                return f"the {row.name} row failed (below)"
        return None

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    out = []
    if why := missing("source", "ferrymail"):
        out.append(f"- not measured, ferrymail without DKIM against smtp-source: {why}")
    else:
        source, plain = by_key["source"], by_key["ferrymail"]
        share = plain.rate / source.rate
        out.append(
            f"- {verdict(share >= 0.6)}: ferrymail end to end without DKIM, {plain.rate:,.0f}"
            f" messages/s = {share:.0%} of smtp-source's {source.rate:,.0f} (goal: at least 60%)"
        )
    if why := missing("rsa"):
        out.append(f"- not measured, RSA-2048-signed messages/hour: {why}")
    else:
        hourly = by_key["rsa"].rate * 3600
        out.append(
            f"- {verdict(hourly >= 10e6)}: RSA-2048-signed, {hourly / 1e6:,.1f} million messages"
            f"/hour on {cores()} cores (goal: at least 10 million)"
        )
    if why := missing("kumo"):
        out.append(f"- not measured, KumoMTA's profile (100 KB, RSA-2048): {why}")
    else:
        hourly = by_key["kumo"].rate * 3600
        out.append(
            f"- {verdict(hourly >= 12e6)}: KumoMTA's test profile ({KUMO_KB} KB, RSA-2048, "
            f"fsync on), {hourly / 1e6:,.1f} million messages/hour on {cores()} cores (goal:"
            " at least 12 million; KumoMTA publishes 4.0 M/h on 8 vCPU, 6.8 M/h on 96)"
        )
    if why := missing("million"):
        out.append(f"- not measured, peak RSS for 1,000,000 recipients: {why}")
    else:
        mb = by_key["million"].result.maxrss_kb / 1024
        out.append(
            f"- {verdict(mb < 300)}: peak RSS for 1,000,000 recipients, {mb:,.0f} MB"
            " (goal: under 300 MB)"
        )
    out += pg_goals(by_key, missing, verdict)
    busiest = max((r.others for r in rows), default=0.0)
    if busiest > BUSY:
        out.append(
            f"- CAUTION: other processes kept up to {busiest:.2f} of {cores()} cores busy during"
            " a row (others' load): these verdicts measure the machine's load as much as the"
            " code; rerun when it is quiet."
        )
    return out


def pg_goals(by_key: dict[str, Row], missing: Any, verdict: Any) -> list[str]:
    """The PostgreSQL rows' goals (issue 14), for those that ran."""
    out = []
    if "pg1" in by_key:
        if why := missing("ferrymail", "pg1"):
            out.append(f"- not measured, one node on PostgreSQL against SQLite: {why}")
        else:
            share = by_key["pg1"].rate / by_key["ferrymail"].rate
            out.append(
                f"- {verdict(share >= 0.8)}: one node on PostgreSQL, {by_key['pg1'].rate:,.0f}"
                f" messages/s = {share:.0%} of SQLite's (goal: at least 80%)"
            )
    if "pgkumo" in by_key:
        if why := missing("pgkumo"):
            out.append(f"- not measured, KumoMTA's profile on PostgreSQL: {why}")
        else:
            hourly = by_key["pgkumo"].rate * 3600
            out.append(
                f"- {verdict(hourly >= 12e6)}: KumoMTA's test profile on PostgreSQL, one node,"
                f" {hourly / 1e6:,.1f} million messages/hour (goal: at least 12 million)"
            )
    if "pgmillion" in by_key:
        if why := missing("pgmillion"):
            out.append(f"- not measured, 1,000,000 through three nodes on PostgreSQL: {why}")
        else:
            row = by_key["pgmillion"]
            peaks = [row.result.maxrss_kb, *row.result.nodes_maxrss_kb]
            mbs = " / ".join(f"{kb / 1024:,.0f}" for kb in peaks)
            out.append(
                f"- {verdict(max(peaks) / 1024 < 300)}: 1,000,000 through three nodes on"
                f" PostgreSQL, every one delivered in {row.result.seconds:,.0f} s; peak RSS"
                f" per node {mbs} MB (goal: under 300 MB each)"
            )
    return out


def machine() -> str:
    names = ("ferrymail", "dnspython", "aiosmtplib", "Jinja2", "uvloop")
    versions = ", ".join(f"{name} {importlib.metadata.version(name)}" for name in names)
    return (
        f"{cpu_model()}, {cores()} cores; Python {platform.python_version()}; {versions}; "
        f"Postfix {debian_version('postfix')} (smtp-sink, smtp-source); "
        f"Knot {debian_version('knot')}"
    )


def write_keys(directory: Path) -> None:
    """Fresh DKIM keys for the signed rows: Ed25519 and RSA-2048, PKCS#8 PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    keys: dict[str, ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey] = {
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }
    for name, key in keys.items():
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        (directory / f"{name}.pem").write_bytes(pem)


SHAPED_ENTRIES = 50
SHAPED_RULES = 20


def write_shaping(directory: Path, args: argparse.Namespace) -> None:
    """The shaped row's file: 4 sources in the default pool, 50 entries (domains, the MX
    sets as providers and as sites) that set the same limits as the other rows, and 20
    automation rules on throttling replies the sink never sends, so the row measures what
    shaping costs, not a throttle."""
    lines = []
    for i, address in enumerate(SHAPED_SOURCES, start=1):
        lines += [f"[source.ip{i}]", f'address = "{address}"', f'ehlo = "mta{i}.bench.test"']
    weights = ", ".join(f"ip{i} = 1" for i in range(1, len(SHAPED_SOURCES) + 1))
    lines += ["[pool.default]", f"sources = {{ {weights} }}"]
    limits = [
        f"connection_limit = {args.connections}",
        f"max_deliveries_per_connection = {args.per_connection}",
    ]
    lines += ["[default]", *limits]
    for r in range(SHAPED_RULES):
        lines += [
            "[[default.automation]]",
            f'name = "throttle-{r}"',
            f"regex = '^4\\d\\d 4\\.7\\.{r} .*(rate|throttl)'",
            'trigger = "3/h"',
            'scope = "source"',
            'set = { max_message_rate = "10/min" }',
            'duration = "1h"',
        ]
    sites = min(args.sites, 5)
    for s in range(sites):
        lines += [f"[provider.bench{s}]", f'mx_suffix = [".mail{s}.test"]', *limits]
        lines += [f'[site."mx1.mail{s}.test"]', *limits]
    for d in range(SHAPED_ENTRIES - 2 * sites):
        lines += [f'[domain."{domain(d)}"]', *limits]
    (directory / "shaping.toml").write_text("\n".join(lines) + "\n")


def sample_message(directory: Path, domains: int) -> int:
    """The sample rendered for one recipient, written for smtp-source -F; its size."""
    first = next(recipients(1, domains))
    rendered = ferrymail.render(sample.campaign(), [first])[0]
    assert isinstance(rendered, ferrymail.RenderedMessage), rendered
    # -F sends the file's lines with CRLF appended and dots stuffed: give it LF.
    (directory / "message.txt").write_bytes(rendered.data.replace(b"\r\n", b"\n"))
    return len(rendered.data)


def check_same_work() -> None:
    """bench/render.py's check: the Python ESP's messages have ferrymail's subject, html
    and text, tokens included, or the comparison would be of different work."""
    from render import PythonWay
    from render import check_same_work as check

    check(sample.campaign(campaign_of(None)), PythonWay(campaign_of(None)))


def plan(args: argparse.Namespace, base: dict[str, Any]) -> list[Row]:
    n, c = args.recipients, args.connections
    python_n = args.python_recipients or max(1, n // 10)
    wanted = set(args.rows.split(","))
    if args.no_dkim:
        wanted -= {"ed25519", "rsa", "kumo"}
    candidates = {
        "source": Row(
            "source", f"smtp-source, {c} conn", Spec(kind="smtp-source", recipients=n, **base)
        ),
        "ferrymail": Row(
            "ferrymail", f"ferrymail, {c} conn", Spec(kind="ferrymail", recipients=n, **base)
        ),
        "python": Row(
            "python", f"Python ESP, {c} conn", Spec(kind="python", recipients=python_n, **base)
        ),
    }
    shaped = Spec(kind="ferrymail", recipients=n, shaping="shaping.toml", **base)
    per_source = max(1, round(c / len(SHAPED_SOURCES)))
    candidates["shaped"] = Row(
        "shaped",
        f"ferrymail, shaped ({SHAPED_ENTRIES} entries, {SHAPED_RULES} rules, "
        f"{len(SHAPED_SOURCES)} sources x {per_source} conn)",
        shaped,
    )
    for key, name in (("ed25519", "Ed25519"), ("rsa", "RSA-2048")):
        spec = Spec(kind="ferrymail", recipients=n, dkim=key, **base)
        candidates[key] = Row(key, f"ferrymail, DKIM {name}", spec)
    kumo = Spec(kind="ferrymail", recipients=n, dkim="rsa", body_kb=KUMO_KB, **base)
    candidates["kumo"] = Row("kumo", f"ferrymail, {KUMO_KB} KB, DKIM RSA-2048", kumo)
    rows = [row for key, row in candidates.items() if key in wanted]
    if args.spool:
        for nodes in args.nodes:
            spec = Spec(kind="ferrymail", recipients=n, spool=args.spool, nodes=nodes, **base)
            label = f"{nodes} engine" + ("s" if nodes > 1 else "")
            rows.append(Row(f"pg{nodes}", f"ferrymail on PostgreSQL, {label}", spec))
        if "kumo" in wanted:  # KumoMTA's profile on one node: the commits durable there too
            spec = msgspec.structs.replace(kumo, spool=args.spool)
            rows.append(Row("pgkumo", f"{candidates['kumo'].name}, PostgreSQL", spec))
    if args.million:
        big = Spec(kind="ferrymail", recipients=1_000_000, **base)
        if args.million_on != "pg" or not args.spool:
            rows.append(Row("million", "ferrymail, 1,000,000 (--million)", big))
        if args.spool and args.million_on != "sqlite":
            spec = msgspec.structs.replace(big, spool=args.spool, nodes=3)
            rows.append(Row("pgmillion", "ferrymail on PostgreSQL, 3 engines, 1,000,000", spec))
    for row in rows:
        row.spec.timeout = max(MIN_TIMEOUT, SECONDS_PER_1000 * row.spec.recipients / 1000)
        if row.spec.kind == "ferrymail" and row.spec.event_log:
            row.name += ", event log"
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipients", type=int, default=100_000, metavar="N", help="a row")
    p.add_argument(
        "--python-recipients", type=int, default=0, metavar="N", help="Python ESP (N/10)"
    )
    p.add_argument("--quick", action="store_true", help="10,000 recipients: a smoke test")
    p.add_argument("--no-dkim", action="store_true", help="skip the DKIM rows")
    p.add_argument("--million", action="store_true", help="add a 1,000,000-recipient row")
    p.add_argument(
        "--million-on",
        choices=("both", "sqlite", "pg"),
        default="both",
        help="with --million and --spool: the 1,000,000 row's spool (PostgreSQL: 3 engines)",
    )
    p.add_argument("--connections", type=int, default=10, metavar="C", help="to the sink at once")
    p.add_argument(
        "--per-connection", type=int, default=100, metavar="M", help="messages a connection"
    )
    p.add_argument("--domains", type=int, default=200, metavar="D", help="recipient domains")
    p.add_argument("--sites", type=int, default=10, metavar="S", help="distinct MX sets")
    p.add_argument("--event-log", action="store_true", help="ferrymail writes its event log")
    p.add_argument(
        "--submit-first",
        action="store_true",
        help="ferrymail drains only after the whole submit (default: beside it)",
    )
    p.add_argument(
        "--rows", default=ROWS, metavar="R,...", help=f"which rows (default: all of {ROWS})"
    )
    p.add_argument("--repeat", type=int, default=1, metavar="K", help="runs a row; best counts")
    p.add_argument(
        "--spool",
        metavar="URL",
        help="add rows on PostgreSQL with 1, 2, 3 engine processes: postgresql://… (a "
        "server on this machine, whose user may create databases), or pg for a throwaway "
        "cluster",
    )
    p.add_argument(
        "--nodes",
        type=lambda text: [int(n) for n in text.split(",") if n],
        default=[1, 2, 3],
        metavar="N,...",
        help="engine processes of the PostgreSQL rows (default: 1,2,3; '' for none)",
    )
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--node", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.node:
        uvloop.run(run_node(msgspec.json.decode(args.node, type=Spec)))
        return 0
    if args.child:
        result = child(msgspec.json.decode(args.child, type=Spec))
        print(msgspec.json.encode(result).decode(), flush=True)
        return 0 if result.error is None else 1
    if args.quick:
        args.recipients = 10_000
    numbers = (args.recipients, args.connections, args.per_connection, args.domains, args.sites)
    if min(*numbers, args.repeat) < 1 or args.python_recipients < 0:
        p.error(
            "--recipients, --connections, --per-connection, --domains, --sites, --repeat:"
            " at least 1"
        )
    if unknown := set(args.rows.split(",")) - set(ROWS.split(",")):
        p.error(f"--rows: unknown {', '.join(sorted(unknown))} (known: {ROWS})")
    for tool in (SMTP_SOURCE, "/usr/sbin/smtp-sink", "/usr/sbin/knotd"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: install postfix and knot (scripts/setup does)")

    print(machine())
    with contextlib.ExitStack() as stack:
        if args.spool == "pg":
            args.spool = stack.enter_context(postgres()).url()
        return run_rows(args)


@contextlib.contextmanager
def postgres() -> Iterator[Any]:
    """A throwaway PostgreSQL cluster (tests/pg_peer.py), fsync and synchronous commits
    on as a production server has them, as the SQLite spool syncs its WAL."""
    from pg_peer import PgCluster, find_bin

    bindir = find_bin()
    if bindir is None:
        sys.exit("PostgreSQL is missing: install postgresql (scripts/setup does)")
    with PgCluster(bindir, durable=True) as cluster:
        yield cluster


def run_rows(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="ferrymail-e2e-") as tmp:
        work = Path(tmp)
        size = sample_message(work, args.domains)
        if not args.no_dkim:
            write_keys(work)
        write_shaping(work, args)
        (work / "dns").mkdir()
        dns_server = DnsServer(work / "dns", ipv6=False)
        for origin, records in zones(args.domains, args.sites).items():
            dns_server.add_zone(origin, records)  # before start: no reload per zone
        sink = Sink(args.connections, args.sites)
        with dns_server, sink.peer:
            base = {
                "connections": args.connections,
                "per_connection": args.per_connection,
                "domains": args.domains,
                "port": sink.peer.port,
                "dns": dns_server.address,
                "workdir": tmp,
                "event_log": args.event_log,
                "submit_first": args.submit_first,
            }
            rows = plan(args, base)
            if any(r.key == "python" for r in rows):
                check_same_work()
            print(
                f"sample campaign (tracking, unsubscribe; ≈{size:,} bytes a message) to "
                f"{args.domains} domains over {args.sites} MX sets, all on one smtp-sink "
                f"({HOST}, PIPELINING on); {args.connections} connections, "
                f"{args.per_connection} messages a connection; DNS: Knot on {dns_server.address}"
                + (f"; best of {args.repeat} runs" if args.repeat > 1 else "")
                + "\n"
            )
            rows = best_of(args.repeat, rows, sink)
    print(table(rows))
    print()
    print(NOTES)
    print("\nGoals:")
    print(*goals(rows), sep="\n")
    for r in rows:
        for failure in r.failures:
            print(f"\n{r.name} failed, {failure}")
    return 1 if any(r.failures for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
