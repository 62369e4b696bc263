"""`ferrymail demo`: renders the sample campaign and shows one message and the throughput."""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

from .. import render, sample
from ..render import RenderedMessage


def demo(recipients: int, threads: int | None) -> int:
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


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "demo",
        help="render a sample campaign and show one message and the throughput",
        description="Render the sample campaign, e.g.: ferrymail demo --recipients 100000",
    )
    p.add_argument("--recipients", type=int, default=10_000, metavar="N")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="default: every core")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    return demo(args.recipients, args.threads)
