"""What `run` and `serve` run beside their main work: the webhook sender and the private
/metrics listener (`--metrics-listen`), as tasks of one event loop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
from collections.abc import Iterator
from typing import Any

from ..engine import Engine
from ..metrics import Metrics
from ..webhooks import Webhook, WebhookSender


def add_metrics_listen(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (a private address: "
        "keep it off the internet)",
    )


def metrics_socket(args: argparse.Namespace) -> socket.socket | None:
    """The bound socket of --metrics-listen (None without it); CliError naming it."""
    from .serve import listening_socket

    listen = getattr(args, "metrics_listen", None)
    return None if listen is None else listening_socket(listen, "--metrics-listen")


async def count_events(engine: Engine, metrics: Metrics) -> None:
    """Counts the engine's events in the metrics, until cancelled."""
    async for event in engine.events():
        metrics.observe(event)


class Service:
    """The webhook sender (when there are webhooks) and the metrics listener (when there
    is a socket), started by `start()` on the running loop, ended by `stop()`."""

    def __init__(
        self,
        spool: str | os.PathLike[str],
        webhooks: tuple[Webhook, ...],
        metrics_sock: socket.socket | None,
    ) -> None:
        self.sender = WebhookSender(spool, webhooks)
        self.metrics = Metrics(spool, self.sender.posts) if metrics_sock is not None else None
        self._sock = metrics_sock
        self._server: Any = None
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self.sender.run()))
        if self.metrics is not None and self._sock is not None:
            import uvicorn

            self._server = _quiet_server(
                uvicorn.Config(
                    self.metrics.app(),
                    lifespan="off",
                    access_log=False,
                    log_level="warning",
                    server_header=False,
                )
            )
            self._tasks.append(asyncio.create_task(self._server.serve(sockets=[self._sock])))

    async def stop(self) -> None:
        self.sender.stop()
        if self._server is not None:
            self._server.should_exit = True
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._sock is not None:
            self._sock.close()


def _quiet_server(config: Any) -> Any:
    """A uvicorn server that leaves the signal handlers to the command it runs in."""
    import uvicorn

    class QuietServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return QuietServer(config)
