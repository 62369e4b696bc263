"""A campaign from its TOML file and recipients from CSV or JSON lines, streamed, with
every problem reported as one line naming the file and line."""

from __future__ import annotations

import csv
import itertools
import json
import os
import re
import tomllib
from collections.abc import Iterator
from typing import Any

from ..campaign import Campaign, DkimKey, Tracking, Unsubscribe
from ..errors import ConfigError, TemplateError
from ..render import RenderError, render
from ..wire import Recipient
from .common import CliError

_TOP = {"id", "sender", "from", "subject", "html", "text", "reply_to", "headers"}
_TABLES = {"tracking", "unsubscribe", "dkim"}
_TRACKING = {"base_url", "secret", "opens", "clicks"}
_UNSUBSCRIBE = {"url", "mailto", "secret"}
_DKIM = {"domain", "selector", "key", "algorithm", "headers", "canonicalization", "aligned"}
#: Recipients rendered before anything is submitted, to find variables the file lacks.
PREFLIGHT = 1000


def load_campaign(path: str) -> Campaign:
    """The campaign a TOML file describes; template files are relative to it."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise CliError(f"{path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise CliError(f"{path}: not valid TOML: {e}") from None
    _known(path, "", data, _TOP | _TABLES)
    for key in ("id", "sender", "from", "subject"):
        if key not in data:
            raise CliError(f"{path}: `{key}` is missing")
    if "html" not in data and "text" not in data:
        raise CliError(f"{path}: give `html` or `text` (a template file), or both")
    base = os.path.dirname(path)
    files: dict[str, str] = {
        part: os.path.join(base, str(data[part])) for part in ("html", "text") if part in data
    }
    parts: dict[str, str] = {part: _read(path, part, file) for part, file in files.items()}
    key_files: list[str] = []
    try:
        return Campaign(
            id=data["id"],
            sender=data["sender"],
            from_=data["from"],
            subject=data["subject"],
            html=parts.get("html"),
            text=parts.get("text"),
            reply_to=data.get("reply_to"),
            headers=data.get("headers"),
            tracking=_tracking(path, data.get("tracking")),
            unsubscribe=_unsubscribe(path, data.get("unsubscribe")),
            dkim=_dkim(path, base, data.get("dkim"), key_files),
        )
    except TemplateError as e:
        raise CliError(_template_error(path, e, files, parts)) from None
    except ConfigError as e:
        raise CliError(_config_error(path, e, key_files)) from None
    except (TypeError, ValueError) as e:
        raise CliError(f"{path}: {e}") from None


def _known(path: str, table: str, data: dict[str, Any], known: set[str]) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        where = f"[{table}] " if table else ""
        raise CliError(
            f"{path}: {where}unknown key `{unknown[0]}` (known: {', '.join(sorted(known))})"
        )


def _table(path: str, name: str, value: Any, known: set[str]) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise CliError(f"{path}: `{name}` must be a table ([{name}])")
    _known(path, name, value, known)
    return value


def _read(path: str, what: str, file: str) -> str:
    try:
        with open(file, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise CliError(f"{path}: {what} file {file}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise CliError(f"{path}: {what} file {file}: not UTF-8 ({e.reason})") from None


def _tracking(path: str, value: Any) -> Tracking | None:
    t = _table(path, "tracking", value, _TRACKING)
    if t is None:
        return None
    if "base_url" not in t or "secret" not in t:
        raise CliError(f"{path}: [tracking] needs base_url and secret")
    return Tracking(**t)


def _unsubscribe(path: str, value: Any) -> Unsubscribe | None:
    u = _table(path, "unsubscribe", value, _UNSUBSCRIBE)
    return None if u is None else Unsubscribe(**u)


def _dkim(path: str, base: str, value: Any, key_files: list[str]) -> list[DkimKey]:
    """The [dkim] table (or [[dkim]] tables) as keys; `key_files` gets their files."""
    tables = value if isinstance(value, list) else [] if value is None else [value]
    keys = []
    for t in tables:
        d = _table(path, "dkim", t, _DKIM)
        assert d is not None
        if not {"domain", "selector", "key"} <= set(d):
            raise CliError(f"{path}: [dkim] needs domain, selector and key (a PEM file)")
        key_file = os.path.join(base, str(d.pop("key")))
        try:
            with open(key_file, "rb") as f:
                pem = f.read()
        except OSError as e:
            raise CliError(f"{path}: DKIM key {key_file}: {e.strerror or e}") from None
        key_files.append(key_file)
        keys.append(DkimKey(private_key=pem, **d))
    return keys


def _config_error(path: str, e: ConfigError, key_files: list[str]) -> str:
    """The campaign's ConfigError, naming the key file when a DKIM key is at fault."""
    match = re.match(r"dkim\[(\d+)\] \(([^)]*)\)", e.field or "")
    if match and int(match[1]) < len(key_files):
        what = str(e).removeprefix(f"{e.field}: ")
        return f"{path}: DKIM key {key_files[int(match[1])]} ({match[2]}): {what}"
    return f"{path}: {e}"


def _template_error(
    path: str, e: TemplateError, files: dict[str, str], parts: dict[str, str]
) -> str:
    """file:line:column: what, and the line itself."""
    what = str(e).split(f"column {e.column}: ", 1)[-1]
    if e.part in files:
        lines = parts[e.part].splitlines()
        source = lines[e.line - 1].strip() if 0 < e.line <= len(lines) else ""
        return f"{files[e.part]}:{e.line}:{e.column}: {what}: {source}"
    return f"{path}: {e.part}, line {e.line}, column {e.column}: {what}"


# --- recipients ------------------------------------------------------------------------


def recipients(path: str) -> Iterator[tuple[int, Recipient]]:
    """(line number, recipient) for each row of a CSV file (a header row with an
    `email` column; `id` optional; other columns become variables) or a JSON-lines file
    (objects with `email`, optional `id`, other keys variables), read as it goes."""
    try:
        f = open(path, encoding="utf-8", newline="")  # noqa: SIM115
    except OSError as e:
        raise CliError(f"{path}: {e.strerror or e}") from None
    with f:
        try:
            jsonl = _is_jsonl(path, f)
            yield from (_json_lines(path, f) if jsonl else _csv_rows(path, f))
        except UnicodeDecodeError as e:
            raise CliError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        except csv.Error as e:
            raise CliError(f"{path}: not valid CSV: {e}") from None


def _is_jsonl(path: str, f: Any = None) -> bool:
    """JSON lines by its name, or (neither .csv nor .jsonl) by its first character."""
    if path.endswith((".jsonl", ".ndjson", ".json")):
        return True
    if path.endswith(".csv"):
        return False
    if f is None:
        with open(path, encoding="utf-8") as opened:
            return opened.read(1) == "{"
    first = f.read(1)
    f.seek(0)
    return bool(first == "{")


def _csv_rows(path: str, f: Any) -> Iterator[tuple[int, Recipient]]:
    reader = csv.DictReader(f)
    fields = reader.fieldnames or []
    if "email" not in fields:
        raise CliError(f"{path} line 1: the header row has no `email` column")
    for row in reader:
        line = reader.line_num
        if None in row:
            raise CliError(f"{path} line {line}: more fields than the header row has")
        address = (row.pop("email") or "").strip()
        if not address:
            raise CliError(f"{path} line {line}: no address in the `email` column")
        yield line, _recipient(address, row.pop("id", None) or None, row)


def _json_lines(path: str, f: Any) -> Iterator[tuple[int, Recipient]]:
    for line, text in enumerate(f, 1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            raise CliError(f"{path} line {line}: not valid JSON: {e.msg}") from None
        if not isinstance(row, dict):
            raise CliError(f"{path} line {line}: expected a JSON object")
        address = row.pop("email", None)
        if not isinstance(address, str) or not address.strip():
            raise CliError(f"{path} line {line}: no address in `email`")
        rid = row.pop("id", None)
        if rid is not None and not isinstance(rid, str | int):
            raise CliError(f"{path} line {line}: `id` must be a string or an integer")
        yield line, _recipient(address.strip(), rid, row)


def _recipient(address: str, rid: str | int | None, variables: dict[str, Any]) -> Recipient:
    if isinstance(rid, str) and rid.isdigit() and len(rid) < 19:
        rid = int(rid)
    return Recipient(address, variables, id=rid)


def check_recipients(campaign: Campaign, path: str) -> int:
    """Reads the whole file once (every row must have an address) and renders the
    first PREFLIGHT recipients: an undefined variable is a CliError naming it and the
    line. Returns how many recipients the file has."""
    rows = recipients(path)
    first = list(itertools.islice(rows, PREFLIGHT))
    for (line, r), result in zip(first, render(campaign, [r for _, r in first]), strict=True):
        if isinstance(result, RenderError):
            undefined = _UNDEFINED.match(result.reason)
            if undefined is not None and not _is_jsonl(path):
                # Every CSV row has every column: the file lacks one.
                part, name = undefined.groups()
                columns = ", ".join(["email", *(["id"] if r.id is not None else []), *r.vars])
                raise CliError(
                    f"{path}: no `{name}` column, which the {part} uses "
                    f"(the header row has: {columns})"
                )
            if undefined is not None:
                raise CliError(f"{path} line {line}: {result.reason}")
    return len(first) + sum(1 for _ in rows)


#: A render error for a variable the recipient lacks: its part and name.
_UNDEFINED = re.compile(r"(.+?): undefined variable `([^`]+)`")
