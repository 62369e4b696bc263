"""The spool's side of the way back: feedback rows beside final states, scoped
suppressions, report counts (on SQLite and PostgreSQL), and the migration of a version-2
SQLite spool."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import msgspec
import pytest
from ferrymail.spool import (
    NewRecipient,
    ShapingAction,
    Signal,
    Spool,
    SqliteSpool,
    Update,
    open_spool,
)
from ferrymail.spool.schema import SCHEMA_VERSION
from ferrymail.wire import CampaignSpec, Recipient
from test_spool import T0, Clock

ENCODER = msgspec.msgpack.Encoder()


def spec(campaign_id: str, list_id: str | None = None) -> bytes:
    headers = [] if list_id is None else [("List-Id", list_id)]
    return ENCODER.encode(
        CampaignSpec(
            campaign_id, "s@x.test", "s@x.test", "Hi", None, "hi", None, headers, None, None
        )
    )


def new(address: str, key: str | None = None) -> NewRecipient:
    blob = ENCODER.encode(Recipient(address, {}, key))
    return NewRecipient(blob, address, address.rpartition("@")[2], key or address, "queued")


@pytest.fixture
def spool(spool_at: str) -> Iterator[Spool]:
    """On SQLite and on PostgreSQL (conftest.spool_at)."""
    with open_spool(spool_at, clock=Clock()) as spool:
        spool.put_campaign("c1", spec("c1"))
        spool.insert("c1", [new("ann@a.test", "ann"), new("bob@b.test", "bob")])
        yield spool


def deliver_all(spool: Spool) -> None:
    updates = [
        Update(r.id, "delivered", 1, None, 250, "2.0.0", "ok", None, "mx", "ip")
        for r in spool.lease(100, "me", 60)
    ]
    spool.record(updates)


def click(key: str, link: int = 0, *, machine: bool = False, at: float = T0) -> Signal:
    return Signal("clicked", "c1", key, at, machine, link, f"https://x.test/{link}", "UA")


def test_signals_are_rows_beside_the_final_state_first_or_repeat_per_link(
    spool: Spool,
) -> None:
    deliver_all(spool)
    recorded = spool.record_feedback(
        [
            click("ann", 0, machine=True),  # a scanner first: the person's click is still first
            click("ann", 0),
            click("ann", 0),
            click("ann", 1),
            Signal("opened", "c1", "ann", T0),
            Signal("opened", "c1", "bob", T0, machine=True),
            Signal("clicked", "gone", "x", T0, False, 0, "https://x.test/"),
        ]
    )
    assert [r.first if r else None for r in recorded] == [True, True, False, True, True, True, None]
    assert recorded[0] is not None and recorded[0].address == "ann@a.test"
    assert recorded[0].domain == "a.test"
    assert spool.final_states("c1") == {"ann": "delivered", "bob": "delivered"}
    assert [(k, key, m, r, link) for k, key, m, r, link, _ in spool.feedback("c1")] == [
        ("clicked", "ann", True, False, 0),
        ("clicked", "ann", False, False, 0),
        ("clicked", "ann", False, True, 0),
        ("clicked", "ann", False, False, 1),
        ("opened", "ann", False, False, None),
        ("opened", "bob", True, False, None),
    ]
    counts = spool.report("c1").feedback
    assert (counts.clicks, counts.unique_clicks, counts.machine_clicks) == (3, 1, 1)
    assert (counts.opens, counts.unique_opens, counts.machine_opens) == (1, 1, 1)
    assert counts.unsubscribes == counts.complaints == counts.late_bounces == 0
    assert counts.complaint_rate == 0.0
    # A later batch sees the earlier ones: per link for clicks, and for opens (no link).
    later = spool.record_feedback(
        [
            click("ann", 1),
            Signal("opened", "c1", "ann", T0 + 1),
            Signal("opened", "c1", "bob", T0 + 1),  # bob's only open before was a machine's
            click("bob", 1),
            click("bob", 1, machine=True),
        ]
    )
    assert [r.first if r else None for r in later] == [False, False, True, True, False]


def test_complaint_rate_per_campaign_and_receiving_domain(spool: Spool) -> None:
    spool.insert("c1", [new(f"r{i}@a.test") for i in range(3)])
    deliver_all(spool)  # a.test: 4 delivered, b.test: 1
    spool.record_feedback(
        [
            Signal("complained", "c1", "ann", T0, detail='{"type": "abuse"}'),
            Signal("complained", "c1", "ann", T0),  # a second report of one complaint
            Signal("bounced-late", "c1", "bob", T0),
            Signal("auto-reply", "c1", "r0@a.test", T0),
        ]
    )
    report = spool.report("c1")
    assert report.states["delivered"] == 5  # a late bounce leaves the delivery in place
    counts = report.feedback
    assert (counts.complaints, counts.late_bounces, counts.auto_replies) == (1, 1, 1)
    assert counts.complaint_rate == pytest.approx(1 / 5)
    assert counts.complaint_rate_by_domain == {"a.test": pytest.approx(1 / 4)}


def test_unsubscribe_suppresses_in_the_campaigns_list_once(spool: Spool) -> None:
    first = spool.unsubscribe("c1", "ann", user_agent="Mozilla")
    assert first is not None and first.new and first.scope == "c1"
    assert first.address == "ann@a.test"
    again = spool.unsubscribe("c1", "ann")
    assert again is not None and not again.new
    assert [row[:2] for row in spool.feedback("c1")] == [("unsubscribed", "ann")]
    assert spool.report("c1").feedback.unsubscribes == 1
    # The list's campaigns skip the address at submit; other lists and global do not.
    spool.put_campaign("c1-next", spec("c1-next", "Weekly <c1>"))
    spool.put_campaign("other", spec("other"))
    assert spool.suppressed_among(["ANN@a.test", "bob@b.test"], "c1-next") == {"ANN@a.test"}
    assert spool.suppressed_among(["ann@a.test"], "other") == set()
    assert spool.suppressed_among(["ann@a.test"]) == set()
    assert not spool.is_suppressed("ann@a.test") and spool.is_suppressed("ann@a.test", "c1")
    assert spool.suppressions(scope="c1")[0][:2] == ("ann@a.test", "unsubscribed from c1")
    # Unknown recipients and campaigns: nothing to unsubscribe.
    assert spool.unsubscribe("c1", "nobody") is None
    assert spool.unsubscribe("gone", "ann") is None


def test_a_global_unsubscribe_suppresses_for_every_campaign(spool: Spool) -> None:
    result = spool.unsubscribe("c1", "bob", scope="global")
    assert result is not None and result.scope == ""
    spool.put_campaign("other", spec("other"))
    assert spool.suppressed_among(["bob@b.test"], "other") == {"bob@b.test"}
    assert spool.is_suppressed("bob@b.test")
    with pytest.raises(ValueError, match="scope"):
        spool.unsubscribe("c1", "bob", scope="everything")


def test_a_campaigns_list_is_its_list_id_or_its_id(spool: Spool) -> None:
    spool.put_campaign("news-1", spec("news-1", "The News <News.Example.COM>"))
    spool.put_campaign("bare", spec("bare", "plain.example.com"))
    spool.put_campaign("opaque", b"not a spec")
    assert spool.campaign_list("c1") == "c1"
    assert spool.campaign_list("news-1") == "news.example.com"
    assert spool.campaign_list("bare") == "plain.example.com"
    assert spool.campaign_list("opaque") == "opaque"


# SQLite only: a file of an older SQLite schema.
def test_a_version_2_spool_is_brought_up_to_date(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with SqliteSpool(path, clock=Clock()) as spool:
        spool.put_campaign("c1", spec("c1"))
        spool.insert("c1", [new("ann@a.test", "ann")])
    with closing(sqlite3.connect(path)) as db:  # as ferrymail with schema version 2 left it
        db.execute("DROP TABLE rate_bucket")  # version 7's
        db.execute("DROP TABLE fleet_node")
        db.execute("DROP TABLE webhook_outbox")  # version 6's
        db.execute("DROP TABLE api_key")  # version 5's
        db.execute("ALTER TABLE campaign DROP COLUMN cancelled_at")
        db.execute("DROP TABLE shaping_action")
        db.execute("DROP TABLE warmup_sent")
        db.execute("DROP TABLE feedback")
        db.execute("DROP TABLE suppression")
        db.execute(
            "CREATE TABLE suppression (address TEXT PRIMARY KEY, reason TEXT NOT NULL,"
            " added_at REAL NOT NULL) WITHOUT ROWID"
        )
        db.execute("INSERT INTO suppression VALUES ('old@a.test', 'hard bounce', 1.0)")
        db.execute("PRAGMA user_version = 2")
        db.commit()
    with SqliteSpool(path, clock=Clock()) as spool:
        assert spool.suppressions() == [("old@a.test", "hard bounce", 1.0)]  # now global
        assert spool.suppressed_among(["old@a.test"], "c1") == {"old@a.test"}
        assert spool.unsubscribe("c1", "ann") is not None
        assert spool.record_feedback([Signal("opened", "c1", "ann", T0)])[0] is not None
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


def test_inbound_signals_find_their_recipient_and_suppress_in_one_call(spool: Spool) -> None:
    ann = spool.find_by_key("c1", "ann")
    assert ann is not None and (ann.address, ann.domain, ann.state) == (
        "ann@a.test",
        "a.test",
        "queued",
    )
    assert spool.find_recipient(ann.id) == ann
    assert spool.find_recipient(10_000) is None and spool.find_by_key("c1", "nobody") is None
    # By address: the recipients keyed by it, newest campaign first, as written or lower case.
    spool.put_campaign("c2", spec("c2"))
    spool.insert("c2", [new("bob@b.test"), new("Bob@B.test", "BOB@B.TEST")])
    assert [(f.campaign, f.key) for f in spool.find_by_address("BOB@B.TEST")] == [
        ("c2", "BOB@B.TEST"),
        ("c2", "bob@b.test"),
    ]
    recorded = spool.record_inbound(
        [Signal("bounced-late", "c1", "ann", T0), Signal("complained", "gone", "x", T0)],
        [("Ann@A.test", "late bounce", ""), ("bob@b.test", "complaint", "c1")],
    )
    assert recorded[0] is not None and recorded[0].address == "ann@a.test" and recorded[1] is None
    assert spool.is_suppressed("ann@a.test") and not spool.is_suppressed("bob@b.test")
    assert spool.is_suppressed("bob@b.test", "c1")
    assert spool.report("c1").feedback.late_bounces == 1


def test_automation_actions_are_kept_until_their_limits_are_back_or_lifted(spool: Spool) -> None:
    def action(rule: str, site: str, until: float, domains: list[str]) -> ShapingAction:
        return ShapingAction(
            rule, "site", site, "", "", T0, until, 60.0, "421 4.7.28 too fast",
            True, False, {"max_message_rate": "10/min"}, domains,
        )  # fmt: skip

    spool.put_actions(
        [
            action("slow", "mx.a.test:25", T0 + 600, ["b.test", "a.test"]),
            action("slow", "mx.c.test:25", T0 + 300, ["c.test"]),
        ]
    )
    spool.put_actions([action("slow", "mx.c.test:25", T0 + 900, ["c.test"])])  # fired again
    assert [(a.site, a.until, a.domains, a.limits) for a in spool.actions()] == [
        ("mx.a.test:25", T0 + 600, ["a.test", "b.test"], {"max_message_rate": "10/min"}),
        ("mx.c.test:25", T0 + 900, ["c.test"], {"max_message_rate": "10/min"}),
    ]
    assert spool.status().actions == spool.actions()
    assert [a.site for a in spool.lift_actions("B.test.")] == ["mx.a.test:25"]
    assert [a.site for a in spool.lift_actions()] == ["mx.c.test:25"]
    assert spool.actions() == []


def test_warmup_counts_add_up_per_source_provider_and_day(spool: Spool) -> None:
    spool.add_warmup_sent([("ip1", "provider.google", "2026-12-04", 10)])
    spool.add_warmup_sent(
        [("ip1", "provider.google", "2026-12-04", 15), ("ip2", "site-a", "2026-12-04", 3)]
    )
    spool.add_warmup_sent([("ip1", "provider.google", "2026-12-05", 1)])
    assert spool.warmup_sent("2026-12-04") == {
        ("ip1", "provider.google"): 25,
        ("ip2", "site-a"): 3,
    }
    assert spool.warmup_sent("2026-12-03") == {}
