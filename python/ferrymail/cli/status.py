"""`ferrymail status`: the spool at a glance: counts by state, pending domains, next retry,
suspended sites."""

from __future__ import annotations

import argparse
import sys

import msgspec

from ..spool import ShapingAction
from .common import add_spool, open_spool, table, when


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "status",
        help="recipients by state, pending domains, the next retry and suspended sites",
        description="The spool at a glance (it may be read while an engine runs on it).",
        epilog="example: ferrymail status --spool ferrymail.db --json",
    )
    add_spool(p)
    p.add_argument("--json", action="store_true", help="print it as JSON")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    with open_spool(args.spool, write=False) as spool:
        status = spool.status()
    if args.json:
        sys.stdout.buffer.write(msgspec.json.encode(status) + b"\n")
        return 0
    rows = [(state, n) for state, n in status.states.items() if n]
    print(table(["state", "recipients"], [*rows, ("total", sum(status.states.values()))]))
    if status.domains:
        print()
        print(
            table(
                ["domain", "pending", "in flight", "deferred", "next attempt"],
                [
                    (d.domain, d.pending, d.in_flight, d.deferred, when(d.next_attempt))
                    for d in status.domains
                ],
            )
        )
        if status.pending_domains > len(status.domains):
            print(f"… and {status.pending_domains - len(status.domains)} more domains")
    if status.suspended:
        print()
        print(
            table(
                ["suspended site", "until", "why", "domains"],
                [(s.site, when(s.until), s.reason, _domains(s.domains)) for s in status.suspended],
            )
        )
    if status.actions:
        print()
        print(
            table(
                ["shaping rule", "on", "does", "until", "reply", "domains"],
                [
                    (a.rule, _target(a), _does(a), when(a.until), a.reply, _domains(a.domains))
                    for a in status.actions
                ],
            )
        )
    print(f"\nnext due: {when(status.next_due) if status.next_due else 'nothing pending'}")
    return 0


def _target(action: ShapingAction) -> str:
    """What an action is on: the site, the site from a source, a campaign at the site."""
    if action.source:
        return f"{action.site} from {action.source}"
    if action.campaign:
        return f"campaign {action.campaign} at {action.site}"
    return action.site


def _does(action: ShapingAction) -> str:
    done = ["suspend"] * action.suspend + ["bounce queued"] * action.bounce
    done += [f"{name} = {value}" for name, value in action.limits.items()]
    if action.restore:
        done.append(f"restored over {action.restore:g} s")
    return ", ".join(done)


def _domains(domains: list[str], shown: int = 3) -> str:
    more = len(domains) - shown
    return ", ".join(domains[:shown]) + (f" and {more} more" if more > 0 else "")
