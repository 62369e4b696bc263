"""`ferrymail serve` as a real uvicorn process on loopback: click, open, unsubscribe."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import ferrymail
import httpx
import orjson
import pytest
from engine_support import on_uvloop
from ferrymail.spool import SqliteSpool
from ferrymail.web.pages import PIXEL
from peer_process import STARTUP_TIMEOUT, end_process
from web_support import (
    BROWSER,
    SECRET,
    UNSUBSCRIBE_SECRET,
    URLS,
    campaign,
    links,
    spool_with,
)

ANN = ferrymail.Recipient("ann@a.test", id="ann")
BOB = ferrymail.Recipient("bob@b.test")
NEWS = campaign("news-1", list_id="The News <news.example.com>")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    spool_with(tmp_path / "spool.db", [NEWS], [ANN, BOB]).close()
    toml = tmp_path / "web.toml"
    toml.write_text(
        f'tracking_secrets = ["{SECRET}"]\nunsubscribe_secrets = ["{UNSUBSCRIBE_SECRET}"]\n'
        'tracking_path = "/t"\nunsubscribe_path = "/u"\n'
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "ferrymail", "serve", "--listen", "127.0.0.1:0",
         "--spool", str(tmp_path / "spool.db"), "--config", str(toml), "--no-delivery"],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], STARTUP_TIMEOUT)
        assert ready, "ferrymail serve did not start"
        line = process.stdout.readline().decode()
        assert line.startswith("ferrymail serve: listening on 127.0.0.1:"), line
        yield process, "http://" + line.rsplit(" ", 1)[1].strip()
    finally:
        end_process(process)


@on_uvloop
async def test_clicks_opens_and_unsubscribes_through_a_real_server(
    server: tuple[subprocess.Popen[bytes], str], tmp_path: Path
) -> None:
    process, base = server
    ann, bob = links(NEWS, ANN), links(NEWS, BOB)
    browser = {"user-agent": BROWSER}
    async with httpx.AsyncClient(base_url=base) as http:
        # Clicks: exactly the signed URL; anything else a 404.
        for path, url in zip(ann.clicks, URLS, strict=True):
            answer = await http.get(path, headers=browser)
            assert (answer.status_code, answer.headers["location"]) == (302, url)
        token = ann.clicks[0].rsplit("/", 1)[1]
        for path in (f"/t/{token[:-1]}{'A' if token[-1] != 'A' else 'B'}", "/t/nonsense"):
            answer = await http.get(path, headers=browser)
            assert answer.status_code == 404 and "location" not in answer.headers
            assert "Traceback" not in answer.text
        assert (await http.head(bob.clicks[0], headers=browser)).status_code == 302
        safe_links = {"user-agent": "Mozilla/5.0 (compatible; BingPreview/1.0b)"}
        assert (await http.get(bob.clicks[0], headers=safe_links)).status_code == 302
        # Opens: the GIF, uncached; Google's proxy is a machine.
        for agent in (BROWSER, "Mozilla/5.0 (via ggpht.com GoogleImageProxy)"):
            answer = await http.get(ann.open, headers={"user-agent": agent})
            assert answer.content == PIXEL and answer.headers["content-type"] == "image/gif"
            assert answer.headers["cache-control"].startswith("no-store")
        # Unsubscribe: a GET only shows the button; the POST suppresses, once.
        page = await http.get(bob.unsubscribe, headers=browser)
        assert page.status_code == 200 and 'method="post"' in page.text
        with SqliteSpool(tmp_path / "spool.db") as spool:
            assert spool.suppressed_among(["bob@b.test"], "news-1") == set()
        form = {"List-Unsubscribe": "One-Click"}
        for _ in range(2):
            assert (await http.post(bob.unsubscribe, data=form)).status_code == 200
    # SIGTERM: uvicorn's shutdown commits the clicks and opens still queued.
    process.send_signal(signal.SIGTERM)
    assert process.wait(STARTUP_TIMEOUT) == 0

    with SqliteSpool(tmp_path / "spool.db") as spool:
        feedback = spool.feedback("news-1")
        counts = spool.report("news-1").feedback
    assert sorted((kind, key, machine) for kind, key, machine, *_ in feedback) == [
        ("clicked", "ann", False),
        ("clicked", "ann", False),
        ("clicked", "bob@b.test", True),
        ("clicked", "bob@b.test", True),
        ("opened", "ann", False),
        ("opened", "ann", True),
        ("unsubscribed", "bob@b.test", False),
    ]
    assert (counts.clicks, counts.unique_clicks, counts.machine_clicks) == (2, 1, 2)
    assert (counts.opens, counts.machine_opens, counts.unsubscribes) == (1, 1, 1)
    report = [sys.executable, "-m", "ferrymail", "report", "news-1", "--spool"]
    shown = subprocess.run(
        [*report, str(tmp_path / "spool.db")], capture_output=True, text=True, check=True
    ).stdout
    assert re.search(r"\bclicks\s+2\b", shown) and re.search(r"machine clicks\s+2\b", shown)
    assert re.search(r"unsubscribes\s+1\b", shown), shown
    events = [
        orjson.loads(line) for line in (tmp_path / "web-events.jsonl").read_bytes().splitlines()
    ]
    assert sorted(e["type"] for e in events) == sorted(kind for kind, *_ in feedback)

    # The next campaign of the same list (its List-Id) does not go to the unsubscribed.
    config = ferrymail.Config(helo_name="web.test", event_log=None)
    async with ferrymail.Engine(tmp_path / "spool.db", config) as engine:
        result = await engine.submit(campaign("news-2", list_id="<news.example.com>"), [ANN, BOB])
        states = (await engine.report("news-2")).states
    assert (result.accepted, result.suppressed) == (1, 1)
    assert (states["queued"], states["suppressed"]) == (1, 1)
