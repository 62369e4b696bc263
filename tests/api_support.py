"""A real `ferrymail serve` (uvicorn, a subprocess on loopback) with API keys, for the
/v1 API's tests."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
from ferrymail.cli import main as cli
from ferrymail.spool import SqliteSpool
from peer_process import STARTUP_TIMEOUT, end_process

#: A campaign as the API takes it: the campaign file's keys, templates inline.
CAMPAIGN = {
    "sender": "bounces@sender.test",
    "from": "Sender <news@sender.test>",
    "subject": "Hello {{ name }}",
    "text": "Hello {{ name }}\n",
}


@dataclass(frozen=True)
class Served:
    url: str
    spool: Path
    #: Tokens of a read-write key ("app") and a read-only one ("dashboard").
    token: str
    read_only: str
    #: The serve process: its returncode once the block ended.
    process: subprocess.Popen[bytes]

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"authorization": f"Bearer {token or self.token}"}


def create_key(spool: Path, name: str, *options: str) -> str:
    """`ferrymail keys create NAME` run as a user does; the token it printed."""
    import io
    from contextlib import redirect_stdout

    out = io.StringIO()
    with redirect_stdout(out):
        assert cli(["keys", "create", name, "--spool", str(spool), *options]) == 0
    return out.getvalue().strip()


@contextlib.contextmanager
def serve(tmp_path: Path, *options: str, delivery: bool = False) -> Iterator[Served]:
    """`ferrymail serve` on a new spool with two keys, until the block ends; an API-only
    front (--no-delivery) unless `delivery` (then `options` say where mail goes)."""
    spool = tmp_path / "spool.db"
    tokens = tmp_path / "tokens"
    if not spool.exists():  # a new spool, and its keys; else the same again (a restart)
        SqliteSpool(spool).close()
        made = [create_key(spool, "app"), create_key(spool, "dashboard", "--read-only")]
        tokens.write_text("\n".join(made))
    token, read_only = tokens.read_text().split("\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "ferrymail", "serve", "--listen", "127.0.0.1:0",
         "--spool", str(spool), *options, *(() if delivery else ("--no-delivery",))],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1",
             "FERRYMAIL_TRACKING_SECRET": "api-test-tracking-secret-0123456789"},
    )  # fmt: skip
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], STARTUP_TIMEOUT)
        assert ready, "ferrymail serve did not start"
        line = process.stdout.readline().decode()
        assert line.startswith("ferrymail serve: listening on 127.0.0.1:"), line
        yield Served("http://" + line.rsplit(" ", 1)[1].strip(), spool, token, read_only, process)
    finally:
        end_process(process)


def jsonl(domain: str, n: int) -> bytes:
    """n recipients at `domain` as the JSON lines a recipients POST takes."""
    return b"".join(
        orjson.dumps({"email": f"user{i}@{domain}", "id": f"{domain}-{i}", "name": f"U{i}"}) + b"\n"
        for i in range(n)
    )
