"""Automation in the engine: a batch's replies fed to its site's shaping rules, and the
actions that fire applied (suspend, hold a campaign, bounce; lowered limits apply at the
site's next batch, through ActionsInForce)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable

from ..judge import Judge, Verdict
from ..shaping import Automation
from ..shaping.automation import matches
from ..shaping.in_force import ActionsInForce
from ..sites import Site
from ..spool import Leased
from ..wire import Outcome, OutcomeKind
from .recorder import Recorder

#: Suspends a site until a time, saying why (Engine._suspend).
Suspend = Callable[[Site, str, float], Awaitable[None]]


class Automator:
    """Counts the replies each rule matched (shaping.Automation) and applies what fires."""

    def __init__(
        self, actions: ActionsInForce, recorder: Recorder, judge: Judge, suspend: Suspend
    ) -> None:
        self._actions = actions
        self._recorder = recorder
        self._judge = judge
        self._suspend = suspend
        self._automation = Automation()

    async def observe(
        self, site: Site, campaign_id: str, outcomes: list[Outcome], source: str
    ) -> list[Outcome]:
        """Feeds a batch's 4xx and 5xx replies (from `source`, "" for the host's own
        address) to the site's rules, applies the actions that fire, and returns the
        outcomes whose reply no rule matched: those get the built-in reaction."""
        rules = site.shape.automation if site.shape is not None else ()
        if not rules:
            return outcomes
        now = time.time()
        unmatched, fired = [], []
        for o in outcomes:
            if (
                o.kind != OutcomeKind.REPLY
                or o.code is None
                or o.code < 400
                or not matches(rules, o.code, o.enhanced, o.text)
            ):
                unmatched.append(o)
            else:
                fired += self._automation.observe(
                    rules,
                    site=site.key,
                    source=source or None,
                    campaign=campaign_id,
                    code=o.code,
                    enhanced=o.enhanced,
                    text=o.text,
                    now=now,
                )
        if not fired:
            return unmatched
        # A receiver that blocks a source blocks it at all its sites (Gmail's MX sets
        # for gmail.com and for Workspace domains are one receiver): an action on a
        # source at a provider's site is stored under the provider entry's name.
        provider = site.shape.provider if site.shape is not None else None
        if provider is not None:
            fired = [
                dataclasses.replace(a, site=provider) if a.scope == "source" else a for a in fired
            ]
        # One per rule and target: a batch of 500 throttled replies fires it once.
        fired = list({action.key: action for action in fired}.values())
        for action in await self._actions.fire(fired, site.domains):
            if action.suspend and action.scope == "source" and action.source:
                pass  # the source is out of its pool here (ActionsInForce.blocked)
            elif action.suspend and action.scope != "campaign":
                await self._suspend(
                    site, f"shaping rule {action.rule}: {action.reply}", action.until
                )
            elif action.suspend:
                held = site.hold(action.campaign)
                await self._recorder.release([(r, action.until) for r in held])
            if action.bounce:
                await self.bounce(site.take_all(), action.rule, action.reply)
        return unmatched

    async def bounce(self, leased: list[Leased], rule: str, reply: str) -> None:
        """Bounces recipients for a rule (a receiver that says it will take nothing from
        us: holding the mail would only make it expire later)."""
        if not leased:
            return
        text = f"bounced by shaping rule {rule}, after the reply: {reply}"
        outcome = Outcome.without_reply("permanent", "engine", text, kind=OutcomeKind.LOCAL)
        judged = Verdict([], [], [])
        now = time.time()
        for r in leased:
            self._judge.one(judged, r.campaign, r, outcome, now)
        await self._recorder.record(judged)
