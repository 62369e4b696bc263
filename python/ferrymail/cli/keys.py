"""`ferrymail keys create|list|revoke`: the service API's keys."""

from __future__ import annotations

import argparse
import sys

from ..service import keys
from .common import CliError, add_spool, open_spool, table, when

EXAMPLE = """examples:
  ferrymail keys create esp-app
  ferrymail keys create dashboard --read-only
  ferrymail keys list
  ferrymail keys revoke esp-app"""


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "keys",
        help="create, list or revoke API keys of `ferrymail serve`'s /v1 API",
        description="API keys for the /v1 service API, sent as `Authorization: Bearer "
        "TOKEN`. The spool keeps only a hash: the token is printed once, at create.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", choices=["create", "list", "revoke"])
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument("--read-only", action="store_true", help="for create: GET requests only")
    add_spool(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if args.action != "list" and not args.name:
        raise CliError(f"keys {args.action}: give the key's NAME")
    with open_spool(args.spool) as spool:
        if args.action == "create":
            token = keys.new_token()
            if not spool.add_api_key(args.name, keys.digest(token), args.read_only):
                raise CliError(f"keys create: there is a key named {args.name!r} already")
            print(token)
            print(
                f"key {args.name!r} created{' (read-only)' if args.read_only else ''}: "
                "the token above is shown only now",
                file=sys.stderr,
            )
        elif args.action == "revoke":
            if not spool.revoke_api_key(args.name):
                print(f"no key named {args.name!r}", file=sys.stderr)
                return 1
            print(f"key {args.name!r} revoked")
        else:
            rows = [
                (n, "read-only" if r else "read-write", when(t)) for n, r, t in spool.api_keys()
            ]
            print(table(["name", "access", "created"], rows))
    return 0
