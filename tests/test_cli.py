"""The command line as a user runs it: `python -m ferrymail …` in a subprocess, against
real SMTP peers on loopback."""

from __future__ import annotations

import email.policy
import hashlib
import importlib.metadata
import json
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from email.parser import BytesParser
from pathlib import Path

import ferrymail as ferrymail_package
import pytest
import uvloop
from ferrymail import Campaign, Config, Engine, Recipient
from ferrymail.demo_sink import DemoSink
from ferrymail.spool import SqliteSpool
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
    # Not a terminal: only the final progress line, on stderr.
    assert "submitted 3/3  delivered 2  deferred 0  bounced 1" in done.stderr


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
        {"people.csv": "email,id\nann@a.test,1\n"},
        "people.csv: no `first_name` column, which the subject uses "
        "(the header row has: email, id)",
    ),
    (
        ["welcome.toml", "people.jsonl"],
        {"people.jsonl": '{"email": "a@a.test", "first_name": "A"}\n{"email": "b@a.test"}\n'},
        "people.jsonl line 2: subject: undefined variable `first_name`",
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
        {
            "welcome.toml": CAMPAIGN + '[dkim]\ndomain = "example.com"\nselector = "s"\n'
            'key = "s.pem"\n',
            "s.pem": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 me@laptop\n",  # a public SSH key
        },
        "welcome.toml: DKIM key s.pem (example.com/s): private_key is not a readable PEM",
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
    # An error that every recipient checked has fails the campaign: refused, whatever it is.
    (
        ["welcome.toml", "people.csv"],
        {"welcome.txt": "Hi {{ first_name + 1 }}\n"},
        "people.csv line 2: text: invalid operation line 1: tried to use + operator on "
        "unsupported types string and number (the first 3 recipients checked all fail: "
        "nothing was queued)",
    ),
    (
        ["welcome.toml", "people.csv"],
        {"people.csv": "email,first_name,email\nann@a.test,Ann,eve@evil.test\n"},
        "people.csv line 1: the header row has the column `email` twice",
    ),
    (
        ["welcome.toml", "people.csv"],
        {"people.csv": "email,first_name,id\nann@a.test,Ann,1\nbo@b.test,Bo\n"},
        "people.csv line 3: fewer fields (2) than the header row has (3)",
    ),
    (
        ["welcome.toml", "people.csv"],
        {"people.csv": "email,first_name\nann@a.test,Ann,1\n"},
        "people.csv line 2: more fields (3) than the header row has (2)",
    ),
    (
        ["welcome.toml", "people.jsonl"],
        {
            "people.jsonl": '{"email": "a@a.test", "first_name": "A"}\n'
            '{"email": "b@a.test", "first_name": "B", "x": ' + "[" * 5000 + "]" * 5000 + "}\n"
        },
        "people.jsonl line 2: nested more than 32 deep",
    ),
    (
        ["welcome.toml", "people.jsonl"],
        {
            "people.jsonl": '{"email": "b@a.test", "first_name": "B", "x": '
            + "[" * 40
            + "]" * 40
            + "}\n"
        },
        "people.jsonl line 1: nested more than 32 deep",
    ),
    (
        ["welcome.toml", "people.jsonl"],
        {"people.jsonl": '{"email": "b@a.test", "first_name": "B", "n": 18446744073709551616}\n'},
        "people.jsonl line 1: the number 18446744073709551616 is too large (at most 64 bits)",
    ),
    (
        ["welcome.toml", "people.jsonl"],
        {"people.jsonl": '{"email": "b@a.test", "first_name": "B", "n": NaN}\n'},
        "people.jsonl line 1: NaN is not a JSON number",
    ),
    (
        ["welcome.toml", "people.jsonl"],
        {"people.jsonl": '{"email": "b@a.test", "first_name": "\\ud800"}\n'},
        "people.jsonl line 1: a text has a lone surrogate (\\ud800), which is not a character",
    ),
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


def test_send_refuses_an_unknown_filter_before_queueing(files: Path, mx: ScriptedServer) -> None:
    # Every recipient would fail: whether the template compiler or the pre-send check
    # finds it, nothing is queued and the user gets one line naming the filter.
    (files / "welcome.html").write_text("<p>Hi {{ first_name|shout }}</p>\n")
    done = ferrymail(
        "send", "welcome.toml", "people.csv", "--spool", "spool.db", *relay(mx), cwd=files
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("ferrymail send: ") and "shout" in done.stderr
    assert spool_digest(files) == {}


def test_send_reads_a_csv_with_a_byte_order_mark(files: Path, mx: ScriptedServer) -> None:
    # Excel's "CSV UTF-8" starts with a byte-order mark.
    (files / "people.csv").write_bytes(b"\xef\xbb\xbf" + RECIPIENTS.encode())
    done = ferrymail(
        "send", "welcome.toml", "people.csv", "--spool", "spool.db", "--json", *relay(mx),
        cwd=files,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["states"]["delivered"] == 2


@pytest.mark.parametrize("recipients", ["-", "/dev/stdin"])
def test_send_reads_recipients_from_a_pipe(
    files: Path, mx: ScriptedServer, recipients: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ferrymail", "send", "welcome.toml", recipients,
         "--spool", "spool.db", "--json", *relay(mx)],
        input=RECIPIENTS, capture_output=True, text=True, cwd=files, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["states"]["delivered"] == 2 and report["states"]["bounced"] == 1
    # A bad row from a pipe is named as the input it came from, before anything is queued.
    bad = subprocess.run(
        [sys.executable, "-m", "ferrymail", "send", "welcome.toml", "-", "--spool", "other.db",
         *relay(mx)],
        input="email,first_name\nann@a.test\n", capture_output=True, text=True, cwd=files,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr == (
        "ferrymail send: <stdin> line 2: fewer fields (1) than the header row has (2)\n"
    )
    assert not (files / "other.db").exists()


def test_one_mailbox_written_two_ways_is_one_recipient(files: Path, mx: ScriptedServer) -> None:
    before = len(mx.delivered)
    (files / "people.csv").write_text(
        "email,first_name\nann@a.test,Ann\nann@A.TEST,Ann\nAnn@a.test,Ann\n"
    )
    done = ferrymail(
        "send", "welcome.toml", "people.csv", "--spool", "spool.db", "--json", *relay(mx),
        cwd=files,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # The domain's case does not make another mailbox; the local part's may (RFC 5321).
    assert json.loads(done.stdout)["states"]["delivered"] == 2
    assert sorted(m.rcpt_tos[0] for m in mx.delivered[before:]) == ["Ann@a.test", "ann@a.test"]
    assert "1 recipients were in campaign 'welcome' already" in done.stderr


def test_send_again_after_fixing_a_template_replaces_the_campaign(
    files: Path, mx: ScriptedServer
) -> None:
    # What a send without the pre-send check left: a template error failed everybody.
    broken = Campaign(
        id="welcome", sender="bounces@news.example.com", from_="news@example.com",
        subject="Hi {{ first_name + 1 }}", text="Hi",
    )  # fmt: skip
    config = Config(helo_name="cli.example.com", smarthost=f"{mx.host}:{mx.port}")

    async def send_broken() -> None:
        async with Engine(files / "spool.db", config) as engine:
            await engine.submit(broken, [Recipient("ann@a.test", {"first_name": "Ann"}, id=1)])
            await engine.drain()
            assert (await engine.report("welcome")).states["failed"] == 1

    uvloop.run(send_broken())
    spool = ["--spool", "spool.db", *relay(mx)]
    done = ferrymail("send", "welcome.toml", "people.csv", *spool, "--json", cwd=files)
    assert done.returncode == 0, done.stderr
    assert "campaign 'welcome' was in the spool with another spec, but none of its " in (
        done.stderr
    )
    assert "submitted 3/3  delivered 2  deferred 0  bounced 1  failed 0" in done.stderr
    states = json.loads(done.stdout)["states"]
    assert (states["delivered"], states["bounced"], states["failed"]) == (2, 1, 0)
    # Now mail went out with it: another spec is refused, saying what to do.
    (files / "welcome.txt").write_text("Hello {{ first_name }}\n")
    again = ferrymail("send", "welcome.toml", "people.csv", *spool, cwd=files)
    assert again.returncode == 2
    assert again.stderr.count("ferrymail send: ") == 1
    assert again.stderr.endswith(
        "ferrymail send: campaign 'welcome' is already in the spool with a different spec, "
        "and 3 of its recipients were attempted with it (delivered, bounced, deferred or in "
        "flight): give the campaign a new id to send this spec\n"
    )


def test_send_warns_of_a_helo_name_receivers_refuse_and_of_no_dkim(
    files: Path, mx: ScriptedServer
) -> None:
    bare = ferrymail(
        "send", "welcome.toml", "people.csv", "--spool", "spool.db", "--helo", "vm", *relay(mx),
        cwd=files,
    )  # fmt: skip
    assert bare.returncode == 0, bare.stderr
    warnings = [line for line in bare.stderr.splitlines() if "warning" in line]
    assert warnings == [
        "ferrymail send: warning: the HELO name 'vm' is not a fully qualified domain name; "
        "strict receivers refuse it (504 5.5.2): give this host's public name, e.g. "
        "--helo mail.example.com",
        "ferrymail send: warning: campaign 'welcome' has no DKIM key: Gmail and Yahoo "
        "require bulk mail to be signed; add a [dkim] table (domain, selector, key)",
    ]
    named = ferrymail(
        "send", "welcome.toml", "people.csv", "--spool", "spool.db", "--helo",
        "mail.example.com", *relay(mx), cwd=files,
    )  # fmt: skip
    assert "HELO" not in named.stderr
    run = ferrymail("run", "--drain", "--spool", "spool.db", "--helo", "localhost",
                    *relay(mx), cwd=files)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "warning: the HELO name 'localhost' is not a fully qualified" in run.stderr


def test_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ferrymail", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0
    assert done.stdout == f"ferrymail {importlib.metadata.version('ferrymail')}\n"
    assert ferrymail_package.__version__ == importlib.metadata.version("ferrymail")


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


def test_a_spool_or_event_log_that_cannot_be_used_is_one_line(files: Path) -> None:
    (files / "notes.db").write_text("my notes, not a spool\n")
    nowhere = ["--smarthost", "127.0.0.1:2"]
    for command in (
        ["send", "welcome.toml", "people.csv", *nowhere],
        ["run", *nowhere],
        ["status"],
    ):
        done = ferrymail(*command, "--spool", "notes.db", cwd=files)
        assert done.returncode == 2, done.stderr
        assert done.stderr == (
            f"ferrymail {command[0]}: notes.db is not a usable ferrymail spool: "
            "file is not a database\n"
        )
    assert (files / "notes.db").read_text() == "my notes, not a spool\n"
    done = ferrymail(
        "send", "welcome.toml", "people.csv", "--spool", "spool.db", "--smarthost",
        "127.0.0.1:2", "--event-log", "no/such/dir/events.jsonl", cwd=files,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr == "ferrymail send: no/such/dir/events.jsonl: No such file or directory\n"


def test_send_help_shows_an_example() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ferrymail", "send", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "ferrymail send welcome.toml recipients.csv" in done.stdout


# --- demo ---------------------------------------------------------------------------------


def test_demo_render_only_prints_one_message_and_the_throughput() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ferrymail",
            "demo",
            "--render-only",
            "--recipients",
            "1500",
            "--threads",
            "1",
        ],
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


def test_demo_delivers_to_its_sink_and_reports(tmp_path: Path) -> None:
    done = ferrymail("demo", "--recipients", "300", "--domains", "7", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["states"]["delivered"] == 300 and sum(report["states"].values()) == 300
    assert len(report["domains"]) == 7
    assert "submitted 300/300  delivered 300  deferred 0  bounced 0" in done.stderr
    assert "the sink took 300 " in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # the spool was temporary


def test_demo_lists_domains_in_natural_order(tmp_path: Path) -> None:
    done = ferrymail("demo", "--recipients", "120", "--domains", "12", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    domains = [line.split()[0] for line in done.stdout.splitlines() if ".example.net" in line]
    assert domains == [f"d{i}.example.net" for i in range(12)]


def test_demo_sink_answers_pipelined_commands_in_order() -> None:
    with DemoSink() as sink, socket.create_connection((sink.host, sink.port)) as c:
        replies = c.makefile("rb")
        assert replies.readline().startswith(b"220 ")
        c.sendall(b"EHLO me\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n"
                  b"RCPT TO:<c@y.test>\r\nDATA\r\n")  # fmt: skip
        ehlo = [replies.readline() for _ in range(6)]
        assert b"250-PIPELINING\r\n" in ehlo and ehlo[-1].startswith(b"250 ")
        assert [replies.readline()[:3] for _ in range(4)] == [b"250", b"250", b"250", b"354"]
        c.sendall(b"Subject: hi\r\n\r\n..dot\r\n.\r\nRSET\r\nNOOP\r\nRCPT TO:<d@y.test>\r\n"
                  b"QUIT\r\n")  # fmt: skip
        assert [replies.readline()[:3] for _ in range(5)] == [
            b"250",
            b"250",
            b"250",
            b"503",
            b"221",
        ]
        assert (sink.messages, sink.recipients) == (1, 2)


# --- run, status, report, flush, suppress, events -------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.05)


def event_types(directory: Path) -> list[str]:
    log = directory / "events.jsonl"
    if not log.exists():
        return []
    return [json.loads(line)["type"] for line in log.read_text().splitlines()]


def test_interrupted_send_then_status_flush_run_report_events_suppress(
    files: Path, mx: ScriptedServer
) -> None:
    # Nothing listens on the smarthost: every recipient is deferred for minutes.
    send = subprocess.Popen(
        [sys.executable, "-m", "ferrymail", "send", "welcome.toml", "people.csv",
         "--spool", "spool.db", "--smarthost", f"127.0.0.1:{closed_port()}"],
        cwd=files, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: event_types(files).count("deferred") == 3)
    finally:
        send.send_signal(signal.SIGINT)
        out, err = send.communicate(timeout=30)
    assert send.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted: 3 recipients still pending, 0 not submitted" in err
    assert "ferrymail run --spool spool.db" in err
    assert "deferred" in out

    status = json.loads(ferrymail("status", "--spool", "spool.db", "--json", cwd=files).stdout)
    assert status["states"]["deferred"] == 3
    assert {d["domain"]: d["deferred"] for d in status["domains"]} == {"a.test": 2, "b.test": 1}
    # Every MX host of the smarthost's site failed: the site is suspended.
    (suspended,) = status["suspended"]
    site = suspended["site"]
    assert site.startswith("127.0.0.1:") and suspended["domains"] == ["a.test", "b.test"]
    assert suspended["reason"].startswith("every MX host failed")
    readable = ferrymail("status", "--spool", "spool.db", cwd=files)
    assert "a.test" in readable.stdout and "next attempt" in readable.stdout
    assert "suspended site" in readable.stdout and site in readable.stdout

    flushed = ferrymail("flush", "--spool", "spool.db", cwd=files)
    assert flushed.stdout == f"3 recipients due now\nsuspension of {site} lifted\n"

    run = ferrymail("run", "--drain", "--spool", "spool.db", *relay(mx), cwd=files)
    assert run.returncode == 0, run.stderr

    report = json.loads(ferrymail("report", "welcome", "--spool", "spool.db", "--json",
                                  cwd=files).stdout)  # fmt: skip
    assert report["states"]["delivered"] == 2 and report["states"]["bounced"] == 1
    table = ferrymail("report", "welcome", "--spool", "spool.db", cwd=files).stdout
    assert "550 5.1.1 no such user" in table

    events = ferrymail("events", "--spool", "spool.db", cwd=files).stdout.splitlines()
    assert [line.split()[2] for line in events].count("delivered") == 2
    assert any("bounced" in line and "nobody@a.test" in line for line in events)

    listed = ferrymail("suppress", "list", "--spool", "spool.db", cwd=files).stdout
    assert "nobody@a.test" in listed and "bad-mailbox" in listed
    as_json = ferrymail("suppress", "list", "--json", "--spool", "spool.db", cwd=files).stdout
    (suppressed,) = json.loads(as_json)
    assert suppressed["address"] == "nobody@a.test"
    assert suppressed["reason"].startswith("bad-mailbox: 550")


def test_events_escape_control_characters_show_categories_and_report_damage(
    tmp_path: Path,
) -> None:
    def event(address: str, kind: str, category: str | None, text: str) -> str:
        return json.dumps({
            "type": kind, "campaign": "c", "recipient": address, "address": address,
            "domain": "a.test", "mx": "mx.a.test", "ip": None, "attempt": 1, "code": 550,
            "enhanced": "5.1.1", "text": text, "category": category,
            "timestamp": 1_800_000_000.0, "since_submit": 1.0,
        })  # fmt: skip

    log = tmp_path / "events.jsonl"
    log.write_text(
        event("\x1b]0;pwned\x07\x1b[2Jann@a.test", "bounced", "bad-mailbox", "no such user")
        + "\n" + '{"type": "deliv\n'
        + event("bo@a.test", "deferred", "greylisted", "try later \u202egnp.exe") + "\n"
        + '{"type": "delivered", "campaign": "c", "recip'
    )  # fmt: skip
    done = ferrymail("events", "--event-log", log, cwd=tmp_path)
    assert done.returncode == 1
    first, second = done.stdout.splitlines()
    assert "\x1b" not in done.stdout and "\u202e" not in done.stdout
    assert "bounced    c \\x1b]0;pwned\\x07\\x1b[2Jann@a.test via mx.a.test [bad-mailbox]" in first
    assert "[greylisted] 550 5.1.1 try later \\u202egnp.exe" in second
    assert done.stderr.splitlines() == [
        f'ferrymail events: {log} line 2: damaged, not JSON: {{"type": "deliv',
        f"ferrymail events: {log} line 4: damaged, cut off (no end of line): "
        '{"type": "delivered", "campaign": "c", "recip',
        f"ferrymail events: {log}: 2 damaged line(s) of 4",
    ]
    raw = ferrymail("events", "--json", "--event-log", log, cwd=tmp_path)
    assert raw.returncode == 1
    assert [json.loads(line)["type"] for line in raw.stdout.splitlines()] == [
        "bounced", "deferred"
    ]  # fmt: skip


def test_send_says_while_it_waits_why_a_domain_is_deferred(files: Path) -> None:
    # Nothing listens on the smarthost: a pipe for stderr (not a terminal) gets one plain
    # line per deferred domain while send waits, not only the report at the end.
    port = closed_port()
    send = subprocess.Popen(
        [sys.executable, "-m", "ferrymail", "send", "welcome.toml", "people.csv",
         "--spool", "spool.db", "--helo", "cli.example.com", "--smarthost",
         f"127.0.0.1:{port}"],
        cwd=files, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    assert send.stderr is not None
    reader = threading.Thread(target=lambda: [lines.put(line) for line in send.stderr or ()])
    reader.start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while len([line for line in seen if line.startswith("deferred ")]) < 2:
            seen.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
        assert send.poll() is None  # still waiting when it said so
    finally:
        send.send_signal(signal.SIGINT)
        send.wait(timeout=30)
        reader.join()
    deferred = sorted(line for line in seen if line.startswith("deferred "))
    assert [line.split(":")[0] for line in deferred] == [
        "deferred a.test (via 127.0.0.1)", "deferred b.test (via 127.0.0.1)"
    ]  # fmt: skip
    assert all("refused" in line.lower() and line.endswith("; retried later\n")
               for line in deferred), deferred  # fmt: skip


def test_tables_escape_control_characters(tmp_path: Path) -> None:
    with SqliteSpool(tmp_path / "spool.db") as spool:
        spool.suppress("\x1b]0;pwned\x07@x.test", "complaint \x1b[2J")
    listed = ferrymail("suppress", "list", "--spool", "spool.db", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "\x1b" not in listed.stdout
    assert "\\x1b]0;pwned\\x07@x.test" in listed.stdout and "complaint \\x1b[2J" in listed.stdout


def test_send_again_queues_nobody_twice(files: Path, mx: ScriptedServer) -> None:
    spool = ["--spool", "spool.db"]
    before = len(mx.delivered)
    first = ferrymail("send", "welcome.toml", "people.csv", *spool, *relay(mx), cwd=files)
    assert first.returncode == 0, first.stderr
    assert len(mx.delivered) == before + 2
    # The same campaign and list again (a user who is not sure it went out): nobody is
    # queued again, the report is the same, and the user is told why.
    (files / "people.csv").write_text(RECIPIENTS + "cy@b.test,Cy,4\n")
    again = ferrymail("send", "welcome.toml", "people.csv", *spool, *relay(mx), "--json", cwd=files)
    assert again.returncode == 0, again.stderr
    assert "3 recipients were in campaign 'welcome' already and were not queued again" in (
        again.stderr
    )
    assert json.loads(again.stdout)["states"]["delivered"] == 3
    delivered = sorted(m.rcpt_tos[0] for m in mx.delivered[before:])
    assert delivered == ["ann@a.test", "bo@b.test", "cy@b.test"]


def test_suppress_add_remove_and_a_suppressed_recipient(files: Path, mx: ScriptedServer) -> None:
    spool = ["--spool", "spool.db"]
    missing = ferrymail("suppress", "add", "bo@b.test", *spool, cwd=files)
    assert missing.returncode == 2
    assert missing.stderr == (
        "ferrymail suppress: spool.db: no such spool (give --spool FILE or --spool URL)\n"
    )
    assert not (files / "spool.db").exists()
    assert ferrymail("send", "welcome.toml", "people.csv", *spool, *relay(mx),
                     cwd=files).returncode == 0  # fmt: skip
    assert ferrymail("suppress", "add", "BO@b.test", *spool, cwd=files).returncode == 0
    (files / "again.csv").write_text("email,first_name\nbo@b.test,Bo\n")
    (files / "welcome.toml").write_text(CAMPAIGN.replace('"welcome"', '"again"'))
    done = ferrymail("send", "welcome.toml", "again.csv", *spool, "--json", *relay(mx), cwd=files)
    assert json.loads(done.stdout)["states"]["suppressed"] == 1
    assert ferrymail("suppress", "remove", "bo@b.test", *spool, cwd=files).returncode == 0
    again = ferrymail("suppress", "remove", "bo@b.test", *spool, cwd=files)
    assert again.returncode == 1 and again.stderr == "bo@b.test was not suppressed\n"
    no_address = ferrymail("suppress", "add", *spool, cwd=files)
    assert no_address.returncode == 2
    assert no_address.stderr == "ferrymail suppress: suppress add: give the ADDRESS\n"


def test_report_of_an_unknown_campaign(sent: Path) -> None:
    done = ferrymail("report", "nope", "--spool", "spool.db", cwd=sent)
    assert done.returncode == 2
    assert done.stderr == "ferrymail report: spool.db: campaign 'nope' is not in the spool\n"


@pytest.mark.parametrize(
    "command",
    ["send", "run", "status", "report", "flush", "suppress", "events", "render", "demo"],
)
def test_every_command_has_help_with_an_example(command: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ferrymail", command, "--help"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert f"ferrymail {command} " in done.stdout.split("example", 1)[-1]


# --- render ---------------------------------------------------------------------------------


def test_render_prints_the_exact_message_of_one_recipient(files: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ferrymail", "render", "welcome.toml", "people.csv",
         "--index", "1"],
        cwd=files, capture_output=True, check=True,
    )  # fmt: skip
    assert b"\r\n" in done.stdout and b"\n" not in done.stdout.replace(b"\r\n", b"")
    msg = BytesParser(policy=email.policy.default).parsebytes(done.stdout)
    assert msg["To"] == "bo@b.test" and msg["Subject"] == "Welcome aboard, Bo"
    assert msg["Feedback-ID"] == "welcome:news:ferry"
    assert not (files / "ferrymail.db").exists()


@pytest.mark.parametrize(
    ("index", "message"),
    [
        ("3", "people.csv: no recipient at index 3"),
        ("-1", "--index -1: must be 0 or more"),
    ],
)
def test_render_bad_index(files: Path, index: str, message: str) -> None:
    done = ferrymail("render", "welcome.toml", "people.csv", "--index", index, cwd=files)
    assert done.returncode == 2
    assert done.stderr == f"ferrymail render: {message}\n"
