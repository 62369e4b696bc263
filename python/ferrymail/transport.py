"""ferrymail.Transport: render and deliver batches over pooled SMTP connections, in Rust."""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType

import msgspec

from . import _core
from .campaign import Campaign
from .wire import Outcome, OutcomeKind, Recipient, Route, SmtpOptions

_encoder = msgspec.msgpack.Encoder()
_outcomes = msgspec.msgpack.Decoder(list[Outcome])


class Transport:
    """Delivers batches to a route's mail servers, keeping connections for reuse.

    One transport per set of `SmtpOptions`; it may be shared by any number of
    concurrent `deliver` calls, which share its pool and its connection limit per
    destination address and source. A `Route` may send its batch from a source
    address, HELO name, TLS policy and timeouts of its own. Close it
    (`await transport.close()` or `async with`) before the event loop ends.
    """

    __slots__ = ("_inner", "options")

    def __init__(self, options: SmtpOptions) -> None:
        self.options = options
        self._inner = _core.Transport(_encoder.encode(options))

    async def deliver(
        self,
        campaign: Campaign,
        recipients: Iterable[Recipient | str],
        route: Route,
    ) -> list[Outcome]:
        """Renders each recipient's message and delivers it along `route`; returns one
        `Outcome` per recipient, in order. A recipient that cannot be rendered gets a
        "permanent" outcome at stage "render"; the others go on. Rendering and SMTP run
        in Rust off the event loop, with the GIL released.
        """
        batch = [r if isinstance(r, Recipient) else Recipient(r) for r in recipients]
        route_bytes = _encoder.encode(route)
        try:
            payload = _encoder.encode(batch)
        except (TypeError, ValueError, OverflowError):
            return await self._deliver_encodable(campaign, batch, route_bytes)
        raw = await self._inner.deliver(campaign._inner, payload, route_bytes)
        return _outcomes.decode(raw)

    async def _deliver_encodable(
        self, campaign: Campaign, batch: list[Recipient], route_bytes: bytes
    ) -> list[Outcome]:
        """A batch with recipients the wire cannot carry (vars holding an arbitrary
        object, an id beyond 64 bits): those fail alone, the rest are delivered."""
        results: list[Outcome | None] = []
        sendable: list[msgspec.Raw] = []
        for recipient in batch:
            try:
                sendable.append(msgspec.Raw(_encoder.encode(recipient)))
                results.append(None)
            except (TypeError, ValueError, OverflowError) as e:
                results.append(_unencodable(e))
        payload = _encoder.encode(sendable)
        delivered = iter(
            _outcomes.decode(await self._inner.deliver(campaign._inner, payload, route_bytes))
        )
        return [r if r is not None else next(delivered) for r in results]

    def abort(self) -> None:
        """Cuts every delivery of this transport in progress, at once (e.g. on SIGTERM):
        each recipient not yet finished gets a "transient" outcome of kind "cancelled"
        at the stage it was cut, within moments; one whose message was sent whole and
        not yet answered (stage "dot") may have been delivered, as its text says.
        Outcomes already known stay. Cut connections are closed, never reused;
        deliveries started afterwards run normally. Returns without waiting."""
        self._inner.abort()

    def connections(self) -> tuple[int, int]:
        """The SMTP connections open now, as (busy, idle): busy ones in a delivery (or
        being opened, or saying QUIT), idle ones kept for the next batch. Any thread."""
        busy, idle = self._inner.connections()
        return busy, idle

    async def close(self) -> None:
        """Sends QUIT on idle connections and closes them."""
        await self._inner.close()

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _unencodable(e: Exception) -> Outcome:
    text = f"recipient cannot be encoded: {e}"
    return Outcome.without_reply("permanent", "render", text, kind=OutcomeKind.RENDER)
