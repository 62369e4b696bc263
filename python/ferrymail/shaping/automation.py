"""Automation, the pure part: replies matched against rules become actions with an end
time, and limits come back up gradually after an action ends. No I/O, no engine: the
caller feeds replies and the time, and keeps (and persists) the actions.

What a rule's regex sees (`subject`): "CODE ENHANCED TEXT", e.g.
"421 4.7.28 Our system has detected an unusual rate of unsolicited mail …", or
"CODE TEXT" when the reply has no enhanced status code; the lines of a multi-line reply
joined by single spaces, without their repeated "421-4.7.28 " prefixes (the transport
already strips those). It is searched, not matched whole, case-insensitively.

Counting: matches are counted per rule and per the rule's scope (the site; the site
from one source; one campaign at the site), in a sliding window: a rule `3/h` fires on
a match that is the third within the last hour for that scope, and its count starts
again from zero, so the next firing needs three more. `immediate` fires on every match.

Restoring (PowerMTA's backoff mode returns to normal in one go after its time; this
steps back up): when a `set` action ends, the limit climbs from the action's value to
the configured one in RESTORE_STEPS equal steps over the rule's restore period; after
a suspension, from 1/RESTORE_STEPS of the configured value. An unlimited configured
rate is approached by doubling the floor at each step, and is unlimited again at the
end of the period.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Iterable, Sequence

from .model import AutomationRule
from .units import Rate

#: Steps of the restore ramp: a quarter of the way back up each time.
RESTORE_STEPS = 4
#: Scopes whose last match is older than this are forgotten by `prune`.
_FORGET_AFTER = 86400.0


def subject(code: int | None, enhanced: str | None, text: str) -> str:
    """The string rules' regexes are searched in (see the module's docstring)."""
    parts = [str(code) if code is not None else "", enhanced or "", " ".join(text.split())]
    return " ".join(p for p in parts if p)


def matches(
    rules: Sequence[AutomationRule], code: int | None, enhanced: str | None, text: str
) -> bool:
    """Whether any of `rules` matches the reply (whether or not its threshold is met)."""
    reply = subject(code, enhanced, text)
    return any(rule.pattern is not None and rule.pattern.search(reply) for rule in rules)


@dataclasses.dataclass(frozen=True, slots=True)
class Action:
    """What a fired rule asks for, from `started` until `until` (epoch seconds): on
    `site`, and on `source` (scope "source") or `campaign` (scope "campaign") there.
    `suspend`, `bounce`, and `set` (lower limits by name) as the rule says; `reply` is
    the subject that fired it (what `ferrymail status` shows); `restore` the seconds
    over which limits come back up after `until`."""

    rule: str
    scope: str
    site: str
    source: str | None
    campaign: str | None
    started: float
    until: float
    reply: str
    suspend: bool = False
    bounce: bool = False
    set: tuple[tuple[str, object], ...] = ()
    restore: float = 0.0

    @property
    def key(self) -> tuple[str, str, str, str | None, str | None]:
        """The rule and what it acts on: a rule firing again on the same thing extends
        its action rather than adding one."""
        return (self.rule, self.scope, self.site, self.source, self.campaign)


class Automation:
    """Counts rule matches within their windows and says which actions to take.

    `observe` is fed every reply with the rules that apply to its site (Limits.automation)
    and returns the actions that fire now; state is only the recent match times, at most
    `threshold` per rule and scope. Rules are known by id, so the counts survive a
    reload of an unchanged rule."""

    def __init__(self) -> None:
        self._matches: dict[tuple[str, str, str | None, str | None], collections.deque[float]] = {}

    def observe(
        self,
        rules: Sequence[AutomationRule],
        *,
        site: str,
        source: str | None,
        campaign: str | None,
        code: int | None,
        enhanced: str | None,
        text: str,
        now: float,
    ) -> list[Action]:
        if not rules:
            return []
        reply = subject(code, enhanced, text)
        fired: list[Action] = []
        for rule in rules:
            assert rule.pattern is not None
            if rule.pattern.search(reply) is None:
                continue
            on_source = source if rule.scope == "source" else None
            on_campaign = campaign if rule.scope == "campaign" else None
            if not rule.immediate:
                key = (rule.id, site, on_source, on_campaign)
                times = self._matches.get(key)
                if times is None:
                    times = self._matches[key] = collections.deque(maxlen=rule.threshold)
                times.append(now)
                if len(times) < rule.threshold or now - times[0] > rule.window:
                    continue
                times.clear()
            fired.append(
                Action(
                    rule=rule.name,
                    scope=rule.scope,
                    site=site,
                    source=on_source,
                    campaign=on_campaign,
                    started=now,
                    until=now + rule.duration,
                    reply=reply,
                    suspend=rule.suspend,
                    bounce=rule.bounce,
                    set=tuple(rule.set.items()),
                    restore=rule.restore,
                )
            )
        return fired

    def prune(self, now: float) -> None:
        """Forgets scopes not matched for a day (sites come and go)."""
        stale = [k for k, t in self._matches.items() if not t or now - t[-1] > _FORGET_AFTER]
        for key in stale:
            del self._matches[key]

    def __len__(self) -> int:
        return len(self._matches)


def restored_rate(
    configured: Rate | None,
    floor: Rate | None,
    *,
    ended: float,
    restore: float,
    now: float,
    steps: int = RESTORE_STEPS,
) -> Rate | None:
    """The rate in force at `now` after an action that held it at `floor` ended at
    `ended` (a suspension: `floor` None, which starts from 1/steps of `configured`).
    Steps up every `restore / steps` seconds: at `ended` it is the floor, one step later
    a quarter (with 4 steps) of the way back up, and from `ended + restore` on the
    configured rate. None: unlimited."""
    if now >= ended + restore or restore <= 0:
        return configured
    step = max(0, math.floor((now - ended) / restore * steps)) if now > ended else 0
    if configured is None:
        base = floor if floor is not None else None
        if base is None:
            return None  # a suspension of an unlimited site: nothing to ramp from
        return base.scaled(2.0**step)
    start = floor if floor is not None else configured.scaled(1 / steps)
    start_per_period = start.per_second * configured.period
    if start_per_period >= configured.count:
        return configured
    count = start_per_period + (configured.count - start_per_period) * step / steps
    return Rate(count, configured.period)


def restored_limit(
    configured: int,
    floor: int | None,
    *,
    ended: float,
    restore: float,
    now: float,
    steps: int = RESTORE_STEPS,
) -> int:
    """`restored_rate` for whole-number limits (connection_limit,
    max_deliveries_per_connection): the same steps, rounded down, never under 1."""
    if now >= ended + restore or restore <= 0:
        return configured
    step = max(0, math.floor((now - ended) / restore * steps)) if now > ended else 0
    start = floor if floor is not None else max(1, configured // steps)
    if start >= configured:
        return configured
    return max(1, start + (configured - start) * step // steps)


def active(actions: Iterable[Action], now: float) -> list[Action]:
    """The actions in force at `now`: the latest-ending one per key."""
    latest: dict[tuple[str, str, str, str | None, str | None], Action] = {}
    for action in actions:
        if action.started <= now < action.until:
            known = latest.get(action.key)
            if known is None or action.until > known.until:
                latest[action.key] = action
    return list(latest.values())
