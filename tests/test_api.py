"""The /v1 service API through a real `ferrymail serve`: keys, campaigns, streamed
recipients, cancel, suppressions, flush, status, limits and errors."""

from __future__ import annotations

import sqlite3
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from api_support import CAMPAIGN, Served, create_key, serve
from ferrymail.cli import main as cli
from ferrymail.spool import SqliteSpool
from smtp_peers import TlsFiles

UNAUTHORIZED = {"error": "unauthorized", "detail": None}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with serve(tmp_path) as s:
        yield s


def lines(n: int, domain: str = "a.test", per_chunk: int = 500) -> Iterator[bytes]:
    """n recipients as JSON lines, handed to httpx a chunk at a time (a chunked body)."""
    for start in range(0, n, per_chunk):
        yield b"".join(
            orjson.dumps({"email": f"user{i}@{domain}", "id": f"r{i}", "name": f"User {i}"}) + b"\n"
            for i in range(start, min(n, start + per_chunk))
        )


def test_keys_are_created_listed_and_revoked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spool = tmp_path / "spool.db"
    SqliteSpool(spool).close()
    token = create_key(spool, "app")
    assert token.startswith("fm_") and len(token) > 40
    create_key(spool, "dashboard", "--read-only")
    assert cli(["keys", "create", "app", "--spool", str(spool)]) == 2
    assert "there is a key named 'app' already" in capsys.readouterr().err
    assert cli(["keys", "list", "--spool", str(spool)]) == 0
    listed = capsys.readouterr().out
    assert "app" in listed and "read-write" in listed and "dashboard" in listed
    assert "read-only" in listed and token not in listed
    # The spool holds the token's SHA-256, never the token.
    with sqlite3.connect(spool) as db:
        stored = db.execute("SELECT hash FROM api_key WHERE name = 'app'").fetchone()[0]
    import hashlib

    assert stored == hashlib.sha256(token.encode()).digest()
    assert cli(["keys", "revoke", "app", "--spool", str(spool)]) == 0
    assert cli(["keys", "revoke", "app", "--spool", str(spool)]) == 1


def test_ten_thousand_recipients_streamed_then_resubmitted(served: Served) -> None:
    with httpx.Client(base_url=served.url, headers=served.auth(), timeout=60) as client:
        put = client.put("/v1/campaigns/news-1", json=CAMPAIGN)
        assert put.status_code == 200, put.text
        assert put.json() == {"id": "news-1"}

        def body() -> Iterator[bytes]:
            yield from lines(10_000)
            yield b'{"email": "not an address", "id": "bad"}\n'
            yield b"{not json\n"
            yield b'{"id": "x"}\n'

        answer = client.post("/v1/campaigns/news-1/recipients", content=body())
        assert answer.status_code == 200, answer.text
        counts = answer.json()
        assert counts["accepted"] == 10_000
        assert counts["duplicates"] == 0 and counts["suppressed"] == 0
        assert counts["rejected"] == 3  # the bad address, and two lines refused
        assert [r["line"] for r in counts["reasons"]] == [10_002, 10_003]
        assert counts["reasons"][0]["reason"].startswith("not valid JSON")
        assert counts["reasons"][1]["reason"] == "no address in `email`"

        # Durable when answered: the spool has them (read by another connection).
        with SqliteSpool(served.spool, read_only=True) as spool:
            assert spool.report("news-1").states["queued"] == 10_000

        again = client.post("/v1/campaigns/news-1/recipients", content=lines(10_000))
        assert again.json() == {
            "accepted": 0,
            "duplicates": 10_000,
            "rejected": 0,
            "suppressed": 0,
            "reasons": [],
        }
        report = client.get("/v1/campaigns/news-1").json()
        assert report["campaign"] == "news-1" and report["states"]["queued"] == 10_000


def test_a_template_error_answers_422_with_part_line_and_column(served: Served) -> None:
    broken = {**CAMPAIGN, "text": "Hello\n{{ name "}
    answer = httpx.put(f"{served.url}/v1/campaigns/c1", json=broken, headers=served.auth())
    assert answer.status_code == 422
    body = answer.json()
    assert body["error"] == "template"
    assert (body["detail"]["part"], body["detail"]["line"], body["detail"]["column"]) == (
        "text",
        2,
        4,
    )
    # An unknown key is named; a missing one too.
    odd = httpx.put(
        f"{served.url}/v1/campaigns/c1", json={**CAMPAIGN, "colour": 1}, headers=served.auth()
    )
    assert odd.status_code == 422 and "colour" in odd.json()["detail"]
    missing = httpx.put(
        f"{served.url}/v1/campaigns/c1", json={"sender": "a@b.test"}, headers=served.auth()
    )
    assert missing.status_code == 422 and "from" in missing.json()["detail"]
    assert (
        httpx.put(f"{served.url}/v1/campaigns/c1", content=b"{", headers=served.auth()).json()[
            "error"
        ]
        == "bad-json"
    )


def test_wrong_or_missing_keys_get_401_and_read_only_keys_403(served: Served) -> None:
    url = f"{served.url}/v1/status"
    for headers in ({}, {"authorization": "Bearer fm_wrong"}, {"authorization": "Basic eA=="}):
        answer = httpx.get(url, headers=headers)
        assert answer.status_code == 401
        assert answer.json() == UNAUTHORIZED
    assert httpx.get(url, headers=served.auth(served.read_only)).status_code == 200
    put = httpx.put(
        f"{served.url}/v1/campaigns/c1", json=CAMPAIGN, headers=served.auth(served.read_only)
    )
    assert put.status_code == 403 and put.json()["error"] == "read-only"
    # A revoked key is refused from then on.
    assert cli(["keys", "revoke", "app", "--spool", str(served.spool)]) == 0
    assert httpx.get(url, headers=served.auth()).json() == UNAUTHORIZED


def test_bodies_over_their_limit_get_413(tmp_path: Path) -> None:
    with serve(tmp_path, "--recipients-limit", "100000") as served:
        headers = served.auth()
        big = {**CAMPAIGN, "text": "x" * (5 * 1024 * 1024)}
        answer = httpx.put(f"{served.url}/v1/campaigns/c1", json=big, headers=headers)
        assert answer.status_code == 413 and answer.json()["error"] == "too-large"
        assert (
            httpx.put(f"{served.url}/v1/campaigns/c1", json=CAMPAIGN, headers=headers).status_code
            == 200
        )
        answer = httpx.post(
            f"{served.url}/v1/campaigns/c1/recipients", content=lines(5000), headers=headers
        )
        assert answer.status_code == 413, answer.text
        assert "100,000 bytes" in answer.json()["detail"]


def test_suppressions_flush_status_and_unknown_things(served: Served) -> None:
    with httpx.Client(base_url=served.url, headers=served.auth()) as client:
        path = "/v1/suppressions/ann@a.test"
        assert client.get(path).json() == {
            "address": "ann@a.test", "suppressed": False, "reason": None, "added_at": None
        }  # fmt: skip
        assert client.put(path, json={"reason": "asked"}).json()["suppressed"] is True
        assert client.get(path).json()["suppressed"] is True
        assert client.delete(path).json()["suppressed"] is False
        assert client.delete(path).status_code == 404
        assert client.post("/v1/flush").json() == {"flushed": 0}
        status = client.get("/v1/status").json()
        assert status["states"]["cancelled"] == 0
        assert client.get("/v1/campaigns/nope").status_code == 404
        assert client.post("/v1/campaigns/nope/recipients", content=b"").status_code == 404
        assert client.get("/v1/nothing").json()["error"] == "not-found"
        assert client.delete("/v1/campaigns/x").status_code == 405


def test_a_json_array_is_streamed_element_by_element(served: Served) -> None:
    with httpx.Client(base_url=served.url, headers=served.auth(), timeout=60) as client:
        assert client.put("/v1/campaigns/arr", json=CAMPAIGN).status_code == 200

        def body() -> Iterator[bytes]:
            # Cut anywhere, also inside strings holding brackets, commas and escapes.
            text = orjson.dumps(
                [{"email": f"user{i}@b.test", "note": 'a,]"}\\[{'} for i in range(3000)]
                + [{"id": "no-address"}, 5]
            )
            for start in range(0, len(text), 997):
                yield text[start : start + 997]

        counts = client.post("/v1/campaigns/arr/recipients", content=body()).json()
        assert counts["accepted"] == 3000 and counts["rejected"] == 2
        assert counts["reasons"] == [
            {"line": 3001, "reason": "no address in `email`"},
            {"line": 3002, "reason": "expected a JSON object"},
        ]
        unended = client.post("/v1/campaigns/arr/recipients", content=b'[{"email": "z@b.test"}')
        assert unended.status_code == 400
        assert unended.json() == {"error": "bad-json", "detail": "the JSON array does not end"}


async def _failing_answer(tmp_path: Path) -> tuple[httpx.Response, httpx.Response]:
    from ferrymail import Engine
    from ferrymail.service import Api
    from ferrymail.service.keys import digest
    from ferrymail.spooler import Spooler

    spool = SqliteSpool(tmp_path / "spool.db")
    spool.add_api_key("app", digest("fm_token"), False)
    # An engine that was never opened: every call the handlers make to it raises.
    api = Api(Engine(tmp_path / "spool.db"), Spooler(spool))
    transport = httpx.ASGITransport(app=api)
    headers = {"authorization": "Bearer fm_token"}
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        cancel = await client.post("/v1/campaigns/c1/cancel", headers=headers)
        flush = await client.post("/v1/flush", headers=headers)
    spool.close()
    return cancel, flush


def test_a_handler_that_raises_answers_500_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio

    cancel, flush = asyncio.run(_failing_answer(tmp_path))
    for answer in (cancel, flush):
        assert answer.status_code == 500
        assert answer.json() == {"error": "internal", "detail": "the server failed; see its log"}
        assert "Traceback" not in answer.text and "EngineClosedError" not in answer.text
    # The log has it, for the operator.
    assert (
        "EngineClosedError" in caplog.text and "POST /v1/campaigns/c1/cancel failed" in caplog.text
    )


def test_tls_is_uvicorns(tmp_path: Path, mx_tls: TlsFiles) -> None:
    options = ("--ssl-certfile", str(mx_tls.chain_pem), "--ssl-keyfile", str(mx_tls.key_pem))
    with serve(tmp_path, *options) as served:
        url = served.url.replace("http://", "https://") + "/v1/status"
        answer = httpx.get(
            url, headers=served.auth(), verify=ssl.create_default_context(cafile=mx_tls.ca_pem)
        )
        assert answer.status_code == 200 and answer.json()["states"]["queued"] == 0
        with pytest.raises(httpx.HTTPError):  # not plain HTTP
            httpx.get(served.url + "/v1/status", headers=served.auth())


def test_after_a_restart_recipients_need_no_put_again(tmp_path: Path) -> None:
    full = {
        **CAMPAIGN,
        "html": "<p>Hi {{ name }} <a href='https://shop.example.com/'>shop</a></p>",
        "tracking": {"base_url": "https://t.example.com/t", "secret": "s" * 20},
        "unsubscribe": {"url": "https://t.example.com/u"},
        "verp": True,
        "headers": {"List-Id": "News <news.example.com>"},
    }
    with serve(tmp_path) as served:
        assert httpx.put(
            f"{served.url}/v1/campaigns/c1", json=full, headers=served.auth()
        ).is_success
        first = httpx.post(
            f"{served.url}/v1/campaigns/c1/recipients", content=lines(10), headers=served.auth()
        )
        assert first.json()["accepted"] == 10
    with serve(tmp_path) as served:  # the same spool and keys, a new process
        again = httpx.post(
            f"{served.url}/v1/campaigns/c1/recipients", content=lines(20), headers=served.auth()
        )
        assert again.status_code == 200, again.text
        assert (again.json()["accepted"], again.json()["duplicates"]) == (10, 10)


def test_dkim_keys_by_name_from_the_servers_key_store(tmp_path: Path) -> None:
    import ferrymail
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from ferrymail.service.stored import from_spec

    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "news.pem").write_bytes(pem)
    store = tmp_path / "dkim.toml"
    store.write_text('[news]\ndomain = "sender.test"\nselector = "s2026"\nkey = "news.pem"\n')
    with serve(tmp_path, "--dkim-keys", str(store)) as served:
        url = f"{served.url}/v1/campaigns/signed"
        unknown = httpx.put(url, json={**CAMPAIGN, "dkim": ["nope"]}, headers=served.auth())
        assert unknown.status_code == 422 and "'nope'" in unknown.json()["detail"]
        put = httpx.put(url, json={**CAMPAIGN, "dkim": ["news"]}, headers=served.auth())
        assert put.status_code == 200, put.text
    with serve(tmp_path, "--dkim-keys", str(store)) as served:  # after a restart
        more = httpx.post(
            f"{served.url}/v1/campaigns/signed/recipients", content=lines(2), headers=served.auth()
        )
        assert more.json()["accepted"] == 2
    with SqliteSpool(served.spool, read_only=True) as spool:
        stored = spool.campaign_spec("signed")
    assert stored is not None
    campaign = from_spec(stored)
    assert campaign is not None
    (message,) = ferrymail.render(campaign, [ferrymail.Recipient("ann@a.test", {"name": "A"})])
    assert isinstance(message, ferrymail.RenderedMessage)
    header = message.data.split(b"\r\n\r\n")[0].replace(b"\r\n ", b" ")
    assert (
        b"DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed; d=sender.test; s=s2026;"
        in header
    )
