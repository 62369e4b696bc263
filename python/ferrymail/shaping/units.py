"""Rates ("100/s", "2000/h") and durations ("30s", "5m", "4h", "5d") as shaping files write them."""

from __future__ import annotations

import math
import re

import msgspec

#: Seconds per unit. "m" is a minute, as in durations ("5m"); months are not a unit.
_UNITS: dict[str, float] = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}
# Plurals of the words: "5 days", "10 mins".
_UNITS.update({f"{unit}s": size for unit, size in _UNITS.items() if len(unit) > 2})
_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_RATE = re.compile(rf"\s*({_NUMBER})\s*/\s*({_NUMBER})?\s*([a-z]+)\s*")
_DURATION_PART = re.compile(rf"\s*({_NUMBER})\s*([a-z]+)")


class Rate(msgspec.Struct, frozen=True):
    """`count` events per `period` seconds ("2000/h" is Rate(2000, 3600)). Kept as
    written, so that a limit shows as the user wrote it; `per_second` is what a token
    bucket refills at."""

    count: float
    period: float

    @property
    def per_second(self) -> float:
        return self.count / self.period

    def scaled(self, factor: float) -> Rate:
        """The same period, `factor` times the count (the restore ramp's steps)."""
        return Rate(self.count * factor, self.period)

    def __str__(self) -> str:
        return f"{_number(self.count)}/{_period(self.period)}"


def parse_rate(value: object) -> Rate:
    """A rate from "100/s", "2000/h", "10/min", "1/d" or "5/10m"; ValueError says why not."""
    if not isinstance(value, str):
        raise ValueError(f'{value!r} is not a rate: write it as a string, e.g. "100/s"')
    match = _RATE.fullmatch(value.lower())
    if match is None or match[3] not in _UNITS:
        raise ValueError(
            f'{value!r} is not a rate: expected COUNT/UNIT with UNIT s, min, h or d, e.g. "100/s"'
        )
    count = float(match[1])
    period = float(match[2] or 1) * _UNITS[match[3]]
    if count <= 0 or period <= 0:
        raise ValueError(f"{value!r}: a rate must be above zero (leave the key out for no limit)")
    return Rate(count, period)


def parse_duration(value: object) -> float:
    """Seconds from "30s", "5m", "4h", "5d", "1h30m", or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        parts = _DURATION_PART.findall(text)
        if not parts or "".join(f"{n}{u}" for n, u in parts) != re.sub(r"\s+", "", text):
            raise ValueError(
                f'{value!r} is not a duration: expected e.g. "30s", "5m", "4h", "5d" or "1h30m"'
            )
        seconds = 0.0
        for number, unit in parts:
            if unit not in _UNITS:
                raise ValueError(f"{value!r}: unknown unit {unit!r} (ms, s, m, h or d)")
            seconds += float(number) * _UNITS[unit]
    else:
        raise ValueError(f"{value!r} is not a duration")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{value!r}: a duration must be above zero")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact form: 300 → "5m", 86400 → "1d", 90 → "90s"."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{_number(seconds / size)}{unit}"
    return f"{_number(seconds)}s"


def _period(seconds: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0), ("s", 1.0)):
        if seconds == size:
            return unit
    return format_duration(seconds)


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"
