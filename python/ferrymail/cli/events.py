"""`ferrymail events [--follow]`: the event log, one line per recipient state change."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import IO

from .common import CliError, add_event_log, add_spool, event_log_path

#: How often --follow looks for new lines.
POLL = 0.2


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "events",
        help="print the event log (--follow: and wait for more)",
        description="Print the events send and run appended to the event log.",
        epilog="example: ferrymail events --follow --event-log events.jsonl",
    )
    add_spool(p)
    add_event_log(p)
    p.add_argument("--follow", "-f", action="store_true", help="wait for new events (Ctrl-C)")
    p.add_argument("--json", action="store_true", help="print the log's JSON lines as they are")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    path = event_log_path(args.spool, args.event_log)
    try:
        log = open(path, "rb")  # noqa: SIM115
    except OSError as e:
        raise CliError(f"{path}: {e.strerror or e}") from None
    with log:
        try:
            _copy(log, args.json)
            while args.follow:
                time.sleep(POLL)
                _copy(log, args.json)
        except KeyboardInterrupt:
            pass
    return 0


def _copy(log: IO[bytes], raw: bool) -> None:
    while (line := log.readline()).endswith(b"\n"):
        text = line.decode("utf-8", "replace")
        sys.stdout.write(text if raw else _readable(text))
    if line:  # a line still being written: read it whole next time
        log.seek(-len(line), 1)
    sys.stdout.flush()


def _readable(line: str) -> str:
    """time, type, campaign, address, MX and reply on one line."""
    try:
        e = json.loads(line)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["timestamp"]))
        reply = " ".join(str(e[k]) for k in ("code", "enhanced", "text") if e.get(k) is not None)
        where = f" via {e['mx']}" if e.get("mx") else ""
        return (
            f"{stamp} {e['type']:<10} {e['campaign']} {e['address']}{where} {reply}".rstrip() + "\n"
        )
    except (ValueError, KeyError, TypeError):
        return line
