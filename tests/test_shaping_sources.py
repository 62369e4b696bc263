"""Egress sources, pools and warm-up: a source's daily allowance per provider, and the
deterministic weighted choice of a source from a pool."""

from __future__ import annotations

import datetime
import textwrap
from collections import Counter

from ferrymail.shaping import HOST_SOURCE, choose_source, loads

FILE = textwrap.dedent("""\
    [source.ip1]
    address = "127.0.0.21"
    ehlo = "mta1.example.com"
    [source.ip2]
    address = "127.0.0.22"
    ehlo = "mta2.example.com"
    warmup = { start = 2026-12-01, per_day = [50, 100, 500, 1000] }
    [source.ip3]
    address = "::1"
    warmup = { start = 2026-12-01, per_day = [50], after = "unlimited" }

    [pool.default]
    sources = { ip1 = 3, ip2 = 1 }
    [pool.three]
    sources = { ip1 = 2, ip2 = 1, ip3 = 1 }
    """)
DAY0 = datetime.date(2026, 12, 1)


def day(n: int) -> datetime.date:
    return DAY0 + datetime.timedelta(days=n)


def test_warmup_allowance_per_day() -> None:
    shaping = loads(FILE)
    ip2 = shaping.sources["ip2"]
    allowances = [ip2.allowance(day(n), 0) for n in range(-1, 7)]
    assert allowances == [0, 50, 100, 500, 1000, 2000, 4000, 8000]
    assert ip2.allowance(day(2), 499) == 1
    assert ip2.allowance(day(2), 500) == 0
    assert ip2.allowance(day(2), 600) == 0
    ip3 = shaping.sources["ip3"]
    assert [ip3.allowance(day(n), 10) for n in range(3)] == [40, None, None]
    assert shaping.sources["ip1"].allowance(day(0), 10**9) is None  # no warm-up: no cap
    assert shaping.sources["ip1"].address == "127.0.0.21"
    assert shaping.sources["ip3"].address == "::1"


def test_a_3_to_1_pool_splits_400_choices_300_to_100() -> None:
    shaping = loads(FILE)
    pool = shaping.pool("default")
    picks = Counter(
        choose_source(pool, shaping.sources, n, day=day(10), sent_today={}).name  # type: ignore[union-attr]
        for n in range(400)
    )
    assert picks == {"ip1": 300, "ip2": 100}
    # Spread, not bunched: every run of 4 holds 3 of ip1 and 1 of ip2.
    assert pool.schedule == ("ip1", "ip1", "ip2", "ip1")


def test_a_blocked_source_is_skipped_and_the_rest_carry_the_traffic() -> None:
    shaping = loads(FILE)
    pool = shaping.pool("three")
    picks = Counter(
        choose_source(pool, shaping.sources, n, day=day(10), sent_today={}, blocked={"ip1"}).name  # type: ignore[union-attr]
        for n in range(400)
    )
    assert picks["ip1"] == 0
    assert picks["ip2"] + picks["ip3"] == 400


def test_an_exhausted_source_is_skipped() -> None:
    shaping = loads(FILE)
    pool = shaping.pool("default")
    sent = {"ip2": 50}  # day 0's allowance used up
    picks = {
        choose_source(pool, shaping.sources, n, day=day(0), sent_today=sent).name  # type: ignore[union-attr]
        for n in range(8)
    }
    assert picks == {"ip1"}
    # The next day it takes its share again.
    tomorrow = [
        choose_source(pool, shaping.sources, n, day=day(1), sent_today={}).name  # type: ignore[union-attr]
        for n in range(4)
    ]
    assert tomorrow.count("ip2") == 1


def test_no_source_left_means_the_message_waits() -> None:
    shaping = loads(FILE)
    pool = shaping.pool("default")
    sources = shaping.sources
    assert (
        choose_source(pool, sources, 0, day=day(0), sent_today={"ip2": 50}, blocked={"ip1"}) is None
    )
    # Before its warm-up starts a source sends nothing.
    assert choose_source(pool, sources, 2, day=day(-1), sent_today={}, blocked={"ip1"}) is None


def test_without_pools_the_default_pool_is_the_host_address() -> None:
    shaping = loads("[default]\n")
    source = choose_source(shaping.pool(), shaping.sources, 0, day=day(0), sent_today={})
    assert source is not None and source.name == HOST_SOURCE and source.address is None


def test_pool_weights_are_reduced_and_checked() -> None:
    shaping = loads(FILE.replace("ip1 = 3, ip2 = 1", "ip1 = 300, ip2 = 100"))
    assert shaping.pool("default").weights == (("ip1", 3), ("ip2", 1))
