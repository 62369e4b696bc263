"""Each engine's share of a site's connection limit (shaping/fleet.py): the shares of the
live engines add up to the limit, a share that shrinks applies at once and one that grows
only after SETTLE, with heartbeats written to a real spool."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

import pytest
from ferrymail.shaping.fleet import LIVE_FOR, SETTLE, FleetConnections, share_of
from ferrymail.spool import SqliteSpool

T0 = 1_800_000_000.0


@pytest.mark.parametrize("limit", [1, 2, 3, 4, 7, 10, 20])
@pytest.mark.parametrize("engines", [1, 2, 3, 5, 8])
def test_the_shares_add_up_to_the_limit(limit: int, engines: int) -> None:
    live = [f"host:{n}:x" for n in range(engines)]
    for site in ("mx.a.test:25", "mx.b.test:25"):
        for rotation in (0, 1):
            shares = [share_of(site, limit, live, owner, rotation) for owner in live]
            assert sum(shares) == limit
            assert max(shares) - min(shares) <= 1
            # More engines than connections: `limit` of them have one, the others none.
            if engines > limit:
                assert sorted(shares) == [0] * (engines - limit) + [1] * limit


def test_the_connections_left_over_go_to_different_engines_by_site_and_in_turn() -> None:
    live = ["host:1:a", "host:2:b", "host:3:c"]
    extra = collections.Counter(
        owner
        for site in range(30)
        for rotation in range(4)
        for owner in live
        if share_of(f"mx{site}.test:25", 4, live, owner, rotation) == 2
    )
    assert set(extra) == set(live)


class Fleet:
    """Engines heartbeating into one SQLite spool whose clock the test moves."""

    def __init__(self, path: Path) -> None:
        self.now = T0
        self.spool = SqliteSpool(path, clock=lambda: self.now)

    def engine(self, owner: str) -> FleetConnections:
        async def heartbeat(owner: str, node: str, live_for: float) -> tuple[float, list[str]]:
            return self.spool.fleet_heartbeat(owner, node, live_for)

        return FleetConnections(owner, owner.partition(":")[0], heartbeat)

    def beat(self, *engines: FleetConnections, after: float = 0.0) -> None:
        self.now += after
        for engine in engines:
            asyncio.run(engine.beat(self.now))


def test_shares_shrink_at_once_and_grow_after_settling(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path / "spool.db")
    one, two = fleet.engine("host:1:a"), fleet.engine("host:2:b")
    assert one.share("s", 4, fleet.now) == 0  # no heartbeat yet: no share
    fleet.beat(one)
    assert one.share("s", 4, fleet.now) == 4  # alone at its start: the whole limit
    fleet.beat(two, after=0.5)
    # The newcomer waits for the others to see it; they shrink at their next heartbeat.
    assert two.share("s", 4, fleet.now) == 0
    assert one.share("s", 4, fleet.now) == 4
    fleet.beat(one, after=1.0)
    assert one.share("s", 4, fleet.now) == 2
    assert two.share("s", 4, fleet.now) == 0
    fleet.beat(one, two, after=SETTLE)
    assert one.share("s", 4, fleet.now) + two.share("s", 4, fleet.now) == 4
    assert two.share("s", 4, fleet.now) == 2
    # A site first seen now, after the newcomer settled: its share at once.
    assert two.share("t", 3, fleet.now) + one.share("t", 3, fleet.now) == 3
    # Engine two stops beating (killed): one counts it out after LIVE_FOR, and takes the
    # whole limit SETTLE after that.
    seen = fleet.now
    while one.live == 2:
        fleet.beat(one, after=1.0)
        assert one.share("s", 4, fleet.now) == 2
    assert fleet.now - seen >= LIVE_FOR
    fleet.beat(one, after=SETTLE - 0.5)
    assert one.share("s", 4, fleet.now) == 2
    fleet.beat(one, after=1.0)
    assert one.share("s", 4, fleet.now) == 4


def test_an_engine_that_stopped_beating_joins_again(tmp_path: Path) -> None:
    """An engine whose heartbeats stopped longer than LIVE_FOR (the others counted it out
    and may have grown their shares) starts again from none, as a new engine does."""
    fleet = Fleet(tmp_path / "spool.db")
    one, two = fleet.engine("host:1:a"), fleet.engine("host:2:b")
    fleet.beat(one, two)
    fleet.beat(one, two, after=SETTLE)
    assert two.share("s", 4, fleet.now) == 2
    for _ in range(int(LIVE_FOR) + 2):
        fleet.beat(one, after=1.0)
    fleet.beat(two)
    assert two.share("s", 4, fleet.now) == 0
    fleet.beat(one, two, after=SETTLE)
    assert two.share("s", 4, fleet.now) == 2
