"""bench/smtp.py: SMTP sending speed against Postfix's smtp-sink on loopback, ferrymail
next to smtp-source (Postfix's C load generator), aiosmtplib and smtplib.

Starts one smtp-sink on 127.0.0.1 (a free port, PIPELINING on), then, one after another
in the same run, sends ≈3 KB messages to it:

- smtp-source with --connections sessions, each reusing its connection (-d), sending
  the same message as the Python clients (-F). It does not pipeline: the yardstick for
  raw speed, not for protocol use.
- aiosmtplib on uvloop with --connections connections, each sending its share of the
  messages; the bytes are built once with `email` beforehand: sending is timed, not
  building.
- smtplib on one connection (a tenth of the messages, at most 10,000).
- ferrymail's Transport: renders and sends a campaign of the same template (text and
  html, three variables; --tracking adds click and open tracking and List-Unsubscribe)
  in chunks of --chunk recipients, --in-flight deliver() calls at a time.

For every row: the time, the rate, the client's CPU per 1,000 messages (the children's
rusage for smtp-source, this process's CPU for the others), the sink's CPU from
/proc/PID/stat, and the sink's own count of messages and sessions, which must match.

    python bench/smtp.py                  # 100,000 messages, 10 connections
    python bench/smtp.py --quick          # 5,000 messages: a smoke test
    python bench/smtp.py --connections 4 --chunk 5000 --tracking
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import os
import platform
import resource
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import aiosmtplib
import uvloop

# The same smtp-sink wrapper the transport tests use (start, wait for the port, counters).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from smtp_peers import SmtpSink

SMTP_SOURCE = "/usr/sbin/smtp-source"
HOST = "127.0.0.1"
HELO = "bench.test"
SENDER = "bounces@news.example.com"
SMTPLIB_CAP = 10_000
#: How long to wait for the sink's counters to catch up with a client that has finished.
SINK_GRACE = 10.0

# One template for every row: the Python clients and smtp-source send it rendered once,
# ferrymail renders it per recipient. Three variables; ≈3 KB as a MIME message.
SUBJECT = "{{ first_name }}, your order {{ order_id }} is on its way"
_FOOTER = (
    "You receive this mail because you ordered from Ferry Outfitters; we write only about "
    "your orders."
)
_PARAGRAPH = (
    "Our crew packed your parcel at the harbour warehouse this morning, wrapped the "
    "woollens in paper and the boots in their own bag, and handed it to the carrier "
    "before the noon ferry. You can follow it on its way from your account page."
)
TEXT = (
    "Hello {{ first_name }},\n\nYour order {{ order_id }} left our {{ city }} warehouse today.\n\n"
    + "".join(f"{_PARAGRAPH}\n\n" for _ in range(3))
    + "Track it: https://shop.example.com/orders\n\n"
    + f"{_FOOTER}\nFerry Outfitters, 1 Pier Road, Harbourtown.\n"
)
HTML = (
    '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Your order</title></head>'
    "<body>\n<h1>Hello {{ first_name }},</h1>\n<p>Your order <strong>{{ order_id }}</strong>"
    " left our {{ city }} warehouse today.</p>\n"
    + "".join(f"<p>{_PARAGRAPH}</p>\n" for _ in range(3))
    + '<p><a href="https://shop.example.com/orders">Track your order</a> &middot; '
    '<a href="https://shop.example.com/account">Your account</a></p>\n'
    f"<p>{_FOOTER}<br>Ferry Outfitters, 1 Pier Road, Harbourtown.</p>\n</body></html>\n"
)
VARS = {"first_name": "Ann", "order_id": "FO-100042", "city": "Bergen"}
_CITIES = ["Oslo", "Bergen", "Hamburg", "Kiel", "Halifax", "Seattle"]


def fill(template: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        template = template.replace("{{ " + name + " }}", value)
    return template


def email_message() -> bytes:
    """The template rendered once with `email`: what the Python clients and smtp-source send."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = "Ferry Outfitters <news@example.com>"
    msg["To"] = "user0@sink.test"
    msg["Subject"] = fill(SUBJECT, VARS)
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain="news.example.com")
    msg.set_content(fill(TEXT, VARS))
    msg.add_alternative(fill(HTML, VARS), subtype="html")
    return msg.as_bytes()


def rcpt(i: int) -> str:
    return f"user{i}@d{i % 50}.sink.test"


@dataclass
class Row:
    name: str
    messages: int
    seconds: float
    cpu: float  # the client's CPU seconds
    sink_cpu: float
    sink_messages: int  # final dots the sink counted during the row
    sessions: int  # sessions the sink saw end during the row
    note: str = ""  # instead of the numbers, for a row that did not run


class Sink:
    """The smtp-sink of the run, and the deltas of its counters and CPU around each row."""

    def __init__(self, connections: int) -> None:
        # Backlog: room for every client connecting at once, several times over. -m (the
        # most sessions served at once, default 256) likewise. -c counts what arrives.
        self.peer = SmtpSink(
            HOST,
            hostname="sink.test",
            backlog=max(1024, 4 * connections),
            extra_args=["-m", str(max(256, 2 * connections))],
        )

    def __enter__(self) -> Sink:
        self.peer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.peer.stop()

    @property
    def port(self) -> int:
        return self.peer.port

    def cpu(self) -> float:
        """smtp-sink's user + system CPU seconds so far, from /proc/PID/stat."""
        with open(f"/proc/{self.peer.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # Fields 14 and 15 of proc(5) (utime, stime), counted after "pid (comm)".
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def measure(self, name: str, expected: int, send: Callable[[], tuple[float, float]]) -> Row:
        """Runs `send` (which returns its seconds and client CPU seconds) and reads what the
        sink counted meanwhile."""
        before, sink_cpu = self.peer.counters(), self.cpu()
        seconds, cpu = send()
        with contextlib.suppress(AssertionError):  # a shortfall shows in the table
            self.peer.wait_for(messages=before.messages + expected, timeout=SINK_GRACE)
        # A session is counted when the sink sees it end: give the last closes a moment.
        time.sleep(0.2)
        after = self.peer.counters()
        return Row(
            name,
            expected,
            seconds,
            cpu,
            self.cpu() - sink_cpu,
            after.messages - before.messages,
            after.sessions - before.sessions,
        )


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_smtp_source(
    port: int, messages: int, connections: int, message: bytes
) -> Callable[[], tuple[float, float]]:
    def send() -> tuple[float, float]:
        with tempfile.TemporaryDirectory() as tmp:
            # -F sends the file's lines with CRLF appended and dots stuffed: give it LF.
            path = Path(tmp) / "message.txt"
            path.write_bytes(message.replace(b"\r\n", b"\n"))
            command = [
                SMTP_SOURCE,
                *("-s", str(connections), "-m", str(messages)),
                "-d",  # keep each connection for the next message
                *("-F", str(path), "-M", HELO, "-f", SENDER, "-t", rcpt(0)),
                f"{HOST}:{port}",
            ]
            cpu, started = children_cpu(), time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True)
            seconds = time.perf_counter() - started
        if done.returncode != 0:
            sys.exit(f"smtp-source failed ({done.returncode}): {done.stderr.strip()}")
        return seconds, children_cpu() - cpu

    return send


def run_aiosmtplib(
    port: int, messages: int, connections: int, message: bytes
) -> Callable[[], tuple[float, float]]:
    async def connection(share: range) -> None:
        client = aiosmtplib.SMTP(
            hostname=HOST, port=port, local_hostname=HELO, start_tls=False, timeout=30
        )
        async with client:
            for i in share:
                await client.sendmail(SENDER, [rcpt(i)], message)

    async def main() -> None:
        await asyncio.gather(
            *(connection(range(c, messages, connections)) for c in range(connections))
        )

    def send() -> tuple[float, float]:
        cpu, started = time.process_time(), time.perf_counter()
        uvloop.run(main())
        return time.perf_counter() - started, time.process_time() - cpu

    return send


def run_smtplib(port: int, messages: int, message: bytes) -> Callable[[], tuple[float, float]]:
    def send() -> tuple[float, float]:
        cpu, started = time.process_time(), time.perf_counter()
        with smtplib.SMTP(HOST, port, local_hostname=HELO) as client:
            for i in range(messages):
                client.sendmail(SENDER, [rcpt(i)], message)
        return time.perf_counter() - started, time.process_time() - cpu

    return send


def ferrymail_transport() -> Any:
    """The ferrymail module if its SMTP transport is built, else None."""
    try:
        import ferrymail
    except ImportError:
        return None
    return ferrymail if hasattr(ferrymail, "Transport") else None


def ferrymail_campaign(fm: Any, tracking: bool, n: int) -> tuple[Any, list[Any]]:
    """The bench template as a campaign, and n recipients for it. With `tracking`, its
    links are click-tracked, an open pixel is added, and List-Unsubscribe is set."""
    secret = "bench-secret-0123456789abcdef"
    clicks = fm.Tracking(base_url="https://t.example.com/c/", secret=secret)
    unsubscribe = fm.Unsubscribe(url="https://t.example.com/u/", mailto="unsub@example.com")
    campaign = fm.Campaign(
        id="bench-smtp",
        sender=SENDER,
        from_="Ferry Outfitters <news@example.com>",
        subject=SUBJECT,
        html=HTML,
        text=TEXT,
        tracking=clicks if tracking else None,
        unsubscribe=unsubscribe if tracking else None,
    )
    recipients = [
        fm.Recipient(
            rcpt(i),
            {"first_name": f"Reader{i}", "order_id": f"FO-{100_000 + i}", "city": _CITIES[i % 6]},
            id=i,
        )
        for i in range(n)
    ]
    return campaign, recipients


def run_ferrymail(
    fm: Any, port: int, campaign: Any, recipients: list[Any], args: argparse.Namespace
) -> Callable[[], tuple[float, float]]:
    chunks = [recipients[i : i + args.chunk] for i in range(0, len(recipients), args.chunk)]
    statuses: Counter[str] = Counter()
    first_failure: list[Any] = []

    async def main() -> None:
        options = fm.SmtpOptions(
            helo_name=HELO,
            tls="off",
            max_connections_per_host=args.connections,
            max_messages_per_connection=1000,
        )
        transport = fm.Transport(options)
        route = fm.Route([fm.MxHost("sink.test", [HOST], port=port)])
        window = asyncio.Semaphore(args.in_flight)

        async def deliver(chunk: list[Any]) -> None:
            async with window:
                for outcome in await transport.deliver(campaign, chunk, route):
                    statuses[outcome.status] += 1
                    if outcome.status != "delivered" and not first_failure:
                        first_failure.append(outcome)

        try:
            await asyncio.gather(*(deliver(c) for c in chunks))
        finally:
            await transport.close()

    def send() -> tuple[float, float]:
        cpu, started = time.process_time(), time.perf_counter()
        uvloop.run(main())
        seconds, used = time.perf_counter() - started, time.process_time() - cpu
        if statuses["delivered"] != len(recipients):
            sys.exit(f"ferrymail: {dict(statuses)}; first failure: {first_failure[:1]}")
        return seconds, used

    return send


def table(rows: list[Row]) -> str:
    by_name = {r.name.split(",")[0]: r for r in rows if r.seconds}
    bases = [by_name.get("smtp-source"), by_name.get("aiosmtplib")]
    head = (
        "client",
        "messages",
        "seconds",
        "messages/s",
        "client CPU s/1k",
        "sink CPU s/1k",
        "sessions",
        "sink counted",
        "vs smtp-source",
        "vs aiosmtplib",
    )
    lines = []
    for r in rows:
        if not r.seconds:
            lines.append((f"{r.name}: {r.note}", *([""] * (len(head) - 1))))
            continue
        rate = r.messages / r.seconds
        ratios = [f"{rate / (b.messages / b.seconds):.2f}x" if b else "" for b in bases]
        lines.append(
            (
                r.name,
                f"{r.messages:,}",
                f"{r.seconds:,.2f}",
                f"{rate:,.0f}",
                f"{1000 * r.cpu / r.messages:.3f}",
                f"{1000 * r.sink_cpu / r.messages:.3f}",
                f"{r.sessions:,}",
                f"{r.sink_messages:,}" + ("" if r.sink_messages == r.messages else " MISMATCH"),
                *ratios,
            )
        )
    widths = [max(len(row[i]) for row in [head, *lines]) for i in range(len(head))]

    def fmt(row: Sequence[str]) -> str:
        cells = [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        return "| " + " | ".join([row[0].ljust(widths[0]), *cells]) + " |"

    # Markdown: the first column left-aligned, the numbers right-aligned.
    rule = "|".join(["", "-" * (widths[0] + 2), *("-" * (w + 1) + ":" for w in widths[1:]), ""])
    return "\n".join([fmt(head), rule, *map(fmt, lines)])


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    postfix = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "postfix"], capture_output=True, text=True
    ).stdout
    versions = ", ".join(
        f"{name} {importlib.metadata.version(name)}" for name in ("aiosmtplib", "uvloop")
    )
    cores = len(os.sched_getaffinity(0))
    return (
        f"{cpu}, {cores} cores; Python {platform.python_version()}; {versions}; "
        f"Postfix {postfix or '?'} (smtp-sink, smtp-source)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=100_000, metavar="N", help="per row")
    p.add_argument("--connections", type=int, default=10, metavar="C", help="per client")
    p.add_argument("--quick", action="store_true", help="5,000 messages: a smoke test")
    p.add_argument("--chunk", type=int, default=2_000, metavar="K", help="recipients a deliver()")
    p.add_argument("--in-flight", type=int, default=4, metavar="D", help="deliver() calls at once")
    p.add_argument("--tracking", action="store_true", help="ferrymail: tracked links")
    args = p.parse_args(argv)
    if args.quick:
        args.messages = 5_000
    if min(args.messages, args.connections, args.chunk, args.in_flight) < 1:
        p.error("--messages, --connections, --chunk and --in-flight must be at least 1")
    for tool in (SMTP_SOURCE, "/usr/sbin/smtp-sink"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: install postfix (scripts/setup does)")

    n, c = args.messages, args.connections
    small = max(1, min(n // 10, SMTPLIB_CAP))
    message = email_message()
    print(machine())
    print(f"{n:,} messages of {len(message):,} bytes a row (smtplib: {small:,}); ", end="")
    print(f"{c} connections; smtp-sink on {HOST}, PIPELINING on\n")

    rows: list[Row] = []
    notes = []
    with Sink(c) as sink:
        port = sink.port
        rows.append(sink.measure(f"smtp-source, {c} conn", n, run_smtp_source(port, n, c, message)))
        rows.append(
            sink.measure(f"aiosmtplib, uvloop, {c} conn", n, run_aiosmtplib(port, n, c, message))
        )
        rows.append(sink.measure("smtplib, 1 conn", small, run_smtplib(port, small, message)))
        fm = ferrymail_transport()
        if fm is None:
            rows.append(
                Row("ferrymail", 0, 0, 0, 0, 0, 0, "not built yet (no ferrymail.Transport)")
            )
        else:
            campaign, recipients = ferrymail_campaign(fm, args.tracking, n)
            size = len(fm.render(campaign, recipients[:1])[0].data)
            label = f"ferrymail{' tracked' if args.tracking else ''}, {c} conn"
            send = run_ferrymail(fm, port, campaign, recipients, args)
            rows.append(sink.measure(label, n, send))
            notes.append(f"ferrymail renders every message too (≈{size:,} bytes each).")
    print(table(rows))
    print("\nclient CPU: smtp-source's rusage; this process's CPU for the Python clients")
    print("(ferrymail's includes rendering). sink CPU: smtp-sink's, from /proc/PID/stat.")
    print("sessions and sink counted: smtp-sink's own -c counters during the row.")
    print(*notes, sep="\n")
    if any(r.seconds and r.sink_messages != r.messages for r in rows):
        print("\nthe sink did not count every message of some row")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
