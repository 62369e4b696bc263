"""The retry schedule: backoff, jitter, expiry at max_age, per-domain overrides, checks."""

from __future__ import annotations

import itertools
import math
import random

import msgspec
import pytest
from ferrymail.retry import MAX_AGE, RetryPolicy
from hypothesis import example, given, settings
from hypothesis import strategies as st

T0 = 1_700_000_000.0  # a submit time; any would do
MINUTE = 60.0
STEADY = RetryPolicy(jitter=0.0)


def schedule(policy: RetryPolicy, *, domain: str | None = None, seed: int = 1) -> list[float]:
    """Every attempt's time, from the first (at T0) to the last before expiry, when each
    attempt fails at the moment it starts."""
    rng = random.Random(seed)
    times = [T0]
    while (
        at := policy.next_attempt(len(times), T0, times[-1], rng=rng, domain=domain)
    ) is not None:
        times.append(at)
    return times


def delay(policy: RetryPolicy, attempt: int, rng: random.Random | None = None) -> float:
    """How long after a failed attempt at T0 the next one comes (it must come)."""
    at = policy.next_attempt(attempt, T0, T0, rng=rng)
    assert at is not None
    return at - T0


# ---- the schedule ----


def test_default_schedule_without_jitter() -> None:
    delays = [delay(STEADY, n) for n in range(1, 9)]
    assert [d / MINUTE for d in delays] == [5, 10, 20, 40, 60, 60, 60, 60]
    assert [STEADY.interval(n) / MINUTE for n in range(1, 9)] == [5, 10, 20, 40, 60, 60, 60, 60]


def test_defaults() -> None:
    policy = RetryPolicy()
    assert (policy.first_retry, policy.multiplier, policy.max_interval) == (300.0, 2.0, 3600.0)
    assert (policy.jitter, policy.max_age, policy.overrides) == (0.2, 5 * 86400.0, {})


def test_interval_is_capped_for_any_attempt() -> None:
    assert STEADY.interval(10**6) == 3600.0  # 2.0 ** 999999 overflows a float
    assert RetryPolicy(multiplier=1.0).interval(50) == 300.0
    assert RetryPolicy(first_retry=60.0, multiplier=3.0, max_interval=600.0).interval(3) == 540.0


@pytest.mark.parametrize("attempt", [0, -1, 1.0, True])
def test_attempt_counts_from_one(attempt: object) -> None:
    with pytest.raises(ValueError, match="attempt must be an integer of at least 1"):
        STEADY.next_attempt(attempt, T0, T0)  # type: ignore[arg-type]


def test_next_attempt_counts_from_now() -> None:
    # The delay is measured from the latest attempt, not from submission.
    later = T0 + 3 * 3600.0
    assert STEADY.next_attempt(2, T0, later) == later + 600.0


# ---- jitter ----


@pytest.mark.parametrize("attempt", [1, 3, 9])
def test_jitter_stays_within_its_fraction(attempt: int) -> None:
    policy = RetryPolicy()
    rng = random.Random(20240501)
    base = policy.interval(attempt)
    delays = [delay(policy, attempt, rng) for _ in range(5000)]
    assert all(0.8 * base <= d <= 1.2 * base for d in delays)
    # It spreads over the whole range rather than clustering: both ends are reached, and
    # the mean is the undisturbed delay.
    assert min(delays) < 0.81 * base and max(delays) > 1.19 * base
    assert math.isclose(sum(delays) / len(delays), base, rel_tol=0.01)


def test_jitter_repeats_with_a_seeded_rng() -> None:
    assert schedule(RetryPolicy(), seed=7) == schedule(RetryPolicy(), seed=7)
    assert schedule(RetryPolicy(), seed=7) != schedule(RetryPolicy(), seed=8)


def test_jitter_without_rng_uses_the_module_generator() -> None:
    draws = {delay(RetryPolicy(), 1) for _ in range(20)}
    assert len(draws) > 1
    assert all(240.0 <= d <= 360.0 for d in draws)


# ---- expiry at max_age ----


def test_default_schedule_ends_with_an_attempt_at_the_deadline() -> None:
    times = schedule(STEADY)
    deadline = T0 + MAX_AGE
    # 1 first attempt, 4 growing retries (75 minutes), 118 hourly ones, and the last one
    # exactly at the deadline, 45 minutes after the hourly one before it.
    assert len(times) == 1 + 4 + 118 + 1
    assert times[-1] == deadline
    assert deadline - times[-2] == 45 * MINUTE
    assert STEADY.next_attempt(len(times), T0, deadline) is None


def test_jittered_schedules_expire_at_the_deadline() -> None:
    for seed in range(20):
        times = schedule(RetryPolicy(), seed=seed)
        assert times[-1] <= T0 + MAX_AGE
        assert all(b > a for a, b in itertools.pairwise(times))
        # Expiry comes at the deadline, or at most first_retry before it.
        assert T0 + MAX_AGE - times[-1] <= 300.0


def test_last_attempt_at_the_deadline_only_with_room_for_it() -> None:
    policy = RetryPolicy(jitter=0.0, max_age=86400.0)
    deadline = T0 + 86400.0
    # An hourly retry would land past the deadline: one last attempt at it instead.
    assert policy.next_attempt(10, T0, deadline - 301.0) == deadline
    assert policy.next_attempt(10, T0, deadline - 3000.0) == deadline
    # Within first_retry of the deadline, no last attempt: it expires.
    assert policy.next_attempt(10, T0, deadline - 300.0) is None
    assert policy.next_attempt(10, T0, deadline - 1.0) is None
    # At or past the deadline (a late lease), it expires.
    assert policy.next_attempt(1, T0, deadline) is None
    assert policy.next_attempt(1, T0, deadline + 7200.0) is None
    # A retry that fits is scheduled as usual, even one landing exactly on the deadline.
    assert policy.next_attempt(10, T0, deadline - 3600.0) == deadline
    assert policy.next_attempt(10, T0, deadline - 4000.0) == deadline - 400.0


def test_short_max_age() -> None:
    # Shorter than the first retry: the recipient is tried once and expires.
    policy = RetryPolicy(max_age=120.0)
    assert policy.next_attempt(1, T0, T0, rng=random.Random(1)) is None


# ---- overrides ----

OVERRIDDEN = RetryPolicy(
    jitter=0.0,
    overrides={
        "example.com": RetryPolicy(first_retry=60.0, jitter=0.0, max_age=86400.0),
        "eu.example.com": RetryPolicy(first_retry=900.0, jitter=0.0),
        "Greylist.Example.": RetryPolicy(first_retry=1500.0, max_interval=1500.0, jitter=0.0),
    },
)


@pytest.mark.parametrize(
    ("domain", "first_retry"),
    [
        ("example.com", 60.0),
        ("mx.example.com", 60.0),  # a subdomain
        ("a.b.example.com", 60.0),
        ("eu.example.com", 900.0),  # the most specific wins
        ("mx.eu.example.com", 900.0),
        ("EU.Example.COM.", 900.0),  # case and the root dot do not matter
        ("bob@eu.example.com", 900.0),  # an address names its domain
        ("greylist.example", 1500.0),  # the override's own name was normalised
        ("notexample.com", 300.0),  # a suffix of the name is not a subdomain
        ("example.org", 300.0),
        ("com", 300.0),
    ],
)
def test_overrides_by_domain_and_subdomain(domain: str, first_retry: float) -> None:
    assert OVERRIDDEN.for_domain(domain).first_retry == first_retry
    assert OVERRIDDEN.next_attempt(1, T0, T0, domain=domain) == T0 + first_retry


def test_an_override_is_a_whole_policy() -> None:
    # Its max_age applies to its domain: example.com recipients expire after one day.
    times = schedule(OVERRIDDEN, domain="mx.example.com")
    assert times[-1] == T0 + 86400.0
    # Fields it does not set are the defaults, not the parent's.
    parent = RetryPolicy(max_age=86400.0, overrides={"example.com": RetryPolicy(jitter=0.0)})
    assert parent.for_domain("example.com").max_age == MAX_AGE
    assert RetryPolicy().for_domain("example.com") == RetryPolicy()


def test_overrides_load_from_config() -> None:
    config = {
        "first_retry": 600,
        "overrides": {"gmail.com": {"first_retry": 120, "max_age": 3 * 86400}},
    }
    policy = msgspec.convert(config, RetryPolicy)
    assert policy.first_retry == 600.0
    assert policy.for_domain("gmail.com") == RetryPolicy(first_retry=120.0, max_age=3 * 86400.0)
    with pytest.raises(msgspec.ValidationError, match="max_agee"):
        msgspec.convert({"max_agee": 86400}, RetryPolicy)
    with pytest.raises(msgspec.ValidationError, match=r"RetryPolicy\.jitter must be in \[0, 1\)"):
        msgspec.convert({"overrides": {"gmail.com": {"jitter": 1.5}}}, RetryPolicy)


# ---- validation ----


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"first_retry": 0.0}, r"RetryPolicy\.first_retry must be positive, not 0\.0"),
        ({"first_retry": -300.0}, r"RetryPolicy\.first_retry must be positive"),
        ({"multiplier": 0.0}, r"RetryPolicy\.multiplier must be positive"),
        ({"multiplier": 0.5}, r"RetryPolicy\.multiplier must be at least 1, not 0\.5"),
        ({"max_interval": -1.0}, r"RetryPolicy\.max_interval must be positive"),
        ({"max_interval": 200.0}, r"RetryPolicy\.max_interval \(200\.0\) must be at least first"),
        ({"max_age": 0.0}, r"RetryPolicy\.max_age must be positive"),
        ({"max_age": math.inf}, r"RetryPolicy\.max_age must be a finite number, not inf"),
        ({"first_retry": math.nan}, r"RetryPolicy\.first_retry must be a finite number"),
        ({"jitter": 1.0}, r"RetryPolicy\.jitter must be in \[0, 1\), not 1\.0"),
        ({"jitter": -0.1}, r"RetryPolicy\.jitter must be in \[0, 1\)"),
        ({"jitter": "0.2"}, r"RetryPolicy\.jitter must be a finite number, not '0\.2'"),
        ({"max_age": True}, r"RetryPolicy\.max_age must be a finite number, not True"),
        (
            {"overrides": {"": RetryPolicy()}},
            r"RetryPolicy\.overrides\[''\]: '' is not a domain name",
        ),
        (
            {"overrides": {".example.com": RetryPolicy()}},
            r"overrides\['\.example\.com'\]: '\.example\.com' is not a domain name",
        ),
        (
            {"overrides": {"bob@example.com": RetryPolicy()}},
            r"overrides\['bob@example\.com'\]: .* is not a domain name",
        ),
        (
            {"overrides": {"example.com": {"first_retry": 60.0}}},
            r"overrides\['example\.com'\] must be a RetryPolicy",
        ),
        (
            {"overrides": {"a.example": RetryPolicy(overrides={"b.a.example": RetryPolicy()})}},
            r"overrides\['a\.example'\] cannot have overrides of its own",
        ),
        (
            {"overrides": {"example.com": RetryPolicy(), "Example.com.": RetryPolicy()}},
            r"overrides\['Example\.com\.'\]: 'example\.com' is given more than once",
        ),
    ],
)
def test_validation(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**fields)  # type: ignore[arg-type]


def test_integers_are_accepted() -> None:
    policy = RetryPolicy(first_retry=60, max_interval=600, max_age=86400)
    assert policy.next_attempt(1, 0, 0, rng=random.Random(0)) is not None


# ---- properties ----

POLICY_FIELDS = st.fixed_dictionaries(
    {
        "first_retry": st.floats(1.0, 86400.0),
        "multiplier": st.floats(1.0, 10.0),
        "interval_factor": st.floats(1.0, 100.0),
        "jitter": st.floats(0.0, 0.99),
        "max_age": st.floats(1.0, 30 * 86400.0),
    }
)


def policy_from(fields: dict[str, float]) -> RetryPolicy:
    """A valid policy: max_interval is first_retry times interval_factor (at least 1)."""
    return RetryPolicy(
        first_retry=fields["first_retry"],
        multiplier=fields["multiplier"],
        max_interval=fields["first_retry"] * fields["interval_factor"],
        jitter=fields["jitter"],
        max_age=fields["max_age"],
    )


# For whole schedules: max_age at most 100 first retries, and jitter at most 0.9, keep a
# schedule within about a thousand attempts.
SCHEDULE_POLICIES = st.fixed_dictionaries(
    {
        "first_retry": st.floats(1.0, 86400.0),
        "multiplier": st.floats(1.0, 10.0),
        "interval_factor": st.floats(1.0, 100.0),
        "jitter": st.floats(0.0, 0.9),
        "age_factor": st.floats(0.01, 100.0),
    }
).map(
    lambda f: policy_from(
        {k: v for k, v in f.items() if k != "age_factor"}
        | {"max_age": f["first_retry"] * f["age_factor"]}
    )
)


@settings(max_examples=500)
@given(
    fields=POLICY_FIELDS,
    attempt=st.integers(1, 10_000),
    first_attempt_at=st.floats(0.0, 4e9),
    elapsed=st.floats(0.0, 60 * 86400.0),
    seed=st.integers(0, 2**32),
)
@example(
    fields={
        "first_retry": 300.0,
        "multiplier": 2.0,
        "interval_factor": 12.0,
        "jitter": 0.2,
        "max_age": MAX_AGE,
    },
    attempt=120,
    first_attempt_at=T0,
    elapsed=MAX_AGE - 301.0,
    seed=0,
)
def test_next_attempt_is_after_now_and_never_past_the_deadline(
    fields: dict[str, float], attempt: int, first_attempt_at: float, elapsed: float, seed: int
) -> None:
    policy = policy_from(fields)
    now = first_attempt_at + elapsed
    deadline = first_attempt_at + policy.max_age
    at = policy.next_attempt(attempt, first_attempt_at, now, rng=random.Random(seed))
    if at is None:
        # A recipient expires only within first_retry of its deadline (or past it).
        assert deadline - now <= policy.first_retry
    else:
        assert now < at <= deadline
        # Not sooner than the jittered schedule allows, unless it is the last attempt
        # (with room for rounding: now + delay is a float sum).
        earliest = now + policy.interval(attempt) * (1 - policy.jitter)
        assert at == deadline or at >= earliest - 1e-9 * max(1.0, now)


@settings(max_examples=200)
@given(policy=SCHEDULE_POLICIES, seed=st.integers(0, 2**32))
def test_every_schedule_ends_by_the_deadline(policy: RetryPolicy, seed: int) -> None:
    times = schedule(policy, seed=seed)
    assert all(b > a for a, b in itertools.pairwise(times))
    assert times[-1] <= T0 + policy.max_age
    assert T0 + policy.max_age - times[-1] <= policy.first_retry
