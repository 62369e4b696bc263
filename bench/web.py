"""bench/web.py: the tracking server under load: requests/s and p99 latency of the click
and open endpoints beside a bare uvicorn "hello" app, with wrk (Debian's package).

Every server is one uvicorn worker on loopback with the same settings (uvloop,
httptools, no access log, proxy headers on); wrk drives it from one thread with
--connections concurrent keep-alive connections for --duration seconds, cycling
through the real tokens of --recipients recipients (a click on each of two links, and
each one's pixel), so every request verifies a different token and records a row. The
rows go to a real spool in group commits. Rows:

- hello: a bare ASGI callable answering "hello" (the ceiling).
- click / open: `ferrymail serve`.
- click, webhook: `ferrymail serve` with a webhook that wants clicks: each click's event
  is also written to the spool's webhook outbox, in the transaction that records it
  (`--no-webhook-sender`: the outbox fills, nothing is POSTed).
- starlette click: the same click work (verify, queue the row, 302) as a Starlette
  route with its Request and RedirectResponse: what Starlette would cost the endpoint
  (run when starlette is installed: pip install -e .[bench]).

    python bench/web.py                    # 10 s each, 64 connections
    python bench/web.py --quick            # 3 s each: a smoke test
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ferrymail
import msgspec
from ferrymail.spool import SqliteSpool
from ferrymail.submit import rows
from ferrymail.tracking import verify

sys.path.insert(0, str(Path(__file__).parent))
from _common import cores, cpu_model, debian_version, markdown_table

SECRET = "bench-secret-0123456789abcdef"
TRACK = "https://t.example.com/t"

HELLO = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"5")]})
    await send({"type": "http.response.body", "body": b"hello"})
"""

STARLETTE = """
import contextlib
import time
from starlette.applications import Starlette
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
import ferrymail.web
from ferrymail.spool import Signal, SqliteSpool
from ferrymail.web.app import _open

config = ferrymail.web.load({config!r})
tracker = ferrymail.web.app(spool=SqliteSpool({spool!r}), config=config)
secrets = [s.encode() for s in config.tracking_secrets]


async def click(request):
    claims = _open(request.path_params["token"], secrets)
    if claims is None or claims.kind != "click":
        return Response("not found", status_code=404)
    agent = request.headers.get("user-agent", "")
    await tracker._writer.add(Signal("clicked", claims.campaign, str(claims.recipient),
                                     time.time(), False, claims.link, claims.url, agent))
    return RedirectResponse(claims.url, status_code=302, headers={{"cache-control": "no-store"}})


@contextlib.asynccontextmanager
async def lifespan(app):
    yield
    await tracker.aclose()


app = Starlette(routes=[Route("/t/{{token}}", click)], lifespan=lifespan)
"""

LUA = """
paths = {{{paths}}}
i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1], {{["User-Agent"] = "Mozilla/5.0 (bench)"}})
end
"""


def tokens(recipients: int) -> tuple[ferrymail.Campaign, list[str], list[str]]:
    """The campaign, and the click and open paths of its recipients' messages."""
    campaign = ferrymail.Campaign(
        id="bench",
        sender="b@bench.test",
        from_="b@bench.test",
        subject="s",
        html='<p><a href="https://shop.example.com/a?x=1">a</a> '
        '<a href="https://shop.example.com/b">b</a></p>',
        tracking=ferrymail.Tracking(base_url=TRACK, secret=SECRET),
    )
    people = [ferrymail.Recipient(f"r{i}@d{i % 50}.test", id=i) for i in range(recipients)]
    clicks, opens = [], []
    for message in ferrymail.render(campaign, people):
        assert isinstance(message, ferrymail.RenderedMessage), message
        for token in dict.fromkeys(re.findall(TRACK + r"/([A-Za-z0-9_-]+)", message.data.decode())):
            (clicks if verify(token, SECRET).kind == "click" else opens).append(f"/t/{token}")
    return campaign, clicks, opens


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def uvicorn(module_dir: Path, target: str, port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "--app-dir", str(module_dir), target,
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--loop", "uvloop",
            "--http", "httptools", "--no-access-log", "--log-level", "warning",
            "--proxy-headers", "--no-server-header"]  # fmt: skip


def wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited ({process.returncode})")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit("the server did not start")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def drive(
    port: int, paths: list[str], args: argparse.Namespace, work: Path
) -> tuple[float, float, int]:
    """(requests/s, p99 latency in ms, non-2xx/3xx answers) of one wrk run."""
    script = work / f"paths-{port}.lua"
    script.write_text(LUA.format(paths=",".join(f'"{p}"' for p in paths)))
    out = subprocess.run(
        ["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency",
         "-s", str(script), f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rate, float(value) * _UNITS[unit], int(bad.group(1)) if bad else 0


def start(command: list[str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    wait_listening(port, process)
    return process


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--recipients", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each, medians shown")
    parser.add_argument("--quick", action="store_true", help="3 s runs, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.rounds = 3, 1
    if shutil.which("wrk") is None:
        raise SystemExit("bench/web.py needs wrk (apt-get install wrk; scripts/setup installs it)")
    with tempfile.TemporaryDirectory(prefix="ferrymail-web-bench-") as tmp:
        work = Path(tmp)
        campaign, clicks, opens = tokens(args.recipients)
        spool_path = work / "spool.db"
        people = [ferrymail.Recipient(f"r{i}@d{i % 50}.test", id=i) for i in range(args.recipients)]
        with SqliteSpool(spool_path) as spool:
            spool.put_campaign(campaign.id, msgspec.msgpack.encode(campaign.spec))
            spool.insert(campaign.id, rows(people, set()))
        config = work / "web.toml"
        config.write_text(f'tracking_secrets = ["{SECRET}"]\ntracking_path = "/t"\n')
        hooks = work / "service.toml"
        hooks.write_text(
            '[[webhook]]\nname = "esp"\nurl = "http://127.0.0.1:9/"\nevents = ["clicked"]\n'
            'secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"\n'
        )
        (work / "hello.py").write_text(HELLO)
        (work / "starlette_click.py").write_text(
            STARLETTE.format(config=str(config), spool=str(spool_path))
        )
        serve = [sys.executable, "-m", "ferrymail", "serve", "--no-delivery"]
        serve += ["--config", str(config)]
        servers: list[tuple[str, int, list[str]]] = []
        processes = []
        try:
            for name, target, paths in [
                ("hello (bare uvicorn)", "hello", ["/"]),
                ("ferrymail click", "serve", clicks),
                ("ferrymail open", "serve", opens),
                ("ferrymail click, webhook", "serve", clicks),
                ("starlette click", "starlette_click:app", clicks),
            ]:
                if target == "starlette_click:app" and not _has_starlette():
                    print("  (starlette is not installed: no starlette row)", file=sys.stderr)
                    continue
                port = free_port()
                if target == "serve":
                    # A spool each: one server's backlog does not wait on another's lock.
                    own = work / f"{name.split()[-1]}.db"
                    shutil.copy(spool_path, own)
                    command = [*serve, "--listen", f"127.0.0.1:{port}", "--spool", str(own),
                               "--event-log", str(own.with_suffix(".jsonl"))]  # fmt: skip
                    if name.endswith("webhook"):
                        command += ["--service-config", str(hooks), "--no-webhook-sender"]
                else:
                    command = uvicorn(work, "hello:app" if target == "hello" else target, port)
                processes.append(start(command, port))
                servers.append((name, port, paths))
                drive(port, paths[:200], argparse.Namespace(connections=8, duration=1), work)
            # Rounds in turn, so that whatever else the machine does weighs on each alike;
            # the median of each.
            runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name, _, _ in servers}
            for round_ in range(args.rounds):
                for name, port, paths in servers:
                    rate, p99, bad = drive(port, paths, args, work)
                    runs[name].append((rate, p99, bad))
                    print(f"  round {round_ + 1} {name}: {rate:,.0f} requests/s, p99 {p99:.2f} ms",
                          file=sys.stderr)  # fmt: skip
        finally:
            for process in processes:
                process.terminate()
                process.wait(30)
        results = [
            (
                name,
                statistics.median(r[0] for r in runs[name]),
                statistics.median(r[1] for r in runs[name]),
                sum(r[2] for r in runs[name]),
            )
            for name, _, _ in servers
        ]
        with SqliteSpool(work / "click.db") as spool:
            clicked = spool.report(campaign.id).feedback.clicks
        with SqliteSpool(work / "open.db") as spool:
            opened = spool.report(campaign.id).feedback.opens
        with SqliteSpool(work / "webhook.db") as spool:
            hooked = spool.report(campaign.id).feedback.clicks
            outboxed = sum(b.pending for b in spool.webhook_backlog())
    hello = results[0][1]
    lines = [
        [name, f"{rate:,.0f}", f"{p99:.2f}", f"{rate / hello:.0%}", f"{bad:,}"]
        for name, rate, p99, bad in results
    ]
    print(
        f"{cpu_model()}, {cores()} cores, Python {sys.version.split()[0]}, "
        f"wrk {debian_version('wrk')}: 1 uvicorn worker, wrk -t1 -c{args.connections} "
        f"-d{args.duration}s, median of {args.rounds} rounds, {len(clicks):,} click and "
        f"{len(opens):,} open tokens"
    )
    print()
    print(markdown_table(["endpoint", "requests/s", "p99 ms", "vs hello", "errors"], lines))
    print()
    print(f"recorded in the spools: {clicked:,} clicks, {opened:,} opens; with the webhook "
          f"{hooked:,} clicks and {outboxed:,} events in its outbox")  # fmt: skip
    return 0


def _has_starlette() -> bool:
    try:
        import starlette  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
