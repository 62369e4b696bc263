"""contrib/grafana/render.py: draws docs/dashboard.png, the Grafana dashboard ferrymail.json
as it looks over a real `ferrymail run`, from the dashboard's own queries against a real
Prometheus. Not part of CI (it needs Prometheus, and takes minutes).

Grafana is not installable on the build machine (not in Debian, not on PyPI), so this
script does Grafana's part itself, and no more:

1. Starts the peers the tests use, on loopback only: Knot DNS (the MX host names), three
   Postfix smtp-sinks, an aiosmtpd peer (tests/smtp_peers.ScriptedServer) that bounces
   (550 5.1.1), defers (452 4.2.2) and throttles (421 4.7.0) some recipients, an
   smtp-sink that answers every connection with 421 (its site is suspended), and a
   webhook receiver (uvicorn) that is down for a while.
2. Starts Prometheus (Debian's, a temporary config and data dir, loopback only, scrape
   interval 1 s) scraping the /metrics of `ferrymail run` and `ferrymail serve` on one
   spool. The run has a shaping file that paces each site (so it lasts minutes) and
   makes the deferred recipients of one site expire within a minute; serve is the
   tracking server, whose links in the messages the aiosmtpd peer accepted are opened,
   clicked and unsubscribed by a thread here (a browser's User-Agent, so they count as
   people's). Recipients (the sample campaign's; a few lack a variable, so they fail)
   are submitted in two waves, from this process, with `Engine.submit`.
3. After --seconds, stops the run, reads contrib/grafana/ferrymail.json, runs every
   panel's PromQL through Prometheus' HTTP API (query_range over the run, step 1 s;
   Grafana's `$__rate_interval` becomes --rate-interval, template variables `.*`, as
   "All" does) and draws the panels in the dashboard's grid (gridPos) with matplotlib:
   titles, units, legends (legendFormat, the "Last *" column the JSON asks for) and stat
   panels (last value over a sparkline) as Grafana's dark theme shows them. A query
   that returns nothing is drawn as Grafana does, "No data".

matplotlib rather than an HTML page under headless Chromium: the page would need a
charting library, and none can be fetched here (npm is closed); matplotlib draws the same
series from the same numbers, with no browser in the loop.

Needs (root): apt-get install prometheus postfix knot   (smtp-sink, knotd: as the tests)
and the bench extra: pip install -e .[bench] (matplotlib).

    python contrib/grafana/render.py                        # 150 s run -> docs/dashboard.png
    python contrib/grafana/render.py --seconds 60 --recipients 8000 --out /tmp/d.png
    python contrib/grafana/render.py --keep /tmp/run        # keeps Prometheus' data there
    python contrib/grafana/render.py --redraw /tmp/run      # draws again from kept data
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import email
import json
import math
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ferrymail
import httpx
from ferrymail import sample
from ferrymail.spool import open_spool

# The test peers: Knot, smtp-sink, aiosmtpd, the webhook receiver (uvicorn).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent / "tests"))
from dns_peer import DnsServer
from smtp_peers import ScriptedServer, SmtpSink, free_port
from webhook_receiver import Receiver

ROOT = Path(__file__).resolve().parent.parent.parent
DASHBOARD = ROOT / "contrib" / "grafana" / "ferrymail.json"
OUT = ROOT / "docs" / "dashboard.png"

PROMETHEUS = "/usr/bin/prometheus"
HOST = "127.0.0.1"
HELO = "mta1.ferry.test"
CAMPAIGN = "autumn-2026"
STEP = 1.0  # seconds between the points of every query_range


@dataclass(frozen=True)
class Site:
    """One receiving site: its MX host, the peer behind it, the share of recipients
    routed there, and its pace (the shaping file's max_message_rate)."""

    mx: str
    peer: str  # "sink", "scripted" or "closing" (421 to every connection)
    share: float
    rate: str | None
    domains: tuple[str, ...]


SITES = (
    Site("mx.north.test", "sink", 0.45, "100/s", ("harbour.test", "pier.test", "dock.test")),
    Site("mx.south.test", "sink", 0.27, "60/s", ("ferry.test", "quay.test")),
    Site("mx.east.test", "sink", 0.18, "40/s", ("buoy.test",)),
    Site("mx.west.test", "scripted", 0.09, "20/s", ("tide.test",)),
    Site("mx.busy.test", "closing", 0.01, None, ("gull.test",)),
)
#: What the scripted site answers to some of its recipients (every Nth of them).
EVERY_BOUNCED, EVERY_DEFERRED, EVERY_THROTTLED = 9, 13, 97
#: Recipients without the `city` variable: their message cannot be rendered (failed).
EVERY_FAILED = 400
TRACKING_HOST = "https://t.example.com"  # the sample campaign's tracking and unsubscribe host
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"dashboard-render-secret-32-bytes").decode()

SHAPING = """\
[default]
connection_limit = 4
{sites}
[site."mx.west.test".retry]         # deferred there: retried soon, expired within a minute
first_retry = "15s"
max_age = "1m"

[[site."mx.west.test".automation]]  # its throttling reply slows the site for a while
regex = '^421 4\\.7\\.0 '
trigger = "immediate"
set = {{ max_message_rate = "5/s" }}
duration = "20s"
restore = "20s"
"""


# --- the run --------------------------------------------------------------------------


def log(text: str) -> None:
    print(f"render: {text}", file=sys.stderr, flush=True)


def recipients(n: int, wave: int) -> dict[str, list[Any]]:
    """The wave's recipients by site MX, the sample campaign's variables."""
    out: dict[str, list[Any]] = {s.mx: [] for s in SITES}
    people = list(sample.recipients(n))
    start = 0
    for k, site in enumerate(SITES):
        count = n - start if k == len(SITES) - 1 else round(n * site.share)
        for i, r in enumerate(people[start : start + count], start):
            local = f"w{wave}.user{i}"
            address = f"{local}@{site.domains[i % len(site.domains)]}"
            variables = dict(r.vars)
            if i % EVERY_FAILED == EVERY_FAILED - 1:
                del variables["city"]
            out[site.mx].append(ferrymail.Recipient(address, variables, id=f"w{wave}-{i}"))
        start += count
    return out


def scripted_replies(waves: list[dict[str, list[Any]]]) -> dict[str, str]:
    """The scripted site's RCPT replies: some recipients bounce, some are deferred (until
    they expire), a few throttled."""
    replies: dict[str, str] = {}
    for wave in waves:
        for i, r in enumerate(wave["mx.west.test"]):
            if i % EVERY_BOUNCED == 1:
                replies[r.address] = f"550 5.1.1 <{r.address}>: no such user"
            elif i % EVERY_DEFERRED == 2:
                replies[r.address] = "452 4.2.2 mailbox full, try again later"
            elif i % EVERY_THROTTLED == 3:
                replies[r.address] = "421 4.7.0 too many messages, slow down"
    return replies


class Reader(threading.Thread):
    """The people behind the scripted site: they open some of the messages it accepted
    (the open pixel), click a link in fewer and unsubscribe from a few (RFC 8058 one-click
    POST), on `ferrymail serve`'s tracking URLs, from a browser."""

    AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"

    def __init__(self, peer: Any, web: str) -> None:
        super().__init__(daemon=True)
        self.peer, self.web = peer, web
        self.done = threading.Event()
        self.answers: dict[int, int] = {}

    def run(self) -> None:
        seen = 0
        with httpx.Client(headers={"user-agent": self.AGENT}, timeout=10) as client:
            while not self.done.wait(0.5):
                messages = self.peer.messages[seen:]
                seen += len(messages)
                for k, message in enumerate(messages, seen - len(messages)):
                    if message.accepted:
                        self.read(client, k, email.message_from_bytes(message.content))

    def read(self, client: httpx.Client, k: int, message: Any) -> None:
        html = next(
            part.get_payload(decode=True).decode()
            for part in message.walk()
            if part.get_content_type() == "text/html"
        )
        base = re.escape(TRACKING_HOST)
        asks: list[tuple[str, str]] = []
        if k % 3 == 0:  # opened
            asks += [("GET", u) for u in re.findall(f'src="{base}(/c/[^"]+)"', html)]
        if k % 8 == 0:  # clicked a product
            links = re.findall(f'href="{base}(/c/[^"]+)"', html)
            asks += [("GET", links[k % len(links)])]
        if k % 150 == 0:  # unsubscribed
            header = str(message["List-Unsubscribe"])
            asks += [("POST", u) for u in re.findall(f"<{base}(/u/[^>]+)>", header)]
        for method, path in asks:
            body = b"List-Unsubscribe=One-Click" if method == "POST" else None
            form = {"content-type": "application/x-www-form-urlencoded"} if body else {}
            answer = client.request(method, self.web + path, content=body, headers=form)
            self.answers[answer.status_code] = self.answers.get(answer.status_code, 0) + 1


async def submit(spool: Path, people: list[Any]) -> None:
    async with ferrymail.Engine(spool, ferrymail.Config(helo_name=HELO)) as engine:
        await engine.submit(sample.campaign(CAMPAIGN), people)


def wait_http(url: str, process: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise SystemExit(f"render: {what} ended (status {process.returncode})")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"render: {what} did not answer at {url}")
        time.sleep(0.2)


def start_prometheus(workdir: Path, targets: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    """Prometheus on loopback, its data in workdir/prometheus, scraping `targets`."""
    port = free_port()
    config = workdir / "prometheus.yml"
    listed = ", ".join(f"'{t}'" for t in targets)
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        f"scrape_configs:\n  - job_name: ferrymail\n    static_configs:\n"
        f"      - targets: [{listed}]\n"
    )
    err = open(workdir / "prometheus.log", "ab")  # noqa: SIM115 (the process keeps it)
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'prometheus'}",
            f"--web.listen-address={HOST}:{port}",
            "--storage.tsdb.retention.time=30d",
        ],
        stdout=err,
        stderr=err,
    )
    url = f"http://{HOST}:{port}"
    wait_http(f"{url}/-/ready", process, "prometheus")
    return process, url


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def real_run(workdir: Path, seconds: float, total: int) -> tuple[float, float]:
    """Runs ferrymail under Prometheus for `seconds`; returns the run's (start, end)."""
    first, second = round(total * 0.6), total - round(total * 0.6)
    waves = [recipients(first, 1), recipients(second, 2)]
    with contextlib.ExitStack() as stack:
        (workdir / "dns").mkdir()
        dns = stack.enter_context(DnsServer(workdir / "dns"))
        for site in SITES:
            dns.add_zone(site.mx, [f"@ A {HOST}"])
        peers: dict[str, tuple[str, int]] = {}
        for site in SITES:
            if site.peer == "sink":
                peer: Any = SmtpSink(HOST, hostname=site.mx)
            elif site.peer == "closing":
                peer = SmtpSink(HOST, hostname=site.mx, shutdown=["CONNECT"])
            else:
                peer = ScriptedServer(HOST, hostname=site.mx, rcpt_replies=scripted_replies(waves))
                scripted = peer
            stack.enter_context(peer)
            peers[site.mx] = peer.address
        receiver = stack.enter_context(Receiver())
        (workdir / "service.toml").write_text(
            f'[[webhook]]\nname = "crm"\nurl = "{receiver.url}"\n'
            'events = ["delivered", "bounced", "expired", "failed"]\n'
            f'secret = "{WEBHOOK_SECRET}"\nbatch_size = 100\n'
        )
        (workdir / "shaping.toml").write_text(
            SHAPING.format(
                sites="".join(
                    f'\n[site."{s.mx}"]\nmax_message_rate = "{s.rate}"\n' for s in SITES if s.rate
                )
            )
        )
        spool = workdir / "spool.db"
        asyncio.run(submit(spool, []))  # creates the spool `run` needs
        metrics_port, serve_metrics_port, web_port = free_port(), free_port(), free_port()
        prometheus, prom = start_prometheus(
            workdir, [f"{HOST}:{metrics_port}", f"{HOST}:{serve_metrics_port}"]
        )
        stack.callback(stop, prometheus)
        routes = [
            f"--route={domain}={site.mx}:{peers[site.mx][1]}"
            for site in SITES
            for domain in site.domains
        ]
        with open(workdir / "run.log", "ab") as out:
            run = subprocess.Popen(
                [
                    sys.executable, "-m", "ferrymail", "run", "--spool", str(spool),
                    "--dns-server", dns.address, "--helo", HELO, *routes,
                    "--shaping", str(workdir / "shaping.toml"),
                    "--service-config", str(workdir / "service.toml"),
                    "--metrics-listen", f"{HOST}:{metrics_port}",
                ],
                stdout=out, stderr=out,
            )  # fmt: skip
        stack.callback(stop, run)
        wait_http(f"http://{HOST}:{metrics_port}/metrics", run, "ferrymail run")
        # The tracking server on the same spool: the clicks, opens and unsubscribes.
        (workdir / "web.toml").write_text(
            f'tracking_secrets = ["{sample.SECRET}"]\ntracking_path = "/c"\n'
            'unsubscribe_path = "/u"\n'
        )
        with open(workdir / "serve.log", "ab") as out:
            serve = subprocess.Popen(
                [
                    sys.executable, "-m", "ferrymail", "serve", "--spool", str(spool),
                    "--listen", f"{HOST}:{web_port}", "--config", str(workdir / "web.toml"),
                    "--metrics-listen", f"{HOST}:{serve_metrics_port}",
                ],
                stdout=out, stderr=out,
            )  # fmt: skip
        stack.callback(stop, serve)
        wait_http(f"http://{HOST}:{serve_metrics_port}/metrics", serve, "ferrymail serve")
        reader = Reader(scripted, f"http://{HOST}:{web_port}")
        reader.start()
        stack.callback(reader.done.set)
        start = time.time()
        log(f"ferrymail run and Prometheus ({prom}) up; {total:,} recipients over {seconds:.0f} s")

        def at(fraction: float) -> None:
            time.sleep(max(0.0, start + seconds * fraction - time.time()))

        at(0.04)
        asyncio.run(submit(spool, [r for people in waves[0].values() for r in people]))
        log(f"wave 1: {first:,} recipients submitted")
        at(0.3)
        receiver.always = "fail"
        log("webhook receiver down (500)")
        at(0.45)
        asyncio.run(submit(spool, [r for people in waves[1].values() for r in people]))
        log(f"wave 2: {second:,} recipients submitted")
        at(0.5)
        receiver.always = None
        log("webhook receiver up again")
        at(1.0)
        if run.poll() is not None:
            raise SystemExit(f"render: ferrymail run ended early: see {workdir / 'run.log'}")
        end = time.time()
        reader.done.set()
        stop(run)
        stop(serve)
        time.sleep(1.5)  # let Prometheus write its last scrape
        counts = ferrymail_counts(spool)
        log(f"run stopped; the spool: {counts}; tracking answers: {reader.answers}")
    return start, end


def ferrymail_counts(spool: Path) -> dict[str, int]:
    s = open_spool(spool, read_only=True)
    return {k: v for k, v in s.counts().items() if v}


# --- the queries ----------------------------------------------------------------------


def grafana_expr(expr: str, rate_interval: str) -> str:
    """The PromQL Grafana would send with every template variable at "All"."""
    expr = expr.replace("$__rate_interval", rate_interval).replace("$__interval", rate_interval)
    return re.sub(r"\$\{?(site|source)\}?", ".*", expr)


def query_range(prom: str, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    reply = httpx.get(
        f"{prom}/api/v1/query_range",
        params={"query": expr, "start": start, "end": end, "step": STEP},
        timeout=30,
    )
    body = reply.json()
    if body.get("status") != "success":
        raise SystemExit(f"render: Prometheus refused {expr!r}: {body}")
    return list(body["data"]["result"])


@dataclass
class Series:
    name: str  # the legend: legendFormat with the series' labels
    times: list[float]
    values: list[float]


def legend(fmt: str | None, labels: dict[str, str]) -> str:
    if not fmt:
        inner = ", ".join(f'{k}="{v}"' for k, v in labels.items() if k != "__name__")
        return labels.get("__name__", "") + "{" + inner + "}"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)


def panel_series(
    prom: str, panel: dict[str, Any], start: float, end: float, rate_interval: str
) -> list[Series]:
    out = []
    for target in panel["targets"]:
        for result in query_range(prom, grafana_expr(target["expr"], rate_interval), start, end):
            points = [(float(t), float(v)) for t, v in result["values"]]
            points = [(t, v) for t, v in points if math.isfinite(v)]
            if points:
                name = legend(target.get("legendFormat"), result["metric"])
                out.append(Series(name, [t for t, _ in points], [v for _, v in points]))
    return out


# --- drawing --------------------------------------------------------------------------

# Grafana's dark theme and its classic palette (the timeseries default).
BACKGROUND = "#111217"
PANEL = "#181b1f"
BORDER = "#2c3235"
TEXT = "#ccccdc"
DIM = "#8e8e9e"
GRID = "#26292e"
PALETTE = ["#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A6"]
GREEN, RED = "#73BF69", "#F2495C"
# Grafana's grid: 24 columns; a row unit is 30 px plus an 8 px margin.
WIDTH_PX, ROW_PX, MARGIN_PX, HEADER_PX = 1600, 30, 8, 70
DPI = 100


def fmt(value: float, unit: str) -> str:
    """A value as Grafana's unit formats it (the units the dashboard uses)."""
    if unit == "percentunit":
        return f"{value * 100:.{0 if value == 0 else 2}f}%"
    if unit == "s":
        if value == 0:
            return "0 s"
        if value < 1:
            return f"{value * 1000:.0f} ms"
        if value < 60:
            return _short(value) + " s"
        return _short(value / 60) + " min"
    suffix = {"ops": " ops/s", "reqps": " req/s"}.get(unit, "")
    for div, si in ((1e9, " Bil"), (1e6, " Mil"), (1e3, " K")):
        if abs(value) >= div:
            return f"{value / div:.2f}".rstrip("0").rstrip(".") + si + suffix.strip()
    if value == int(value):
        return f"{value:.0f}{suffix}"
    return f"{value:.{1 if abs(value) >= 10 else 2}f}{suffix}"


def draw(dashboard: dict[str, Any], data: dict[int, list[Series]], span: tuple[float, float],
         caption: str, out: Path) -> None:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard["panels"])
    height_px = HEADER_PX + rows * (ROW_PX + MARGIN_PX)
    fig = plt.figure(figsize=(WIDTH_PX / DPI, height_px / DPI), dpi=DPI, facecolor=BACKGROUND)
    plt.rcParams.update({"font.family": "DejaVu Sans", "font.size": 9})
    col_px = (WIDTH_PX - MARGIN_PX) / 24

    def box(x: float, y: float, w: float, h: float) -> list[float]:
        """Pixels from the top left to a figure rectangle [left, bottom, width, height]."""
        return [x / WIDTH_PX, 1 - (y + h) / height_px, w / WIDTH_PX, h / height_px]

    fig.text(MARGIN_PX / WIDTH_PX, 1 - 26 / height_px, dashboard["title"], color=TEXT,
             fontsize=16, weight="bold", va="center")  # fmt: skip
    fig.text(MARGIN_PX / WIDTH_PX, 1 - 52 / height_px, caption, color=DIM, fontsize=9,
             va="center")  # fmt: skip
    t0, t1 = (datetime.fromtimestamp(t, UTC) for t in span)
    fig.text(1 - MARGIN_PX / WIDTH_PX, 1 - 26 / height_px,
             f"{t0:%Y-%m-%d %H:%M:%S} to {t1:%H:%M:%S} UTC", color=TEXT, fontsize=10,
             ha="right", va="center")  # fmt: skip

    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        x = MARGIN_PX + g["x"] * col_px
        y = HEADER_PX + g["y"] * (ROW_PX + MARGIN_PX)
        w = g["w"] * col_px - MARGIN_PX
        h = g["h"] * (ROW_PX + MARGIN_PX) - MARGIN_PX
        frame = fig.add_axes(box(x, y, w, h))
        frame.set_facecolor(PANEL)
        frame.set_xticks([])
        frame.set_yticks([])
        for spine in frame.spines.values():
            spine.set_color(BORDER)
        frame.text(8 / w, 1 - 16 / h, panel["title"], transform=frame.transAxes, color=TEXT,
                   fontsize=10, weight="bold", va="center")  # fmt: skip
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        series = data[panel["id"]]
        if not series:
            frame.text(0.5, 0.5, "No data", transform=frame.transAxes, color=DIM,
                       fontsize=12, ha="center", va="center")  # fmt: skip
            continue
        if panel["type"] == "stat":
            draw_stat(fig, box, series, unit, (x, y + 30, w, h - 36))
        else:
            draw_timeseries(fig, box, panel, series, unit, span, (x, y + 28, w, h - 30), mdates)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, facecolor=BACKGROUND)
    plt.close(fig)
    shrink(out)


def draw_timeseries(fig: Any, box: Any, panel: dict[str, Any], series: list[Series],
                    unit: str, span: tuple[float, float], area: tuple[float, ...],
                    mdates: Any) -> None:  # fmt: skip
    x, y, w, h = area
    calcs = panel.get("options", {}).get("legend", {}).get("calcs", [])
    line_px = 17
    legend_px = line_px * (len(series) + (1 if calcs else 0)) + 6
    plot_h = max(h - legend_px - 24, 60)
    ax = fig.add_axes(box(x + 62, y + 4, w - 76, plot_h))
    ax.set_facecolor(PANEL)
    for i, s in enumerate(series):
        times = [datetime.fromtimestamp(t, UTC) for t in s.times]
        ax.plot(times, s.values, color=PALETTE[i % len(PALETTE)], linewidth=1.2)
    ax.set_xlim(*(datetime.fromtimestamp(t, UTC) for t in span))
    ax.set_ylim(bottom=0)
    ax.grid(True, color=GRID, linewidth=0.8)
    ax.tick_params(colors=DIM, labelsize=8, length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=3, maxticks=7))
    ax.yaxis.set_major_locator(locator(unit, max(max(s.values) for s in series)))
    ax.yaxis.set_major_formatter(lambda v, _: fmt(v, unit))
    # The legend as a table: name, and the "Last *" column (lastNotNull).
    top = y + 4 + plot_h + 22
    legend_ax = fig.add_axes(box(x + 8, top, w - 16, legend_px))
    legend_ax.axis("off")
    row = 1 / max(len(series) + (1 if calcs else 0), 1)
    rows = [("", "Last *")] if calcs else []
    rows += [(s.name, fmt(s.values[-1], unit) if calcs else "") for s in series]
    for k, (name, last) in enumerate(rows):
        yk = 1 - (k + 0.5) * row
        color = DIM if calcs and k == 0 else TEXT
        if k > 0 or not calcs:
            i = k - (1 if calcs else 0)
            legend_ax.plot([0.0, 0.018], [yk, yk], color=PALETTE[i % len(PALETTE)],
                           linewidth=3, transform=legend_ax.transAxes)  # fmt: skip
        legend_ax.text(0.028, yk, name, color=color, fontsize=8.5, va="center",
                       transform=legend_ax.transAxes)  # fmt: skip
        legend_ax.text(1.0, yk, last, color=color, fontsize=8.5, va="center", ha="right",
                       transform=legend_ax.transAxes)  # fmt: skip


def _short(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def locator(unit: str, top: float) -> Any:
    """About four ticks, at whole minutes for durations over two minutes (as Grafana)."""
    from matplotlib.ticker import MaxNLocator, MultipleLocator

    if unit == "s" and top > 120:
        return MultipleLocator(60 * math.ceil(top / 60 / 4))
    return MaxNLocator(nbins=4, min_n_ticks=2)


def draw_stat(fig: Any, box: Any, series: list[Series], unit: str, area: tuple[float, ...]) -> None:
    """Grafana's stat defaults: the last non-null value of each series, coloured by the
    default thresholds (green, red from 80), over an area sparkline of the series; two
    series side by side in a wide panel."""
    x, y, w, h = area
    cell = w / len(series)
    for i, s in enumerate(series):
        last = s.values[-1]
        color = RED if last >= 80 else GREEN
        left = x + i * cell
        ax = fig.add_axes(box(left + 6, y + h * 0.45, cell - 12, h * 0.55 - 4))
        ax.axis("off")
        ax.fill_between(s.times, s.values, color=color, alpha=0.18, linewidth=0)
        ax.plot(s.times, s.values, color=color, linewidth=1.2)
        top = max(max(s.values), 1e-9)
        ax.set_ylim(0, top * 1.15)
        ax.set_xlim(s.times[0], s.times[-1])
        label = fig.add_axes(box(left, y, cell, h * 0.45))
        label.axis("off")
        if len(series) > 1:
            label.text(0.5, 0.88, s.name, color=TEXT, fontsize=10, ha="center", va="center",
                       transform=label.transAxes)  # fmt: skip
        label.text(0.5, 0.42, fmt(last, unit), color=color, fontsize=30, weight="bold",
                   ha="center", va="center", transform=label.transAxes)  # fmt: skip


def shrink(png: Path) -> None:
    """A palette PNG: the picture is flat colours and lines, 256 colours keep it sharp."""
    from PIL import Image

    with Image.open(png) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(png, optimize=True)


# --- main -----------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=150.0, help="how long the run lasts")
    p.add_argument("--recipients", type=int, default=34_000, help="over both waves")
    p.add_argument("--rate-interval", default="10s", help="what $__rate_interval becomes")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--keep", type=Path, help="keep the run's files (Prometheus' data) here")
    p.add_argument("--redraw", type=Path, help="draw from a directory --keep left")
    args = p.parse_args()
    dashboard = json.loads(DASHBOARD.read_text())

    if args.redraw is not None:
        workdir = args.redraw
        start, end = json.loads((workdir / "span.json").read_text())
    else:
        workdir = args.keep or Path(tempfile.mkdtemp(prefix="ferrymail-dashboard-"))
        workdir.mkdir(parents=True, exist_ok=True)
        start, end = real_run(workdir, args.seconds, args.recipients)
        (workdir / "span.json").write_text(json.dumps([start, end]))
    try:
        # A Prometheus of our own on the kept data, scraping nothing.
        prometheus, prom = start_prometheus(workdir, [])
        try:
            data = {
                panel["id"]: panel_series(prom, panel, start, end, args.rate_interval)
                for panel in dashboard["panels"]
            }
        finally:
            stop(prometheus)
        for panel in dashboard["panels"]:
            names = [s.name for s in data[panel["id"]]]
            log(f"{panel['title']}: {', '.join(names) if names else 'NO DATA'}")
        caption = (
            f"Drawn by contrib/grafana/render.py from ferrymail.json's own queries against "
            f"Prometheus during a real `ferrymail run` and `ferrymail serve` on loopback "
            f"($__rate_interval = {args.rate_interval}, step {STEP:.0f} s, all sites, all sources)"
        )
        draw(dashboard, data, (start, end), caption, args.out)
        log(f"{args.out}: {args.out.stat().st_size / 1024:.0f} KB")
    finally:
        if args.keep is None and args.redraw is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
