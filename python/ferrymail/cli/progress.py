"""Live progress of a long command (rich): submitted, delivered, deferred, bounced, rate, ETA."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.text import Text

from ..engine import Engine
from ..events import Event
from .common import escaped

#: Final states: a recipient counted here is done.
_FINAL = ("delivered", "bounced", "expired", "rejected", "suppressed", "failed")
#: Deferred domains the live display lists under the counts (the latest reason each).
SHOWN_DEFERRED = 3
#: The longest reason shown: a reply text can be a paragraph.
REASON_CHARS = 160


class Progress:
    """Counts the engine's events and shows them on stderr: redrawn in place on a
    terminal (rich), only the final line otherwise (logs and pipes stay clean).

    A deferral says why while the command waits: on a terminal, the latest reason of
    each deferred domain under the counts; otherwise one plain line when a domain is
    first deferred (not one per recipient)."""

    def __init__(self, engine: Engine, total: int, before: dict[str, int] | None = None) -> None:
        """`before`: the campaign's recipients by state when it was in the spool already
        (a send run again): they count as submitted, and the final ones as done."""
        self.total = total
        self.counts: Counter[str] = Counter()
        self._before: Counter[str] = Counter(before or {})
        self._events = engine.events()
        self._started = time.monotonic()
        self._console = Console(stderr=True)
        self._live: Live | None = None
        self._counting: asyncio.Task[None] | None = None
        #: Domain -> the latest deferral reason, while its recipients wait.
        self.deferred: dict[str, str] = {}

    async def __aenter__(self) -> Progress:
        self._counting = asyncio.create_task(self._count())
        await asyncio.sleep(0)  # subscribed before the first event
        self._started = time.monotonic()
        if sys.stderr.isatty():
            # rich redraws from __rich__ four times a second; events only count.
            self._live = Live(self, console=self._console, refresh_per_second=4, transient=True)
            self._live.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._counting is not None:
            await asyncio.sleep(0)  # let the last events be counted
            self._counting.cancel()
            await asyncio.gather(self._counting, return_exceptions=True)
        if self._live is not None:
            self._live.stop()
        self._console.print(self.line(), soft_wrap=True)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    async def _count(self) -> None:
        async for event in self._events:
            self.counts[event.type] += 1
            if event.type == "deferred":
                self._deferred(event)
            elif event.type in _FINAL:
                self.deferred.pop(event.domain, None)

    def _deferred(self, event: Event) -> None:
        reply = " ".join(str(p) for p in (event.code, event.enhanced, event.text) if p)
        reason = escaped(" ".join(reply.split()))
        if len(reason) > REASON_CHARS:
            reason = reason[: REASON_CHARS - 1] + "…"
        first = event.domain not in self.deferred
        self.deferred[event.domain] = reason
        if first and self._live is None:
            where = f" (via {event.mx})" if event.mx else ""
            print(
                f"deferred {escaped(event.domain)}{where}: {reason}; retried later",
                file=sys.stderr,
                flush=True,
            )

    def __rich__(self) -> Text:
        text = self.line()
        shown = list(self.deferred.items())[-SHOWN_DEFERRED:]
        for domain, reason in shown:
            text.append(f"\n  deferred {escaped(domain)}: {reason}", style="yellow")
        if len(self.deferred) > len(shown):
            text.append(f"\n  … and {len(self.deferred) - len(shown)} more deferred domains")
        return text

    def line(self) -> Text:
        c, before = self.counts, self._before
        submitted = before.total() + c["queued"] + c["rejected"] + c["suppressed"]
        final = sum(c[s] for s in _FINAL)
        elapsed = self.elapsed
        rate = c["delivered"] / elapsed if elapsed > 0 else 0.0
        left = max(0, self.total - final - sum(before[s] for s in _FINAL))
        per_second = final / elapsed if elapsed > 0 else 0.0
        c = c + before  # what the line shows: the campaign's, this run's and before
        eta = f"{left / per_second:,.0f} s left" if per_second > 0 and left > 0 else ""
        text = Text()
        text.append(f"submitted {submitted:,}/{self.total:,}  ")
        text.append(f"delivered {c['delivered']:,}  ", style="green")
        text.append(f"deferred {c['deferred']:,}  ", style="yellow")
        text.append(f"bounced {c['bounced']:,}  ", style="red")
        text.append(f"failed {c['failed']:,}  ")
        text.append(f"{rate:,.0f}/s  {elapsed:.1f} s  {eta}".rstrip())
        return text
