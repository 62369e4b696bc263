"""A PostgresSpool call across a lost connection: reconnect, and never run twice a write
whose COMMIT was cut off.

When the server restarts or the network drops, psycopg raises OperationalError and the
connection is dead. The call then raises SpoolUnavailableError (the engine waits and
calls again, spooler.py) and the next call opens a new connection.

A write is safe to run again when it did not commit. The hard case is the one whose
COMMIT was sent and whose answer never came: it may have committed or not, and only the
server knows. Running it again is wrong for the writes that count: `started` adds one
to each recipient's interrupted attempts, `add_warmup_sent` adds to the day's sends,
`insert` would find its own recipients and call them duplicates, and `record` (absolute
values, applied only to rows in flight) would, in the seconds it takes to reconnect,
overwrite a recipient it had released and another node had leased again since, losing
that node's outcome (a second delivery). So these writes ask the server for their
transaction id first (pg_current_xact_id()), and when their COMMIT is cut off the spool
keeps (call, transaction id, result). The next call, on the new connection, asks
pg_xact_status(id): "committed" and the same call again (as the engine's retry is) →
the kept result, nothing run; "aborted" (a transaction the restart cut is aborted) →
the call runs. "in progress" (the old session still finishing, on a network cut) is
waited for. The other writes (suspend, suppress, put_campaign, renew …) give the same
state run twice and simply run again.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import psycopg

from ..errors import SpoolUnavailableError

_log = logging.getLogger(__name__)

#: How long a call waits for a transaction of the lost session to end ("in progress":
#: the server has not noticed yet that the client is gone) before it gives up.
IN_PROGRESS_WAIT = 30.0

F = TypeVar("F", bound=Callable[..., Any])


class CutCommit(NamedTuple):
    """A write whose COMMIT was sent and not answered."""

    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    xid: str
    result: Any


class Reconnecting:
    """What PostgresSpool keeps for its calls across lost connections (the mixin's state:
    the class that uses it sets `_db` to None when the connection is lost)."""

    _conn: psycopg.Connection[Any] | None
    _xid: str | None  # the transaction id of the write under way (once=True)
    _committing: bool  # its body ran: its COMMIT is under way
    _result: Any  # what the write under way returns, kept if its COMMIT is cut
    _cut: CutCommit | None
    _calling: bool  # a call is under way (methods calling methods are one call)

    def _connect(self) -> psycopg.Connection[Any]:
        raise NotImplementedError

    def _where(self) -> str:
        raise NotImplementedError

    def _connection(self) -> psycopg.Connection[Any]:
        """The live connection, opened again after a loss."""
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _lost(self, error: BaseException) -> SpoolUnavailableError:
        """Drops the dead connection; the error the call raises."""
        db, self._conn = self._conn, None
        if db is not None:
            with contextlib.suppress(psycopg.Error):
                db.close()
        reason = _reason(error)
        return SpoolUnavailableError(f"the spool {self._where()} is unreachable: {reason}", reason)

    def _resolve(
        self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[bool, Any]:
        """The cut write's fate, asked of the server: (True, its result) when this call is
        that write again and it committed; (False, None) when this call must run."""
        cut = self._cut
        assert cut is not None
        db = self._connection()
        deadline = time.monotonic() + IN_PROGRESS_WAIT
        while True:
            row = db.execute("SELECT pg_xact_status(%s::xid8)", (cut.xid,)).fetchone()
            status = row[0] if row else None
            if status != "in progress" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if status == "in progress":
            raise SpoolUnavailableError(
                f"the spool {self._where()}: transaction {cut.xid} of a lost connection is "
                "still in progress",
                "a transaction of the lost connection is still in progress",
            )
        self._cut = None
        same = cut.method == method and cut.args == args and cut.kwargs == kwargs
        _log.warning(
            "ferrymail: the spool's connection was lost during the COMMIT of %s: it %s%s",
            cut.method,
            "committed" if status == "committed" else "did not commit",
            (" (not run again)" if status == "committed" else " (run again)") if same else "",
        )
        if status == "committed" and same:
            return True, cut.result
        return False, None


def reconnecting(method: F) -> F:
    """Wraps a PostgresSpool method: connection lost → SpoolUnavailableError (and the
    COMMIT it cut kept, see the module's doc); the next call reconnects."""
    name = method.__name__

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self._calling:  # a method called by another: the outer call does this
            return method(self, *args, **kwargs)
        self._calling = True
        try:
            if self._cut is not None:
                done, result = self._resolve(name, args, kwargs)
                if done:
                    return result
            self._connection()
            self._xid, self._committing, self._result = None, False, None
            return method(self, *args, **kwargs)
        except (psycopg.OperationalError, psycopg.InterfaceError) as e:
            db = self._conn
            if db is not None and not db.closed and not db.broken:
                raise  # a query's own failure (a timeout, a cancel): not a lost server
            if self._committing and self._xid is not None:
                self._cut = CutCommit(name, args, kwargs, self._xid, self._result)
            raise self._lost(e) from None
        finally:
            self._xid, self._committing, self._calling = None, False, False

    return call  # type: ignore[return-value]


def reconnecting_methods(cls: type) -> type:
    """Class decorator: every public method, the inherited ones too (generators aside:
    they run as they are read), made `reconnecting`."""
    for name in dir(cls):
        value = inspect.getattr_static(cls, name)
        if name.startswith("_") or name == "close" or not inspect.isfunction(value):
            continue
        if inspect.isgeneratorfunction(value):
            continue
        setattr(cls, name, reconnecting(value))
    return cls


def _reason(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = lines[0] if lines else type(error).__name__
    return reason.removeprefix("FATAL:").strip() or type(error).__name__
