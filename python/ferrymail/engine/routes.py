"""Where: leased recipients routed by domain as each domain's DNS answer arrives."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator

from ..routing import Destination, Router
from ..spool import Leased

#: Called with a domain, its destination (or the exception a look-up raised, which
#: would be a bug: the router turns every DNS failure into a destination) and the
#: recipients that waited for it.
Routed = Callable[[str, Destination | Exception, list[Leased]], Awaitable[None]]


class Routes:
    """Resolves domains in the background, so that the pump never waits on DNS: a
    domain whose name servers never answer holds only its own recipients, for the DNS
    timeout, while every other site keeps delivering.

    One look-up per domain at a time: recipients of a domain already being looked up
    join those waiting for that answer. A failure inside the `routed` callback (the
    spool could not be written) is kept and raised by `check()`, from the pump.
    """

    def __init__(self, router: Router, routed: Routed, wake: Callable[[], None]) -> None:
        self._router = router
        self._routed = routed
        self._wake = wake
        self._waiting: dict[str, list[Leased]] = {}
        self._lookups: dict[str, asyncio.Task[None]] = {}
        self._failure: BaseException | None = None

    def add(self, leased: Iterable[Leased]) -> None:
        for r in leased:
            waiting = self._waiting.get(r.domain)
            if waiting is None:
                waiting = self._waiting[r.domain] = []
            waiting.append(r)
            if r.domain not in self._lookups:
                task = asyncio.create_task(self._look_up(r.domain))
                self._lookups[r.domain] = task

    def held(self) -> Iterator[Leased]:
        """The recipients waiting for a DNS answer (their leases are renewed too)."""
        for waiting in self._waiting.values():
            yield from waiting

    def check(self) -> None:
        """Raises the failure of a background routing, if one failed."""
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    async def close(self) -> None:
        """Stops the look-ups in progress; their recipients stay leased until the
        engine releases its leases."""
        for task in self._lookups.values():
            task.cancel()
        await asyncio.gather(*self._lookups.values(), return_exceptions=True)
        self._lookups.clear()

    async def _look_up(self, domain: str) -> None:
        destination: Destination | Exception
        try:
            destination = await self._router.destination(domain)
        except Exception as e:
            destination = e
        finally:
            # Taken together, with no await between: a recipient added from now on
            # starts a look-up of its own instead of joining one that has ended.
            del self._lookups[domain]
            waiting = self._waiting.pop(domain, [])
        try:
            await self._routed(domain, destination, waiting)
        except Exception as e:
            self._failure = e
        finally:
            self._wake()
