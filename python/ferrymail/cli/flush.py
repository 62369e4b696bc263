"""`ferrymail flush [DOMAIN]`: make deferred recipients due now and lift suspensions, like
`postqueue -f`."""

from __future__ import annotations

import argparse

from .common import add_spool, open_spool


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "flush",
        help="make deferred recipients (of one domain, or all) due now",
        description="Make waiting recipients due now and lift the suspensions and "
        "shaping actions (automation rules that fired) of their sites; put back "
        "recipients whose lease has ended or whose engine died on this "
        "host (after a crash). A running engine picks them up within a second.",
        epilog="example: ferrymail flush example.com --spool ferrymail.db",
    )
    p.add_argument("domain", nargs="?", metavar="DOMAIN", help="default: every domain")
    add_spool(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    with open_spool(args.spool) as spool:
        # Lifted first: a running engine would send recipients made due for a
        # suspended site back to wait.
        lifted = spool.lift(args.domain)
        actions = spool.lift_actions(args.domain)
        count = spool.flush(args.domain)
    print(f"{count:,} recipients due now")
    for site in lifted:
        print(f"suspension of {site} lifted")
    for action in actions:
        print(f"shaping rule {action.rule} on {action.site} lifted")
    return 0
