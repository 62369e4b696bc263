"""bench/webhooks.py: events per second from the spool's webhook outbox to a loopback
receiver, by batch size.

The outbox of a fresh SQLite spool gets --events events (the JSON of real delivered
events); a WebhookSender drains them to a bare ASGI receiver under uvicorn (uvloop,
httptools) in a subprocess, which answers 200 at once. Each row times the drain alone:
take the batch, sign it, POST it, delete it (three spool transactions and one POST per
batch). The receiver verifies nothing: the numbers are the sender's.

    python bench/webhooks.py                 # 20,000 events, batches of 1, 10, 100, 1000
    python bench/webhooks.py --quick         # 2,000 events
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import uvloop
from ferrymail.events import Event
from ferrymail.spool import SqliteSpool
from ferrymail.webhooks import Outbox, WebhookSender, loads

RECEIVER = textwrap.dedent(
    """
    import sys, uvicorn
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="error",
                loop="uvloop", http="httptools", lifespan="off", access_log=False)
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def event(i: int) -> Event:
    return Event(
        "delivered", "bench", f"r{i}", f"user{i}@example.com", "example.com",
        "mx1.example.com", "192.0.2.1", 1, 250, "2.0.0", "2.0.0 Ok: queued as 4Xk2",
        None, time.time(), 1.5, "192.0.2.10",
    )  # fmt: skip


async def drain(spool_file: Path, url: str, batch_size: int, events: int) -> float:
    secret = "whsec_" + base64.b64encode(b"b" * 32).decode()
    text = f'[[webhook]]\nurl = "{url}"\nsecret = "{secret}"\nbatch_size = {batch_size}\n'
    [hook] = loads(text + "batch_wait = 0\n")
    with SqliteSpool(spool_file) as spool:
        rows = Outbox([hook]).rows([event(i) for i in range(events)])
        spool.webhook_enqueue(rows)
    sender = WebhookSender(spool_file, [hook])
    started = time.perf_counter()
    task = asyncio.create_task(sender.run())
    with SqliteSpool(spool_file) as spool:
        while spool.webhook_backlog():
            await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    sender.stop()
    await task
    assert sum(sender.failures.values()) == 0, sender.failures
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    events = 2_000 if args.quick else args.events
    port = free_port()
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, str(port)])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the receiver did not start"
                time.sleep(0.05)
        print(f"{events:,} events, one endpoint, SQLite outbox, loopback receiver")
        print(f"{'batch_size':>10} {'seconds':>8} {'events/s':>10} {'POSTs/s':>8}")
        with tempfile.TemporaryDirectory() as tmp:
            for i, batch_size in enumerate((1, 10, 100, 1000)):
                n = min(events, 2_000) if batch_size == 1 else events
                spool_file = Path(tmp) / f"spool{i}.db"
                url = f"http://127.0.0.1:{port}/hooks"
                elapsed = uvloop.run(drain(spool_file, url, batch_size, n))
                rate = f"{n / elapsed:>10,.0f} {-(-n // batch_size) / elapsed:>8,.0f}"
                print(f"{batch_size:>10} {elapsed:>8.2f} {rate}")
    finally:
        receiver.terminate()
        receiver.wait()


if __name__ == "__main__":
    main()
