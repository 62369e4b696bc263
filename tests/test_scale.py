"""At scale: Message-IDs stay distinct over 100,000 recipients, and rendering on every
core gives the same bytes as rendering on one thread."""

from __future__ import annotations

import re

import ferrymail
import msgspec
import pytest
from ferrymail import Campaign, Recipient, RenderedMessage, Unsubscribe, _core, sample
from ferrymail.wire import RenderOutcome
from support import SENDER, TRACK, UNSUB, tracking

CHUNK = 10_000
DATE_LINE = re.compile(rb"^Date: [^\r]*\r\n", re.MULTILINE)


def _recipients(start: int, stop: int) -> list[Recipient]:
    """Half with integer ids, half keyed by their address, over many domains."""
    return [
        Recipient(f"user{i}@d{i % 500}.example.net", {"n": i}, id=i if i % 2 else None)
        for i in range(start, stop)
    ]


def test_message_ids_of_100_000_recipients_are_distinct() -> None:
    campaign = Campaign(
        id="scale", sender=SENDER, from_="news@example.com", subject="Hi {{ n }}", text="{{ n }}"
    )
    seen: set[str] = set()
    total = 100_000
    for start in range(0, total, CHUNK):
        for r in ferrymail.render(campaign, _recipients(start, start + CHUNK)):
            assert isinstance(r, RenderedMessage), r
            seen.add(r.message_id)
    assert len(seen) == total


def _full_campaign() -> Campaign:
    return Campaign(
        id="threads",
        sender=SENDER,
        from_="{{ brand }} <news@example.com>",
        subject="{{ first_name }}, your {{ city }} picks",
        html=sample.HTML,
        text=sample.TEXT,
        headers={"Feedback-ID": "threads:news:ferry"},
        tracking=tracking(),
        unsubscribe=Unsubscribe(url=UNSUB, mailto="unsubscribe@example.com"),
    )


def _batch(n: int) -> list[Recipient]:
    batch = []
    for r in sample.recipients(n):
        vars = {**r.vars, "brand": "Ferry Outfitters" if r.id % 3 else "Fähre 🚢"}
        batch.append(Recipient(r.address, vars, id=r.id if r.id % 5 else None))
    batch[17] = Recipient("bad address", {}, id=17)  # errors come back in place too
    return batch


@pytest.mark.parametrize("threads", [None, 2, 3])
def test_parallel_render_is_byte_identical_to_one_thread(threads: int | None) -> None:
    campaign = _full_campaign()
    batch = _batch(2_000)
    one = ferrymail.render(campaign, batch, threads=1)
    many = ferrymail.render(campaign, batch, threads=threads)
    assert len(one) == len(many) == len(batch)
    for a, b, recipient in zip(one, many, batch, strict=True):
        assert type(a) is type(b)
        assert a.recipient is b.recipient is recipient
        if isinstance(a, RenderedMessage) and isinstance(b, RenderedMessage):
            assert (a.message_id, a.rcpt_to, a.envelope_from, a.smtputf8) == (
                b.message_id,
                b.rcpt_to,
                b.envelope_from,
                b.smtputf8,
            )
            # The Date field is the render's clock; everything else is identical.
            assert DATE_LINE.sub(b"", a.data, count=1) == DATE_LINE.sub(b"", b.data, count=1)
        else:
            assert a == b
    assert TRACK.encode() in one[0].data  # type: ignore[union-attr]


def test_fixed_clock_renders_are_byte_identical_across_thread_counts() -> None:
    campaign = _full_campaign()
    payload = msgspec.msgpack.encode(_batch(500))
    now_ms = 1_795_936_322_000
    outputs = {
        threads: _core.render(campaign._inner, payload, threads, now_ms) for threads in (0, 1, 2)
    }
    assert outputs[0] == outputs[1] == outputs[2]
    outcomes = msgspec.msgpack.decode(outputs[1], type=list[RenderOutcome])
    first = next(o for o in outcomes if o.data is not None)
    assert first.data is not None
    assert first.data.startswith(b"Date: Sun, 29 Nov 2026 07:12:02 +0000\r\n")
