"""`ferrymail run --shaping FILE` reloads the file on SIGHUP and when it changes, under
load, losing nothing; a bad file is refused with file and line, and the rules stay."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import ferrymail
from engine_support import campaign, free_port_everywhere, on_uvloop, people
from peer_process import end_process
from smtp_peers import ScriptedServer

RECIPIENTS = 300


async def _submit(spool: Path) -> None:
    config = ferrymail.Config(helo_name="engine.test", routes={"reload.test": "127.0.0.1:9"})
    async with ferrymail.Engine(spool, config) as engine:
        await engine.submit(campaign(), people("reload.test", RECIPIENTS))


def _lines(process: subprocess.Popen[str], until: str, timeout: float = 20) -> list[str]:
    """stderr lines until one containing `until`."""
    assert process.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stderr], [], [], 0.2)
        if ready:
            line = process.stderr.readline()
            if not line:
                raise AssertionError(f"ferrymail run ended ({process.poll()}): {seen}")
            seen.append(line)
            if until in line:
                return seen
    raise AssertionError(f"no line with {until!r} in: {seen}")


def test_reloads_on_sighup_and_on_change_refuses_a_bad_file_and_loses_nothing(
    tmp_path: Path,
    spool_at: str,
) -> None:
    spool = spool_at
    on_uvloop(_submit)(spool)
    shaping = tmp_path / "shaping.toml"
    shaping.write_text('[default]\nmax_message_rate = "20/s"\n')
    port = free_port_everywhere(["127.0.0.28"])
    with ScriptedServer(host="127.0.0.28", port=port) as peer:
        process = subprocess.Popen(
            [sys.executable, "-m", "ferrymail", "run", "--drain", "--spool", str(spool),
             "--route", f"reload.test=127.0.0.28:{port}", "--helo", "engine.test",
             "--shaping", str(shaping)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        try:
            _lines(process, "delivering from")
            # A bad file: refused with where it is wrong; delivery goes on.
            shaping.write_text('[default]\nmax_message_rate = "fast"\n')
            process.send_signal(signal.SIGHUP)
            refused = _lines(process, "not reloaded")[-1]
            assert f"{shaping}:2:" in refused and "max_message_rate" in refused
            # A good file, by signal and then by a change alone.
            shaping.write_text('[default]\nmax_message_rate = "25/s"\n')
            process.send_signal(signal.SIGHUP)
            assert "reloaded (SIGHUP)" in _lines(process, "reloaded")[-1]
            shaping.write_text('[default]\nmax_message_rate = "30/s"\nconnection_limit = 3\n')
            assert "reloaded (the file changed)" in _lines(process, "reloaded")[-1]
            assert process.wait(60) == 0
        finally:
            end_process(process)  # type: ignore[arg-type]
    delivered = [m.rcpt_tos[0] for m in peer.delivered]
    assert len(delivered) == RECIPIENTS and len(set(delivered)) == RECIPIENTS


@on_uvloop
async def test_reload_shaping_changes_the_rate_of_a_site_being_sent_to(
    tmp_path: Path, spool_at: str
) -> None:
    port = free_port_everywhere(["127.0.0.29"])
    slow = ferrymail.shaping.loads('[default]\nmax_message_rate = "10/s"\n', name="slow.toml")
    fast = ferrymail.shaping.loads('[default]\nmax_message_rate = "200/s"\n', name="fast.toml")
    config = ferrymail.Config(
        helo_name="engine.test",
        routes={"known.test": f"127.0.0.29:{port}"},
        shaping=slow,
        batch_size=5,
    )
    with ScriptedServer(host="127.0.0.29", port=port) as peer:
        async with ferrymail.Engine(spool_at, config) as engine:
            await engine.submit(campaign(), people("known.test", 80))
            draining = asyncio.create_task(engine.drain())
            while len(peer.delivered) < 30:
                await asyncio.sleep(0.01)
            engine.reload_shaping(fast)
            reloaded = time.time()
            await draining

    before = [m.received_at for m in peer.delivered if m.received_at < reloaded]
    after = [m.received_at for m in peer.delivered if m.received_at > reloaded]
    assert (len(before[12:]) - 1) / (before[-1] - before[12]) < 14  # 10/s, the first burst off
    assert len(after) >= 30 and (len(after) - 1) / (after[-1] - after[0]) > 40
