"""Reading a shaping file: TOML to a compiled Shaping, every key checked, errors at file:line:key.

The layout (KumoMTA's shaping.toml keys its sections by bare domain and marks providers
with a prefix in the name, `["provider:google"]`; here each kind has its own table, so
that a section's kind is never guessed from its name, unknown section kinds are errors
like unknown keys, and `[site."…"]` can hold ferrymail's site keys, which contain
commas and colons):

    [default]                      # every site
    connection_limit = 10
    [provider.google]              # every site whose MX ends in one of these
    mx_suffix = [".google.com", ".googlemail.com"]
    max_message_rate = "100/s"
    [[provider.google.automation]]
    regex = '^421 4\\.7\\.28 '
    trigger = "3/h"                # or "immediate"
    duration = "1h"
    suspend = true                 # and/or set = { max_message_rate = "10/min" }, bounce = true
    [domain."example.com"]         # one recipient domain (exactly; A-labels)
    [site."mx.example.net"]        # a site: its key, or any of its MX host names
    [source.ip1]
    address = "192.0.2.10"
    ehlo = "mta1.example.com"
    warmup = { start = 2026-12-01, per_day = [50, 100, 500, 1000] }
    [pool.default]
    sources = { ip1 = 3, ip2 = 1 }

Per entry: LIMITS (connection_limit, max_connection_rate, max_message_rate,
max_deliveries_per_connection), tls, the SMTP timeouts (model.TIMEOUTS), `[X.retry]`
(RetryPolicy's first_retry, multiplier, max_interval, jitter, max_age), `[X.per_source]`
(LIMITS per site x source), `bounce_rules` (BounceRule's keys), `automation`. A rate
may be "unlimited" to lift a less specific entry's limit.
"""

from __future__ import annotations

import datetime
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import idna
import msgspec

from ..bounce import BounceRule
from ..errors import ConfigError
from .locate import KeyLines, Path
from .model import (
    BUILTIN,
    LIMITS,
    RETRY_FIELDS,
    SCOPES,
    TIMEOUTS,
    TLS_POLICIES,
    AutomationRule,
    Entry,
    Limits,
    entry_name,
)
from .shaping import Shaping
from .sources import AFTER, DEFAULT_POOL, HOST_SOURCE, MAX_ROUND, Pool, Source, Warmup
from .units import Rate, format_duration, parse_duration, parse_rate

T = TypeVar("T")
SECTIONS = ("default", "provider", "domain", "site", "source", "pool")
_HOST_NAME = re.compile(r"(?=.{1,253}\Z)(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))+")
#: Chains of retry-setting entries checked together at load (see check_together).
MAX_CHAINS = 10_000
_TOML_WHERE = re.compile(r"\(at line (\d+), column (\d+)\)")


class ShapingError(ConfigError):
    """A shaping file is invalid: `file`, `line` (1-based; None when unknown) and `key`
    (dotted, as in the file) say where."""

    def __init__(self, message: str, file: str, line: int | None, key: str) -> None:
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {key + ': ' if key else ''}{message}", key)
        self.file = file
        self.line = line
        self.key = key


def load(path: str | os.PathLike[str]) -> Shaping:
    """Reads and compiles a shaping file; ShapingError (a ConfigError) says what is wrong
    and where, an unreadable file too."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ShapingError(f"cannot read the shaping file: {reason}", name, None, "") from None
    return loads(text, name=name)


def loads(text: str, *, name: str = "<shaping>") -> Shaping:
    """Compiles shaping TOML; `name` is what errors call the file."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        where = _TOML_WHERE.search(str(e))
        line = int(where[1]) if where else None
        raise ShapingError(f"not valid TOML: {e}", name, line, "") from None
    return _Loader(text, name).shaping(data)


def empty() -> Shaping:
    """A Shaping with no entries: ferrymail's built-in values everywhere (what an engine
    without a shaping file can hold, so that it has one code path)."""
    return loads("", name="(no shaping file)")


def default_path() -> str:
    """The shaping file shipped with ferrymail (the big receivers' published limits)."""
    return os.path.join(os.path.dirname(__file__), "default.toml")


class _Loader:
    def __init__(self, text: str, name: str) -> None:
        self.text = text
        self.name = name
        self._lines: KeyLines | None = None

    def error(self, path: Path, message: str) -> ShapingError:
        if self._lines is None:
            self._lines = KeyLines(self.text)
        return ShapingError(message, self.name, self._lines.line(path), _dotted(path))

    def shaping(self, data: dict[str, Any]) -> Shaping:
        for key in data:
            if key not in SECTIONS:
                raise self.error((key,), f"unknown section; expected one of {', '.join(SECTIONS)}")
        default = self.entry(self.table(data, ("default",)), ("default",), "default", "default")
        providers = [
            self.entry(table, ("provider", key), "provider", key)
            for key, table in self.named(data, "provider").items()
        ]
        domains = self.keyed(data, "domain", _domain_key)
        sites = self.keyed(data, "site", lambda key: key.strip().rstrip(".").lower())
        sources = {
            key: self.source(table, ("source", key), key)
            for key, table in self.named(data, "source").items()
        }
        sources.setdefault(HOST_SOURCE, Source(HOST_SOURCE))
        pools = {
            key: self.pool(table, ("pool", key), key, sources)
            for key, table in self.named(data, "pool").items()
        }
        pools.setdefault(DEFAULT_POOL, Pool(DEFAULT_POOL, ((HOST_SOURCE, 1),)))
        self.check_together(default, providers, list(domains.values()), list(sites.values()))
        return Shaping(
            name=self.name,
            default=default,
            providers=providers,
            domains=domains,
            sites=sites,
            sources=sources,
            pools=pools,
        )

    # --- sections -----------------------------------------------------------------------

    def table(self, data: Mapping[str, Any], path: Path) -> dict[str, Any]:
        value = data.get(str(path[-1]), {})
        if not isinstance(value, dict):
            raise self.error(path, "must be a table")
        return value

    def named(self, data: Mapping[str, Any], section: str) -> dict[str, dict[str, Any]]:
        tables = self.table(data, (section,))
        for key, table in tables.items():
            if not isinstance(table, dict):
                raise self.error((section, key), f"must be a table: [{entry_name(section, key)}]")
        return tables

    def keyed(
        self, data: Mapping[str, Any], section: str, normal: Callable[[str], str]
    ) -> dict[str, Entry]:
        entries: dict[str, Entry] = {}
        for key, table in self.named(data, section).items():
            path = (section, key)
            try:
                normalised = normal(key)
            except ValueError as e:
                raise self.error(path, str(e)) from None
            if normalised in entries:
                raise self.error(path, f"{normalised!r} is given more than once")
            entries[normalised] = self.entry(table, path, section, normalised)
        return entries

    def check_together(
        self, default: Entry, providers: list[Entry], domains: list[Entry], sites: list[Entry]
    ) -> None:
        """Values that are each valid but not together (a retry cap under its first
        retry), merged as they can be in use: every chain of entries that set retry
        values (up to MAX_CHAINS of them; beyond, resolve() would raise ValueError for a
        bad mix, as RetryPolicy does), so that resolve() on the hot path never does."""
        kinds = [[e for e in entries if _sets_retry(e)] for entries in (providers, domains, sites)]
        chains: list[list[Entry]] = [[default]]
        for entries in kinds:
            chains += [[*chain, entry] for chain in chains for entry in entries]
            if len(chains) > MAX_CHAINS:
                break
        for chain in chains:
            values = dict(BUILTIN)
            for entry in chain:
                values.update(entry.values)
            try:
                Limits.from_values(values, (), ())
            except ValueError as e:
                last = chain[-1]
                path = ("default",) if last.kind == "default" else (last.kind, last.key)
                together = ", ".join(e.name for e in chain[-2::-1])
                where = f" (merged with {together})" if len(chain) > 1 else ""
                raise self.error((*path, "retry"), f"{e}{where}") from None

    # --- entries ------------------------------------------------------------------------

    def entry(self, table: dict[str, Any], path: Path, kind: str, key: str) -> Entry:
        values: dict[str, object] = {}
        bounce_rules: tuple[BounceRule, ...] = ()
        automation: tuple[AutomationRule, ...] = ()
        mx_suffix: tuple[str, ...] = ()
        for name, value in table.items():
            at = (*path, name)
            if name in _VALUES:
                values[name] = self.value(at, _VALUES[name], value)
            elif name == "retry":
                for field, v in self.subtable(at, value, RETRY_FIELDS).items():
                    values[f"retry.{field}"] = self.value((*at, field), _RETRY[field], v)
            elif name == "per_source":
                for field, v in self.subtable(at, value, LIMITS).items():
                    values[f"per_source.{field}"] = self.value((*at, field), _VALUES[field], v)
            elif name == "bounce_rules":
                bounce_rules = tuple(
                    self.bounce_rule((*at, i), rule)
                    for i, rule in enumerate(self.tables(at, value))
                )
            elif name == "automation":
                automation = tuple(
                    self.rule((*at, i), rule) for i, rule in enumerate(self.tables(at, value))
                )
            elif name == "mx_suffix" and kind == "provider":
                mx_suffix = self.suffixes(at, value)
            else:
                known = [*_VALUES, "retry", "per_source", "bounce_rules", "automation"]
                if kind == "provider":
                    known.append("mx_suffix")
                raise self.error(at, f"unknown key; expected one of {', '.join(known)}")
        if kind == "provider" and not mx_suffix:
            raise self.error(
                (*path, "mx_suffix"),
                'a provider needs mx_suffix, e.g. mx_suffix = [".google.com"]',
            )
        return Entry(kind, key, values, bounce_rules, automation, mx_suffix)

    def value(self, path: Path, parse: Callable[[object], T], value: object) -> T:
        try:
            return parse(value)
        except (ValueError, TypeError) as e:
            raise self.error(path, str(e)) from None

    def subtable(self, path: Path, value: object, known: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(path, "must be a table")
        for key in value:
            if key not in known:
                raise self.error((*path, key), f"unknown key; expected one of {', '.join(known)}")
        return value

    def tables(self, path: Path, value: object) -> list[dict[str, Any]]:
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.error(path, "must be an array of tables")
        return value

    def suffixes(self, path: Path, value: object) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            raise self.error(path, "must be a host name suffix or a list of them")
        found: list[str] = []
        for item in items:
            suffix = item.strip().strip(".").lower() if isinstance(item, str) else ""
            if not _HOST_NAME.fullmatch(suffix) and not re.fullmatch(r"[a-z0-9-]+", suffix):
                raise self.error(path, f"{item!r} is not a host name suffix like '.google.com'")
            found.append(suffix)
        return tuple(found)

    def bounce_rule(self, path: Path, table: dict[str, Any]) -> BounceRule:
        try:
            return msgspec.convert(table, BounceRule)
        except (msgspec.ValidationError, ValueError) as e:
            match = re.search(r"at `\$\.(\w+)`", str(e))
            at = (*path, match[1]) if match else path
            raise self.error(at, str(e)) from None

    def rule(self, path: Path, table: dict[str, Any]) -> AutomationRule:
        known = (
            "name",
            "regex",
            "trigger",
            "duration",
            "scope",
            "suspend",
            "set",
            "bounce",
            "restore",
        )
        self.subtable(path, table, known)
        for required in ("regex", "duration"):
            if required not in table:
                raise self.error(path, f"an automation rule needs {required}")
        regex = table["regex"]
        if not isinstance(regex, str):
            raise self.error((*path, "regex"), "must be a string (a regular expression)")
        try:
            pattern = re.compile(regex, re.IGNORECASE)
        except re.error as e:
            raise self.error((*path, "regex"), f"bad regular expression: {e}") from None
        threshold, window = self.value(
            (*path, "trigger"), _trigger, table.get("trigger", "immediate")
        )
        duration = self.value((*path, "duration"), parse_duration, table["duration"])
        restore = self.value((*path, "restore"), parse_duration, table.get("restore", duration))
        scope = table.get("scope", "site")
        if scope not in SCOPES:
            raise self.error((*path, "scope"), f"{scope!r} is not one of {', '.join(SCOPES)}")
        flags = {}
        for flag in ("suspend", "bounce"):
            flags[flag] = table.get(flag, False)
            if not isinstance(flags[flag], bool):
                raise self.error((*path, flag), "must be true or false")
        lowered = {
            field: self.value((*path, "set", field), _VALUES[field], v)
            for field, v in self.subtable((*path, "set"), table.get("set", {}), LIMITS).items()
        }
        if lowered and scope == "campaign":
            raise self.error(
                (*path, "set"), "limits are per site or per site x source, not per campaign"
            )
        if not (flags["suspend"] or flags["bounce"] or lowered):
            raise self.error(path, "an automation rule needs an action: suspend, set or bounce")
        name = table.get("name", _dotted(path))
        if not isinstance(name, str) or not name:
            raise self.error((*path, "name"), "must be a non-empty string")
        return AutomationRule(
            id=_dotted(path),
            name=name,
            regex=regex,
            threshold=threshold,
            window=window,
            duration=duration,
            scope=scope,
            suspend=flags["suspend"],
            set=lowered,
            bounce=flags["bounce"],
            restore=restore,
            pattern=pattern,
        )

    # --- sources and pools ----------------------------------------------------------------

    def source(self, table: dict[str, Any], path: Path, name: str) -> Source:
        self.subtable(path, table, ("address", "ehlo", "warmup"))
        if "address" not in table:
            raise self.error(path, "a source needs address (a local IPv4 or IPv6 address)")
        address = self.value((*path, "address"), _address, table["address"])
        ehlo = table.get("ehlo")
        if ehlo is not None and (
            not isinstance(ehlo, str) or not _HOST_NAME.fullmatch(ehlo.rstrip(".").lower())
        ):
            raise self.error((*path, "ehlo"), f"{ehlo!r} is not a fully qualified host name")
        warmup = None
        if "warmup" in table:
            warmup = self.warmup((*path, "warmup"), table["warmup"])
        return Source(name, address, ehlo, warmup)

    def warmup(self, path: Path, value: object) -> Warmup:
        table = self.subtable(path, value, ("start", "per_day", "after"))
        start = table.get("start")
        if type(start) is not datetime.date:
            raise self.error((*path, "start"), "must be a date, e.g. start = 2026-12-01")
        per_day = table.get("per_day")
        if (
            not isinstance(per_day, list)
            or not per_day
            or not all(type(n) is int and n > 0 for n in per_day)
        ):
            raise self.error(
                (*path, "per_day"), "must be a list of daily caps above 0, e.g. [50, 100, 500]"
            )
        after = table.get("after", "double")
        if after not in AFTER:
            raise self.error((*path, "after"), f"{after!r} is not one of {', '.join(AFTER)}")
        return Warmup(start, tuple(per_day), after)

    def pool(
        self, table: dict[str, Any], path: Path, name: str, sources: Mapping[str, Source]
    ) -> Pool:
        self.subtable(path, table, ("sources",))
        value = table.get("sources")
        at = (*path, "sources")
        if isinstance(value, list):
            value = dict.fromkeys(value, 1) if all(isinstance(v, str) for v in value) else None
        if not isinstance(value, dict) or not value:
            raise self.error(
                at, "must name sources with weights, e.g. sources = { ip1 = 3, ip2 = 1 }"
            )
        for source, weight in value.items():
            if source not in sources:
                raise self.error(at, f"no source {source!r} (sources: {', '.join(sources)})")
            if type(weight) is not int or weight < 1:
                raise self.error(
                    at, f"the weight of {source!r} must be a whole number of at least 1"
                )
        divisor = math.gcd(*value.values())
        weights = tuple((s, w // divisor) for s, w in value.items())
        if sum(w for _, w in weights) > MAX_ROUND:
            raise self.error(at, f"weights are proportions: their sum must be at most {MAX_ROUND}")
        return Pool(name, weights)


# --- values ------------------------------------------------------------------------------


def _sets_retry(entry: Entry) -> bool:
    return any(key.startswith("retry.") for key in entry.values)


def _positive_int(value: object) -> int:
    if type(value) is not int or value < 1:
        raise ValueError(f"{value!r} must be a whole number of at least 1")
    return value


def _rate(value: object) -> Rate | None:
    if value == "unlimited":
        return None
    return parse_rate(value)


def _tls(value: object) -> str:
    if value not in TLS_POLICIES:
        raise ValueError(f"{value!r} is not one of {', '.join(TLS_POLICIES)}")
    return str(value)


def _number(low: float, high: float, what: str) -> Callable[[object], float]:
    def parse(value: object) -> float:
        if type(value) not in (int, float) or not low <= value < high:  # type: ignore[operator]
            raise ValueError(f"{value!r} must be a number {what}")
        return float(value)  # type: ignore[arg-type]

    return parse


def _trigger(value: object) -> tuple[int, float]:
    """(threshold, window seconds) from "immediate" or "3/h"."""
    if value == "immediate":
        return 1, 0.0
    try:
        rate = parse_rate(value)
    except ValueError:
        raise ValueError(
            f'{value!r} is not a trigger: "immediate", or a threshold such as "3/h"'
        ) from None
    if rate.count != int(rate.count):
        raise ValueError(f"{value!r}: the threshold must be a whole number of matches")
    return int(rate.count), rate.period


def _address(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not an IP address")
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from None
    if address.is_unspecified or address.is_multicast:
        raise ValueError(f"{value!r} cannot be a source address (unspecified or multicast)")
    return str(address)


def _domain_key(key: str) -> str:
    name = key.strip().rstrip(".").lower()
    if not name.isascii():
        try:
            name = idna.encode(name, uts46=True).decode("ascii")
        except idna.IDNAError as e:
            raise ValueError(f"{key!r} is not a domain name: {e}") from None
    if not _HOST_NAME.fullmatch(name) and not re.fullmatch(r"[a-z0-9-]+", name):
        raise ValueError(f"{key!r} is not a domain name")
    return name


_VALUES: dict[str, Callable[[object], object]] = {
    "connection_limit": _positive_int,
    "max_connection_rate": _rate,
    "max_message_rate": _rate,
    "max_deliveries_per_connection": _positive_int,
    "tls": _tls,
    **dict.fromkeys(TIMEOUTS, parse_duration),
}
_RETRY: dict[str, Callable[[object], object]] = {
    "first_retry": parse_duration,
    "multiplier": _number(1, math.inf, "of at least 1"),
    "max_interval": parse_duration,
    "jitter": _number(0, 1, "from 0 up to (not including) 1"),
    "max_age": parse_duration,
}


def _dotted(path: Path) -> str:
    """A key path as a person reads it: provider.google.automation[0].regex."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else f'"{part}"'
            out += f".{text}" if out else text
    return out


__all__ = ["ShapingError", "default_path", "empty", "format_duration", "load", "loads"]
