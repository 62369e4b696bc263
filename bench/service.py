"""bench/service.py: injection over HTTP (POST /v1/campaigns/ID/recipients of a real
`ferrymail serve`) against `Engine.submit` in-process, for --recipients recipients.

Both rows queue the same recipients (user{i}@d{i % 1000}.test, an id and two variables)
into a fresh SQLite spool, with an event log (a "queued" event each), and end when every
one is durable. The in-process row
submits from a generator of Recipient; the HTTP row streams a JSON-lines file (written
beforehand, so the client's work is reading a file) through httpx in 256 KiB chunks,
as an ESP's application would, to `ferrymail serve` on loopback (uvicorn, uvloop,
httptools), whose answer must count every recipient accepted. The goal: HTTP at least
70 % of in-process. Wall time and the CPU of the process doing the submit (the server's
for HTTP) are printed; the machine's other work shows as the gap.

    python bench/service.py                         # 1,000,000 recipients
    python bench/service.py --recipients 100000     # a quicker run
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ferrymail
from _common import cores, cpu_model, markdown_table, process_cpu
from ferrymail.cli import main as cli
from ferrymail.spool import SqliteSpool

CAMPAIGN = {
    "sender": "bounces@sender.test",
    "from": "Sender <news@sender.test>",
    "subject": "Hello {{ name }}",
    "text": "Hello {{ name }}, your code is {{ code }}\n",
}
CHUNK = 256 * 1024


def recipients(n: int) -> Iterator[ferrymail.Recipient]:
    for i in range(n):
        yield ferrymail.Recipient(
            f"user{i}@d{i % 1000}.test", {"name": f"User {i}", "code": i}, id=f"r{i}"
        )


def write_jsonl(path: Path, n: int) -> None:
    with open(path, "wb") as f:
        for start in range(0, n, 10_000):
            rows = [
                {
                    "email": f"user{i}@d{i % 1000}.test",
                    "id": f"r{i}",
                    "name": f"User {i}",
                    "code": i,
                }
                for i in range(start, min(n, start + 10_000))
            ]
            f.write(b"".join(orjson.dumps(row) + b"\n" for row in rows))


def in_process(directory: Path, n: int, event_log: bool = True) -> tuple[float, float]:
    """(wall, CPU) seconds of Engine.submit of n recipients into a fresh spool."""

    async def submit() -> None:
        campaign = ferrymail.Campaign(
            id="bench",
            sender=CAMPAIGN["sender"],
            from_=CAMPAIGN["from"],
            subject=CAMPAIGN["subject"],
            text=CAMPAIGN["text"],
        )
        # With an event log, as `ferrymail serve`'s engine has (events.jsonl next to the
        # spool, as `ferrymail send` writes): a "queued" event per recipient either way.
        log = str(directory / f"events-{event_log}.jsonl") if event_log else None
        config = ferrymail.Config(helo_name="bench.test", event_log=log)
        async with ferrymail.Engine(directory / f"inproc-{event_log}.db", config) as engine:
            result = await engine.submit(campaign, recipients(n))
        assert result.accepted == n, result

    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    uvloop.run(submit())
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def over_http(directory: Path, n: int, body: Path) -> tuple[float, float]:
    """(wall, server CPU) seconds of one POST of n recipients to `ferrymail serve`."""
    spool = directory / "http.db"
    SqliteSpool(spool).close()
    token = _create_key(spool)
    server = subprocess.Popen(
        [sys.executable, "-m", "ferrymail", "serve", "--listen", "127.0.0.1:0",
         "--spool", str(spool), "--no-delivery"],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1",
             "FERRYMAIL_TRACKING_SECRET": "bench-tracking-secret-0123456789"},
    )  # fmt: skip
    try:
        assert server.stdout is not None
        ready, _, _ = select.select([server.stdout], [], [], 30)
        assert ready, "ferrymail serve did not start"
        url = "http://" + server.stdout.readline().decode().rsplit(" ", 1)[1].strip()
        headers = {"authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=None) as client:
            assert client.put("/v1/campaigns/bench", json=CAMPAIGN).status_code == 200
            cpu_before = process_cpu(server.pid)

            def chunks() -> Iterator[bytes]:
                with open(body, "rb") as f:
                    while chunk := f.read(CHUNK):
                        yield chunk

            start = time.perf_counter()
            answer = client.post("/v1/campaigns/bench/recipients", content=chunks())
            wall = time.perf_counter() - start
            cpu = process_cpu(server.pid) - cpu_before
        assert answer.status_code == 200, answer.text
        assert answer.json()["accepted"] == n, answer.text
        return wall, cpu
    finally:
        server.terminate()
        server.wait(30)


def _create_key(spool: Path) -> str:
    import io
    from contextlib import redirect_stdout

    out = io.StringIO()
    with redirect_stdout(out):
        assert cli(["keys", "create", "bench", "--spool", str(spool)]) == 0
    return out.getvalue().strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=1_000_000, metavar="N")
    args = parser.parse_args()
    n = args.recipients
    print(f"# {n:,} recipients; {cpu_model()}, {cores()} cores, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="ferrymail-bench-service-") as tmp:
        directory = Path(tmp)
        body = directory / "recipients.jsonl"
        write_jsonl(body, n)
        size = body.stat().st_size
        wall_in, cpu_in = in_process(directory, n)
        wall_bare, cpu_bare = in_process(directory, n, event_log=False)
        wall_http, cpu_http = over_http(directory, n, body)
    rate_in, rate_http = n / wall_in, n / wall_http
    rows = [
        ("Engine.submit in-process", f"{wall_in:.1f}", f"{cpu_in:.1f}", f"{rate_in:,.0f}", "100 %"),
        (
            "Engine.submit in-process, no event log",
            f"{wall_bare:.1f}",
            f"{cpu_bare:.1f}",
            f"{n / wall_bare:,.0f}",
            f"{100 * wall_in / wall_bare:.0f} %",
        ),
        (
            f"HTTP, JSON lines ({size / 1e6:,.0f} MB)",
            f"{wall_http:.1f}",
            f"{cpu_http:.1f}",
            f"{rate_http:,.0f}",
            f"{100 * rate_http / rate_in:.0f} %",
        ),
    ]
    print(markdown_table(["injection", "wall s", "CPU s", "recipients/s", "of in-process"], rows))


if __name__ == "__main__":
    main()
