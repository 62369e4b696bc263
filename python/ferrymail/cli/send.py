"""`ferrymail send`: submit a campaign's recipients, deliver until all are final, report."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator

import msgspec
import uvloop

from ..campaign import Campaign
from ..config import Config
from ..engine import Engine
from ..errors import ConfigError
from ..spool import Report, shown
from ..wire import Recipient
from .common import (
    INTERRUPTED,
    CliError,
    add_delivery,
    add_spool,
    engine_config,
    on_interrupt,
    print_report,
    warn,
    warn_helo,
)
from .inputs import check_recipients, load_campaign, readable_twice, recipients
from .progress import Progress

EXAMPLE = """example:
  ferrymail send welcome.toml recipients.csv --spool ferrymail.db --smarthost 127.0.0.1:2525

welcome.toml:
  id = "welcome-2026"
  sender = "bounces@news.example.com"
  from = "Ferry Outfitters <news@example.com>"
  subject = "Welcome aboard, {{ first_name }}"
  html = "welcome.html"            # template files, relative to this file
  text = "welcome.txt"
  verp = true                      # MAIL FROM bounces+TOKEN@news.example.com per recipient
  [tracking]
  base_url = "https://t.example.com/c/"
  secret = "a-secret-of-16-bytes-or-more"
  [unsubscribe]
  url = "https://t.example.com/u/"
  mailto = "unsubscribe@example.com"
  [dkim]
  domain = "example.com"
  selector = "s2026"
  key = "s2026.pem"

recipients.csv: a header row with an `email` column (`id` optional, other columns are
template variables), or JSON lines: {"email": "ann@example.net", "first_name": "Ann"}

Ctrl-C stops cleanly: deliveries in flight finish and are recorded; `ferrymail run`
delivers the rest."""


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "send",
        help="send a campaign to a recipients file and print the report",
        description="Submit every recipient, deliver until each is final, print the report.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("campaign", metavar="CAMPAIGN.toml")
    p.add_argument(
        "recipients",
        metavar="RECIPIENTS",
        help="a CSV or JSON-lines file, or - to read it from stdin (kept in a temporary "
        "file while send runs: it is read twice, to check it first)",
    )
    add_spool(p)
    add_delivery(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    # Everything is checked before the spool is opened: bad input changes nothing.
    campaign = load_campaign(args.campaign)
    with readable_twice(args.recipients) as (path, name):
        count = check_recipients(campaign, path, name)
        config = engine_config(args)
        report, interrupted = uvloop.run(_send(args.spool, config, campaign, path, count))
    print_report(report, args.json)
    if interrupted:
        pending = sum(report.states[s] for s in ("queued", "in-flight", "deferred"))
        submitted = sum(report.states.values())
        print(
            f"interrupted: {pending:,} recipients still pending, {count - submitted:,} not "
            f"submitted; `ferrymail run --spool {shown(args.spool)}` delivers the pending ones",
            file=sys.stderr,
        )
        return INTERRUPTED
    return 0


async def _send(
    spool: str | os.PathLike[str], config: Config, campaign: Campaign, path: str, total: int
) -> tuple[Report, bool]:
    async with Engine(spool, config) as engine:
        interrupted = on_interrupt(engine.stop)
        stored = await engine.stored_spec(campaign.id)

        def stream() -> Iterator[Recipient]:
            for _, recipient in recipients(path):
                if interrupted():
                    return
                yield recipient

        replacing = stored is not None and stored != msgspec.msgpack.encode(campaign.spec)
        before = await _states(engine, campaign.id)
        if replacing and before is not None:
            before.pop("failed")  # a replaced spec's failed recipients are queued again
        async with Progress(engine, total, before):
            try:
                result = await engine.submit(campaign, stream())
            except ConfigError as e:  # the id is in the spool with another campaign
                raise CliError(str(e)) from None
            if replacing:
                print(
                    f"campaign {campaign.id!r} was in the spool with another spec, but none "
                    "of its recipients had been attempted: this one replaces it (those "
                    "that failed are queued again)",
                    file=sys.stderr,
                )
            # After the campaign is in the spool (a refusal is the only line), before
            # anything is sent.
            _warn(config, campaign)
            if result.duplicates:
                print(
                    f"{result.duplicates:,} recipients were in campaign {campaign.id!r} "
                    "already and were not queued again",
                    file=sys.stderr,
                )
            if not interrupted():
                await engine.drain()
        return await engine.report(campaign.id), interrupted()


def _warn(config: Config, campaign: Campaign) -> None:
    warn_helo("send", config.helo_name)
    if not campaign.dkim:
        warn(
            "send",
            f"campaign {campaign.id!r} has no DKIM key: Gmail and Yahoo require bulk "
            "mail to be signed; add a [dkim] table (domain, selector, key)",
        )


async def _states(engine: Engine, campaign_id: str) -> dict[str, int] | None:
    """The campaign's recipients by state, when the spool has it already (a send run
    again after an interruption, or by mistake: nobody is queued twice)."""
    try:
        return (await engine.report(campaign_id)).states
    except ConfigError:
        return None
