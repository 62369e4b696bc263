"""The `ferrymail` command line. For now: `ferrymail demo` renders the sample campaign."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from . import render, sample
from .render import RenderedMessage


def demo(recipients: int, threads: int | None) -> int:
    """Renders the sample campaign for `recipients` recipients, prints the first
    message and the throughput."""
    campaign = sample.campaign()
    batch = list(sample.recipients(recipients))
    started = time.perf_counter()
    results = render(campaign, batch, threads=threads)
    elapsed = time.perf_counter() - started
    messages = [r for r in results if isinstance(r, RenderedMessage)]
    failed = len(results) - len(messages)
    if messages:
        sys.stdout.write(messages[0].data.decode("utf-8", "replace"))
    cores = "1 thread" if threads == 1 else f"{threads or os.cpu_count()} threads"
    print(
        f"\nrendered {len(messages):,} messages ({failed} failed) in {elapsed:.3f} s on {cores}: "
        f"{len(messages) / elapsed:,.0f} messages/s, "
        f"{sum(len(m.data) for m in messages) / max(1, len(messages)):,.0f} bytes each"
    )
    return 0 if not failed else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ferrymail", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser(
        "demo",
        help="render a sample campaign and show one message and the throughput",
        description="Render the sample campaign, e.g.: ferrymail demo --recipients 100000",
    )
    p.add_argument("--recipients", type=int, default=10_000, metavar="N")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="default: every core")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args.recipients, args.threads)
    return 2


if __name__ == "__main__":
    sys.exit(main())
