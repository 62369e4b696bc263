"""Recipient keys at submit: one mailbox written two ways is one recipient, queued once."""

from __future__ import annotations

from pathlib import Path

from ferrymail.spool import SqliteSpool
from ferrymail.submit import key_of, rows
from ferrymail.wire import Recipient


def test_the_domain_of_a_key_is_lower_case_a_labels_and_the_local_part_as_written() -> None:
    written = ["ann@bücher.test", "ann@xn--bcher-kva.test", "ann@BÜCHER.TEST", "ann@Bücher.test."]
    assert {key_of(Recipient(a)) for a in written} == {"ann@xn--bcher-kva.test"}
    assert key_of(Recipient("Ann@a.test")) != key_of(Recipient("ann@a.test"))
    assert key_of(Recipient("x@A.TEST", id=7)) == "7"  # the ESP's id wins


def test_one_mailbox_written_two_ways_is_queued_once(tmp_path: Path) -> None:
    chunk = [Recipient("ann@bücher.test"), Recipient("ann@xn--bcher-kva.test"),
             Recipient("bo@EXAMPLE.NET"), Recipient("bo@example.net")]  # fmt: skip
    with SqliteSpool(tmp_path / "spool.db") as spool:
        spool.put_campaign("c", b"spec")
        ids = spool.insert("c", rows(chunk, set()))
        assert [id_ is not None for id_ in ids] == [True, False, True, False]
        assert spool.final_states("c") == {
            "ann@xn--bcher-kva.test": "queued",
            "bo@example.net": "queued",
        }
