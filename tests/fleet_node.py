"""One engine of a test fleet, as its own process: `python fleet_node.py SETTINGS.json`
drains the PostgreSQL spool the settings name (the fleet tests start three with
`start_node`, and kill them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import ferrymail
import uvloop
from ferrymail.retry import RetryPolicy


async def main(settings: dict[str, object]) -> None:
    config = ferrymail.Config(
        helo_name="fleet.test",
        node=str(settings["node"]),
        routes=dict(settings["routes"]),  # type: ignore[call-overload]
        smtp=ferrymail.SmtpOptions("fleet.test", tls="off", idle_timeout=2.0),
        retry=RetryPolicy(first_retry=0.5, max_interval=1.0, jitter=0.0, max_age=120.0),
        window=int(settings["window"]),  # type: ignore[call-overload]
        batch_size=int(settings["batch_size"]),  # type: ignore[call-overload]
        suspend_for=float(settings.get("suspend_for", 300.0)),  # type: ignore[arg-type]
        event_log=str(settings["event_log"]),
        shaping=settings.get("shaping"),  # type: ignore[arg-type]
    )
    async with ferrymail.Engine(str(settings["spool"]), config) as engine:
        print("started", flush=True)
        await engine.drain()


def start_node(settings: dict[str, object], where: Path) -> subprocess.Popen[bytes]:
    """Starts one node with `settings` (written to where/NODE.json); its stderr goes to
    where/NODE.stderr, kept across restarts."""
    path = where / f"{settings['node']}.json"
    path.write_text(json.dumps(settings))
    return subprocess.Popen(
        [sys.executable, __file__, str(path)],
        stdout=subprocess.DEVNULL,
        stderr=open(where / f"{settings['node']}.stderr", "ab"),
        cwd=Path(__file__).parent,
    )


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        uvloop.run(main(json.load(f)))
