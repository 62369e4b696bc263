"""Reloading the shaping file while the engine runs: on SIGHUP, and when the file changes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable

from ..errors import ConfigError
from .loader import load
from .shaping import Shaping

#: How often the file's modification time and size are looked at.
POLL_EVERY = 2.0


class Reloader:
    """Watches a shaping file for one engine. A new file that loads is put in force with
    `apply` (Engine.reload_shaping); one that does not is refused with its file, line
    and key (`say`), and the rules in force stay. Nothing queued is touched."""

    def __init__(
        self, path: str, apply: Callable[[Shaping], None], say: Callable[[str], None]
    ) -> None:
        self._path = path
        self._apply = apply
        self._say = say
        self._seen = self._stamp()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        """Reloads on SIGHUP and on a change, until `stop`."""
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._wake.set)
        self._task = asyncio.create_task(self._watch(), name="ferrymail-shaping-reload")

    async def stop(self) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def reload(self, why: str) -> bool:
        """Loads the file and puts it in force; False (and said why) when it is bad."""
        self._seen = self._stamp()
        try:
            shaping = load(self._path)
        except (ConfigError, OSError) as e:
            self._say(f"shaping file not reloaded ({why}), the rules in force stay: {e}")
            return False
        self._apply(shaping)
        self._say(f"shaping file {self._path} reloaded ({why})")
        return True

    async def _watch(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_EVERY)
            if self._wake.is_set():
                self._wake.clear()
                self.reload("SIGHUP")
            elif self._stamp() != self._seen:
                self.reload("the file changed")

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size
