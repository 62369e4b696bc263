"""`ferrymail run`: deliver what the spool holds, as a service (until Ctrl-C) or until done."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys

import msgspec
import uvloop

from ..config import Config
from ..engine import Engine
from ..spool import shown
from ..webhooks import Webhook
from . import heap
from .common import (
    add_delivery,
    add_spool,
    engine_config,
    on_interrupt,
    reload_shaping,
    spool_must_exist,
    table,
    warn_helo,
    when,
)
from .service import Service, add_metrics_listen, count_events, metrics_socket
from .webhooks import add_service_config, sending, service_webhooks

#: When a drain first looks for recipients another engine holds, and how often after.
LEASE_CHECK_FIRST = 1.0
LEASE_CHECK_EVERY = 5.0
EXAMPLE = """examples:
  ferrymail run --spool ferrymail.db                 # until Ctrl-C or SIGTERM
  ferrymail run --drain --smarthost 127.0.0.1:2525   # until every recipient is final"""


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "run",
        help="deliver the spool's recipients (continues an interrupted send)",
        description="Deliver the spool's pending recipients, waiting for new ones, until "
        "Ctrl-C or SIGTERM (deliveries in flight finish and are recorded).",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_spool(p)
    add_delivery(p)
    add_service_config(p)
    add_metrics_listen(p)
    p.add_argument("--drain", action="store_true", help="stop once every recipient is final")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    spool_must_exist(args.spool)
    heap.configure()  # before the first thread: see heap.py
    config = msgspec.structs.replace(engine_config(args), webhooks=service_webhooks(args))
    sock = metrics_socket(args)
    senders = sending(args, config.webhooks)
    counts = uvloop.run(_run(args.spool, config, args.drain, args.shaping, sock, senders))
    print(table(["state", "recipients"], [(s, n) for s, n in counts.items() if n]))
    return 0


async def _run(
    spool: str | os.PathLike[str],
    config: Config,
    drain: bool,
    shaping: str | None,
    metrics_sock: socket.socket | None = None,
    senders: tuple[Webhook, ...] = (),
) -> dict[str, int]:
    async with Engine(spool, config) as engine:
        on_interrupt(engine.stop)
        warn_helo("run", config.helo_name)
        reloader = reload_shaping(engine, shaping)
        print(f"delivering from {shown(spool)}", file=sys.stderr)
        watching = asyncio.create_task(_watch_leases(engine)) if drain else None
        trimming = asyncio.create_task(heap.trim_every())
        # The webhook sender and /metrics beside the engine, each with a connection of
        # its own to the spool.
        service = Service(spool, senders, metrics_sock)
        service.start()
        counting = None
        if service.metrics is not None:
            service.metrics.watch_connections(engine.connections)
            counting = asyncio.create_task(count_events(engine, service.metrics))
        try:
            await (engine.drain() if drain else engine.run())
        finally:
            if counting is not None:
                counting.cancel()
            await service.stop()
            trimming.cancel()
            await asyncio.gather(trimming, return_exceptions=True)
            if watching is not None:
                watching.cancel()
                await asyncio.gather(watching, return_exceptions=True)
            if reloader is not None:
                await reloader.stop()
        return await engine.counts()


async def _watch_leases(engine: Engine) -> None:
    """Says (one line per owner) when a drain waits for recipients another engine holds:
    leases of a live process, or of another host, which end only in their time."""
    told: set[str] = set()
    await asyncio.sleep(LEASE_CHECK_FIRST)  # the engine's first lease takes back the dead's
    while True:
        for owner, count, until, dead in await engine.leases():
            if owner == engine.owner or owner in told:
                continue
            told.add(owner)
            what = "a dead process" if dead else "another engine"
            print(
                f"waiting for {count:,} recipients leased by {owner} ({what}): they come "
                f"back when it records them or its lease ends ({when(until)})",
                file=sys.stderr,
                flush=True,
            )
        await asyncio.sleep(LEASE_CHECK_EVERY)
