"""The service: the /v1 API beside the tracking app, as one ASGI app for `ferrymail serve`."""

from __future__ import annotations

from typing import Any

from .app import Api
from .types import Receive, Scope, Send

__all__ = ["Api", "Mounted"]


class Mounted:
    """Paths under /v1 go to the API, every other to the tracking app (its public paths
    stay as they were); the lifespan goes to the tracking app, then `opened`/`closing`."""

    def __init__(self, tracking: Any, api: Api, on_startup: Any, on_shutdown: Any) -> None:
        self._tracking = tracking
        self._api = api
        self._startup = on_startup
        self._shutdown = on_shutdown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (scope["path"] == "/v1" or scope["path"].startswith("/v1/")):
            await self._api(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
        else:
            await self._tracking(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self._startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._shutdown()
                # The tracking app commits its queued clicks and opens at shutdown.
                await self._tracking.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
