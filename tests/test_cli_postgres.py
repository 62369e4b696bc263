"""The command line on a PostgreSQL spool: every command takes --spool postgresql://…, a
URL that cannot be used is one line and exit 2 without its password, and the events
carry the node's name."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_peer import PASSWORD, PgCluster
from smtp_peers import ScriptedServer
from test_cli import ferrymail, relay, write_files


@pytest.fixture(scope="module")
def mx() -> Iterator[ScriptedServer]:
    with ScriptedServer(rcpt_replies={"nobody@a.test": "550 5.1.1 no such user"}) as server:
        yield server


def test_send_status_report_suppress_flush_on_a_database(
    tmp_path: Path, pg_url: str, mx: ScriptedServer
) -> None:
    files = write_files(tmp_path)
    sent = ferrymail(
        "send", "welcome.toml", "people.csv", "--spool", pg_url, "--json", "--node", "edge-1",
        *relay(mx), cwd=files,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    states = json.loads(sent.stdout)["states"]
    assert states["delivered"] == 2 and states["bounced"] == 1, states
    # Each node keeps its own event log (here in the working directory), every event
    # naming the node.
    events = [json.loads(line) for line in (files / "events.jsonl").read_text().splitlines()]
    assert events and {e["node"] for e in events} == {"edge-1"}
    status = ferrymail("status", "--spool", pg_url, "--json", cwd=files)
    assert status.returncode == 0, status.stderr
    report = ferrymail("report", "welcome", "--spool", pg_url, "--json", cwd=files)
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["states"]["delivered"] == 2
    added = ferrymail("suppress", "add", "bo@b.test", "--spool", pg_url, cwd=files)
    assert added.returncode == 0, added.stderr
    listed = ferrymail("suppress", "list", "--spool", pg_url, cwd=files)
    assert "bo@b.test" in listed.stdout
    flushed = ferrymail("flush", "--spool", pg_url, cwd=files)
    assert flushed.returncode == 0, flushed.stderr
    assert PASSWORD not in sent.stderr + status.stderr + report.stderr + flushed.stderr


@pytest.mark.parametrize("command", [["status"], ["run", "--drain"], ["report", "c1"]])
def test_a_wrong_password_or_database_is_one_line_and_exit_2(
    tmp_path: Path, pg_cluster: PgCluster, command: list[str]
) -> None:
    wrong_password = pg_cluster.url("postgres", password="not-the-password")
    missing = pg_cluster.url("no_such_db")
    for url, reason in (
        (wrong_password, "password authentication failed"),
        (missing, 'database "no_such_db" does not exist'),
    ):
        done = ferrymail(*command, "--spool", url, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1, done.stderr
        assert reason in done.stderr
        assert "not-the-password" not in done.stderr and PASSWORD not in done.stderr
        assert ":***@" in done.stderr or "no_such_db" in done.stderr


def test_an_unreachable_server_is_one_line_and_exit_2(tmp_path: Path) -> None:
    # Port 1 on loopback: nobody listens, the connection is refused at once.
    url = "postgresql://postgres:secret-word@127.0.0.1:1/spool"
    done = ferrymail("status", "--spool", url, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert "127.0.0.1" in done.stderr and "secret-word" not in done.stderr
