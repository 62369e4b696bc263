"""`ferrymail render`: the exact message one recipient of a campaign would get."""

from __future__ import annotations

import argparse
import itertools
import sys

from ..render import RenderError, render
from .common import CliError
from .inputs import load_campaign, readable_twice, recipients


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "render",
        help="print the message one recipient would get, byte for byte",
        description="Render one recipient's message (DATA as sent, before dot-stuffing).",
        epilog="example: ferrymail render welcome.toml recipients.csv --index 2",
    )
    p.add_argument("campaign", metavar="CAMPAIGN.toml")
    p.add_argument(
        "recipients", metavar="RECIPIENTS", help="a CSV or JSON-lines file (- for stdin)"
    )
    p.add_argument(
        "--index", type=int, default=0, metavar="N", help="the Nth recipient, from 0 (default 0)"
    )
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if args.index < 0:
        raise CliError(f"--index {args.index}: must be 0 or more")
    campaign = load_campaign(args.campaign)
    with readable_twice(args.recipients) as (path, name):
        found = next(itertools.islice(recipients(path, name), args.index, None), None)
    if found is None:
        raise CliError(f"{name}: no recipient at index {args.index}")
    line, recipient = found
    (result,) = render(campaign, [recipient], threads=1)
    if isinstance(result, RenderError):
        raise CliError(f"{name} line {line}: {result.reason}")
    sys.stdout.buffer.write(result.data)
    sys.stdout.flush()
    return 0
