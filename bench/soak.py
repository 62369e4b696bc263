"""bench/soak.py: `ferrymail serve` delivering for --minutes under steady HTTP injection,
with a hostile SMTP peer and a webhook receiver that fails and stalls; memory over time,
submit-to-final latency, and a check that nothing is lost. Loopback only; not in CI.

serve (a subprocess, SQLite spool) takes --rate recipients a second over POST
/v1/campaigns/soak/recipients: 4 in 5 to good.test, routed to a peer that takes
everything, 1 in 5 to bad.test, routed to the hostile peer of bench/soak_peer.py (550s,
greylisting, 451 until the retry policy expires them, slow replies, connections dropped
at the dot). The shaping file retries after 5 s, at most 20 s apart, for 90 s. Every
event goes to a webhook receiver (here, under uvicorn) that answers 500 to one POST in
20, stalls one in 50 past the sender's timeout, and is down (500) for 20 s of every 2
minutes.

Before the clock starts, a warm-up campaign (--warmup recipients, default 40,000, all to
the good peer) is injected at full speed and waited for (delivered, events received), so
that the spool is larger than serve's SQLite page caches and they are full: the minutes
that follow show the steady state of a service that has been up a while, not its caches
filling from empty (which is bounded: 32 MiB for the engine's connection, 2 MiB for each
other, spool/schema.py). The table's first row is the end of the warm-up.

After the injection it waits (bounded) until every recipient is final and every event of
serve's event log reached the receiver, then stops serve with SIGTERM, and prints serve's
RSS over time, latency percentiles (from the events' since_submit) and the checks.

    python bench/soak.py                  # 30 minutes at 50 recipients/s
    python bench/soak.py --minutes 5 --warmup 0
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn
import uvloop
from _common import cores, cpu_model, markdown_table
from ferrymail.spool import SqliteSpool
from soak_peer import SmtpPeer

SECRET = "whsec_" + base64.b64encode(b"soak-bench-webhook-secret-0123456").decode()
SHAPING = """\
[default]
connection_limit = 8
[default.retry]
first_retry = "5s"
multiplier = 2
max_interval = "20s"
jitter = 0
max_age = "90s"
"""
CAMPAIGN = {
    "sender": "bounces@sender.example.com",
    "from": "Soak <news@sender.example.com>",
    "subject": "Soak {{ n }}",
    "text": "Hello {{ n }}, this is the soak test.\n",
}
FINAL = ("delivered", "bounced", "expired", "failed", "cancelled")
PENDING = ("queued", "in-flight", "deferred")
SAMPLE_EVERY = 10.0
#: How long, after the injection, the recipients get to end and their events to arrive.
SETTLE = 300.0
#: Lines per POST of the warm-up campaign.
WARMUP_CHUNK = 10_000


class Receiver:
    """The webhook endpoint: records each event once (by id) with its arrival time, and
    misbehaves on its schedule."""

    def __init__(self) -> None:
        self.events: dict[str, tuple[dict[str, Any], float]] = {}
        self.posts = 0
        self.failed = 0
        self.stalled = 0
        self.started = time.monotonic()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.posts += 1
        down = (time.monotonic() - self.started) % 120 >= 100
        if down or self.posts % 20 == 0:
            self.failed += 1
            status = 500
        else:
            if self.posts % 50 == 0:
                self.stalled += 1
                await asyncio.sleep(12)  # past the sender's 10 s timeout: it retries
            now = time.time()
            for event in orjson.loads(body):
                self.events.setdefault(event["id"], (event, now))
            status = 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kib / 1024


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def ferrymail(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "ferrymail", *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


async def soak(minutes: float, rate: int, warmup: int, work: Path) -> int:
    # Two addresses: two sites, each with its own connection limit.
    good, hostile = SmtpPeer(hostile=False), SmtpPeer(hostile=True, host="127.0.0.2")
    await good.start()
    await hostile.start()
    receiver = Receiver()
    hook_port = free_port()
    hooks = uvicorn.Server(
        uvicorn.Config(receiver, host="127.0.0.1", port=hook_port, log_level="error",
                       lifespan="off", access_log=False)
    )  # fmt: skip
    serving_hooks = asyncio.create_task(hooks.serve())
    spool = work / "spool.db"
    SqliteSpool(spool).close()
    token = ferrymail("keys", "create", "soak", "--spool", str(spool))
    (work / "shaping.toml").write_text(SHAPING)
    (work / "service.toml").write_text(
        f'[[webhook]]\nurl = "http://127.0.0.1:{hook_port}/hooks"\nsecret = "{SECRET}"\n'
        "batch_wait = 200\n"
    )
    serve = subprocess.Popen(
        [sys.executable, "-m", "ferrymail", "serve", "--listen", "127.0.0.1:0",
         "--spool", str(spool), "--helo", "soak.example.com",
         "--route", f"good.test=127.0.0.1:{good.port}",
         "--route", f"bad.test=127.0.0.2:{hostile.port}",
         "--shaping", str(work / "shaping.toml"), "--service-config", str(work / "service.toml")],
        stdout=subprocess.PIPE, stderr=(work / "serve.err").open("wb"),
        env={**os.environ, "PYTHONUNBUFFERED": "1",
             "FERRYMAIL_TRACKING_SECRET": "soak-tracking-secret-0123456789abcdef"},
    )  # fmt: skip
    try:
        return await _drive(serve, receiver, work, token, minutes, rate, warmup, hooks,
                            serving_hooks, good, hostile)  # fmt: skip
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()


async def _drive(
    serve: subprocess.Popen[bytes],
    receiver: Receiver,
    work: Path,
    token: str,
    minutes: float,
    rate: int,
    warmup: int,
    hooks: uvicorn.Server,
    serving_hooks: asyncio.Task[None],
    good: SmtpPeer,
    hostile: SmtpPeer,
) -> int:
    assert serve.stdout is not None
    line = await asyncio.get_running_loop().run_in_executor(None, serve.stdout.readline)
    base = "http://" + line.decode().rsplit(" ", 1)[1].strip()
    auth = {"authorization": f"Bearer {token}"}
    # t, RSS, spool (file and WAL, MiB: what the page caches fill from), submitted,
    # final, events
    samples: list[tuple[float, float, float, int, int, int]] = []
    submitted = 0
    ok = True
    async with httpx.AsyncClient(base_url=base, headers=auth, timeout=60) as api:
        assert (await api.put("/v1/campaigns/soak", json=CAMPAIGN)).status_code == 200

        async def report(campaign: str = "soak") -> dict[str, int]:
            return dict((await api.get(f"/v1/campaigns/{campaign}")).json()["states"])

        warm = await _warm_up(api, warmup, report, work, receiver)

        async def sample(t: float) -> None:
            # RSS first: the report this bench asks for is serve's work too, and its
            # memory is given back by the next trim (cli/heap.py).
            rss = rss_mib(serve.pid)
            states = await report()
            final = sum(states.get(s, 0) for s in FINAL)
            spool = sum(p.stat().st_size for p in work.glob("spool.db*")) / 2**20
            samples.append((t, rss, spool, submitted, final, len(receiver.events)))

        start = time.monotonic()
        next_sample = 0.0
        tick = 0
        while (elapsed := time.monotonic() - start) < minutes * 60:
            body = b"".join(
                orjson.dumps(
                    {
                        "email": _address(n),
                        "id": f"r{n}",
                        "n": n,
                    }
                )
                + b"\n"
                for n in range(submitted, submitted + rate)
            )
            answer = await api.post("/v1/campaigns/soak/recipients", content=body)
            if answer.status_code != 200 or answer.json()["accepted"] != rate:
                print(f"injection refused: {answer.status_code} {answer.text}", file=sys.stderr)
                ok = False
                break
            submitted += rate
            if elapsed >= next_sample:
                await sample(elapsed)
                next_sample += SAMPLE_EVERY
            tick += 1
            await asyncio.sleep(max(0.0, start + tick - time.monotonic()))
        injected_for = time.monotonic() - start

        # Every recipient final, then every logged event at the receiver (bounded).
        deadline = time.monotonic() + SETTLE
        while time.monotonic() < deadline and _pending(await report()):
            await asyncio.sleep(1)
        logged = _logged(work / "events.jsonl")
        while time.monotonic() < deadline and not _all_received(logged, receiver):
            await asyncio.sleep(1)
            logged = _logged(work / "events.jsonl")
        await sample(time.monotonic() - start)
        states = await report()
        warm_states = await report("warmup") if warmup else {}
    serve.send_signal(signal.SIGTERM)
    serve.wait(60)
    hooks.should_exit = True
    await serving_hooks
    await good.stop()
    await hostile.stop()

    # The checks.
    logged = _logged(work / "events.jsonl")
    received = {_key(e) for e, _ in receiver.events.values()}
    missing = [k for k in logged if k not in received]
    pending = _pending(states)
    total = sum(states.values())
    warm_final = sum(warm_states.get(s, 0) for s in FINAL)
    ok = ok and not missing and pending == 0 and total == submitted and serve.returncode == 0
    ok = ok and warm_final == warmup

    print(f"\n## soak: {minutes:g} min at {rate}/s, {datetime.date.today()}, "
          f"{cores()} cores ({cpu_model()})\n")  # fmt: skip
    rows = [
        (f"{row[0] / 60:.1f}", f"{row[1]:.0f}", f"{row[2]:.1f}", *(f"{n:,}" for n in row[3:]))
        for i, row in enumerate(samples)
        if i % 6 == 0 or i == len(samples) - 1
    ]
    head = ["minute", "serve RSS MiB", "spool MiB", "submitted", "final", "webhook events"]
    print(markdown_table(head, rows))
    finals = [e for e, _ in receiver.events.values() if e["type"] in FINAL]
    lag = [at - e["timestamp"] for e, at in receiver.events.values()]
    lines = []
    for name, values in [
        ("submit→final, all", [e["since_submit"] for e in finals]),
        *[
            (f"submit→final, {t}", [e["since_submit"] for e in finals if e["type"] == t])
            for t in ("delivered", "bounced", "expired")
        ],
        ("event→webhook receipt", lag),
    ]:
        lines.append(
            (name, f"{len(values):,}", *(f"{percentile(values, p):.2f}" for p in (50, 90, 99)),
             f"{max(values, default=float('nan')):.2f}")
        )  # fmt: skip
    print()
    print(markdown_table(["seconds", "n", "p50", "p90", "p99", "max"], lines))
    print()
    checks = [
        ("warm-up: recipients final, took (s)", f"{warm_final:,} of {warmup:,}, {warm:.0f}"),
        ("recipients submitted", f"{submitted:,}"),
        ("in the report", f"{total:,}"),
        ("still pending", f"{pending:,}"),
        ("states", ", ".join(f"{s} {n:,}" for s, n in states.items() if n)),
        ("events logged", f"{len(logged):,}"),
        ("logged events not received", f"{len(missing):,}"),
        (
            "webhook POSTs (500, stalled)",
            f"{receiver.posts:,} ({receiver.failed:,}, {receiver.stalled:,})",
        ),
        (
            "hostile peer: connections, dropped at the dot",
            f"{hostile.connections:,}, {hostile.dropped:,}",
        ),
        ("serve exit status", str(serve.returncode)),
        ("injected for (s)", f"{injected_for:.0f}"),
        ("nothing lost", "yes" if ok else "NO"),
    ]
    print(markdown_table(["check", "value"], checks))
    return 0 if ok else 1


async def _warm_up(
    api: httpx.AsyncClient, count: int, report: Any, work: Path, receiver: Receiver
) -> float:
    """Injects `count` recipients to the good peer as campaign "warmup" and waits until
    they are final and their events at the receiver; the seconds it took."""
    if not count:
        return 0.0
    started = time.monotonic()
    assert (await api.put("/v1/campaigns/warmup", json=CAMPAIGN)).status_code == 200
    for first in range(0, count, WARMUP_CHUNK):
        lines = range(first, min(count, first + WARMUP_CHUNK))
        body = b"".join(
            orjson.dumps({"email": f"warm{n}@good.test", "id": f"w{n}", "n": n}) + b"\n"
            for n in lines
        )
        answer = await api.post("/v1/campaigns/warmup/recipients", content=body)
        if answer.status_code != 200 or answer.json()["accepted"] != len(lines):
            raise SystemExit(f"warm-up refused: {answer.status_code} {answer.text}")
    deadline = time.monotonic() + SETTLE
    while time.monotonic() < deadline and _pending(await report("warmup")):
        await asyncio.sleep(1)
    log = work / "events.jsonl"
    while time.monotonic() < deadline and not _all_received(_logged(log), receiver):
        await asyncio.sleep(5)  # (reading the whole log takes a while)
    return time.monotonic() - started


def _address(n: int) -> str:
    """1 in 5 to the hostile peer, numbered among its own (its rules go by that number)."""
    return f"user{n // 5}@bad.test" if n % 5 == 4 else f"user{n}@good.test"


def _pending(states: dict[str, int]) -> int:
    return sum(states.get(s, 0) for s in PENDING)


def _key(event: dict[str, Any]) -> tuple[str, str, float]:
    return (event["type"], event["recipient"], event["timestamp"])


def _logged(path: Path) -> list[tuple[str, str, float]]:
    if not path.exists():
        return []
    return [_key(json.loads(line)) for line in path.read_text().splitlines() if line]


def _all_received(logged: list[tuple[str, str, float]], receiver: Receiver) -> bool:
    received = {_key(e) for e, _ in receiver.events.values()}
    return all(k in received for k in logged)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="of injection (default 30)")
    parser.add_argument("--rate", type=int, default=50, help="recipients a second (default 50)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=40_000,
        help="recipients delivered before the clock starts, to fill the caches (default 40,000)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ferrymail-soak-") as work:
        return uvloop.run(soak(args.minutes, args.rate, args.warmup, Path(work)))


if __name__ == "__main__":
    sys.exit(main())
