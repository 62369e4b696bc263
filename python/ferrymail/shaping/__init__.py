"""Traffic shaping as data: the shaping file (limits per site, by default, provider, domain
and site), automation rules that react to receivers' replies, egress sources, pools and
warm-up. This package compiles and answers; the engine applies (see DESIGN.md).

    shaping = ferrymail.shaping.load("shaping.toml")        # or loads(text, name=...)
    resolved = shaping.resolve("gmail.com", site, mx_hosts)  # memoized, hot-path cheap
    resolved.limits.max_message_rate                         # Rate("100/s") or None
    actions = Automation().observe(resolved.limits.automation, site=..., ..., now=...)
"""

from __future__ import annotations

from .automation import (
    RESTORE_STEPS,
    Action,
    Automation,
    active,
    restored_limit,
    restored_rate,
    subject,
)
from .loader import ShapingError, default_path, empty, load, loads
from .model import AutomationRule, Entry, Limits, Resolved, SourceLimits
from .shaping import Shaping
from .sources import DEFAULT_POOL, HOST_SOURCE, Pool, Source, Warmup, choose_source
from .units import Rate, format_duration, parse_duration, parse_rate

__all__ = [
    "DEFAULT_POOL",
    "HOST_SOURCE",
    "RESTORE_STEPS",
    "Action",
    "Automation",
    "AutomationRule",
    "Entry",
    "Limits",
    "Pool",
    "Rate",
    "Resolved",
    "Shaping",
    "ShapingError",
    "Source",
    "SourceLimits",
    "Warmup",
    "active",
    "choose_source",
    "default_path",
    "empty",
    "format_duration",
    "load",
    "loads",
    "parse_duration",
    "parse_rate",
    "restored_limit",
    "restored_rate",
    "subject",
]
