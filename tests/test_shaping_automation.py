"""Automation, the pure part: replies counted against rules within their windows, actions with
their end times, and the gradual restore of limits after an action ends."""

from __future__ import annotations

import textwrap

import pytest
from ferrymail.shaping import Automation, Rate, active, loads, restored_rate, subject
from ferrymail.shaping.model import AutomationRule

RULES = textwrap.dedent("""\
    [provider.p]
    mx_suffix = ".p.test"

    [[provider.p.automation]]
    name = "throttled"
    regex = '^421 4\\.7\\.28 '
    trigger = "3/h"
    scope = "source"
    set = { max_message_rate = "10/min" }
    duration = "1h"
    restore = "40m"

    [[provider.p.automation]]
    name = "blocked"
    regex = '^550 5\\.7\\.1 .*blocked'
    trigger = "immediate"
    suspend = true
    duration = "4h"

    [[provider.p.automation]]
    name = "campaign-policy"
    regex = '^554 5\\.7\\.9 '
    trigger = "2/10m"
    scope = "campaign"
    bounce = true
    duration = "30m"
    """)
THROTTLED = (421, "4.7.28", "[192.0.2.1] Our system has detected an unusual rate")
T0 = 1_800_000_000.0


def rules() -> tuple[AutomationRule, ...]:
    return loads(RULES).resolve("d.test", "site", ["mx.p.test"]).limits.automation


def feed(automation: Automation, reply: tuple[int, str, str], now: float, **where: str):
    code, enhanced, text = reply
    return automation.observe(
        rules(),
        site=where.get("site", "site-a"),
        source=where.get("source", "ip1"),
        campaign=where.get("campaign", "c1"),
        code=code,
        enhanced=enhanced,
        text=text,
        now=now,
    )


def test_the_subject_is_code_enhanced_code_and_text() -> None:
    got = subject(421, "4.7.28", "Our system  has\r\ndetected")
    assert got == "421 4.7.28 Our system has detected"
    assert subject(421, None, "Too many connections") == "421 Too many connections"


def test_a_threshold_fires_on_the_third_match_within_the_hour() -> None:
    automation = Automation()
    assert feed(automation, THROTTLED, T0) == []
    assert feed(automation, THROTTLED, T0 + 1200) == []
    fired = feed(automation, THROTTLED, T0 + 3000)
    assert len(fired) == 1
    action = fired[0]
    assert action.rule == "throttled"
    assert (action.scope, action.site, action.source, action.campaign) == (
        "source",
        "site-a",
        "ip1",
        None,
    )
    assert action.set == (("max_message_rate", Rate(10, 60)),)
    assert action.started == T0 + 3000
    assert action.until == T0 + 3000 + 3600
    assert action.reply.startswith("421 4.7.28 [192.0.2.1] Our system")
    # The count starts again: the next match alone fires nothing.
    assert feed(automation, THROTTLED, T0 + 3001) == []


def test_a_threshold_does_not_fire_when_the_matches_are_spread_over_more_than_the_window() -> None:
    automation = Automation()
    times = [T0, T0 + 1900, T0 + 3700, T0 + 5700]  # never three within 3600 s
    assert [feed(automation, THROTTLED, t) for t in times] == [[], [], [], []]
    # A third within the hour of the last two does.
    assert len(feed(automation, THROTTLED, T0 + 6000)) == 1


def test_matches_are_counted_per_scope() -> None:
    automation = Automation()
    for n in range(2):
        assert feed(automation, THROTTLED, T0 + n, source="ip1") == []
        assert feed(automation, THROTTLED, T0 + n, source="ip2") == []
        assert feed(automation, THROTTLED, T0 + n, site="site-b") == []
    assert [a.source for a in feed(automation, THROTTLED, T0 + 2, source="ip2")] == ["ip2"]


def test_immediate_fires_at_once_on_the_site() -> None:
    automation = Automation()
    fired = feed(automation, (550, "5.7.1", "Your IP is BLOCKED for spam"), T0)
    assert [(a.rule, a.suspend, a.scope, a.source, a.until) for a in fired] == [
        ("blocked", True, "site", None, T0 + 4 * 3600)
    ]
    assert len(feed(automation, (550, "5.7.1", "blocked again"), T0 + 5)) == 1


def test_a_campaign_rule_acts_on_the_campaign_at_the_site() -> None:
    automation = Automation()
    reply = (554, "5.7.9", "Message not accepted for policy reasons")
    assert feed(automation, reply, T0, campaign="c1") == []
    assert feed(automation, reply, T0 + 1, campaign="c2") == []
    fired = feed(automation, reply, T0 + 2, campaign="c1")
    assert [(a.campaign, a.bounce, a.until) for a in fired] == [("c1", True, T0 + 2 + 1800)]


def test_replies_that_match_no_rule_are_ignored() -> None:
    automation = Automation()
    for n, reply in enumerate(
        [
            (421, "4.7.0", "Try again later"),  # another enhanced code
            (250, "2.0.0", "OK 421 4.7.28 "),  # the words elsewhere in a reply
            (550, "5.1.1", "user unknown"),
        ]
    ):
        assert feed(automation, reply, T0 + n) == []
    assert len(automation) == 0


def test_active_keeps_the_latest_ending_action_per_rule_and_target() -> None:
    automation = Automation()
    first = feed(automation, (550, "5.7.1", "blocked"), T0)[0]
    second = feed(automation, (550, "5.7.1", "blocked"), T0 + 600)[0]
    assert active([first, second], T0 + 700) == [second]
    assert active([first, second], second.until) == []


@pytest.mark.parametrize(
    ("minutes_after_end", "expected"),
    [
        (-5, Rate(10, 60)),  # still in force: the action's own value
        (0, Rate(10, 60)),  # ended: the first step is the floor
        (9.9, Rate(10, 60)),
        (10, Rate(32.5, 60)),  # a quarter of the way from 10 to 100 per minute
        (20, Rate(55, 60)),
        (35, Rate(77.5, 60)),
        (40, Rate(100, 60)),  # the restore period is over: the configured rate
        (500, Rate(100, 60)),
    ],
)
def test_a_lowered_rate_comes_back_up_in_steps(minutes_after_end: float, expected: Rate) -> None:
    ended = T0 + 3600
    now = ended + minutes_after_end * 60
    if minutes_after_end < 0:
        # While the action is in force the engine uses its value; the ramp starts at it.
        now = ended
    got = restored_rate(Rate(100, 60), Rate(10, 60), ended=ended, restore=2400, now=now)
    assert got == expected


def test_after_a_suspension_the_rate_starts_from_a_quarter() -> None:
    configured = Rate(100, 1)
    at = [restored_rate(configured, None, ended=T0, restore=400, now=T0 + s) for s in (0, 100, 399)]
    assert at == [Rate(25, 1), Rate(43.75, 1), Rate(81.25, 1)]
    assert restored_rate(configured, None, ended=T0, restore=400, now=T0 + 400) == configured


def test_an_unlimited_rate_is_approached_by_doubling() -> None:
    floor = Rate(10, 60)
    steps = [restored_rate(None, floor, ended=T0, restore=400, now=T0 + s) for s in (0, 100, 300)]
    assert steps == [Rate(10, 60), Rate(20, 60), Rate(80, 60)]
    assert restored_rate(None, floor, ended=T0, restore=400, now=T0 + 400) is None


def test_a_lowered_connection_limit_comes_back_in_steps() -> None:
    from ferrymail.shaping import restored_limit

    got = [
        restored_limit(20, 2, ended=T0, restore=400, now=T0 + s) for s in (0, 100, 200, 300, 400)
    ]
    assert got == [2, 6, 11, 15, 20]
    # After a suspension: from a quarter of the configured limit.
    assert restored_limit(20, None, ended=T0, restore=400, now=T0) == 5
    assert restored_limit(1, None, ended=T0, restore=400, now=T0) == 1
