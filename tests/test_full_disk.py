"""A full or read-only file system: the event log keeps whole lines and says when it fell
behind the spool, and `status` and `report` read a spool on a read-only mount. Needs
root (to mount a small tmpfs); skipped otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from smtp_peers import ScriptedServer

CAMPAIGN = """\
id = "full"
sender = "bounces@news.example.com"
from = "news@example.com"
subject = "Hi {{ first_name }}"
text = "body.txt"
"""
RECIPIENTS = 20


def mount(where: Path, size: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs."""
    yield from mount(tmp_path / "small", "64k")


@pytest.fixture
def big_enough(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs for a spool (16 MiB)."""
    yield from mount(tmp_path / "mounted", "16m")


def fill(directory: Path, leave: int) -> Path:
    """Fills the file system of `directory` but `leave` bytes (rounded to pages)."""
    filler = directory / "filler"
    free = os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize
    filler.write_bytes(b"\0" * (free - leave))
    return filler


def ferrymail(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferrymail", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=60,
    )  # fmt: skip


def write_campaign(directory: Path) -> None:
    (directory / "full.toml").write_text(CAMPAIGN)
    (directory / "body.txt").write_text("Hello {{ first_name }}\n")
    people = "".join(f"u{i}@d{i % 3}.test,U{i}\n" for i in range(RECIPIENTS))
    (directory / "people.csv").write_text("email,first_name\n" + people)


def test_an_event_log_on_a_full_disk_keeps_whole_lines_and_says_it_fell_behind(
    tmp_path: Path, small: Path
) -> None:
    write_campaign(tmp_path)
    log = small / "events.jsonl"
    fill(small, 8192)  # room for some events of the 40 (20 queued, 20 delivered)
    with ScriptedServer() as mx:
        done = ferrymail(
            "send", "full.toml", "people.csv", "--spool", "spool.db", "--event-log", log,
            "--helo", "full.example.com", "--smarthost", f"{mx.host}:{mx.port}", "--json",
            cwd=tmp_path,
        )  # fmt: skip
    # The spool is the truth: every recipient delivered, the report says so.
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["states"]["delivered"] == RECIPIENTS
    assert "Traceback" not in done.stderr
    assert f"the event log {log} could not be written (No space left on device)" in done.stderr
    data = log.read_bytes()
    assert data.endswith(b"\n")  # whole lines only
    lines = [json.loads(line) for line in data.splitlines()]
    events = [line for line in lines if line["type"] != "lost"]
    # Every state change is in the log, or counted where it is missing: by a "lost" line
    # (written when a smaller one fitted again), else on stderr when the log closed.
    lacking = [line for line in done.stderr.splitlines() if "lacks the last" in line]
    missing = sum(line["events"] for line in lines if line["type"] == "lost")
    missing += sum(int(line.split("lacks the last ")[1].split()[0]) for line in lacking)
    assert 0 < len(events) < 2 * RECIPIENTS
    assert len(events) + missing == 2 * RECIPIENTS
    listed = ferrymail("events", "--event-log", log, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == len(lines)


def test_a_log_that_fell_behind_says_where_once_it_can_be_written(tmp_path: Path) -> None:
    # The same in one process: the log fails, then has room again.
    from ferrymail.events import Event, EventBus

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = mount(tmp_path / "log", "64k")
    place = next(mounted)
    try:
        filler = fill(place, 4096)
        bus = EventBus(place / "events.jsonl")
        event = Event("queued", "c", "k", "a@x.test", "x.test", None, None, 0, None, None,
                      "x" * 300, None, 1_800_000_000.0, 0.0)  # fmt: skip
        for _ in range(40):
            bus.publish([event])
        assert bus.lost > 0
        lost = bus.lost
        filler.unlink()
        bus.publish([event])
        bus.close()
        lines = [json.loads(line) for line in (place / "events.jsonl").read_bytes().splitlines()]
        assert lines[-2]["type"] == "lost" and lines[-2]["events"] == lost
        assert lines[-2]["reason"] == "No space left on device"
        assert len(lines) - 1 + lost == 41
        shown = ferrymail("events", "--event-log", place / "events.jsonl", cwd=tmp_path)
        assert shown.returncode == 0
        assert f"lost       {lost} events from " in shown.stdout
    finally:
        subprocess.run(["umount", "-l", str(place)], check=False)


def test_status_and_report_read_a_spool_on_a_read_only_mount(
    tmp_path: Path, big_enough: Path
) -> None:
    small = big_enough
    write_campaign(small)
    with ScriptedServer() as mx:
        done = ferrymail(
            "send", "full.toml", "people.csv", "--spool", "spool.db",
            "--helo", "full.example.com", "--smarthost", f"{mx.host}:{mx.port}", cwd=small,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    remount = subprocess.run(["mount", "-o", "remount,ro", str(small)], capture_output=True)
    assert remount.returncode == 0, remount.stderr
    status = ferrymail("status", "--json", "--spool", small / "spool.db", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["states"]["delivered"] == RECIPIENTS
    report = ferrymail("report", "full", "--spool", small / "spool.db", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert ["delivered", str(RECIPIENTS)] in [line.split() for line in report.stdout.splitlines()]
    # Writing commands still say, in one line, why they cannot.
    flush = ferrymail("flush", "--spool", small / "spool.db", cwd=tmp_path)
    assert flush.returncode != 0 and flush.stderr.count("\n") == 1, flush.stderr
