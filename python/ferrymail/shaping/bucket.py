"""TokenBucket: a message rate as tokens, at most one second's worth saved up."""

from __future__ import annotations

from typing import Protocol


class Bucket(Protocol):
    """A message rate as tokens: TokenBucket (one engine's) or grants.FleetBucket (the
    fleet's, through the spool)."""

    per_second: float | None

    def allowance(self, now: float) -> int: ...
    def spend(self, tokens: int) -> None: ...
    def next_token_at(self, now: float) -> float: ...
    def set_rate(self, per_second: float | None) -> None: ...


class TokenBucket:
    """`per_second` tokens a second (None: no limit), holding at most max(1, per_second):
    a site that has been quiet may send one second's worth at once, never more, so a
    limit of 100/s is never 1,000 in the first second after ten idle ones."""

    __slots__ = ("_filled_at", "_tokens", "per_second")

    def __init__(self, per_second: float | None = None) -> None:
        self.per_second = per_second
        self._tokens = 0.0
        self._filled_at = 0.0

    def allowance(self, now: float) -> int:
        """How many whole tokens there are at `now` (a big number when unlimited)."""
        rate = self.per_second
        if rate is None:
            return 1 << 30
        burst = max(1.0, rate)
        if self._filled_at == 0.0:  # a new bucket starts full
            self._tokens, self._filled_at = burst, now
        self._tokens = min(burst, self._tokens + max(0.0, now - self._filled_at) * rate)
        self._filled_at = now
        return int(self._tokens)

    def spend(self, tokens: int) -> None:
        if self.per_second is not None:
            self._tokens -= tokens

    def next_token_at(self, now: float) -> float:
        """When there will be one whole token (`now` when there is one already)."""
        rate = self.per_second
        if rate is None or self._filled_at == 0.0:
            return now
        tokens = min(max(1.0, rate), self._tokens + max(0.0, now - self._filled_at) * rate)
        if tokens >= 1:
            return now
        return now + (1 - tokens) / rate

    def set_rate(self, per_second: float | None) -> None:
        """Changes the rate; a lower one starts with at most its own burst."""
        if per_second == self.per_second:
            return
        self.per_second = per_second
        if per_second is not None:
            self._tokens = min(self._tokens, max(1.0, per_second))
