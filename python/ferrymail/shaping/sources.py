"""Egress sources, pools and warm-up: which local address a message leaves from, and how much
a new address may send per provider per day.

Warm-up: `Warmup.per_day[n]` is the most a source may send to one provider (or, for a
site no provider entry matches, to that site) on day n of its life, day 0 being
`start`. After the list ends the cap doubles every day ("double", the default: the
schedule the issue and the big receivers' senders' guides describe as "… doubling"),
or stops applying ("unlimited"). Before `start` a source sends nothing: it is not warm
yet, and a date in the future is a plan, not a mistake. A source without a warm-up
schedule has no daily cap.

Choosing from a pool is deterministic given a counter (the caller's count of choices
so far), so a split can be checked exactly: the pool's weights are laid out once in a
smooth weighted round-robin order (nginx's: 3:1 gives a, a, b, a), and choice n takes
position n modulo the total weight. When that source cannot take the message (it is
blocked for the provider, or its day's allowance is used up), the next position that
can is taken; when none can, the answer is None: the message waits (never bounces).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Container, Mapping

import msgspec

#: The source a pool falls back to when the file defines none: the host's own address
#: (the operating system picks it), with the engine's EHLO name.
HOST_SOURCE = "host"
DEFAULT_POOL = "default"
#: The schedule after its list: doubling every day, or no cap at all.
AFTER = ("double", "unlimited")
#: More positions than this in one pool's round (the sum of its weights, after dividing
#: by their common divisor) is refused: weights are proportions, not counts.
MAX_ROUND = 10_000


class Warmup(msgspec.Struct, frozen=True):
    """A source's warm-up schedule: `per_day[n]` messages per provider on day n from `start`."""

    start: datetime.date
    per_day: tuple[int, ...]
    after: str = "double"

    def cap(self, day: datetime.date) -> int | None:
        """The most the source may send to one provider on `day`; None: no cap."""
        n = (day - self.start).days
        if n < 0:
            return 0
        if n < len(self.per_day):
            return self.per_day[n]
        if self.after == "unlimited":
            return None
        doublings = n - len(self.per_day) + 1
        if doublings > 40:  # past any real volume: 2**40 times the last day's cap
            return None
        return self.per_day[-1] << doublings


class Source(msgspec.Struct, frozen=True):
    """One egress address. `address` None: the host's own (the operating system picks).
    `ehlo`: the EHLO name, which should match the address's PTR; None: the engine's."""

    name: str
    address: str | None = None
    ehlo: str | None = None
    warmup: Warmup | None = None

    def allowance(self, day: datetime.date, sent_today: int) -> int | None:
        """How many more messages it may send to one provider on `day`, having sent
        `sent_today` to it already; None: no cap."""
        cap = self.warmup.cap(day) if self.warmup is not None else None
        return None if cap is None else max(0, cap - sent_today)


class Pool(msgspec.Struct, frozen=True):
    """Sources with weights; `schedule` is one round of choices in smooth weighted
    round-robin order (see the module's docstring)."""

    name: str
    weights: tuple[tuple[str, int], ...]
    schedule: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.schedule:
            msgspec.structs.force_setattr(self, "schedule", _smooth_round(self.weights))

    def choose(self, counter: int, can_take: Callable[[str], bool]) -> str | None:
        """The source for choice number `counter`: its scheduled one, or the next one in
        the round that `can_take`; None when none can."""
        size = len(self.schedule)
        start = counter % size
        tried: set[str] = set()
        for step in range(size):
            name = self.schedule[(start + step) % size]
            if name in tried:
                continue
            if can_take(name):
                return name
            tried.add(name)
            if len(tried) == len(self.weights):
                break
        return None


def choose_source(
    pool: Pool,
    sources: Mapping[str, Source],
    counter: int,
    *,
    day: datetime.date,
    sent_today: Mapping[str, int],
    blocked: Container[str] = (),
) -> Source | None:
    """The source a message to one provider leaves from: `pool`'s choice number
    `counter` among the sources not `blocked` for that provider (an automation rule's
    suspension) whose warm-up allowance for `day` is not used up (`sent_today`: messages
    each source sent to that provider today). None: no source can take it now, the
    message waits."""

    def can_take(name: str) -> bool:
        if name in blocked:
            return False
        left = sources[name].allowance(day, sent_today.get(name, 0))
        return left is None or left > 0

    name = pool.choose(counter, can_take)
    return None if name is None else sources[name]


def _smooth_round(weights: tuple[tuple[str, int], ...]) -> tuple[str, ...]:
    """nginx's smooth weighted round-robin over one round: each step every source gains
    its weight, the richest is chosen and pays the total. Spreads a 3:1 pool as a, a, b,
    a rather than a, a, a, b."""
    total = sum(w for _, w in weights)
    current = dict.fromkeys((name for name, _ in weights), 0)
    order: list[str] = []
    for _ in range(total):
        for name, weight in weights:
            current[name] += weight
        chosen = max(weights, key=lambda nw: current[nw[0]])[0]
        current[chosen] -= total
        order.append(chosen)
    return tuple(order)
