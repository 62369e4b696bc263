"""`ferrymail suppress add|remove|list`: the suppression list (addresses never sent to)."""

from __future__ import annotations

import argparse
import sys

import msgspec

from .common import CliError, add_spool, open_spool, table, when

EXAMPLE = """examples:
  ferrymail suppress add ann@example.net --reason "asked by phone"
  ferrymail suppress remove ann@example.net
  ferrymail suppress list"""


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "suppress",
        help="add, remove or list suppressed addresses",
        description="Edit the suppression list: submit marks these addresses suppressed.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", choices=["add", "remove", "list"])
    p.add_argument("address", nargs="?", metavar="ADDRESS")
    p.add_argument("--reason", default="added by hand", help="for add")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="for list: newest N")
    p.add_argument("--json", action="store_true", help="for list: print it as JSON")
    add_spool(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if args.action != "list" and not args.address:
        raise CliError(f"suppress {args.action}: give the ADDRESS")
    if args.action == "list" and args.address:
        raise CliError("suppress list: takes no ADDRESS")
    with open_spool(args.spool) as spool:
        if args.action == "add":
            spool.suppress(args.address, args.reason)
            print(f"{args.address} suppressed")
        elif args.action == "remove":
            if not spool.unsuppress(args.address):
                print(f"{args.address} was not suppressed", file=sys.stderr)
                return 1
            print(f"{args.address} no longer suppressed")
        else:
            rows = spool.suppressions(args.limit)
            if args.json:
                listed = [{"address": a, "reason": r, "added_at": t} for a, r, t in rows]
                sys.stdout.buffer.write(msgspec.json.encode(listed) + b"\n")
                return 0
            print(table(["address", "reason", "added"], [(a, r, when(t)) for a, r, t in rows]))
    return 0
