"""`ferrymail webhooks status|replay`: the webhook outbox's backlog and dead letters; and
`--service-config`, the option that makes `run` and `serve` send webhooks."""

from __future__ import annotations

import argparse

from ..errors import ConfigError
from ..webhooks import Webhook, load
from .common import CliError, add_spool, open_spool, table, when


def add_service_config(p: argparse.ArgumentParser, *, sends: bool = True) -> None:
    p.add_argument(
        "--service-config",
        metavar="FILE",
        help="a TOML file of [[webhook]] tables: the events they want go to the spool's "
        "webhook outbox"
        + (
            ", and are sent to those endpoints (signed, retried; README, Webhooks)" if sends else ""
        ),
    )
    if sends:
        p.add_argument(
            "--no-webhook-sender",
            dest="webhook_sender",
            action="store_false",
            help="write the webhook outbox but leave the sending to another process on the "
            "spool (one sender per spool keeps each endpoint's order)",
        )


def sending(args: argparse.Namespace, hooks: tuple[Webhook, ...]) -> tuple[Webhook, ...]:
    """The webhooks this process sends to: none with --no-webhook-sender."""
    return hooks if getattr(args, "webhook_sender", True) else ()


def service_webhooks(args: argparse.Namespace) -> tuple[Webhook, ...]:
    """The webhooks of --service-config (none without it); a bad file is a CliError
    naming file, line and key."""
    path = getattr(args, "service_config", None)
    if path is None:
        return ()
    try:
        return tuple(load(path))
    except ConfigError as e:
        raise CliError(str(e)) from None


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "webhooks",
        help="the webhook outbox: events waiting, dead letters, replay",
        description="Show the events waiting in the spool's webhook outbox per endpoint, "
        "or send its dead letters (batches whose retries gave up) again.",
        epilog="examples: ferrymail webhooks status; ferrymail webhooks replay [--endpoint NAME]",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = actions.add_parser("status", help="events waiting and dead letters per endpoint")
    add_spool(status)
    status.set_defaults(func=_status)
    replay = actions.add_parser("replay", help="send the dead letters again, first in line")
    add_spool(replay)
    replay.add_argument("--endpoint", metavar="NAME", help="only this endpoint's (its name)")
    replay.set_defaults(func=_replay)


def _status(args: argparse.Namespace) -> int:
    with open_spool(args.spool, write=False) as spool:
        backlog = spool.webhook_backlog()
    if not backlog:
        print("the webhook outbox is empty")
        return 0
    rows = [
        (
            b.endpoint,
            f"{b.pending:,}",
            f"{b.dead:,}",
            when(b.oldest) if b.oldest else "",
            b.last_error or "",
        )
        for b in backlog
    ]
    print(table(["endpoint", "waiting", "dead letters", "oldest waiting", "last error"], rows))
    return 0


def _replay(args: argparse.Namespace) -> int:
    with open_spool(args.spool) as spool:
        count = spool.webhook_replay(args.endpoint)
    print(f"{count:,} events back in the outbox; a running sender sends them first")
    return 0
