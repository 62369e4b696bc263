"""Runs spool calls on one dedicated thread, so SQLite's fsyncs never block the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from .spool import Spool

P = ParamSpec("P")
T = TypeVar("T")


class Spooler:
    """The engine's handle on its spool: `await call(...)` from the event loop runs on the
    spool thread; `now(...)` runs at once on the caller's thread (for quick reads such as
    a report), serialised with the spool thread by a lock."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ferrymail-spool")
        self._lock = threading.Lock()

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: self.now(fn, *args, **kwargs))

    def now(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        with self._lock:
            return fn(*args, **kwargs)

    def stop(self) -> None:
        """Ends the spool thread after the calls under way; the spool stays open, for an
        owner that closes it itself (the web app is handed a spool it does not own)."""
        self._executor.shutdown(wait=True)

    def close(self) -> None:
        self.stop()
        with self._lock:
            self.spool.close()
