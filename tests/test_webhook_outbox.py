"""The webhook outbox of both spools: batches in order, kept whole across retries, dead
letters and replay, written with the outcomes they belong to."""

from __future__ import annotations

from ferrymail.spool import OutboxRow, open_spool


def rows(endpoint: str, *names: str) -> list[OutboxRow]:
    return [OutboxRow(endpoint, f"evt_{n}", f'{{"id":"evt_{n}"}}'.encode()) for n in names]


def test_batches_go_in_order_and_a_failed_one_is_sent_again_whole(spool_at: str) -> None:
    with open_spool(spool_at) as spool:
        spool.webhook_enqueue(rows("a", "1", "2", "3") + rows("b", "x"))
        # Two of three: not full, and the oldest is younger than the wait: nothing yet.
        assert spool.webhook_take("a", 5, older_than=0.0) is None
        first = spool.webhook_take("a", 2, older_than=0.0)
        assert first is not None and [e for e, _ in first.events] == ["evt_1", "evt_2"]
        spool.webhook_enqueue(rows("a", "4"))
        spool.webhook_failed("a", first.batch, "HTTP 500", next_attempt=123.0)
        again = spool.webhook_take("a", 10, older_than=1e12)
        assert again is not None and again.batch == first.batch
        assert [e for e, _ in again.events] == ["evt_1", "evt_2"]
        assert (again.attempts, again.due) == (1, 123.0)
        assert spool.webhook_sent("a", first.batch) == 2
        rest = spool.webhook_take("a", 10, older_than=1e12)
        assert rest is not None and [e for e, _ in rest.events] == ["evt_3", "evt_4"]
        other = spool.webhook_take("b", 10, older_than=1e12)
        assert other is not None and [e for e, _ in other.events] == ["evt_x"]


def test_a_dead_letter_waits_for_replay_then_goes_first(spool_at: str) -> None:
    with open_spool(spool_at) as spool:
        spool.webhook_enqueue(rows("a", "1", "2"))
        dead = spool.webhook_take("a", 1, older_than=1e12)
        assert dead is not None
        spool.webhook_failed("a", dead.batch, "refused", next_attempt=None)
        later = spool.webhook_take("a", 1, older_than=1e12)
        assert later is not None and [e for e, _ in later.events] == ["evt_2"]
        spool.webhook_sent("a", later.batch)
        [backlog] = spool.webhook_backlog()
        assert (backlog.endpoint, backlog.pending, backlog.dead) == ("a", 0, 1)
        assert backlog.last_error == "refused"
        assert spool.webhook_take("a", 1, older_than=1e12) is None
        assert spool.webhook_replay() == 1
        back = spool.webhook_take("a", 1, older_than=1e12)
        assert back is not None and back.batch == dead.batch and back.attempts == 0
        assert [e for e, _ in back.events] == ["evt_1"]
