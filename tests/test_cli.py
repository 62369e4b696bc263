"""The command line as a user runs it: `python -m ferrymail demo` in a subprocess."""

from __future__ import annotations

import email.policy
import subprocess
import sys
from email.parser import BytesParser


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
