"""Every feedback sample (tests/feedback_samples) acted on against a spool that delivered
to the addresses they name: the signal rows, events and suppressions each one makes."""

from __future__ import annotations

import time
from pathlib import Path

import ferrymail
import pytest
from ferrymail.feedback import parse
from ferrymail.inbound import Handler
from inbound_support import delivered_spool, inbound_config, plain

SAMPLES = Path(__file__).parent / "feedback_samples"

# sample -> (signal rows as (kind, address), addresses suppressed, event types)
EXPECTED: dict[str, tuple[list[tuple[str, str]], set[str], list[str]]] = {
    # A 4.x.x failure is an expiry: recorded, nothing suppressed.
    "rfc3464-simple": ([("bounced-late", "louisl@larry.slip.umd.edu")], set(), ["bounced-late"]),
    # Two failed (one hard), one delayed: the delay is not a bounce.
    "rfc3464-multi-recipient": (
        [("bounced-late", "arathib@vnet.ibm.com"), ("bounced-late", "wsnell@sdcc13.ucsd.edu")],
        {"wsnell@sdcc13.ucsd.edu"},
        ["bounced-late", "bounced-late"],
    ),
    "rfc3464-delayed": ([], set(), ["delayed"]),
    "exim-delay": ([], set(), ["delayed"]),
    "dsn-success-only": ([], set(), []),
    "office365-ndr": (
        [("bounced-late", "gone@contoso.com"), ("bounced-late", "edge@contoso.com")],
        {"gone@contoso.com", "edge@contoso.com"},
        ["bounced-late", "bounced-late"],
    ),
    "gmail-dsn": (
        [("bounced-late", "nosuchuser@gmail.com")],
        {"nosuchuser@gmail.com"},
        ["bounced-late"],
    ),
    # A full mailbox is recorded, not suppressed.
    "qmail": (
        [("bounced-late", "nobody@qmail.example"), ("bounced-late", "full@qmail.example")],
        {"nobody@qmail.example"},
        ["bounced-late", "bounced-late"],
    ),
    "exim-old": (
        [("bounced-late", "ghost@exim.example")],
        {"ghost@exim.example"},
        ["bounced-late"],
    ),
    "postfix-no-report": (
        [("bounced-late", "moved@postfix.example")],
        {"moved@postfix.example"},
        ["bounced-late"],
    ),
    "sendmail-plain": (
        [("bounced-late", "left@sm.example")],
        {"left@sm.example"},
        ["bounced-late"],
    ),
    "isp-text-bounce": (
        [("bounced-late", "oldcustomer@isp.example")],
        {"oldcustomer@isp.example"},
        ["bounced-late"],
    ),
    "rfc5965-abuse": ([("complained", "user@example.com")], {"user@example.com"}, ["complained"]),
    "yahoo-cfl": ([("complained", "reader@yahoo.com")], {"reader@yahoo.com"}, ["complained"]),
    "yahoo-cfl-headers-only": (
        [("complained", "reader@aol.com")],
        {"reader@aol.com"},
        ["complained"],
    ),
    # No address, and the tokens they quote are not this spool's: nothing to act on.
    "rfc5965-minimal-headers": ([], set(), []),
    "microsoft-jmrp-arf": ([], set(), []),
    "microsoft-jmrp-rfc822": ([], set(), []),
    "arf-not-spam": ([], set(), []),
    "rfc3834-auto-replied": ([("auto-reply", "alice@example.org")], set(), ["auto-reply"]),
    "outlook-out-of-office": ([("auto-reply", "bob@contoso.com")], set(), ["auto-reply"]),
    "vacation-precedence": ([("auto-reply", "carol@example.net")], set(), ["auto-reply"]),
    "mailto-unsubscribe": ([], set(), []),
    "hostile-missing-boundary": ([], set(), []),
    "hostile-truncated": ([], set(), []),
    # Hostile, but what can be read is acted on: the outer report of a report about a
    # report; a bounce whose charset is wrong.
    "hostile-nested-report": (
        [("bounced-late", "louisl@larry.slip.umd.edu")],
        set(),
        ["bounced-late"],
    ),
    "hostile-wrong-charset": (
        [("bounced-late", "slow@example.org")],
        {"slow@example.org"},
        ["bounced-late"],
    ),
}
# Every address a sample names, delivered to before the sample comes back.
ADDRESSES = sorted(
    {a for rows, _, _ in EXPECTED.values() for _, a in rows}
    | {"slow@example.org", "slowpoke@exim.example", "johnh@hpnjld.njd.hp.com", "happy@example.org"}
    | {"reader@aol.com", "dana@example.org"}
)


def test_every_sample_has_an_expectation() -> None:
    assert {p.stem for p in SAMPLES.glob("*.eml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_ends_in_its_rows_events_and_suppressions(name: str, tmp_path: Path) -> None:
    rows, suppressed, event_types = EXPECTED[name]
    recipients = [ferrymail.Recipient(a, {}) for a in ADDRESSES]
    spool = delivered_spool(tmp_path / "s.db", [plain("news-1")], recipients)
    handled = Handler(spool, inbound_config(), time.time)(
        parse((SAMPLES / f"{name}.eml").read_bytes())
    )

    assert [(kind, key) for kind, key, *_ in spool.feedback("news-1")] == rows
    assert {address for address, _, _ in spool.suppressions()} == suppressed
    assert [e.type for e in handled.events] == event_types
    # A signal never changes a recipient's state: everyone stays delivered.
    assert set(spool.final_states("news-1").values()) == {"delivered"}
