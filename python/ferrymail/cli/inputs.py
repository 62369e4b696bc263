"""A campaign from its TOML file and recipients from CSV or JSON lines, streamed, with
every problem reported as one line naming the file and line."""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from typing import Any

from ..campaign import Campaign, DkimKey, Tracking, Unsubscribe, Verp
from ..errors import ConfigError, TemplateError
from ..render import RenderError, render
from ..wire import Recipient
from .common import CliError

_TOP = {"id", "sender", "from", "subject", "html", "text", "reply_to", "headers", "pool"}
_TABLES = {"tracking", "unsubscribe", "dkim", "verp"}
_TRACKING = {"base_url", "secret", "opens", "clicks"}
_UNSUBSCRIBE = {"url", "mailto", "secret"}
_VERP = {"secret"}
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
            verp=_verp(path, data.get("verp", False)),
            pool=data.get("pool"),
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


def _verp(path: str, value: Any) -> bool | Verp:
    """`verp = true` (the tracking or unsubscribe secret) or `[verp] secret = "..."`."""
    if isinstance(value, bool):
        return value
    if not isinstance(value, dict):
        raise CliError(f"{path}: `verp` must be true, false or a table ([verp] secret = ...)")
    v = _table(path, "verp", value, _VERP)
    if not v or "secret" not in v:
        raise CliError(f"{path}: [verp] needs secret")
    return Verp(**v)


def _dkim(path: str, base: str, value: Any, key_files: list[str]) -> list[DkimKey]:
    """The [dkim] table (or [[dkim]] tables) as keys; `key_files` gets their files."""
    tables = value if isinstance(value, list) else [] if value is None else [value]
    keys = []
    for t in tables:
        d = _table(path, "dkim", t, _DKIM)
        if d is None:  # not given: nothing to read (tables holds no None, but say so)
            continue
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

#: Nesting of JSON arrays and objects a recipient's variables may have: far more than any
#: template reads, well below the decoders' limits (Python's recursion, rmp-serde's 1024).
MAX_DEPTH = 32
#: The integers a recipient's variables may hold: MessagePack's (i64 and u64), which the
#: Rust core decodes; a larger one could not reach the template.
MIN_INT, MAX_INT = -(2**63), 2**64 - 1
#: What a user writes for "read the recipients from standard input".
STDIN = "-"


def recipients(path: str, name: str | None = None) -> Iterator[tuple[int, Recipient]]:
    """(line number, recipient) for each row of a CSV file (a header row with an
    `email` column; `id` optional; other columns become variables) or a JSON-lines file
    (objects with `email`, optional `id`, other keys variables), read as it goes.
    `name` is what messages call the file (default: `path`)."""
    name = name or path
    try:
        # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is read past, not taken for
        # part of the first column's name.
        f = open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115
    except OSError as e:
        raise CliError(f"{name}: {e.strerror or e}") from None
    with f:
        try:
            jsonl = _is_jsonl(name, f)
            yield from (_json_lines(name, f) if jsonl else _csv_rows(name, f))
        except UnicodeDecodeError as e:
            raise CliError(f"{name}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        except csv.Error as e:
            raise CliError(f"{name}: not valid CSV: {e}") from None


def _is_jsonl(name: str, f: Any) -> bool:
    """JSON lines by its name, or (neither .csv nor .jsonl) by its first character."""
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return True
    if name.endswith(".csv"):
        return False
    first = f.read(1)
    f.seek(0)
    return bool(first == "{")


def _csv_rows(path: str, f: Any) -> Iterator[tuple[int, Recipient]]:
    reader = csv.reader(f)
    header = next(reader, [])
    seen: set[str] = set()
    for column in header:
        if column in seen:
            # csv.DictReader would keep the last one's value in silence: a second `email`
            # column would be the address mailed.
            raise CliError(f"{path} line 1: the header row has the column `{column}` twice")
        seen.add(column)
    if "email" not in seen:
        raise CliError(f"{path} line 1: the header row has no `email` column")
    for fields in reader:
        line = reader.line_num
        if not fields:  # a blank line
            continue
        if len(fields) != len(header):
            more = "more" if len(fields) > len(header) else "fewer"
            raise CliError(
                f"{path} line {line}: {more} fields ({len(fields)}) than the header row "
                f"has ({len(header)})"
            )
        row = dict(zip(header, fields, strict=True))
        address = row.pop("email").strip()
        if not address:
            raise CliError(f"{path} line {line}: no address in the `email` column")
        yield line, _recipient(address, row.pop("id", None) or None, row)


def _json_lines(path: str, f: Any) -> Iterator[tuple[int, Recipient]]:
    for line, text in enumerate(f, 1):
        if not text.strip():
            continue
        try:
            row = json.loads(text, parse_constant=_no_constant)
        except json.JSONDecodeError as e:
            raise CliError(f"{path} line {line}: not valid JSON: {e.msg}") from None
        except RecursionError:
            raise CliError(f"{path} line {line}: nested more than {MAX_DEPTH} deep") from None
        except ValueError as e:  # NaN or Infinity; an integer of more than 4300 digits
            raise CliError(f"{path} line {line}: {e}") from None
        if not isinstance(row, dict):
            raise CliError(f"{path} line {line}: expected a JSON object")
        problem = _unrepresentable(row, 0)
        if problem is not None:
            raise CliError(f"{path} line {line}: {problem}")
        address = row.pop("email", None)
        if not isinstance(address, str) or not address.strip():
            raise CliError(f"{path} line {line}: no address in `email`")
        rid = row.pop("id", None)
        if rid is not None and not isinstance(rid, str | int):
            raise CliError(f"{path} line {line}: `id` must be a string or an integer")
        yield line, _recipient(address.strip(), rid, row)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _unrepresentable(value: Any, depth: int) -> str | None:
    """What in a decoded JSON value cannot travel to the template (None: nothing)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            lone = ord(value[e.start])
            return f"a text has a lone surrogate (\\u{lone:04x}), which is not a character"
        return None
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return None
    if isinstance(value, int):
        if not MIN_INT <= value <= MAX_INT:
            return f"the number {value} is too large (at most 64 bits)"
        return None
    if depth >= MAX_DEPTH:
        return f"nested more than {MAX_DEPTH} deep"
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        problem = (_unrepresentable(key, depth) if isinstance(key, str) else None) or (
            _unrepresentable(item, depth + 1)
        )
        if problem is not None:
            return problem
    return None


def _recipient(address: str, rid: str | int | None, variables: dict[str, Any]) -> Recipient:
    if isinstance(rid, str) and rid.isdigit() and len(rid) < 19:
        rid = int(rid)
    return Recipient(address, variables, id=rid)


@contextlib.contextmanager
def readable_twice(path: str) -> Iterator[tuple[str, str]]:
    """(a path to read, the name messages give it) for a recipients file that `send`
    reads twice: once to check it, once to submit it. A pipe (`-`, /dev/stdin, a FIFO)
    can be read once only, so it is first copied to a temporary file, which is removed
    afterwards; a regular file is read where it is."""
    if path != STDIN:
        try:
            regular = stat.S_ISREG(os.stat(path).st_mode)
        except OSError as e:
            raise CliError(f"{path}: {e.strerror or e}") from None
        if regular:
            yield path, path
            return
    name = "<stdin>" if path == STDIN else path
    with tempfile.TemporaryDirectory(prefix="ferrymail-recipients-") as scratch:
        copy = os.path.join(scratch, "recipients")
        try:
            with open(copy, "wb") as out:
                if path == STDIN:
                    shutil.copyfileobj(sys.stdin.buffer, out)
                else:
                    with open(path, "rb") as source:
                        shutil.copyfileobj(source, out)
        except OSError as e:
            raise CliError(f"{name}: cannot be read into {scratch}: {e.strerror or e}") from None
        yield copy, name


def check_recipients(campaign: Campaign, path: str, name: str | None = None) -> int:
    """Reads the whole file once (every row must have an address) and renders the
    first PREFLIGHT recipients: an undefined variable is a CliError naming it and the
    line, and so is any error that every recipient rendered has (an unknown filter, a
    bad expression: the whole campaign would fail). Returns how many recipients the
    file has."""
    name = name or path
    rows = recipients(path, name)
    first = list(itertools.islice(rows, PREFLIGHT))
    results = render(campaign, [r for _, r in first])
    for (line, r), result in zip(first, results, strict=True):
        if isinstance(result, RenderError):
            undefined = _UNDEFINED.match(result.reason)
            if undefined is not None and not _is_jsonl_name(name, path):
                # Every CSV row has every column: the file lacks one.
                part, variable = undefined.groups()
                columns = ", ".join(["email", *(["id"] if r.id is not None else []), *r.vars])
                raise CliError(
                    f"{name}: no `{variable}` column, which the {part} uses "
                    f"(the header row has: {columns})"
                )
            if undefined is not None:
                raise CliError(f"{name} line {line}: {result.reason}")
    failed = [r for r in results if isinstance(r, RenderError)]
    if failed and len(failed) == len(results):
        # Whatever the error: not one message could be made, so none would be sent.
        sample = f"the first {len(results):,}" if len(results) > 1 else "the"
        raise CliError(
            f"{name} line {first[0][0]}: {_one_line(failed[0].reason)} "
            f"({sample} recipients checked all fail: nothing was queued)"
        )
    return len(first) + sum(1 for _ in rows)


def _is_jsonl_name(name: str, path: str) -> bool:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return _is_jsonl(name, f)


def _one_line(text: str) -> str:
    return " ".join(text.split())


#: A render error for a variable the recipient lacks: its part and name.
_UNDEFINED = re.compile(r"(.+?): undefined variable `([^`]+)`")
