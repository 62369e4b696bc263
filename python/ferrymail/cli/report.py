"""`ferrymail report CAMPAIGN_ID`: where one campaign stands, as a table or JSON."""

from __future__ import annotations

import argparse

from .common import add_spool, open_spool, print_report


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "report",
        help="one campaign's counts by state, domain and bounce category, and top replies",
        description="Where one campaign stands.",
        epilog="example: ferrymail report welcome-2026 --spool ferrymail.db --json",
    )
    p.add_argument("campaign", metavar="CAMPAIGN_ID")
    add_spool(p)
    p.add_argument("--json", action="store_true", help="print it as JSON")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    with open_spool(args.spool, write=False) as spool:
        report = spool.report(args.campaign)
    print_report(report, args.json)
    return 0
