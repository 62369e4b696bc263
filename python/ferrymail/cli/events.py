"""`ferrymail events [--follow]`: the event log, one line per recipient state change."""

from __future__ import annotations

import argparse
import sys
import time
from typing import IO, Any

import orjson

from ..events import LOST
from .common import CliError, add_event_log, add_spool, escaped, event_log_path

#: How often --follow looks for new lines.
POLL = 0.2
#: The exit status when the log has damaged lines (they are reported, never skipped).
DAMAGED = 1


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "events",
        help="print the event log (--follow: and wait for more)",
        description="Print the events send and run appended to the event log. A damaged "
        "line (not a whole JSON event) is reported on stderr with its line number, and "
        f"the exit status is then {DAMAGED}.",
        epilog="example: ferrymail events --follow --event-log events.jsonl",
    )
    add_spool(p)
    add_event_log(p)
    p.add_argument("--follow", "-f", action="store_true", help="wait for new events (Ctrl-C)")
    p.add_argument("--json", action="store_true", help="print the log's JSON lines as they are")
    p.set_defaults(func=main)


class _Reader:
    """Copies whole lines of the log to stdout, counting lines and damaged ones."""

    def __init__(self, log: IO[bytes], path: str, raw: bool) -> None:
        self.log, self.path, self.raw = log, path, raw
        self.line = 0
        self.damaged = 0

    def copy(self, at_end: bool) -> None:
        """Every whole line from where the last copy stopped; `at_end`: a last line
        without its newline is damaged (cut off), else it may still be being written
        and is read whole next time."""
        while (data := self.log.readline()).endswith(b"\n"):
            self._one(data)
        if data and at_end:
            self._one(data)
        elif data:
            self.log.seek(-len(data), 1)
        sys.stdout.flush()

    def _one(self, data: bytes) -> None:
        self.line += 1
        try:
            event = orjson.loads(data)
            if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                raise ValueError("not an event")
            text = data.decode() if self.raw else _readable(event)
        except (ValueError, KeyError, TypeError) as e:
            self.damaged += 1
            what = "cut off (no end of line)" if not data.endswith(b"\n") else _why(e)
            start = data.rstrip(b"\n")[:60].decode("utf-8", "replace")
            print(
                f"ferrymail events: {self.path} line {self.line}: damaged, {what}: "
                f"{escaped(start)}",
                file=sys.stderr,
            )
            return
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def main(args: argparse.Namespace) -> int:
    path = event_log_path(args.spool, args.event_log)
    try:
        log = open(path, "rb")  # noqa: SIM115
    except OSError as e:
        raise CliError(f"{path}: {e.strerror or e}") from None
    with log:
        reader = _Reader(log, path, args.json)
        try:
            reader.copy(at_end=not args.follow)
            while args.follow:
                time.sleep(POLL)
                reader.copy(at_end=False)
        except KeyboardInterrupt:
            pass
    if reader.damaged:
        print(
            f"ferrymail events: {path}: {reader.damaged} damaged line(s) of {reader.line}",
            file=sys.stderr,
        )
        return DAMAGED
    return 0


def _why(error: Exception) -> str:
    return "not JSON" if isinstance(error, orjson.JSONDecodeError) else "not an event"


def _readable(e: dict[str, Any]) -> str:
    """time, type, campaign, address, MX, reply and bounce category on one line, with
    control characters escaped (the text is the receiver's, the address the list's)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["timestamp"]))
    if e["type"] == LOST:
        since = time.strftime("%H:%M:%S", time.localtime(e["since"]))
        return escaped(
            f"{stamp} {LOST:<10} {e['events']:,} events from {since} on are missing here "
            f"({e['reason']}); the spool has their states (ferrymail report)"
        )
    reply = " ".join(str(e[k]) for k in ("code", "enhanced", "text") if e.get(k) is not None)
    where = f" via {e['mx']}" if e.get("mx") else ""
    category = f" [{e['category']}]" if e.get("category") else ""
    line = f"{stamp} {e['type']:<10} {e['campaign']} {e['address']}{where}{category} {reply}"
    return escaped(line.rstrip())
