"""What the commands share: the one-line error, spool and engine options, report printing."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Sequence

import msgspec

from ..config import Config
from ..engine import Engine
from ..errors import ConfigError, Error
from ..routing import Router
from ..shaping.reload import Reloader
from ..spool import Report, Spool, is_url, shown
from ..spool import open_spool as open_any_spool

#: The exit status for bad input: a usage error, as argparse uses.
BAD_INPUT = 2
#: The exit status after Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130
DEFAULT_SPOOL = "ferrymail.db"
#: How long `--dns-server` gets to answer the check made before anything is submitted.
DNS_CHECK_TIMEOUT = 2.0


class CliError(Exception):
    """Bad input: main() prints the message as one line on stderr and exits with 2."""


def add_spool(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--spool",
        default=DEFAULT_SPOOL,
        metavar="FILE|URL",
        help="an SQLite file, or a PostgreSQL database that engines on many machines "
        f"share: postgresql://user:password@host:port/dbname (default: {DEFAULT_SPOOL})",
    )


def beside_spool(spool: str, name: str) -> str:
    """A file next to the spool's file; for a spool on a server, in the working
    directory (each node keeps its own logs)."""
    if is_url(spool):
        return name
    return os.path.join(os.path.dirname(os.path.abspath(spool)), name)


def add_event_log(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--event-log",
        metavar="FILE",
        help="JSON lines, one per state change (default: events.jsonl next to the spool)",
    )


def event_log_path(spool: str, event_log: str | None) -> str:
    if event_log is not None:
        return event_log
    return beside_spool(spool, "events.jsonl")


def add_delivery(p: argparse.ArgumentParser, *, event_log: bool = True) -> None:
    """The options that say where mail goes: DNS, a smarthost, per-domain routes; and
    --event-log unless the command has a log of its own under that name (serve)."""
    p.add_argument("--helo", metavar="NAME", help="this host's EHLO name (default: hostname)")
    p.add_argument("--dns-server", metavar="HOST:PORT", help="default: the system resolver")
    p.add_argument(
        "--mx-port",
        type=int,
        default=25,
        metavar="PORT",
        help="the port MX hosts are connected on (default: 25; another for tests)",
    )
    p.add_argument("--smarthost", metavar="HOST:PORT", help="relay everything through it")
    p.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="DOMAIN=HOST:PORT",
        help="deliver one domain's mail there (repeatable)",
    )
    p.add_argument(
        "--shaping",
        metavar="FILE",
        help="a traffic shaping file (limits and automation rules per site); reloaded on "
        "SIGHUP and when it changes",
    )
    p.add_argument(
        "--node",
        metavar="NAME",
        help="this engine's name among those sharing one spool, in every event "
        "(default: the host name)",
    )
    if event_log:
        add_event_log(p)


def engine_config(args: argparse.Namespace, *, own_event_log: bool = True) -> Config:
    """The Config the delivery options describe, checked (a bad value is a CliError).
    `own_event_log=False`: the command's --event-log is another log (serve's clicks and
    opens), so the delivery events go to events.jsonl next to the spool."""
    routes: dict[str, str] = {}
    for route in args.route:
        domain, eq, target = route.partition("=")
        if not eq or not domain or not target:
            raise CliError(f"--route {route!r}: expected DOMAIN=HOST:PORT")
        routes[domain.strip().lower()] = target
    if not 0 < args.mx_port < 65536:
        raise CliError(f"--mx-port {args.mx_port}: not a TCP port (1 to 65535)")
    try:
        config = Config(
            helo_name=args.helo or socket.gethostname(),
            dns_servers=[args.dns_server] if args.dns_server else None,
            smarthost=args.smarthost,
            routes=routes,
            event_log=event_log_path(args.spool, args.event_log if own_event_log else None),
            mx_port=args.mx_port,
            shaping=args.shaping,
            node=args.node,
        )
        Router(config)  # checks smarthost, routes and DNS servers
    except (ConfigError, ValueError) as e:
        raise CliError(str(e)) from None
    if config.dns_servers and not config.smarthost:
        check_dns_server(config.dns_servers[0])
    return config


#: One label of a host name (RFC 1123 §2.1): letters, digits, hyphens inside.
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def helo_problem(name: str) -> str | None:
    """Why `name` is a HELO name strict receivers refuse (Postfix's
    reject_non_fqdn_helo_hostname, reject_invalid_helo_hostname), or None. An address
    literal ("[192.0.2.1]") is valid (RFC 5321 §4.1.1.1)."""
    if name.startswith("[") and name.endswith("]"):
        return None
    labels = name.removesuffix(".").split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return "is not a valid host name"
    if len(labels) < 2:
        return "is not a fully qualified domain name"
    if labels[-1].isdigit():
        return "is not a domain name (its last label is a number)"
    return None


def warn_helo(command: str, name: str, how: str = "--helo mail.example.com") -> None:
    """One line on stderr, before sending, when receivers would refuse the HELO name."""
    problem = helo_problem(name)
    if problem is not None:
        warn(
            command,
            f"the HELO name {name!r} {problem}; strict receivers refuse it "
            f"(504 5.5.2): give this host's public name, e.g. {how}",
        )


def warn(command: str, text: str) -> None:
    print(f"ferrymail {command}: warning: {text}", file=sys.stderr, flush=True)


def check_dns_server(server: str) -> None:
    """Fails with a CliError unless `server` answers a query (any answer will do)."""
    import dns.exception
    import dns.message
    import dns.query

    host, _, port = server.rpartition(":")
    host = host.strip("[]") or server
    try:
        dns.query.udp(
            dns.message.make_query(".", "NS"),
            host,
            timeout=DNS_CHECK_TIMEOUT,
            port=int(port) if port.isdigit() else 53,
        )
    except dns.exception.Timeout:
        raise CliError(
            f"DNS server {server} does not answer (no reply in {DNS_CHECK_TIMEOUT:g} s)"
        ) from None
    except (OSError, ValueError, dns.exception.DNSException) as e:
        raise CliError(f"DNS server {server} cannot be queried: {e}") from None


def spool_must_exist(path: str) -> None:
    """A spool file must be there (a typo must not start an empty spool); a database
    is checked when it is opened."""
    if not is_url(path) and not os.path.exists(path):
        raise CliError(f"{path}: no such spool (give --spool FILE or --spool URL)")


def reload_shaping(engine: Engine, path: str | None) -> Reloader | None:
    """Reloads the engine's shaping file on SIGHUP and when it changes (saying so on
    stderr); None without one."""
    if path is None:
        return None

    def say(text: str) -> None:
        print(f"ferrymail: {text}", file=sys.stderr, flush=True)

    reloader = Reloader(path, engine.reload_shaping, say)
    reloader.start()
    return reloader


def on_interrupt(stop: Callable[[], None]) -> Callable[[], bool]:
    """Makes SIGINT and SIGTERM call `stop` on the running loop (the engine cuts the
    sessions in progress and puts their recipients back in the queue); a second one ends
    the process at once, leaving its leases to the next engine (a dead process's leases
    are taken back as soon as another engine starts). Returns a function that says
    whether either came."""
    loop = asyncio.get_running_loop()
    came: list[bool] = []

    def handler() -> None:
        if came:
            print("stopping now: the next `ferrymail run` takes the rest", file=sys.stderr)
            sys.stderr.flush()
            os._exit(130)  # 128 + SIGINT, as a shell reports an interrupted command
        came.append(True)
        print(
            "\nstopping: cutting the sessions in progress, their recipients go back to the "
            "queue (again to stop at once)…",
            file=sys.stderr,
        )
        stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, handler)
    return lambda: bool(came)


def print_report(report: Report, as_json: bool) -> None:
    """A campaign's report: JSON, or tables of states, domains, categories and replies."""
    if as_json:
        sys.stdout.buffer.write(msgspec.json.encode(report) + b"\n")
        sys.stdout.flush()
        return
    print(f"campaign {escaped(report.campaign)}")
    total = sum(report.states.values())
    rows = [(state, count) for state, count in report.states.items() if count]
    print(table(["state", "recipients"], [*rows, ("total", total)]))
    if report.domains:
        states = [s for s in report.states if any(s in d for d in report.domains.values())]
        top = sorted(report.domains.items(), key=lambda kv: (-sum(kv[1].values()), natural(kv[0])))
        shown = [(domain, *(by.get(s, 0) for s in states)) for domain, by in top[:20]]
        print()
        print(table(["domain", *states], shown))
        if len(top) > 20:
            print(f"… and {len(top) - 20} more domains")
    if report.categories:
        print()
        print(table(["bounce category", "recipients"], sorted(report.categories.items())))
    if report.replies:
        print()
        print(table(["last reply", "recipients"], report.replies))
    came_back = [
        (name.replace("_", " "), f"{value:.2%}" if isinstance(value, float) else value)
        for name, value in msgspec.structs.asdict(report.feedback).items()
        if value and not isinstance(value, dict)
    ]
    if came_back:  # clicks, opens, unsubscribes, complaints (ferrymail serve, inbound)
        print()
        print(table(["came back", "count"], came_back))


#: What a terminal would act on instead of showing: C0 and C1 controls (escape
#: sequences clear the screen or set the title), line and paragraph separators, and the
#: bidirectional overrides that make text read in another order than it is.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def escaped(text: str) -> str:
    """`text` with what a terminal would act on shown as \\xNN or \\uNNNN: addresses
    come from the list, reply texts from receivers."""
    return _CONTROL.sub(lambda m: _escape(m[0]), text)


def _escape(c: str) -> str:
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def natural(text: str) -> tuple[tuple[int, int | str], ...]:
    """A sort key that puts d2 before d10: digits compare as numbers."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text) if part
    )


def table(header: Sequence[str], rows: Sequence[tuple[object, ...]]) -> str:
    """A plain text table: text left-aligned, numbers right-aligned."""
    cells = [list(header), *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    numeric = [all(isinstance(row[i], int | float) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(cells):
        parts = [
            c.rjust(w) if numeric[i] else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: object) -> str:
    # Escaped: domains and addresses come from lists, reply texts from receivers.
    return f"{value:,}" if isinstance(value, int) else escaped(str(value))


def when(timestamp: float | None) -> str:
    """A spool time for people: local time and how far from now."""
    if timestamp is None:
        return "-"
    delta = timestamp - time.time()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
    return f"{stamp} ({'in ' if delta > 0 else ''}{_span(abs(delta))}{' ago' if delta < 0 else ''})"


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@contextlib.contextmanager
def open_spool(path: str, *, write: bool = True) -> Iterator[Spool]:
    """An existing spool (a file or a database), read or changed while engines may be
    running on it. `write=False` (status, report): a spool file on a read-only mount,
    or one this user may not write, is opened read-only instead of refused. A database
    that cannot be reached or refuses us is one line (the URL without its password).
    The connection is a light one (a small page cache): the engine's work is not here."""
    spool_must_exist(path)
    name = shown(path)
    try:
        read_only = not write and not is_url(path) and not _writable(path)
        with open_any_spool(path, read_only=read_only, light=True) as spool:
            yield spool
    except (Error, sqlite3.DatabaseError) as e:
        message = str(e)
        raise CliError(message if name in message else f"{name}: {message}") from None


def _writable(path: str) -> bool:
    """Whether SQLite could write the spool: the file, and its directory (for the WAL)."""
    directory = os.path.dirname(os.path.abspath(path))
    return (
        os.access(path, os.W_OK)
        and os.access(directory, os.W_OK)
        and not _read_only_mount(directory)
    )


def _read_only_mount(directory: str) -> bool:
    """os.access says yes to root on a read-only mount: statvfs knows better."""
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        return False
