"""An engine on PostgreSQL whose server goes away mid-run (`pg_ctl restart`; stopped for
20 s): it keeps its work, reconnects, loses nothing, delivers nothing twice, and says
what happened; and a write whose COMMIT answer is lost is not run twice."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import ferrymail
import pytest
from engine_support import on_uvloop
from ferrymail import Campaign, Engine, Recipient
from ferrymail.config import SiteLimits
from ferrymail.errors import SpoolUnavailableError
from ferrymail.spool import NewRecipient, Update
from ferrymail.spool.postgres import PostgresSpool
from pg_peer import PgCluster, find_bin
from smtp_peers import SmtpSink

# Paced so that the run outlasts the fault: RECIPIENTS at RATE a second.
RECIPIENTS = 1500
RATE = 150.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    """A cluster of this module's own: its tests restart and stop it."""
    bindir = find_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (.ci/run installs Debian's postgresql)")
    with PgCluster(bindir) as pg:
        yield pg


def _config(sink: SmtpSink, tmp_path: Path) -> ferrymail.Config:
    return ferrymail.Config(
        helo_name="engine.test",
        node="node-a",
        smarthost=f"{sink.host}:{sink.port}",
        smtp=ferrymail.SmtpOptions("engine.test", tls="off", idle_timeout=2.0),
        site_limits=SiteLimits(connections=2, messages_per_second=RATE),
        batch_size=50,
        event_log=str(tmp_path / "events.jsonl"),
    )


async def _run_through(
    url: str, tmp_path: Path, fault: Callable[[], None], caplog: pytest.LogCaptureFixture
) -> None:
    """Submits RECIPIENTS, starts delivering, runs `fault` (in a thread) once a fifth
    are delivered, and checks the end: each recipient delivered exactly once."""
    caplog.set_level(logging.WARNING, logger="ferrymail")
    with SmtpSink(dump=True) as sink:
        async with Engine(url, _config(sink, tmp_path)) as engine:
            campaign = Campaign(
                id="faults", sender="b@news.test", from_="n@news.test", subject="Hi", text="x"
            )
            addresses = [f"user{i}@d{i % 5}.test" for i in range(RECIPIENTS)]
            await engine.submit(campaign, [Recipient(a) for a in addresses])
            drain = asyncio.create_task(engine.drain())
            while sink.counters().messages < RECIPIENTS // 5:
                await asyncio.sleep(0.05)
            at_fault = sink.counters().messages
            await asyncio.to_thread(fault)
            await asyncio.wait_for(drain, 120)
            report = await engine.report("faults")
            counts = await engine.counts()
        received = collections.Counter(r for m in sink.dumped() for r in m.rcpt_args)
    assert at_fault < RECIPIENTS  # the fault came mid-run
    assert report.states.get("delivered") == RECIPIENTS, report.states
    assert sum(n for s, n in counts.items() if s != "delivered") == 0, counts
    # Nothing lost, nothing sent twice: the outcomes held in memory across the outage
    # were recorded for the leases that were still this engine's.
    assert set(received) == {f"<{a}>" for a in addresses}
    twice = [r for r, n in received.items() if n > 1]
    assert twice == []
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    delivered = [e for e in events if e["type"] == "delivered"]
    assert len(delivered) == RECIPIENTS
    assert {e["attempt"] for e in delivered} == {1} and {e["node"] for e in delivered} == {"node-a"}
    # Said clearly: one warning when the spool went, one when it came back.
    lost = [r.getMessage() for r in caplog.records if "spool is unreachable" in r.getMessage()]
    back = [r.getMessage() for r in caplog.records if "spool is back after" in r.getMessage()]
    assert len(lost) == 1 and len(back) == 1, (lost, back)


@on_uvloop
async def test_postgresql_restarted_mid_run(
    cluster: PgCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await _run_through(cluster.new_database(), tmp_path, cluster.restart, caplog)


@on_uvloop
async def test_postgresql_unreachable_for_20_seconds(
    cluster: PgCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def outage() -> None:
        cluster.stop()
        time.sleep(20)
        cluster.start()

    await _run_through(cluster.new_database(), tmp_path, outage, caplog)
    back = next(r.getMessage() for r in caplog.records if "spool is back" in r.getMessage())
    gone = float(back.split("back after ")[1].split(" s")[0])
    assert 19 < gone < 40, back


class CuttingProxy:
    """A TCP proxy to PostgreSQL that, once armed, forwards the next COMMIT to the
    server and then cuts both connections before the server's answer reaches the
    client: the transaction committed, and the client cannot know it."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed = threading.Event()
        self.cut = threading.Event()
        self.cutting = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while data := src.recv(65536):
                if not upstream and self.cutting.is_set():
                    continue  # the COMMIT's answer: dropped
                if upstream and self.armed.is_set() and b"COMMIT" in data:
                    self.cutting.set()
                    dst.sendall(data)
                    time.sleep(0.5)  # the server commits and answers: the answer is dropped
                    self.armed.clear()
                    self.cut.set()
                    for s in (src, dst):
                        s.shutdown(socket.SHUT_RDWR)
                    self.cutting.clear()
                    return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                s.close()

    def close(self) -> None:
        self.listener.close()


def test_a_record_whose_commit_answer_is_lost_is_not_run_twice(
    cluster: PgCluster, caplog: pytest.LogCaptureFixture
) -> None:
    url = cluster.new_database()
    proxy = CuttingProxy(cluster.host, cluster.port)
    via_proxy = url.replace(f":{cluster.port}/", f":{proxy.port}/")
    caplog.set_level(logging.WARNING, logger="ferrymail")
    try:
        with PostgresSpool(via_proxy) as spool, PostgresSpool(url) as other:
            spool.put_campaign("c", b"spec")
            spool.insert("c", [NewRecipient(b"r", "a@x.test", "x.test", "a@x.test", "queued")])
            (leased,) = spool.lease(10, "me", 60)
            spool.started([leased.id])
            deferred = Update(
                leased.id, "deferred", 1, time.time(), 450, "4.2.0", "busy", None, None, None
            )
            proxy.armed.set()
            with pytest.raises(SpoolUnavailableError):
                spool.record([deferred])
            assert proxy.cut.is_set()
            # It committed: another call may see it already.
            assert other.counts()["deferred"] == 1
            # The engine calls it again: the spool asks the server, and does not run it
            # (run again, a release or a second count could undo another node's work).
            assert spool.record([deferred]) == 0
            assert any("committed (not run again)" in r.getMessage() for r in caplog.records)
            # A `started` cut the same way counts one interrupted attempt, not two.
            other.flush()
            (again,) = spool.lease(10, "me", 60)
            proxy.armed.set()
            with pytest.raises(SpoolUnavailableError):
                spool.started([again.id])
            spool.started([again.id])
            spool.release_owner("me")
            (third,) = other.lease(10, "other", 60)
            assert third.interrupted == 1
    finally:
        proxy.close()
