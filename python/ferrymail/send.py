"""ferrymail.send: one synchronous call that runs an engine until every recipient is final."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterable, Iterable
from typing import Any

import uvloop

from .campaign import Campaign
from .config import Config
from .engine import Engine
from .spool import Report
from .wire import Recipient


def send(
    campaign: Campaign,
    recipients: Iterable[Recipient | str] | AsyncIterable[Recipient | str],
    *,
    spool: str | os.PathLike[str] = "ferrymail.db",
    **config: Any,
) -> Report:
    """Submits, delivers until every recipient is final (retries included: shorten them
    with `retry=RetryPolicy(...)` for scripts), and returns the campaign's report.
    `config` holds `Config` fields; `helo_name` defaults to this host's name."""
    config.setdefault("helo_name", socket.gethostname())
    settings = Config(**config)

    async def main() -> Report:
        async with Engine(spool, settings) as engine:
            await engine.submit(campaign, recipients)
            await engine.drain()
            return await engine.report(campaign.id)

    return uvloop.run(main())
