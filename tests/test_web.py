"""The tracking server in process (httpx's ASGITransport): clicks, opens, unsubscribes."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import ferrymail
import httpx
import orjson
import pytest
from engine_support import on_uvloop
from ferrymail.errors import ConfigError
from ferrymail.events import EventBus
from ferrymail.spool import SqliteSpool
from ferrymail.web import TrackingApp, WebConfig, app, load
from ferrymail.web.pages import PIXEL
from web_support import (
    BROWSER,
    IPHONE,
    OLD_SECRET,
    SECRET,
    URLS,
    campaign,
    config,
    links,
    spool_with,
)

ANN = ferrymail.Recipient("ann@a.test", id="ann")
BOB = ferrymail.Recipient("bob@b.test", id=7)
NEWS = campaign()


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[SqliteSpool]:
    spool = spool_with(tmp_path / "spool.db", [NEWS], [ANN, BOB])
    yield spool
    spool.close()


def serve(
    spool: SqliteSpool, web: WebConfig | None = None, events: EventBus | None = None
) -> TrackingApp:
    return app(spool=spool, config=web or config(), events=events)


def client(tracker: TrackingApp, ip: str = "198.51.100.7") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=tracker, client=(ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url="https://t.example.com")


@on_uvloop
async def test_a_click_redirects_to_exactly_its_url_and_is_recorded_first_then_repeat(
    spool: SqliteSpool,
) -> None:
    tracker = serve(spool)
    ann = links(NEWS, ANN)
    async with client(tracker) as http:
        for path, url in zip(ann.clicks, URLS, strict=True):
            answer = await http.get(path, headers={"user-agent": BROWSER})
            assert answer.status_code == 302
            assert answer.headers["location"] == url
            assert "no-store" in answer.headers["cache-control"]
        again = await http.get(ann.clicks[0], headers={"user-agent": BROWSER})
        assert again.headers["location"] == URLS[0]
        # The base's query string after the token changes nothing.
        query = await http.get(ann.clicks[1] + "?src=mail", headers={"user-agent": BROWSER})
        assert query.headers["location"] == URLS[1]
    await tracker.flush()
    assert [(kind, key, machine, repeat, link) for kind, key, machine, repeat, link, _ in
            spool.feedback("news-1")] == [
        ("clicked", "ann", False, False, 0),
        ("clicked", "ann", False, False, 1),
        ("clicked", "ann", False, True, 0),
        ("clicked", "ann", False, True, 1),
    ]  # fmt: skip
    counts = spool.report("news-1").feedback
    assert (counts.clicks, counts.unique_clicks, counts.machine_clicks) == (4, 1, 0)
    assert spool.final_states("news-1") == {"ann": "queued", "7": "queued"}
    await tracker.aclose()


def tampered(token_path: str) -> str:
    prefix, token = token_path.rsplit("/", 1)
    middle = len(token) // 2
    flipped = "A" if token[middle] != "A" else "B"
    return f"{prefix}/{token[:middle]}{flipped}{token[middle + 1 :]}"


@on_uvloop
async def test_bad_tampered_and_foreign_tokens_get_a_plain_404(spool: SqliteSpool) -> None:
    tracker = serve(spool)
    ann = links(NEWS, ANN)
    foreign = links(campaign(secret="another-secret-0123456789"), ANN)
    bad = [
        tampered(ann.clicks[0]),
        ann.clicks[0][:-3],
        foreign.clicks[0],
        "/t/garbage<script>alert(1)</script>",
        "/t/",
        "/t/" + "A" * 5000,
        ann.clicks[0] + "/more",
        "/t/%00%ff",
        ann.unsubscribe.replace("/u/", "/t/"),  # an unsubscribe token is no click
        ann.clicks[0].replace("/t/", "/u/"),  # nor a click token an unsubscribe
        "/elsewhere",
    ]
    async with client(tracker) as http:
        for path in bad:
            answer = await http.get(path, headers={"user-agent": BROWSER})
            assert answer.status_code == 404, path
            assert "location" not in answer.headers
            assert answer.headers["content-type"] == "text/html; charset=utf-8"
            assert "not valid" in answer.text
            token = path.rsplit("/", 1)[-1]
            assert not token or token[:20] not in answer.text  # never echoed
            assert "<script>" not in answer.text and "Traceback" not in answer.text
        post = await http.post(ann.clicks[0])
        assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"
    await tracker.flush()
    assert spool.feedback("news-1") == []
    await tracker.aclose()


@on_uvloop
async def test_head_requests_and_link_scanners_are_machine_clicks(spool: SqliteSpool) -> None:
    tracker = serve(spool)
    bob = links(NEWS, BOB)
    scanners = [
        "Mozilla/5.0 (compatible; BingPreview/1.0b)",
        "Proofpoint URL Defense",
        "Mimecast Security Agent",
        "curl/8.5.0",
        "python-requests/2.32",
        "",
    ]
    async with client(tracker) as http:
        head = await http.head(bob.clicks[0], headers={"user-agent": BROWSER})
        assert head.status_code == 302 and head.headers["location"] == URLS[0]
        for agent in scanners:
            answer = await http.get(bob.clicks[0], headers={"user-agent": agent})
            assert answer.headers["location"] == URLS[0]  # a scanner is redirected too
        person = await http.get(bob.clicks[0], headers={"user-agent": BROWSER})
        assert person.status_code == 302
    await tracker.flush()
    rows = spool.feedback("news-1")
    assert [machine for _, _, machine, *_ in rows] == [True] * 7 + [False]
    assert rows[-1][3] is False  # the person's click is the first, after every scanner
    counts = spool.report("news-1").feedback
    assert (counts.clicks, counts.unique_clicks, counts.machine_clicks) == (1, 1, 7)
    await tracker.aclose()


@on_uvloop
async def test_the_open_pixel_is_an_uncached_gif_and_proxies_are_machine_opens(
    spool: SqliteSpool,
) -> None:
    ann = links(NEWS, ANN)
    tracker = serve(spool)
    cases = [
        ("198.51.100.7", IPHONE, False),  # a person's Apple Mail without MPP
        ("17.58.100.1", "Mozilla/5.0", True),  # Mail Privacy Protection's proxy
        ("198.51.100.7", "Mozilla/5.0", False),  # the bare agent elsewhere: not Apple's
        ("198.51.100.7", "Mozilla/5.0 (Windows NT 5.1) (via ggpht.com GoogleImageProxy)", True),
        ("198.51.100.7", "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy", True),
    ]
    for ip, agent, _ in cases:
        async with client(tracker, ip) as http:
            answer = await http.get(ann.open, headers={"user-agent": agent})
            assert answer.status_code == 200
            assert answer.content == PIXEL and PIXEL.startswith(b"GIF89a\x01\x00\x01\x00")
            assert answer.headers["content-type"] == "image/gif"
            assert "no-store" in answer.headers["cache-control"]
            assert answer.headers["pragma"] == "no-cache" and answer.headers["expires"] == "0"
    await tracker.aclose()
    rows = spool.feedback("news-1")
    assert [(kind, machine) for kind, _, machine, *_ in rows] == [
        ("opened", machine) for *_, machine in cases
    ]
    counts = spool.report("news-1").feedback
    assert (counts.opens, counts.unique_opens, counts.machine_opens) == (2, 1, 3)


@on_uvloop
async def test_a_get_shows_the_button_and_unsubscribes_nobody(spool: SqliteSpool) -> None:
    tracker = serve(spool)
    ann = links(NEWS, ANN)
    async with client(tracker) as http:
        page = await http.get(ann.unsubscribe, headers={"user-agent": BROWSER})
        head = await http.head(ann.unsubscribe)
    assert page.status_code == 200 and head.status_code == 200
    assert '<form method="post" action="">' in page.text
    assert 'name="List-Unsubscribe" value="One-Click"' in page.text
    assert "ann@a.test" not in page.text
    assert spool.feedback("news-1") == []
    assert spool.suppressed_among(["ann@a.test"], "news-1") == set()
    await tracker.aclose()


@on_uvloop
async def test_one_click_unsubscribe_suppresses_the_list_once(spool: SqliteSpool) -> None:
    ann, bob = links(NEWS, ANN), links(NEWS, BOB)
    log: list[object] = []
    bus = EventBus(None)
    tracker = serve(spool, events=bus)

    async def listen() -> None:
        async for event in bus.subscribe():
            log.append(event)

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0)
    form = {"List-Unsubscribe": "One-Click"}
    async with client(tracker) as http:
        first = await http.post(ann.unsubscribe, data=form)
        second = await http.post(ann.unsubscribe, data=form)
        multipart = await http.post(
            bob.unsubscribe, files={"List-Unsubscribe": (None, "One-Click")}
        )
        assert (first.status_code, second.status_code, multipart.status_code) == (200, 200, 200)
        assert "You are unsubscribed" in first.text
        for body in ({"List-Unsubscribe": "Yes"}, {"other": "One-Click"}):
            assert (await http.post(ann.unsubscribe, data=body)).status_code == 400
        too_big = await http.post(
            ann.unsubscribe,
            content=b"List-Unsubscribe=One-Click&" * 1000,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert too_big.status_code == 413
        put = await http.put(ann.unsubscribe, data=form)
        assert put.status_code == 405
    await tracker.aclose()
    bus.close()
    await listener
    assert [(row[0], row[1]) for row in spool.feedback("news-1")] == [
        ("unsubscribed", "ann"), ("unsubscribed", "7")
    ]  # fmt: skip
    assert spool.report("news-1").feedback.unsubscribes == 2
    assert [(e.type, e.recipient, e.address) for e in log] == [  # type: ignore[attr-defined]
        ("unsubscribed", "ann", "ann@a.test"), ("unsubscribed", "7", "bob@b.test")
    ]  # fmt: skip
    # A new submit to the campaign's list skips them; another list's campaign does not.
    async with ferrymail.Engine(spool.path, ferrymail.Config(helo_name="web.test")) as engine:
        same = await engine.submit(campaign("news-2", list_id="News <news-1>"), [ANN, BOB])
        other = await engine.submit(campaign("offers"), [ANN, BOB])
    assert (same.suppressed, same.accepted) == (2, 0)
    assert (other.suppressed, other.accepted) == (0, 2)


@on_uvloop
async def test_a_global_scope_suppresses_for_every_campaign(spool: SqliteSpool) -> None:
    tracker = serve(spool, config(suppression_scope="global"))
    async with client(tracker) as http:
        answer = await http.post(
            links(NEWS, ANN).unsubscribe, data={"List-Unsubscribe": "One-Click"}
        )
    await tracker.aclose()
    assert answer.status_code == 200
    assert spool.is_suppressed("ann@a.test")
    async with ferrymail.Engine(spool.path, ferrymail.Config(helo_name="web.test")) as engine:
        other = await engine.submit(campaign("offers"), [ANN, BOB])
    assert (other.suppressed, other.accepted) == (1, 1)


@on_uvloop
async def test_old_secrets_still_open_their_tokens_after_a_rotation(spool: SqliteSpool) -> None:
    old = links(campaign(secret=OLD_SECRET), ANN)
    rotated = serve(spool, config(tracking_secrets=[SECRET, OLD_SECRET]))
    async with client(rotated) as http:
        assert (await http.get(old.clicks[0])).headers["location"] == URLS[0]
    await rotated.aclose()
    dropped = serve(spool)
    async with client(dropped) as http:
        assert (await http.get(old.clicks[0])).status_code == 404
    await dropped.aclose()


@on_uvloop
async def test_clicks_and_opens_go_to_the_event_log(spool: SqliteSpool, tmp_path: Path) -> None:
    bus = EventBus(tmp_path / "web-events.jsonl")
    tracker = serve(spool, events=bus)
    ann = links(NEWS, ANN)
    async with client(tracker) as http:
        await http.get(ann.clicks[1], headers={"user-agent": BROWSER})
        await http.get(ann.open, headers={"user-agent": "GoogleImageProxy"})
    await tracker.aclose()
    bus.close()
    lines = [
        orjson.loads(line) for line in (tmp_path / "web-events.jsonl").read_bytes().splitlines()
    ]
    assert [(e["type"], e["recipient"], e["machine"], e["first"]) for e in lines] == [
        ("clicked", "ann", False, True), ("opened", "ann", True, True)
    ]  # fmt: skip
    assert lines[0]["link"] == 1 and lines[0]["url"] == URLS[1]
    assert lines[0]["address"] == "ann@a.test" and lines[0]["user_agent"] == BROWSER


def test_web_config_errors_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tracking_secrets\[0\]: a secret is 16 bytes"):
        config(tracking_secrets=["short"])
    with pytest.raises(ConfigError, match="tracking_secrets: give at least one"):
        config(tracking_secrets=[])
    with pytest.raises(ConfigError, match="unsubscribe_path: a path such as"):
        config(unsubscribe_path="/u/")
    with pytest.raises(ConfigError, match="must differ from tracking_path"):
        config(unsubscribe_path="/t")
    toml = tmp_path / "web.toml"
    toml.write_text(f'tracking_secrets = ["{SECRET}"]\nsuppression_scop = "list"\n')
    with pytest.raises(
        ConfigError, match=r"web\.toml: Object contains unknown field `suppression_scop`"
    ):
        load(toml)
    toml.write_text(f'tracking_secrets = ["{SECRET}"]\nsuppression_scope = "everyone"\n')
    with pytest.raises(ConfigError, match=r"suppression_scope"):
        load(toml)
    toml.write_text(f'tracking_secrets = ["{SECRET}"]\ntracking_path = "/c"\n')
    assert load(toml).tracking_path == "/c"


@on_uvloop
async def test_clicks_wait_out_a_spool_locked_by_another_writer(spool: SqliteSpool) -> None:
    spool._db.execute("PRAGMA busy_timeout = 20")  # the engine's lock outlasts the timeout
    tracker = serve(spool)
    other = sqlite3.connect(spool.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process writing
    try:
        async with client(tracker) as http:
            answer = await http.get(links(NEWS, ANN).clicks[0], headers={"user-agent": BROWSER})
        assert answer.status_code == 302  # answered while the spool is locked
        while tracker._writer.retries == 0:
            await asyncio.sleep(0.01)
    finally:
        other.execute("ROLLBACK")
        other.close()
    await tracker.aclose()
    assert [row[:2] for row in spool.feedback("news-1")] == [("clicked", "ann")]
    assert tracker._writer.lost == 0


@on_uvloop
async def test_past_the_queue_limit_answers_wait_for_room_instead_of_piling_up(
    spool: SqliteSpool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a real server (uvicorn: an answer leaves before the handler returns), a click
    past the queue's limit is answered only when there is room: the client waits, and
    its next requests with it, instead of requests piling up in memory."""
    import socket

    import uvicorn
    from ferrymail.web import writer

    monkeypatch.setattr(writer, "MAX_PENDING", 1)  # a queue of one signal
    spool._db.execute("PRAGMA busy_timeout = 20")
    tracker = serve(spool)
    listener = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(tracker, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    other = sqlite3.connect(spool.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the spool cannot take a commit for now
    ann, bob = links(NEWS, ANN), links(NEWS, BOB)
    browser = {"user-agent": BROWSER}
    base = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            # The first is taken by the commit that waits; the second fills the queue.
            for path in (ann.clicks[0], bob.clicks[0]):
                assert (await http.get(path, headers=browser)).status_code == 302
            # The third waits for room: unanswered while the spool stays locked.
            third = asyncio.ensure_future(http.get(ann.clicks[1], headers=browser))
            await asyncio.sleep(0.3)
            assert not third.done()
            other.execute("ROLLBACK")
            assert (await asyncio.wait_for(third, 10)).status_code == 302
    finally:
        if other.in_transaction:
            other.execute("ROLLBACK")
        other.close()
        server.should_exit = True
        await serving
    await tracker.aclose()
    assert len(spool.feedback("news-1")) == 3
    assert tracker._writer.lost == 0
