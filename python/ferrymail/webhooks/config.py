"""The service config's `[[webhook]]` tables: loading, checking, and errors that name the
file, the line and the key (as the shaping file's do).

    [[webhook]]
    url = "https://esp.example/hooks/ferrymail"
    events = ["delivered", "bounced", "complained"]   # or "all" (the default)
    secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_..."]  # or secret = "..."
    batch_size = 100        # events per POST at most
    batch_wait = 1000       # ms a batch waits to fill (or "1s")
    retry_for = "24h"       # then the batch is a dead letter
    timeout = "10s"         # per POST
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import tomllib
import urllib.parse
from collections.abc import Callable
from typing import Any

import msgspec

from ..errors import ConfigError
from ..events import FEEDBACK_TYPES
from ..shaping.locate import KeyLines, Path
from ..shaping.units import parse_duration

#: Every `type` an event can have (ferrymail.events): recipients' states, then feedback.
EVENT_TYPES = (
    "queued",
    "rejected",
    "suppressed",
    "delivered",
    "bounced",
    "deferred",
    "expired",
    "failed",
    *FEEDBACK_TYPES,
)
#: Events per POST at most; Svix and Standard Webhooks senders post one event per
#: message, ESPs (SendGrid, Mailgun) batch: 100 keeps a body well under 1 MB.
BATCH_SIZE = 100
#: How long (seconds) the first event of a batch waits for more before the batch goes.
BATCH_WAIT = 1.0
#: How long (seconds) a failing batch is retried before it becomes a dead letter: a
#: receiver down for a day loses nothing (SendGrid retries for 24 hours too).
RETRY_FOR = 86400.0
#: Seconds a POST may take, connecting included.
TIMEOUT = 10.0
#: The largest batch allowed.
MAX_BATCH_SIZE = 10_000
#: A Standard Webhooks secret: "whsec_" and base64 of 24 to 64 bytes.
SECRET_PREFIX = "whsec_"
_TOML_WHERE = re.compile(r"\(at line (\d+), column (\d+)\)")


class WebhookConfigError(ConfigError):
    """A service config is invalid: `file`, `line` (1-based; None when unknown) and `key`
    (dotted, as in the file: "webhook[1].url") say where."""

    def __init__(self, message: str, file: str, line: int | None, key: str) -> None:
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {key + ': ' if key else ''}{message}", key)
        self.file = file
        self.line = line
        self.key = key


class Webhook(msgspec.Struct, frozen=True, kw_only=True):
    """One endpoint the events are POSTed to.

    `name` identifies it in the outbox (the URL unless given: renaming or moving an
    endpoint leaves its waiting events under the old name, `ferrymail webhooks status`
    shows them). `events`: the types it gets. `secrets`: one or two keys (two while one
    is rotated out: each POST carries both signatures). The rest as the module says.
    """

    name: str
    url: str
    events: frozenset[str]
    secrets: tuple[bytes, ...]
    batch_size: int = BATCH_SIZE
    batch_wait: float = BATCH_WAIT
    retry_for: float = RETRY_FOR
    timeout: float = TIMEOUT


_KEYS: tuple[str, ...] = ("name", "url", "events", "secret", "secrets", "batch_size")
_KEYS += ("batch_wait", "retry_for", "timeout")


def load(path: str | os.PathLike[str]) -> list[Webhook]:
    """The `[[webhook]]`s of the service config at `path`; WebhookConfigError (a
    ConfigError) says what is wrong and where, an unreadable file too."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise WebhookConfigError(
            f"cannot read the service config: {reason}", name, None, ""
        ) from None
    return loads(text, name=name)


def loads(text: str, *, name: str = "<service config>") -> list[Webhook]:
    """The `[[webhook]]`s of a service config's TOML; `name` is what errors call it."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        where = _TOML_WHERE.search(str(e))
        raise WebhookConfigError(
            f"not valid TOML: {e}", name, int(where[1]) if where else None, ""
        ) from None
    return _Loader(text, name).webhooks(data)


def decode_secret(value: str) -> bytes:
    """The key of a "whsec_<base64>" secret; ValueError when it is not one."""
    if not value.startswith(SECRET_PREFIX):
        raise ValueError(f'a secret starts with "{SECRET_PREFIX}" (Standard Webhooks)')
    try:
        key = base64.b64decode(value[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f'not base64 after "{SECRET_PREFIX}"') from None
    if not 24 <= len(key) <= 64:
        raise ValueError(f"a secret's key is 24 to 64 bytes; this one is {len(key)}")
    return key


class _Loader:
    def __init__(self, text: str, name: str) -> None:
        self.text = text
        self.name = name
        self._lines: KeyLines | None = None

    def error(self, path: Path, message: str) -> WebhookConfigError:
        if self._lines is None:
            self._lines = KeyLines(self.text)
        key = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path).lstrip(".")
        return WebhookConfigError(message, self.name, self._lines.line(path), key)

    def webhooks(self, data: dict[str, Any]) -> list[Webhook]:
        for key in data:
            if key != "webhook":
                raise self.error((key,), "unknown key (the service config has [[webhook]])")
        tables = data.get("webhook", [])
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
            raise self.error(("webhook",), "must be tables: [[webhook]]")
        hooks = [self.webhook(i, table) for i, table in enumerate(tables)]
        seen: set[str] = set()
        for i, hook in enumerate(hooks):
            if hook.name in seen:
                raise self.error(("webhook", i, "name"), f"{hook.name!r} is there twice")
            seen.add(hook.name)
        return hooks

    def webhook(self, i: int, table: dict[str, Any]) -> Webhook:
        at: Callable[[str], Path] = lambda key: ("webhook", i, key)  # noqa: E731
        for key in table:
            if key not in _KEYS:
                raise self.error(at(key), f"unknown key (one of {', '.join(_KEYS)})")
        if "url" not in table:
            raise self.error(("webhook", i), "url is missing")
        url = self.value(at("url"), table["url"], _url)
        name = self.value(at("name"), table.get("name", url), _name)
        events = self.value(at("events"), table.get("events", "all"), _events)
        if ("secret" in table) == ("secrets" in table):
            raise self.error(("webhook", i), "give one of secret or secrets (a list of two)")
        if "secret" in table:
            secrets = (self.value(at("secret"), table["secret"], _secret),)
        else:
            secrets = self.value(at("secrets"), table["secrets"], _secrets)
        return Webhook(
            name=name,
            url=url,
            events=events,
            secrets=secrets,
            batch_size=self.value(at("batch_size"), table.get("batch_size", BATCH_SIZE), _size),
            batch_wait=self.value(at("batch_wait"), table.get("batch_wait", 1000), _millis),
            retry_for=self.value(at("retry_for"), table.get("retry_for", RETRY_FOR), _duration),
            timeout=self.value(at("timeout"), table.get("timeout", TIMEOUT), _duration),
        )

    def value(self, path: Path, value: object, check: Callable[[object], Any]) -> Any:
        try:
            return check(value)
        except ValueError as e:
            raise self.error(path, str(e)) from None


def _url(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    return value


def _name(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    return value


def _events(value: object) -> frozenset[str]:
    if value == "all":
        return frozenset(EVENT_TYPES)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError('must be "all" or a list of event types')
    unknown = [v for v in value if v not in EVENT_TYPES]
    if unknown:
        raise ValueError(f"unknown event type {unknown[0]!r} (one of {', '.join(EVENT_TYPES)})")
    return frozenset(value)


def _secret(value: object) -> bytes:
    if not isinstance(value, str):
        raise ValueError('must be a string "whsec_<base64>"')
    return decode_secret(value)


def _secrets(value: object) -> tuple[bytes, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= 2:
        raise ValueError("must be a list of one or two secrets (two while rotating)")
    return tuple(_secret(v) for v in value)


def _size(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be a whole number")
    if not 1 <= value <= MAX_BATCH_SIZE:
        raise ValueError(f"must be 1 to {MAX_BATCH_SIZE:,}")
    return value


def _millis(value: object) -> float:
    """A number of milliseconds, or a duration string ("1s", "250ms")."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("must be 0 or more milliseconds")
        return float(value) / 1000
    return parse_duration(value)


def _duration(value: object) -> float:
    return parse_duration(value)
