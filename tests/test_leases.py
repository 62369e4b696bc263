"""Leases after a crash: a killed engine's recipients are taken back at once by the next
one on this host, and a drain that waits for a live engine's says so."""

from __future__ import annotations

import json
import queue
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ferrymail.errors import ConfigError
from ferrymail.spool import is_url, open_spool
from smtp_peers import ScriptedServer

# An engine with the default lease (30 minutes), sending to a server that never greets:
# its recipients stay in flight until it is killed.
CHILD = textwrap.dedent(
    """
    import sys, uvloop, ferrymail
    spool, target = sys.argv[1], sys.argv[2]
    config = ferrymail.Config(helo_name="leases.example.com", smarthost=target)
    campaign = ferrymail.Campaign(
        id="held", sender="b@sender.test", from_="s@sender.test", subject="Hi", text="Hi",
    )

    async def main():
        async with ferrymail.Engine(spool, config) as engine:
            await engine.submit(campaign, [f"u{i}@d{i}.test" for i in range(3)])
            await engine.drain()

    uvloop.run(main())
    """
)


@pytest.fixture
def mute() -> Iterator[str]:
    """HOST:PORT of a server that takes connections and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"127.0.0.1:{listener.getsockname()[1]}"


def in_flight(spool: str | Path) -> int:
    if is_url(spool):
        try:
            with open_spool(spool, read_only=True) as db:
                return db.counts().get("in-flight", 0)
        except ConfigError:  # not created yet
            return 0
    spool = Path(spool)
    if not spool.exists():
        return 0
    with sqlite3.connect(f"file:{spool}?mode=ro", uri=True) as db:
        try:
            return int(db.execute("SELECT count(*) FROM recipient WHERE state = 1").fetchone()[0])
        except sqlite3.OperationalError:  # not created yet
            return 0


def engine_holding_three(
    tmp_path: Path, mute: str, spool: str | None = None
) -> subprocess.Popen[str]:
    spool = spool or str(tmp_path / "spool.db")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = subprocess.Popen(
        [sys.executable, str(script), spool, mute],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while in_flight(spool) < 3:
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the child never leased its recipients"
        time.sleep(0.05)
    return child


def ferrymail(*args: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferrymail", *args],
        capture_output=True, text=True, cwd=cwd, timeout=timeout,
    )  # fmt: skip


def test_run_drain_takes_back_a_killed_engines_recipients_at_once(
    tmp_path: Path, spool_at: str, mute: str
) -> None:
    child = engine_holding_three(tmp_path, mute, spool_at)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    assert in_flight(spool_at) == 3  # leased for 30 minutes
    with ScriptedServer() as mx:
        # Not 30 minutes: the leases' owner is a dead process of this host.
        done = ferrymail("run", "--drain", "--spool", spool_at, "--helo",
                         "leases.example.com", "--smarthost", f"{mx.host}:{mx.port}",
                         cwd=tmp_path, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert sorted(m.rcpt_tos[0] for m in mx.delivered) == [
            "u0@d0.test", "u1@d1.test", "u2@d2.test"
        ]  # fmt: skip
    assert "waiting for" not in done.stderr


def test_flush_releases_a_killed_engines_recipients(tmp_path: Path, mute: str) -> None:
    child = engine_holding_three(tmp_path, mute)
    child.send_signal(signal.SIGKILL)
    child.wait()
    flushed = ferrymail("flush", "--spool", "spool.db", cwd=tmp_path, timeout=30)
    assert flushed.returncode == 0, flushed.stderr
    assert flushed.stdout.startswith("3 recipients due now\n")
    status = ferrymail("status", "--json", "--spool", "spool.db", cwd=tmp_path, timeout=30)
    states = json.loads(status.stdout)["states"]
    assert (states["in-flight"], states["queued"]) == (0, 3)


def test_run_drain_says_what_a_live_engine_holds(tmp_path: Path, mute: str) -> None:
    child = engine_holding_three(tmp_path, mute)
    run = subprocess.Popen(
        [sys.executable, "-m", "ferrymail", "run", "--drain", "--spool", "spool.db",
         "--helo", "leases.example.com", "--smarthost", mute],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in run.stderr or ()])
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while not (line := lines.get(timeout=max(0.1, deadline - time.monotonic()))).startswith(
            "waiting for"
        ):
            pass
    finally:
        run.send_signal(signal.SIGINT)
        run.wait(timeout=30)
        reader.join()
        child.kill()
        child.wait()
    owner = f"{socket.gethostname()}:{child.pid}:"
    assert line.startswith(f"waiting for 3 recipients leased by {owner}"), line
    assert "(another engine): they come back when it records them or its lease ends" in line
