"""The webhook sender: drains the spool's outbox, one batch in flight per endpoint, POSTs
each signed, retries with backoff for `retry_for`, then leaves it as a dead letter.

Order: an endpoint's batches go one at a time in outbox order, and a failed batch is
sent again (the same events, the same webhook-id) before any later one, so the events of
one recipient arrive in order, until a batch becomes a dead letter (the batches after
it then go on; `ferrymail webhooks replay` sends it again, first in line).

At least once: a batch leaves the outbox only after the endpoint answered 2xx; a crash
between the answer and that delete sends it again (receivers deduplicate by
webhook-id or by each event's `id`).

What counts as a failure to retry: a timeout, a refused or broken connection, and every
answer that is not 2xx, 4xx included (a 400 or 401 is most often a receiver being
redeployed or misconfigured, which retrying for `retry_for` survives; a receiver that
wants an event dropped answers 2xx). Redirects are not followed (a 3xx is a failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import time
from collections.abc import Sequence

import httpx

from ..spool import OutboxBatch, Spool, open_spool
from ..spooler import Spooler
from .config import Webhook
from .sign import headers

#: The first retry comes this many seconds after a failure; each next one twice as late,
#: up to MAX_BACKOFF (Standard Webhooks' suggested schedule starts at 5 s and ends at
#: hours; this one retries a short outage sooner and never waits more than 10 minutes).
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 600.0
#: How often an endpoint with nothing to send looks at the outbox again (at most; its
#: batch_wait when shorter): the engine may run in another process.
IDLE_POLL = 1.0
#: Characters of a failure's text kept in the outbox (`ferrymail webhooks status`).
ERROR_TEXT = 300

_log = logging.getLogger(__name__)


def backoff(attempts: int) -> float:
    """Seconds before the next POST of a batch that has failed `attempts` times."""
    return min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** max(0, attempts - 1))


class WebhookSender:
    """Sends the outbox of the spool at `spool_at` (a path or postgresql:// URL) to
    `webhooks`, until `stop()`. Use as `await sender.run()` in a task."""

    def __init__(self, spool_at: str | os.PathLike[str], webhooks: Sequence[Webhook]) -> None:
        self._spool_at = spool_at
        self._webhooks = list(webhooks)
        self._stopping = asyncio.Event()
        #: POSTs that failed and POSTs that succeeded, per endpoint (for metrics).
        self.failures: dict[str, int] = {h.name: 0 for h in webhooks}
        self.sent: dict[str, int] = {h.name: 0 for h in webhooks}

    def posts(self) -> dict[tuple[str, str], int]:
        """POSTs so far: {(endpoint, "ok" or "failed"): n} (ferrymail.metrics)."""
        counts = {(name, "ok"): n for name, n in self.sent.items()}
        counts.update({(name, "failed"): n for name, n in self.failures.items()})
        return counts

    def stop(self) -> None:
        """Returns from `run` once the POSTs under way have ended (each within its
        timeout); what was not sent stays in the outbox."""
        self._stopping.set()

    async def run(self) -> None:
        if not self._webhooks:
            return
        loop = asyncio.get_running_loop()
        spool: Spool = await loop.run_in_executor(
            None, functools.partial(open_spool, self._spool_at, light=True)
        )
        spooler = Spooler(spool)  # type: ignore[arg-type]
        try:
            async with httpx.AsyncClient(follow_redirects=False) as client:
                await asyncio.gather(*(self._endpoint(spooler, client, h) for h in self._webhooks))
        finally:
            await loop.run_in_executor(None, spooler.close)

    async def _endpoint(self, spooler: Spooler, client: httpx.AsyncClient, hook: Webhook) -> None:
        spool = spooler.spool
        while not self._stopping.is_set():
            now = time.time()
            batch = await spooler.call(
                spool.webhook_take, hook.name, hook.batch_size, now - hook.batch_wait
            )
            if batch is None:
                await self._pause(min(IDLE_POLL, hook.batch_wait) or IDLE_POLL / 10)
                continue
            wait = batch.due - time.time()
            if wait > 0:  # a batch that failed, waiting for its retry
                await self._pause(wait)
                continue
            error = await self._post(client, hook, batch)
            if error is None:
                self.sent[hook.name] += 1
                await spooler.call(spool.webhook_sent, hook.name, batch.batch)
                continue
            self.failures[hook.name] += 1
            failed_at = time.time()
            first = batch.first_failed if batch.first_failed is not None else failed_at
            deadline = first + hook.retry_for
            # A little jitter, so that endpoints failing together do not retry together.
            retry = failed_at + backoff(batch.attempts + 1) * random.uniform(1.0, 1.1)
            next_attempt = None if failed_at >= deadline else min(retry, deadline)
            if next_attempt is None:
                _log.warning(
                    "ferrymail: webhook %s: batch of %d events is a dead letter after %s "
                    "(`ferrymail webhooks replay` sends it again)",
                    hook.name,
                    len(batch.events),
                    error,
                )
            await spooler.call(
                spool.webhook_failed, hook.name, batch.batch, error[:ERROR_TEXT], next_attempt
            )

    async def _post(
        self, client: httpx.AsyncClient, hook: Webhook, batch: OutboxBatch
    ) -> str | None:
        """POSTs the batch; None when the endpoint took it, else what went wrong."""
        body = b"[" + b",".join(b for _, b in batch.events) + b"]"
        # The webhook-id is the batch's first event's: unique, and the same at every
        # retry (a batch's events never change).
        msg_id = "msg_" + batch.events[0][0].removeprefix("evt_")
        sent_headers = headers(hook.secrets, msg_id, int(time.time()), body)
        sent_headers["content-type"] = "application/json"
        sent_headers["user-agent"] = "ferrymail-webhooks"
        try:
            response = await client.post(
                hook.url, content=body, headers=sent_headers, timeout=hook.timeout
            )
        except httpx.TimeoutException:
            return f"no answer within {hook.timeout:g} s"
        except httpx.HTTPError as e:
            return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}: {response.text[:200]}"

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
