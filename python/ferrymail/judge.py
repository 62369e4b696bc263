"""What an outcome means for a recipient: delivered, bounced, deferred, expired or failed.

Rust reports what happened; this module decides what it means (DESIGN.md): 2xx →
delivered; 5xx → bounced; 4xx, connection and DNS failures → deferred until the retry
policy gives up → expired; a message that could not be rendered → failed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import msgspec

from .bounce import HARD_CATEGORIES, BounceClassifier
from .events import Event
from .retry import RetryPolicy
from .spool import Leased, Update
from .wire import Outcome, OutcomeKind

# Replies that mean "you are sending too fast" rather than "this recipient, later": the
# whole site waits instead of each recipient failing in turn.
# ("Try again later" alone is not one: greylisting says it too, about one recipient.)
_RATE_LIMITED = re.compile(
    r"rate.?limit|too many (?:connections|messages|recipients|concurrent)|throttl|"
    r"exceeded the (?:rate|limit)|slow down|sending rate",
    re.IGNORECASE,
)
# A receiver refusing our own HELO/EHLO name, whatever command it answers (Postfix's
# reject_non_fqdn_helo_hostname and reject_invalid_helo_hostname answer at RCPT:
# "504 5.5.2 <vm>: Helo command rejected: need fully-qualified hostname"). That is the
# sender's problem: the recipients are fine, and bouncing them (and suppressing their
# addresses) would punish them for our configuration.
_HELO = re.compile(r"\b(?:helo|ehlo)\b", re.IGNORECASE)
_HELO_REFUSAL = re.compile(
    r"reject|refus|not allowed|invalid|denied|bad|bogus|forged|syntax|fully.qualified|"
    r"fqdn|hostname|host name",
    re.IGNORECASE,
)
# How far from the word HELO/EHLO the refusal may be ("Invalid HELO name", "Helo
# command rejected: need fully-qualified hostname").
_HELO_CONTEXT = 50
# Stages at which a failure says the host, not the recipient, is the problem.
_SESSION_STAGES = frozenset({"connect", "banner", "ehlo", "starttls"})
# Failures of the connection itself (no reply decided them).
_CONNECTION_KINDS = frozenset(
    {
        OutcomeKind.REFUSED,
        OutcomeKind.UNREACHABLE,
        OutcomeKind.TIMEOUT,
        OutcomeKind.LOST,
        OutcomeKind.TLS,
        OutcomeKind.PROTOCOL,
    }
)


class Verdict(msgspec.Struct):
    """The spool updates, the events and the suppressions of some outcomes."""

    updates: list[Update]
    events: list[Event]
    suppress: list[tuple[str, str]]  # (address, reason) to add to the suppression list


class Judge:
    """Applies the retry policy and bounce classification to outcomes."""

    def __init__(
        self,
        retry: RetryPolicy,
        classifier: BounceClassifier,
        suppress_hard_bounces: bool,
        listened: Callable[[], bool] = lambda: True,
        node: str | None = None,
    ) -> None:
        self.retry = retry
        self.node = node  # the engine's name in a fleet, carried by every event
        self.classifier = classifier
        self.suppress_hard_bounces = suppress_hard_bounces
        # Events are built only when someone takes them (a log or a subscriber).
        self.listened = listened

    def batch(
        self,
        campaign: str,
        leased: Sequence[Leased],
        outcomes: Sequence[Outcome],
        now: float,
        *,
        retry: RetryPolicy | None = None,
        classifier: BounceClassifier | None = None,
    ) -> Verdict:
        """The verdict on a batch's outcomes (or on some of them, as they come); `retry`
        and `classifier` replace the judge's own for this batch (its site's shaping)."""
        verdict = Verdict([], [], [])
        for recipient, outcome in zip(leased, outcomes, strict=True):
            self.one(verdict, campaign, recipient, outcome, now, retry, classifier)
        return verdict

    @staticmethod
    def suspension(outcomes: Sequence[Outcome]) -> str | None:
        """Why a batch's site should wait (every MX failed, a 421, a rate limit), or None."""
        if outcomes and all(
            o.status == "transient" and o.kind in _CONNECTION_KINDS and o.stage in _SESSION_STAGES
            for o in outcomes
        ):
            return f"every MX host failed: {outcomes[-1].text}"
        limited = next((o for o in outcomes if _is_site_deferral(o) or rejects_our_helo(o)), None)
        if limited is not None:
            return f"{limited.code} {limited.enhanced or ''} {limited.text}"
        return None

    def one(
        self,
        verdict: Verdict,
        campaign: str,
        r: Leased,
        o: Outcome,
        now: float,
        retry: RetryPolicy | None = None,
        classifier: BounceClassifier | None = None,
    ) -> None:
        """Adds one recipient's update and event to `verdict`."""
        retry = retry or self.retry
        classifier = classifier or self.classifier
        attempt = r.attempts + 1
        category: str | None = None
        next_attempt: float | None = None
        if o.status == "delivered":
            state = "delivered"
        elif o.kind == OutcomeKind.RENDER:
            state = "failed"
        elif o.status == "permanent" and not rejects_our_helo(o):
            state = "bounced"
            category = classifier.classify(o.code, o.enhanced, o.text, o.kind)
            if self.suppress_hard_bounces and category in HARD_CATEGORIES:
                verdict.suppress.append((r.address, f"{category}: {o.code} {o.text}"))
        else:
            category = classifier.classify(o.code, o.enhanced, o.text, o.kind)
            next_attempt = retry.next_attempt(attempt, r.submitted_at, now, domain=r.domain or None)
            state = "deferred" if next_attempt is not None else "expired"
            if state == "expired":
                category = "message-expired"
        verdict.updates.append(
            Update(
                r.id,
                state,
                attempt,
                next_attempt,
                o.code,
                o.enhanced,
                o.text,
                category,
                o.mx,
                o.address,
            )
        )
        if not self.listened():
            return
        verdict.events.append(
            Event(
                state,
                campaign,
                r.key,
                r.address,
                r.domain,
                o.mx,
                o.address,
                attempt,
                o.code,
                o.enhanced,
                o.text,
                category,
                now,
                now - r.submitted_at,
                o.source,
                self.node,
            )
        )


def rejects_our_helo(o: Outcome) -> bool:
    """A reply refusing the name we gave in HELO/EHLO: deferred and the site suspended,
    never a bounce (see _HELO)."""
    if o.kind != OutcomeKind.REPLY or o.code is None or o.code < 500:
        return False
    for helo in _HELO.finditer(o.text):
        nearby = o.text[max(0, helo.start() - _HELO_CONTEXT) : helo.end() + _HELO_CONTEXT]
        if _HELO_REFUSAL.search(nearby):
            return True
    return False


def _is_site_deferral(o: Outcome) -> bool:
    """A 421 (the server closes on us) or a rate-limit reply."""
    if o.status != "transient" or o.kind != OutcomeKind.REPLY or o.code is None:
        return False
    return o.code == 421 or bool(_RATE_LIMITED.search(o.text))
