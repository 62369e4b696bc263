"""The command line as a user runs it: `python -m ferrymail …` in a subprocess, against
real SMTP peers on loopback."""

from __future__ import annotations

import email.policy
import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from email.parser import BytesParser
from pathlib import Path

import pytest
from smtp_peers import ScriptedServer

CAMPAIGN = """\
id = "welcome"
sender = "bounces@news.example.com"
from = "Ferry Outfitters <news@example.com>"
subject = "Welcome aboard, {{ first_name }}"
html = "welcome.html"
text = "welcome.txt"
[headers]
Feedback-ID = "welcome:news:ferry"
[tracking]
base_url = "https://t.example.com/c/"
secret = "a-secret-of-16-bytes-or-more"
[unsubscribe]
url = "https://t.example.com/u/"
mailto = "unsubscribe@example.com"
"""
HTML = '<p>Hi {{ first_name }},</p>\n<p><a href="https://shop.example.com/">visit</a></p>\n'
TEXT = "Hi {{ first_name }}, visit https://shop.example.com/\n"
RECIPIENTS = "email,first_name,id\nann@a.test,Ann,1\nbo@b.test,Bo,2\nnobody@a.test,No,3\n"


def ferrymail(
    *args: str | Path, cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferrymail", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def mx() -> Iterator[ScriptedServer]:
    """One server for the module: every address takes mail but nobody@a.test (550)."""
    with ScriptedServer(rcpt_replies={"nobody@a.test": "550 5.1.1 no such user"}) as server:
        yield server


def write_files(directory: Path) -> Path:
    (directory / "welcome.toml").write_text(CAMPAIGN)
    (directory / "welcome.html").write_text(HTML)
    (directory / "welcome.txt").write_text(TEXT)
    (directory / "people.csv").write_text(RECIPIENTS)
    return directory


@pytest.fixture
def files(tmp_path: Path) -> Path:
    return write_files(tmp_path)


@pytest.fixture(scope="module")
def sent_once(tmp_path_factory: pytest.TempPathFactory, mx: ScriptedServer) -> Path:
    """A directory whose spool.db holds one finished run of people.csv."""
    directory = write_files(tmp_path_factory.mktemp("sent"))
    done = ferrymail(
        "send", "welcome.toml", "people.csv", "--spool", "spool.db", *relay(mx), cwd=directory
    )
    assert done.returncode == 0, done.stderr
    return directory


@pytest.fixture
def sent(sent_once: Path, tmp_path: Path) -> Path:
    """A copy of sent_once's directory for one test to change."""
    shutil.copytree(sent_once, tmp_path, dirs_exist_ok=True)
    return tmp_path


def relay(mx: ScriptedServer) -> list[str]:
    return ["--smarthost", f"{mx.host}:{mx.port}"]


def spool_digest(directory: Path) -> dict[str, str]:
    """The spool's files (database, WAL, events) by name and content hash."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.name.startswith(("spool.db", "events"))
    }


# --- send ---------------------------------------------------------------------------------


def test_send_delivers_and_prints_the_report(files: Path, mx: ScriptedServer) -> None:
    done = ferrymail(
        "send", "welcome.toml", "people.csv", "--spool", "spool.db", *relay(mx), cwd=files
    )
    assert done.returncode == 0, done.stderr
    assert "campaign welcome" in done.stdout
    lines = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines() if line}
    assert lines["delivered"] == ["2"] and lines["bounced"] == ["1"] and lines["total"] == ["3"]
    assert "550 5.1.1 no such user" in done.stdout
    got = {m.rcpt_tos[0]: m for m in mx.delivered}
    msg = BytesParser(policy=email.policy.default).parsebytes(got["ann@a.test"].content)
    assert msg["Subject"] == "Welcome aboard, Ann"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    events = [json.loads(line) for line in (files / "events.jsonl").read_text().splitlines()]
    assert {e["type"] for e in events} == {"queued", "delivered", "bounced"}


def test_send_json_from_json_lines(files: Path, mx: ScriptedServer) -> None:
    (files / "people.jsonl").write_text(
        '{"email": "cy@c.test", "first_name": "Cy", "id": 7}\n\n'
        '{"email": "nobody@a.test", "first_name": "No"}\n'
    )
    done = ferrymail(
        "send",
        "welcome.toml",
        "people.jsonl",
        "--spool",
        "spool.db",
        "--json",
        "--event-log",
        "log.jsonl",
        *relay(mx),
        cwd=files,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["campaign"] == "welcome"
    assert report["states"]["delivered"] == 1 and report["states"]["bounced"] == 1
    assert report["domains"]["c.test"] == {"delivered": 1}
    assert (files / "log.jsonl").exists() and not (files / "events.jsonl").exists()


BAD_INPUT = [
    (["missing.toml", "people.csv"], {}, "missing.toml: No such file or directory"),
    (["welcome.toml", "missing.csv"], {}, "missing.csv: No such file or directory"),
    (
        ["welcome.toml", "people.csv"],
        {"people.csv": "email,first_name\nann@a.test,Ann\n,Bo\n"},
        "people.csv line 3: no address in the `email` column",
    ),
    (
        ["welcome.toml", "people.csv"],
        {"people.csv": "email\nann@a.test\n"},
        "people.csv line 2: subject: undefined variable `first_name`",
    ),
    (
        ["welcome.toml", "people.csv"],
        {"welcome.html": "<p>\n<b>{{ first_name }</b>\n"},
        "welcome.html:2:18: unexpected `}`, expected end of variable block: <b>{{ first_name }</b>",
    ),
    (
        ["welcome.toml", "people.csv"],
        {
            "welcome.toml": CAMPAIGN + '[dkim]\ndomain = "example.com"\nselector = "s"\n'
            'key = "s.pem"\n'
        },
        "welcome.toml: DKIM key s.pem: No such file or directory",
    ),
    (
        ["welcome.toml", "people.csv"],
        {"welcome.toml": "colour = 1\n" + CAMPAIGN},
        "welcome.toml: unknown key `colour`",
    ),
    (
        ["welcome.toml", "people.jsonl"],
        {"people.jsonl": '{"email": "a@a.test", "first_name": "A"}\n{"first_name": "B"}\n'},
        "people.jsonl line 2: no address in `email`",
    ),
    (["welcome.toml", "people.csv", "--route", "a.test"], {}, "--route 'a.test': expected"),
]


@pytest.mark.parametrize(("args", "writes", "message"), BAD_INPUT)
def test_send_bad_input_is_one_line_exit_2_and_the_spool_intact(
    files: Path, mx: ScriptedServer, args: list[str], writes: dict[str, str], message: str
) -> None:
    first = ferrymail(
        "send", "welcome.toml", "people.csv", "--spool", "spool.db", *relay(mx), cwd=files
    )
    assert first.returncode == 0, first.stderr
    before, sent = spool_digest(files), len(mx.messages)
    for name, text in writes.items():
        (files / name).write_text(text)
    done = ferrymail("send", *args, "--spool", "spool.db", *relay(mx), cwd=files)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"ferrymail send: {message}"), done.stderr
    assert done.stdout == ""
    assert spool_digest(files) == before and len(mx.messages) == sent


def test_send_unreachable_dns_server(files: Path) -> None:
    done = ferrymail(
        "send",
        "welcome.toml",
        "people.csv",
        "--spool",
        "spool.db",
        "--dns-server",
        "127.0.0.1:9",
        cwd=files,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("ferrymail send: DNS server 127.0.0.1:9 "), done.stderr
    assert done.stderr.count("\n") == 1
    assert spool_digest(files) == {}


def test_send_help_shows_an_example() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ferrymail", "send", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "ferrymail send welcome.toml recipients.csv" in done.stdout


# --- demo ---------------------------------------------------------------------------------


def test_demo_prints_one_message_and_the_throughput() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ferrymail", "demo", "--recipients", "1500", "--threads", "1"],
        capture_output=True,
        check=True,
        timeout=120,
    )
    message, _, summary = done.stdout.rpartition(b"\nrendered ")
    assert summary.startswith(b"1,500 messages (0 failed)"), summary
    assert b"messages/s" in summary
    msg = BytesParser(policy=email.policy.default).parsebytes(message)
    assert msg["To"] == "user0@d0.example.net"
    assert msg.get_content_type() == "multipart/alternative"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_demo_help_shows_an_example() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ferrymail", "demo", "--help"], capture_output=True, check=True
    )
    assert b"ferrymail demo --recipients" in done.stdout
