"""open_spool: the spool a path or URL names (a path or sqlite:// is SQLite, postgresql://
is PostgreSQL)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from ..errors import ConfigError
from .protocol import Spool

_POSTGRES = ("postgresql://", "postgres://")


def is_url(url_or_path: str | os.PathLike[str]) -> bool:
    """Whether `url_or_path` names a spool on a server (postgresql://…), not a file."""
    return os.fspath(url_or_path).startswith(_POSTGRES)


def shown(url_or_path: str | os.PathLike[str]) -> str:
    """The spool's name as messages and logs may show it: a URL without its password."""
    where = os.fspath(url_or_path)
    if not is_url(where):
        return where
    from .pg_schema import redacted

    return redacted(where)


def open_spool(
    url_or_path: str | os.PathLike[str],
    *,
    read_only: bool = False,
    clock: Callable[[], float] = time.time,
    light: bool = False,
) -> Spool:
    """The spool at `url_or_path`: a file path or `sqlite:///path` (SQLAlchemy's form:
    four slashes for an absolute path) is a SqliteSpool,
    `postgresql://user@host:port/db` a PostgresSpool. ConfigError (one line, the URL
    without its password) when it cannot be opened.

    `light`: the connection reads reports or writes a few rows (the API's reads,
    tracking, webhooks, metrics, the CLI), so an SQLite spool gives it a small page
    cache instead of the engine's (schema.CACHE_KIB). PostgreSQL caches in the server."""
    where = os.fspath(url_or_path)
    if where.startswith(_POSTGRES):
        try:
            from .postgres import PostgresSpool
        except ImportError as e:  # (psycopg is a dependency; a broken install says so)
            raise ConfigError(f"the PostgreSQL spool needs psycopg: {e}", "spool") from None
        return PostgresSpool(where, clock=clock, read_only=read_only)
    if "://" in where and not where.startswith("sqlite://"):
        scheme = where.partition("://")[0]
        raise ConfigError(
            f"a spool is a file path, sqlite:///path or postgresql://…, not {scheme}://",
            "spool",
        )
    from .schema import CACHE_KIB, LIGHT_CACHE_KIB
    from .sqlite import SqliteSpool

    if where.startswith("sqlite://"):
        # As SQLAlchemy writes it: sqlite:///spool.db is relative, sqlite:////var/x.db
        # absolute (the path is what follows the third slash).
        if not where.startswith("sqlite:///") or where == "sqlite:///":
            raise ConfigError(
                f"{where!r} names no file: sqlite:///relative.db or sqlite:////abs/path.db",
                "spool",
            )
        where = where.removeprefix("sqlite:///")
    cache_kib = LIGHT_CACHE_KIB if light else CACHE_KIB
    return SqliteSpool(where, clock=clock, read_only=read_only, cache_kib=cache_kib)
