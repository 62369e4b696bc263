"""Runs spool calls on one dedicated thread, so the spool's disk (or server) never blocks
the event loop, and waits out a spool server that is gone for a while."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from .errors import SpoolUnavailableError
from .spool import Spool

P = ParamSpec("P")
T = TypeVar("T")

#: The first wait before a call is tried again on a spool server that is unreachable,
#: doubled at each failure up to RETRY_LONGEST: a restart (a few seconds) is noticed
#: within a second of its end, and a long outage costs one attempt every few seconds.
RETRY_FIRST = 0.1
RETRY_LONGEST = 5.0

_log = logging.getLogger(__name__)


class Spooler:
    """The engine's handle on its spool: `await call(...)` from the event loop runs on the
    spool thread; `now(...)` runs at once on the caller's thread (for quick reads such as
    a report), serialised with the spool thread by a lock.

    `wait_for_server`: a call that finds the spool's server unreachable
    (SpoolUnavailableError: PostgreSQL restarting, the network cut) is tried again on
    the spool thread, with backoff, until it goes through, so its caller simply waits:
    the engine holds its outcomes in memory meanwhile, and loses none. The calls queued
    behind it wait their turn, so they run in the order they were made (the retried
    call first: a write whose COMMIT was cut off is resolved by the very same call,
    pg_reconnect.py). One warning says when the spool became unreachable and why, one
    when it is back and after how long. `close` ends the waiting."""

    def __init__(self, spool: Spool, *, wait_for_server: bool = False) -> None:
        self.spool = spool
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ferrymail-spool")
        self._lock = threading.Lock()
        self._wait = wait_for_server
        self._closing = threading.Event()
        self._lost_at: float | None = None  # since when the server has been unreachable

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        run = self._until_done if self._wait else self.now
        return await loop.run_in_executor(self._executor, lambda: run(fn, *args, **kwargs))

    def now(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        with self._lock:
            return fn(*args, **kwargs)

    def _until_done(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        delay = RETRY_FIRST
        while True:
            try:
                result = self.now(fn, *args, **kwargs)
            except SpoolUnavailableError as e:
                if self._closing.is_set():
                    raise
                if self._lost_at is None:
                    self._lost_at = time.monotonic()
                    _log.warning(
                        "ferrymail: the spool is unreachable (%s): deliveries under way go "
                        "on and their outcomes wait in memory; trying again every %g s "
                        "at most",
                        e.reason,
                        RETRY_LONGEST,
                    )
                if self._closing.wait(delay):
                    raise
                delay = min(delay * 2, RETRY_LONGEST)
                continue
            if self._lost_at is not None:
                _log.warning(
                    "ferrymail: the spool is back after %.1f s unreachable; the outcomes "
                    "held meanwhile are being recorded",
                    time.monotonic() - self._lost_at,
                )
                self._lost_at = None
            return result

    def stop(self) -> None:
        """Ends the spool thread after the calls under way; the spool stays open, for an
        owner that closes it itself (the web app is handed a spool it does not own)."""
        self._executor.shutdown(wait=True)

    def close(self) -> None:
        self._closing.set()
        self.stop()
        with self._lock:
            self.spool.close()
