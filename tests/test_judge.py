"""The judge's reading of replies that are about the sender, not the recipient."""

from __future__ import annotations

import pytest
from ferrymail.judge import rejects_our_helo
from ferrymail.wire import Outcome, OutcomeKind


def _reply(code: int, text: str) -> Outcome:
    status = "permanent" if code >= 500 else "transient"
    return Outcome(
        status, code, None, text, "rcpt", "mx.test", "127.0.0.1", None, 1.0, None, OutcomeKind.REPLY
    )


@pytest.mark.parametrize(
    "text",
    [
        "<vm>: Helo command rejected: need fully-qualified hostname",  # Postfix
        "<bad_name>: Helo command rejected: Invalid name",  # Postfix
        "<vm>: Helo command rejected: Host not found",  # Postfix, unknown HELO host
        "Invalid HELO name (See RFC5321 4.1.1.1)",  # Exim's common ACL
        "HELO/EHLO argument must be a fully qualified domain name",
        "Rejected: bogus HELO vm",
    ],
)
def test_refusals_of_our_helo_name(text: str) -> None:
    assert rejects_our_helo(_reply(504, text))
    assert rejects_our_helo(_reply(550, text))


@pytest.mark.parametrize(
    "code,text",
    [
        (550, "5.1.1 <ann@example.net>: Recipient address rejected: User unknown"),
        (554, "Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org"),
        (552, "Mailbox full"),
        (450, "<vm>: Helo command rejected: Host not found"),  # a 4xx defers anyway
        (550, "Hello vm, you are not welcome"),
    ],
)
def test_other_replies_are_not(code: int, text: str) -> None:
    assert not rejects_our_helo(_reply(code, text))
