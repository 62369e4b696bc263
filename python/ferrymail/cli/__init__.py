"""The `ferrymail` command line: one module per command, bad input as one line and exit 2."""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import ConfigError, Error
from . import (
    demo,
    events,
    flush,
    inbound,
    keys,
    render,
    report,
    run,
    send,
    serve,
    shaping,
    status,
    suppress,
    webhooks,
)
from .common import BAD_INPUT, CliError

COMMANDS = (
    send,
    run,
    status,
    report,
    flush,
    suppress,
    events,
    render,
    demo,
    serve,
    inbound,
    shaping,
    keys,
    webhooks,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ferrymail",
        description="An outbound email delivery engine: send campaigns, watch the spool.",
        epilog="example: ferrymail send welcome.toml recipients.csv; "
        "ferrymail COMMAND --help shows each command's options",
    )
    parser.add_argument("--version", action="version", version=f"ferrymail {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add(commands)
    args = parser.parse_args(argv)
    try:
        status: int = args.func(args)
    except (CliError, ConfigError) as e:
        print(f"ferrymail {args.command}: {e}", file=sys.stderr)
        return BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    except OSError as e:  # a file or directory that is not there or not ours to write
        where = f"{e.filename}: " if e.filename else ""
        print(f"ferrymail {args.command}: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except (Error, sqlite3.Error) as e:
        print(f"ferrymail {args.command}: {e}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
