"""Stopping is prompt and loses nothing: SIGINT or SIGTERM stop `ferrymail send` within
seconds while a peer accepts and never answers (its greeting timeout is 300 s), the
cut recipients go back to the queue untried, and a second signal stops at once."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import ferrymail
import pytest
from dns_peer import DnsServer
from engine_support import (
    campaign,
    config,
    free_port_everywhere,
    logged_events,
    on_uvloop,
    people,
)
from ferrymail.spool import SqliteSpool, open_spool
from smtp_peers import Fault, RawServer
from test_cli import wait_for, write_files

# Well under the 300 s a greeting may take (RFC 5321 §4.5.3.2): what "prompt" means.
PROMPT = 10.0


@pytest.fixture
def silent_peer() -> Iterator[socket.socket]:
    """A TCP listener on loopback that accepts connections (the kernel does, into its
    backlog) and never says a word: a session to it waits for the 220 greeting."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener


@contextlib.contextmanager
def _sending_to(files: Path, silent_peer: socket.socket) -> Iterator[subprocess.Popen[str]]:
    """`ferrymail send` to the silent peer, once its session is open; killed at the end
    if it still runs (a failed check leaves nothing behind)."""
    port = silent_peer.getsockname()[1]
    send = subprocess.Popen(
        [sys.executable, "-m", "ferrymail", "send", "welcome.toml", "people.csv",
         "--spool", "spool.db", "--helo", "cli.example.com",
         "--smarthost", f"127.0.0.1:{port}"],
        cwd=files, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    held: list[socket.socket] = []
    try:
        wait_for(lambda: _accepted(silent_peer, held))
        yield send
    finally:
        if send.poll() is None:
            send.kill()
            send.wait()
        for connection in held:
            connection.close()


def _accepted(listener: socket.socket, held: list[socket.socket]) -> bool:
    """Whether the engine has opened a session; the connection is kept open in `held`."""
    listener.settimeout(0)
    try:
        connection, _ = listener.accept()
    except BlockingIOError:
        return False
    held.append(connection)
    return True


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_send_promptly_while_a_peer_never_answers(
    tmp_path: Path, silent_peer: socket.socket, sig: signal.Signals
) -> None:
    files = write_files(tmp_path)
    with _sending_to(files, silent_peer) as send:
        # The session is open and waits for a greeting that never comes.
        time.sleep(0.5)
        started = time.monotonic()
        send.send_signal(sig)
        _, err = send.communicate(timeout=60)
        took = time.monotonic() - started
    assert took < PROMPT, f"stopping took {took:.1f} s: {err}"
    assert "Traceback" not in err
    assert "interrupted: 3 recipients still pending" in err
    # Nothing was sent (no greeting came): the recipients are queued as they were,
    # with no attempt counted, and no lease is left behind.
    with SqliteSpool(files / "spool.db") as spool:
        assert spool.counts()["queued"] == 3
        assert spool.leases() == []


def test_a_second_signal_stops_at_once(tmp_path: Path, silent_peer: socket.socket) -> None:
    files = write_files(tmp_path)
    with _sending_to(files, silent_peer) as send:
        send.send_signal(signal.SIGINT)
        # A person's second Ctrl-C, not one the kernel merges with the first pending one.
        time.sleep(0.5)
        send.send_signal(signal.SIGINT)
        _, err = send.communicate(timeout=PROMPT)
    assert send.returncode == 130
    assert "Traceback" not in err
    # What it held is not lost: the next engine takes it back at once (its owner is a
    # dead process of this host) and the recipients are all still pending.
    with SqliteSpool(files / "spool.db") as spool:
        assert spool.pending() == 3


@pytest.fixture(scope="module")
def port() -> int:
    return free_port_everywhere()


@on_uvloop
async def test_stop_cuts_a_stalled_session_and_counts_only_a_sent_message_as_tried(
    dns_server: DnsServer,
    raw_server: Callable[..., RawServer],
    port: int,
    tmp_path: Path,
    spool_at: str,
) -> None:
    # A peer that takes the first message's dot and then never answers: that message may
    # have been delivered; the others were never sent.
    dns_server.add_zone("stall.test", ["@ MX 10 mx", "mx A 127.0.0.20"])
    raw_server(host="127.0.0.20", port=port, faults=[Fault("DOT", delay=300.0, reply="")])
    limits = ferrymail.SiteLimits(connections=1)
    cfg = config(dns_server, port, tmp_path, site_overrides={"mx.stall.test": limits})
    async with ferrymail.Engine(spool_at, cfg) as e:
        await e.submit(campaign(), people("stall.test", 5))
        runner = asyncio.create_task(e.run())
        await asyncio.sleep(1.0)  # the first dot is on the wire, its reply never comes
        started = time.monotonic()
        e.stop()
        await asyncio.wait_for(runner, PROMPT)
        took = time.monotonic() - started
        report = await e.report("c1")
    assert took < PROMPT
    assert report.states["deferred"] == 1 and report.states["queued"] == 4
    deferred = [ev for ev in logged_events(tmp_path) if ev["type"] == "deferred"]
    assert len(deferred) == 1 and "may have been delivered" in deferred[0]["text"]
    with open_spool(spool_at) as spool:
        assert spool.leases() == []  # the four untried ones are free for the next engine
        assert sorted(r[4] for r in spool.iter_recipients("c1")) == [0, 0, 0, 0, 1]
