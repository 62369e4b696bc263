"""What `ferrymail serve` runs on uvicorn's loop to deliver, as `ferrymail run` does: the
engine's `run` and the shaping file's reloader; started at the lifespan's startup,
stopped at its shutdown."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

from ..engine import Engine
from ..shaping.reload import Reloader
from .common import reload_shaping, warn_helo


class Delivery:
    """Delivers from the engine's spool until `stop()`. `failed` is called once when
    delivery ends by itself (the spool could not be written): serve then stops too, as
    `ferrymail run` would exit, rather than accept mail nobody sends."""

    def __init__(
        self,
        engine: Engine,
        shaping: str | None,
        failed: Callable[[BaseException], None],
    ) -> None:
        self._engine = engine
        self._shaping = shaping
        self._failed = failed
        self._running: asyncio.Task[None] | None = None
        self._reloader: Reloader | None = None
        self._stopping = False

    def start(self) -> None:
        """On the running loop, with the engine open."""
        warn_helo("serve", self._engine.config.helo_name)
        self._reloader = reload_shaping(self._engine, self._shaping)
        self._running = asyncio.create_task(self._engine.run())
        self._running.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if self._stopping or task.cancelled():
            return
        error = task.exception() or RuntimeError("the engine stopped delivering")
        print(f"ferrymail serve: delivery stopped: {error}", file=sys.stderr, flush=True)
        self._failed(error)

    async def stop(self) -> None:
        """Stops delivery as `ferrymail run` does on SIGTERM: no new batch, the batches in
        flight get the engine's grace to finish, then their sessions are cut and their
        recipients go back to the queue. The engine itself stays open (the caller closes
        it, which releases what it still holds)."""
        self._stopping = True
        self._engine.stop()
        if self._running is not None:
            await asyncio.gather(self._running, return_exceptions=True)
        if self._reloader is not None:
            await self._reloader.stop()
