"""The webhook events of feedback, written by the spool in the transaction that records
the signals (on SQLite and PostgreSQL): clicks and opens, unsubscribes (once), inbound
signals and the delays that are only told; a write that fails writes neither."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
from ferrymail.events import feedback_event
from ferrymail.spool import Recorded, Signal, Spool, open_spool
from ferrymail.webhooks import Webhook
from ferrymail.webhooks.feedback import feedback_hook
from test_spool import T0, Clock
from test_spool_feedback import new, spec

HOOK = Webhook(
    name="esp",
    url="http://127.0.0.1:9/events",  # never called: no sender runs here
    events=frozenset({"clicked", "opened", "unsubscribed", "bounced-late", "delayed"}),
    secrets=(b"k" * 32,),
)


@pytest.fixture
def spool(spool_at: str) -> Iterator[Spool]:
    with open_spool(spool_at, clock=Clock()) as spool:
        spool.put_campaign("c1", spec("c1", "news.example"))
        spool.insert("c1", [new("ann@a.test", "ann"), new("bob@b.test", "bob")])
        spool.on_feedback = feedback_hook([HOOK])
        yield spool


def outboxed(spool: Spool) -> list[dict[str, object]]:
    """The outbox's waiting events for "esp", in order, as the webhook gets them."""
    batch = spool.webhook_take("esp", 1000, older_than=1e12)
    return [] if batch is None else [orjson.loads(body) for _, body in batch.events]


def test_clicks_and_opens_are_in_the_outbox_when_recorded(spool: Spool) -> None:
    signals = [
        Signal("clicked", "c1", "ann", T0 + 1, link=0, url="https://x.test/a", user_agent="UA"),
        Signal("opened", "c1", "bob", T0 + 2, machine=True),
        Signal("opened", "c1", "nobody", T0 + 3),  # no such recipient: recorded, no address
        Signal("clicked", "elsewhere", "ann", T0 + 4),  # no such campaign: not recorded
    ]
    recorded = spool.record_feedback(signals)
    events = outboxed(spool)
    # The same events the event log gets (feedback_event), each with an id.
    expected = [
        orjson.loads(orjson.dumps(feedback_event(s, r)))
        for s, r in zip(signals, recorded, strict=True)
        if r is not None
    ]
    assert [{k: v for k, v in e.items() if k != "id"} for e in events] == expected
    assert [(e["type"], e["recipient"], e["address"]) for e in events] == [
        ("clicked", "ann", "ann@a.test"),
        ("opened", "bob", "bob@b.test"),
        ("opened", "nobody", None),
    ]
    assert events[0]["url"] == "https://x.test/a" and events[1]["machine"] is True
    assert len({e["id"] for e in events}) == 3


def test_a_feedback_write_that_fails_writes_neither(spool: Spool) -> None:
    def broken(signals: object, recorded: object) -> list[object]:
        raise RuntimeError("the outbox cannot be written")

    spool.on_feedback = broken  # type: ignore[assignment]
    with pytest.raises(RuntimeError, match="the outbox cannot be written"):
        spool.record_feedback([Signal("clicked", "c1", "ann", T0 + 1, link=0)])
    with pytest.raises(RuntimeError, match="the outbox cannot be written"):
        spool.unsubscribe("c1", "ann")
    assert spool.feedback("c1") == []
    assert not spool.is_suppressed("ann@a.test", "news.example")
    assert outboxed(spool) == []


def test_an_unsubscribe_has_one_event_with_its_scope_and_how_it_came(spool: Spool) -> None:
    done = spool.unsubscribe("c1", "ann", user_agent="Mail/1.0")
    assert done is not None and done.new
    again = spool.unsubscribe("c1", "ann")  # a second POST: nothing new, no event
    assert again is not None and not again.new
    mailto = spool.unsubscribe("c1", "bob", scope="global", by="mailto")
    assert mailto is not None and mailto.new
    events = outboxed(spool)
    assert [(e["type"], e["recipient"], orjson.loads(e["detail"])) for e in events] == [
        ("unsubscribed", "ann", {"scope": "news.example"}),
        ("unsubscribed", "bob", {"scope": "global", "by": "mailto"}),
    ]
    assert events[0]["user_agent"] == "Mail/1.0" and events[0]["address"] == "ann@a.test"
    # The event log's event is the same one.
    logged = orjson.loads(orjson.dumps(feedback_event(done.signal, done.recorded)))
    assert {k: v for k, v in events[0].items() if k != "id"} == logged


def test_inbound_signals_and_told_delays_are_in_the_outbox(spool: Spool) -> None:
    bounce = Signal("bounced-late", "c1", "ann", T0 + 5, detail='{"status":"5.1.1"}')
    delay = Signal("delayed", "c1", "bob", T0 + 6, detail='{"status":"4.4.7"}')
    recorded = spool.record_inbound(
        [bounce],
        [("ann@a.test", "late bounce", "")],
        [(delay, Recorded(True, "bob@b.test", "b.test"))],
    )
    assert recorded == [Recorded(True, "ann@a.test", "a.test")]
    events = outboxed(spool)
    assert [(e["type"], e["recipient"], e["detail"]) for e in events] == [
        ("bounced-late", "ann", '{"status":"5.1.1"}'),
        ("delayed", "bob", '{"status":"4.4.7"}'),
    ]
    # The delay is told, not stored: only the bounce is a feedback row.
    assert [(kind, key) for kind, key, *_ in spool.feedback("c1")] == [("bounced-late", "ann")]
    assert spool.is_suppressed("ann@a.test")


def test_without_webhooks_nothing_goes_to_the_outbox(spool: Spool) -> None:
    spool.on_feedback = feedback_hook([])
    assert spool.on_feedback is None
    spool.record_feedback([Signal("clicked", "c1", "ann", T0 + 1, link=0)])
    assert spool.unsubscribe("c1", "bob") is not None
    assert outboxed(spool) == []
    assert len(spool.feedback("c1")) == 2
