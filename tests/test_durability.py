"""Nothing accepted is lost: an engine process killed with SIGKILL at random moments,
restarted until done, leaves every recipient in exactly one final state."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from ferrymail.spool import SqliteSpool
from smtp_peers import SmtpSink

RECIPIENTS = 20_000
KILLS = 4

CHILD = textwrap.dedent(
    """
    import sys, uvloop, ferrymail
    spool, sink, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    config = ferrymail.Config(
        helo_name="durability.test",
        smarthost=sink,
        smtp=ferrymail.SmtpOptions("durability.test", tls="off"),
        batch_size=200,
        # A killed process's leases come back after this long (the default is 30 min).
        lease_for=2.0,
        # A recipient whose attempts two kills in a row cut short is deferred: retried
        # after a second here (5 minutes by default).
        retry=ferrymail.RetryPolicy(first_retry=1.0, max_interval=1.0, jitter=0.0),
    )
    campaign = ferrymail.Campaign(
        id="kill", sender="b@sender.test", from_="s@sender.test",
        subject="Hi {{ n }}", text="Hello {{ n }}",
    )

    async def main():
        async with ferrymail.Engine(spool, config) as engine:
            if mode == "submit":
                people = (
                    ferrymail.Recipient(f"u{i}@d{i % 50}.test", {"n": i}, id=i)
                    for i in range(RECIPIENTS)
                )
                await engine.submit(campaign, people)
                print("submitted", flush=True)
            await engine.drain()
        print("done", flush=True)

    uvloop.run(main())
    """
).replace("RECIPIENTS", str(RECIPIENTS))


def test_sigkill_at_random_moments_loses_nothing(
    smtp_sink: Callable[..., SmtpSink], tmp_path: Path
) -> None:
    # SQLite only: what it checks is the file (its integrity after kills mid-write, the
    # WAL and fsync); on PostgreSQL the server keeps the data whatever the client does,
    # and test_fleet.py kills engine processes mid-run on it.
    sink = smtp_sink()
    spool = tmp_path / "spool.db"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    target = f"{sink.host}:{sink.port}"
    rng = random.Random(int(os.environ.get("FERRYMAIL_KILL_SEED", "2026")))

    def start(mode: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(script), str(spool), target, mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    # The first run submits; it is killed only after submit returned (what was not
    # accepted is not the engine's to keep), at a random moment of delivery.
    child = start("submit")
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "submitted", child.stderr
        kills = 0
        while kills < KILLS and child.poll() is None:
            # Kill while messages are flowing: after a random number more reach the sink.
            goal = sink.counters().messages + rng.randint(200, 3000)
            deadline = time.monotonic() + 60
            while sink.counters().messages < goal and child.poll() is None:
                assert time.monotonic() < deadline, "the engine stopped delivering"
                time.sleep(0.002)
            if child.poll() is not None:
                break
            child.send_signal(signal.SIGKILL)
            child.wait()
            kills += 1
            # The kill came mid-delivery: messages reached the sink in this process's
            # life (the goal above) and recipients are still waiting.
            with SqliteSpool(spool) as opened:
                waiting = opened.pending("kill")
            assert 0 < waiting < RECIPIENTS, f"kill {kills}: {waiting} recipients waiting"
            child = start("drain")
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:  # a failed check leaves no engine behind
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    assert "done" in out
    assert kills == KILLS, f"the engine finished after {kills} kills: no kill came mid-run"

    with sqlite3.connect(spool) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    opened = SqliteSpool(spool)
    try:
        rows = list(opened.iter_recipients("kill"))
    finally:
        opened.close()
    assert len(rows) == RECIPIENTS
    assert {row[3] for row in rows} == {"delivered"}
    assert len({row[1] for row in rows}) == RECIPIENTS
    delivered_by_sink = sink.counters().messages
    duplicates = delivered_by_sink - RECIPIENTS
    assert duplicates >= 0
    # Only a message whose 250 came just before a kill, not yet written to the spool,
    # may go twice: at most one batch per kill.
    assert duplicates <= kills * 200, f"{duplicates} duplicates after {kills} kills"
    print(f"\n{kills} kills, {duplicates} messages delivered twice")
