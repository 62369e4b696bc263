"""Where a key is in a TOML text: tomllib gives no lines for keys, so errors find them here.

`KeyLines(text).line(path)` is the 1-based line that sets `path`, a tuple of keys with
an int for the n-th table of an array of tables: ("provider", "google", "automation",
0, "regex") is the `regex = ...` line under the first `[[provider.google.automation]]`.
A key inside an inline table (`warmup = { start = ... }`) is on its parent's line; a
table made implicitly (by `[a.b.c]` alone) is at its first descendant. Text inside
multi-line strings and arrays is skipped so that it cannot pose as a key.
"""

from __future__ import annotations

import re

Path = tuple[str | int, ...]

_HEADER = re.compile(r"\s*(\[\[?)(.*?)(\]\]?)\s*(?:#.*)?$")
_BARE = re.compile(r"[A-Za-z0-9_-]+")


class KeyLines:
    def __init__(self, text: str) -> None:
        self._lines: dict[Path, int] = {}
        self._scan(text)

    def line(self, path: Path) -> int | None:
        """The line of `path`, else of its nearest ancestor that has one, else of its
        first descendant (an implicit table); None when nothing of it is in the text."""
        for cut in range(len(path), 0, -1):
            found = self._lines.get(path[:cut])
            if found is not None:
                return found
        below = [n for p, n in self._lines.items() if p[: len(path)] == path]
        return min(below) if below else None

    def _scan(self, text: str) -> None:
        table: Path = ()
        arrays: dict[Path, int] = {}
        open_until: str | None = None  # the closing token of a multi-line value
        depth = 0  # open brackets of a multi-line array
        for number, raw in enumerate(text.splitlines(), start=1):
            if open_until is not None:
                if open_until in raw:
                    open_until = None
                continue
            if depth > 0:
                depth += _bracket_balance(raw)
                continue
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            header = _HEADER.fullmatch(raw)
            if header and len(header[1]) == len(header[3]) and "=" not in header[2]:
                keys = _dotted(header[2])
                if keys is None:
                    continue
                if header[1] == "[[":
                    index = arrays.get(keys, -1) + 1
                    arrays[keys] = index
                table = _indexed(keys, arrays)
                self._lines.setdefault(table, number)
                continue
            key_text, eq, value = line.partition("=")
            keys = _dotted(key_text) if eq else None
            if keys is None:
                continue
            for end in range(1, len(keys) + 1):  # a.b.c = 1 makes tables a and a.b here
                self._lines.setdefault((*table, *keys[:end]), number)
            value = value.strip()
            for quote in ('"""', "'''"):
                if value.startswith(quote) and value.count(quote) == 1:
                    open_until = quote
            if open_until is None and value.startswith("["):
                depth = _bracket_balance(value)


def _indexed(keys: tuple[str, ...], arrays: dict[Path, int]) -> Path:
    """`keys` with the current index after every prefix that is an array of tables."""
    path: list[str | int] = []
    plain: tuple[str, ...] = ()
    for key in keys:
        plain = (*plain, key)
        path.append(key)
        if plain in arrays:
            path.append(arrays[plain])
    return tuple(path)


def _dotted(text: str) -> tuple[str, ...] | None:
    """The keys of a dotted key (`a."b.c".d`), or None when `text` is not one."""
    keys: list[str] = []
    rest = text.strip()
    while rest:
        if rest[0] in "\"'":
            quote = rest[0]
            end = rest.find(quote, 1)
            while quote == '"' and end > 0 and rest[end - 1] == "\\":
                end = rest.find(quote, end + 1)
            if end < 0:
                return None
            keys.append(rest[1:end].replace('\\"', '"'))
            rest = rest[end + 1 :].strip()
        else:
            bare = _BARE.match(rest)
            if bare is None:
                return None
            keys.append(bare[0])
            rest = rest[bare.end() :].strip()
        if rest.startswith("."):
            rest = rest[1:].strip()
        elif rest:
            return None
    return tuple(keys) or None


def _bracket_balance(text: str) -> int:
    """Opened minus closed brackets outside strings and comments (roughly: quotes are
    assumed not to hold brackets of their own kind across lines)."""
    balance = 0
    quote = ""
    for c in text:
        if quote:
            if c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c == "#":
            break
        elif c == "[":
            balance += 1
        elif c == "]":
            balance -= 1
    return balance
