"""Helpers the engine tests share: one SMTP port free on every test MX address, configs
pointing at the test DNS server, quick retry policies, and running an engine to the end."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import ferrymail
import uvloop
from dns_peer import DnsServer
from ferrymail.retry import RetryPolicy

#: Loopback addresses the engine tests put MX hosts on.
MX_ADDRESSES = [f"127.0.0.{i}" for i in range(2, 30)]


def free_port_everywhere(addresses: Sequence[str] = MX_ADDRESSES) -> int:
    """A TCP port free on every address, so that all test MX hosts share it (the engine
    connects to MX hosts on one port, as real MTAs do on 25)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        sockets = []
        try:
            for address in addresses:
                s = socket.socket()
                sockets.append(s)
                s.bind((address, port))
            return port
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no port free on every test MX address")


def quick_retry(**overrides: Any) -> RetryPolicy:
    """Retries in fractions of a second, so a test sees deferral, retry and expiry."""
    fields: dict[str, Any] = {
        "first_retry": 0.2,
        "max_interval": 0.4,
        "jitter": 0.0,
        "max_age": 30.0,
    }
    fields.update(overrides)
    return RetryPolicy(**fields)


def config(dns: DnsServer, port: int, tmp_path: Path, **overrides: Any) -> ferrymail.Config:
    fields: dict[str, Any] = {
        "helo_name": "engine.test",
        "dns_servers": [dns.address],
        "dns_timeout": 2.0,
        "mx_port": port,
        "smtp": ferrymail.SmtpOptions("engine.test", tls="off", idle_timeout=2.0),
        "retry": quick_retry(),
        "event_log": str(tmp_path / "events.jsonl"),
    }
    fields.update(overrides)
    return ferrymail.Config(**fields)


def on_uvloop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Runs an async test on uvloop, the engine's loop."""
    import functools

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        uvloop.run(test(*args, **kwargs))

    return run


def logged_events(tmp_path: Path) -> list[dict[str, Any]]:
    """The events of the log `config()` points at, in order."""
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


async def reported(
    engine: ferrymail.Engine, state: str, at_least: int, *, timeout: float = 30.0
) -> None:
    """Waits until campaign c1's report has at least `at_least` recipients in `state`;
    fails (instead of hanging) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while (report := await engine.report("c1")).states[state] < at_least:
        assert time.monotonic() < deadline, f"never {at_least} {state}: {report}"
        await asyncio.sleep(0.02)


def campaign(campaign_id: str = "c1", **overrides: Any) -> ferrymail.Campaign:
    fields: dict[str, Any] = {
        "id": campaign_id,
        "sender": "bounces@sender.test",
        "from_": "Sender <news@sender.test>",
        "subject": "Hello {{ name }}",
        "text": "Hello {{ name }}\n",
    }
    fields.update(overrides)
    return ferrymail.Campaign(**fields)


def people(domain: str, n: int, start: int = 0) -> list[ferrymail.Recipient]:
    return [
        ferrymail.Recipient(f"user{i}@{domain}", {"name": f"User {i}"}, id=f"{domain}-{i}")
        for i in range(start, start + n)
    ]


def spool_sql(where: str | Path, statement: str, params: Sequence[Any] = ()) -> list[Any]:
    """Runs one statement on the spool's own database, SQLite file or PostgreSQL URL, as an
    upgrade or an operator would (`?` placeholders), and returns its rows (committed)."""
    location = str(where)
    if location.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(location, autocommit=True) as db:
            cursor = db.execute(statement.replace("?", "%s"), tuple(params))
            return cursor.fetchall() if cursor.description else []
    import sqlite3

    with sqlite3.connect(location) as db:
        return db.execute(statement, tuple(params)).fetchall()
