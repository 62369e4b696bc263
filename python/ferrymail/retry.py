"""RetryPolicy: when a deferred recipient is tried again, and when it expires instead."""

from __future__ import annotations

import math
import random

import msgspec

# Defaults of RetryPolicy, with where they come from.
# 5 minutes: greylisting (RFC 6647) refuses the first attempt of a new sender and accepts
# retries after a delay that is usually 5 minutes (postgrey's and sqlgrey's default), so
# a first retry at 5 minutes delivers greylisted mail about 25 minutes sooner than RFC 5321
# §4.5.4.1's "at least 30 minutes" would. Postfix's minimal_backoff_time is also 300 s.
FIRST_RETRY = 300.0
# Doubling: a receiver that is down for longer gets asked less and less often.
MULTIPLIER = 2.0
# 1 hour, near Postfix's maximal_backoff_time (4000 s) and above RFC 5321 §4.5.4.1's
# 30 minutes: once the interval reaches it, retries are hourly until the recipient expires.
MAX_INTERVAL = 3600.0
# ±20 %: a site that deferred many recipients at once (a 421 for the whole domain) does not
# get all of them back in the same second.
JITTER = 0.2
# 5 days: Postfix's maximal_queue_lifetime, within RFC 5321 §4.5.4.1's "at least 4-5 days".
MAX_AGE = 5 * 86400.0

_POSITIVE = ("first_retry", "multiplier", "max_interval", "max_age")


class RetryPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The retry schedule of deferred recipients. Times are in seconds.

    After attempt n fails (n = 1 after the first), the next comes `first_retry *
    multiplier ** (n - 1)` later, capped at `max_interval`, then moved by up to ± `jitter`
    of itself. With the defaults: 5, 10, 20, 40, 60, 60 … minutes. A recipient expires
    when its next attempt would fall more than `max_age` after it was submitted; before
    that it gets one last attempt exactly at that deadline, unless its latest attempt was
    within `first_retry` of it (see `next_attempt`).

    `overrides` maps a domain to the policy for it and its subdomains ("example.com"
    covers example.com and mx.eu.example.com); the most specific name wins. An override is
    a whole policy: fields it does not set take the defaults, not this policy's values
    (`msgspec.structs.replace(policy, overrides={}, first_retry=60.0)` copies them). It
    cannot have overrides of its own. Names compare case-insensitively, without a trailing
    dot; use the same form (A-label or U-label) for international names as the engine's.

    Each field is checked when the policy is made: a bad one raises ValueError naming it
    (msgspec.ValidationError when decoded from config, where unknown keys are errors too).
    """

    first_retry: float = FIRST_RETRY
    multiplier: float = MULTIPLIER
    max_interval: float = MAX_INTERVAL
    jitter: float = JITTER
    max_age: float = MAX_AGE
    overrides: dict[str, RetryPolicy] = {}

    def __post_init__(self) -> None:
        for name in (*_POSITIVE, "jitter"):
            value = getattr(self, name)
            if type(value) not in (int, float) or not math.isfinite(value):
                raise ValueError(f"RetryPolicy.{name} must be a finite number, not {value!r}")
        for name in _POSITIVE:
            if getattr(self, name) <= 0:
                raise ValueError(
                    f"RetryPolicy.{name} must be positive, not {getattr(self, name)!r}"
                )
        if not 0 <= self.jitter < 1:
            raise ValueError(f"RetryPolicy.jitter must be in [0, 1), not {self.jitter!r}")
        if self.multiplier < 1:
            raise ValueError(f"RetryPolicy.multiplier must be at least 1, not {self.multiplier!r}")
        if self.max_interval < self.first_retry:
            raise ValueError(
                f"RetryPolicy.max_interval ({self.max_interval!r}) must be at least "
                f"first_retry ({self.first_retry!r})"
            )
        if self.overrides:
            msgspec.structs.force_setattr(self, "overrides", _normalised(self.overrides))

    def for_domain(self, domain: str) -> RetryPolicy:
        """The policy for `domain` (or for the domain of an address): the override for the
        most specific name among it and its parent domains, else this policy."""
        if not self.overrides:
            return self
        name = _domain_key(domain.rpartition("@")[2])
        while True:
            policy = self.overrides.get(name)
            if policy is not None:
                return policy
            dot = name.find(".")
            if dot < 0:
                return self
            name = name[dot + 1 :]

    def interval(self, attempt: int) -> float:
        """The delay after attempt `attempt` (1 after the first) before jitter."""
        if type(attempt) is not int or attempt < 1:
            raise ValueError(f"attempt must be an integer of at least 1, not {attempt!r}")
        try:
            delay = self.first_retry * self.multiplier ** (attempt - 1)
        except OverflowError:  # a long-deferred recipient; the cap applies anyway
            delay = math.inf
        return min(delay, self.max_interval)

    def next_attempt(
        self,
        attempt: int,
        first_attempt_at: float,
        now: float,
        *,
        rng: random.Random | None = None,
        domain: str | None = None,
    ) -> float | None:
        """When to try a deferred recipient again: an absolute time after `now`, or None
        when it expires now.

        `attempt`: attempts made so far (1 after the first failure). `first_attempt_at`:
        when the recipient was submitted; its age counts from there, as Postfix counts a
        message's age from its arrival. `now`: when the latest attempt ended. `rng` draws
        the jitter (this module's own generator when None; pass a seeded one to repeat a
        schedule). `domain` picks an override.

        The result is never past the deadline, `first_attempt_at + max_age`. When the
        scheduled time would be, the recipient gets one last attempt at the deadline
        itself (Postfix, too, tries once more before it returns a message): without it, a
        recipient last tried at 4 days 23:10 would give up 50 minutes before its time.
        Not when the deadline is `first_retry` or less away, though: an attempt that soon
        would most likely meet the same condition. Then the result is None.
        """
        policy = self if domain is None else self.for_domain(domain)
        delay = policy.interval(attempt)
        if policy.jitter:
            spread = policy.jitter * delay
            delay += (rng or _random).uniform(-spread, spread)
        # A delay tiny against `now` could round to `now` itself; the next attempt is
        # promised to come after this one.
        at = max(now + delay, math.nextafter(now, math.inf))
        deadline = first_attempt_at + policy.max_age
        if at <= deadline:
            return at
        if deadline - now > policy.first_retry:
            return deadline
        return None


# The module's own generator, so that a caller seeding the global one does not make every
# deferred recipient of every site come back in step.
_random = random.Random()


def _domain_key(domain: str) -> str:
    return domain.strip().rstrip(".").lower()


def _normalised(overrides: dict[str, RetryPolicy]) -> dict[str, RetryPolicy]:
    """`overrides` keyed by normalised names, checked."""
    result: dict[str, RetryPolicy] = {}
    for domain, policy in overrides.items():
        where = f"RetryPolicy.overrides[{domain!r}]"
        if not isinstance(domain, str):
            raise ValueError(f"{where}: a domain must be a string")
        key = _domain_key(domain)
        if not key or key.startswith(".") or ".." in key or "@" in key or " " in key:
            raise ValueError(f"{where}: {domain!r} is not a domain name")
        if not isinstance(policy, RetryPolicy):
            raise ValueError(f"{where} must be a RetryPolicy, not {policy!r}")
        if policy.overrides:
            raise ValueError(f"{where} cannot have overrides of its own")
        if key in result:
            raise ValueError(f"{where}: {key!r} is given more than once")
        result[key] = policy
    return result
