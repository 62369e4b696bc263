"""`ferrymail run`: deliver what the spool holds, as a service (until Ctrl-C) or until done."""

from __future__ import annotations

import argparse
import os
import sys

import uvloop

from ..config import Config
from ..engine import Engine
from .common import (
    add_delivery,
    add_spool,
    engine_config,
    on_interrupt,
    spool_must_exist,
    table,
    warn_helo,
)

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
    p.add_argument("--drain", action="store_true", help="stop once every recipient is final")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    spool_must_exist(args.spool)
    config = engine_config(args)
    counts = uvloop.run(_run(args.spool, config, args.drain))
    print(table(["state", "recipients"], [(s, n) for s, n in counts.items() if n]))
    return 0


async def _run(spool: str | os.PathLike[str], config: Config, drain: bool) -> dict[str, int]:
    async with Engine(spool, config) as engine:
        on_interrupt(engine.stop)
        warn_helo("run", config.helo_name)
        print(f"delivering from {os.fspath(spool)}", file=sys.stderr)
        await (engine.drain() if drain else engine.run())
        spooler = engine._open_spooler()
        return await spooler.call(spooler.spool.counts)
