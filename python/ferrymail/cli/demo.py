"""`ferrymail demo`: the whole engine on this machine, delivering the sample campaign to a
local SMTP sink, with a live progress line and the final report."""

from __future__ import annotations

import argparse
import base64
import itertools
import os
import sys
import tempfile
import time

import uvloop

from .. import render, sample
from ..campaign import DkimKey
from ..config import Config
from ..demo_sink import DemoSink
from ..engine import Engine
from ..render import RenderedMessage
from .common import INTERRUPTED, CliError, on_interrupt, print_report, warn_helo
from .progress import Progress

EXAMPLE = """examples:
  ferrymail demo                       # 10,000 recipients over 50 domains
  ferrymail demo --recipients 100000 --domains 500
  ferrymail demo --render-only --threads 1   # rendering alone: one message and the rate

Everything stays on this machine: the engine relays to a built-in SMTP sink on
127.0.0.1 (no DNS, nothing leaves), with a throwaway spool unless --spool is given."""
#: PKCS#8's fixed prefix of an Ed25519 private key (RFC 8410): 32 random bytes follow.
_ED25519_PKCS8 = bytes.fromhex("302e020100300506032b657004220420")


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "demo",
        help="send a sample campaign to a built-in local SMTP sink, with live progress",
        description="Run the whole engine here: spool, routing, rendering with tracking, "
        "unsubscribe and a fresh Ed25519 DKIM key, SMTP delivery to a local sink.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--recipients", type=int, default=10_000, metavar="N", help="default 10,000")
    p.add_argument("--domains", type=int, default=50, metavar="N", help="default 50")
    p.add_argument(
        "--spool",
        metavar="FILE|URL",
        help="an SQLite file or postgresql://… (default: a temporary file, removed after)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--render-only", action="store_true", help="only render, as fast as possible")
    p.add_argument(
        "--threads", type=int, default=None, metavar="N", help="rendering threads for --render-only"
    )
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if args.recipients < 1 or args.domains < 1:
        raise CliError("--recipients and --domains: must be at least 1")
    if args.render_only:
        return render_only(args.recipients, args.threads)
    with tempfile.TemporaryDirectory(prefix="ferrymail-demo-") as scratch:
        spool = args.spool or os.path.join(scratch, "demo.db")
        return uvloop.run(_demo(spool, scratch, args.recipients, args.domains, args.json))


def dkim_key() -> DkimKey:
    """A fresh Ed25519 key (PKCS#8 PEM) for example.com, selector "demo"."""
    der = _ED25519_PKCS8 + os.urandom(32)
    pem = f"-----BEGIN PRIVATE KEY-----\n{base64.b64encode(der).decode()}\n"
    return DkimKey("example.com", "demo", pem + "-----END PRIVATE KEY-----\n")


async def _demo(spool: str, scratch: str, n: int, domains: int, as_json: bool) -> int:
    campaign = sample.campaign(f"demo-{int(time.time())}", dkim=[dkim_key()])
    with DemoSink() as sink:
        config = Config(
            helo_name="demo.ferrymail.test",
            smarthost=sink.address,
            event_log=os.path.join(scratch, "events.jsonl"),
        )
        async with Engine(spool, config) as engine:
            interrupted = on_interrupt(engine.stop)
            warn_helo("demo", config.helo_name, "a name with a dot")
            async with Progress(engine, n) as progress:
                stream = (r for r in sample.recipients(n, domains) if not interrupted())
                await engine.submit(campaign, stream)
                if not interrupted():
                    await engine.drain()
            elapsed = progress.elapsed
            report = await engine.report(campaign.id)
        print_report(report, as_json)
        delivered = report.states["delivered"]
        print(
            f"\n{delivered:,} messages delivered in {elapsed:.2f} s "
            f"({delivered / max(elapsed, 1e-9):,.0f}/s); the sink took {sink.messages:,} "
            f"({sink.bytes / max(1, sink.messages):,.0f} bytes each) over {sink.sessions} "
            "connections",
            file=sys.stderr,
        )
    return INTERRUPTED if interrupted() else 0


def render_only(recipients: int, threads: int | None) -> int:
    """Renders the sample campaign for `recipients` recipients, 1,000 at a time as a
    sending pipeline would, prints the first message and the throughput."""
    campaign = sample.campaign()
    stream = sample.recipients(recipients)
    first: RenderedMessage | None = None
    rendered = failed = size = 0
    started = time.perf_counter()
    while chunk := list(itertools.islice(stream, 1_000)):
        for result in render(campaign, chunk, threads=threads):
            if isinstance(result, RenderedMessage):
                first = first or result
                rendered += 1
                size += len(result.data)
            else:
                failed += 1
    elapsed = time.perf_counter() - started
    if first is not None:
        sys.stdout.write(first.data.decode("utf-8", "replace"))
    cores = "1 thread" if threads == 1 else f"{threads or os.cpu_count()} threads"
    print(
        f"\nrendered {rendered:,} messages ({failed} failed) in {elapsed:.3f} s on {cores}: "
        f"{rendered / elapsed:,.0f} messages/s, {size / max(1, rendered):,.0f} bytes each"
    )
    return 0 if not failed else 1
