"""How: one batch of one site and one campaign through the transport, outcomes as they come."""

from __future__ import annotations

import time

import msgspec

from .. import _core
from ..judge import Judge
from ..sites import Site
from ..spool import Leased
from ..spooler import Spooler
from ..transport import Transport
from ..wire import Outcome, OutcomeKind, Route
from .recorder import Recorder

_encoder = msgspec.msgpack.Encoder()
_progress = msgspec.msgpack.Decoder(list[tuple[int, Outcome]])


class Dispatcher:
    """Hands batches to the Rust transport and records each outcome as it arrives, so
    that a crash repeats only the deliveries of the last moments.

    Every recipient of a batch gets exactly one outcome recorded: one the transport
    never sent (a stream that ended early, a fault on either side) becomes an internal,
    transient one, so the recipient is retried and the engine's count of recipients in
    hand cannot leak (a drain would wait for it forever).

    `cancel()` cuts every session in progress (the engine is stopping): a recipient cut
    before its whole message was sent goes back to the queue without an attempt counted;
    one cut after the final dot, before the reply, may have been delivered, and is
    deferred as a lost connection after the dot is.
    """

    def __init__(
        self, spooler: Spooler, transport: Transport, judge: Judge, recorder: Recorder
    ) -> None:
        self._spooler = spooler
        self._transport = transport
        self._judge = judge
        self._recorder = recorder
        # The batches in flight, for lease renewals.
        self.in_flight: dict[int, list[Leased]] = {}
        self._deliveries: set[_core.Delivery] = set()
        # Set by cancel(), cleared when the engine delivers again (a new run or drain).
        self.cancelled = False

    async def deliver(
        self,
        site: Site,
        campaign_id: str,
        compiled: _core.CompiledCampaign,
        batch: list[Leased],
        route: Route | None = None,
    ) -> list[Outcome]:
        """Delivers one batch (by `route`, default the site's); returns its outcomes in
        order, once all are recorded."""
        # Recipients of a campaign cancelled since they were leased: the spool ended
        # them as cancelled instead of starting them; they are not sent.
        cancelled = await self._spooler.call(self._spooler.spool.started, [r.id for r in batch])
        if cancelled:
            ended = set(cancelled)
            self._recorder.cancelled([r for r in batch if r.id in ended])
            batch = [r for r in batch if r.id not in ended]
            if not batch:
                return []
        self.in_flight[id(batch)] = batch
        outcomes: list[Outcome | None] = [None] * len(batch)
        fault: Exception | None = None
        delivery: _core.Delivery | None = None
        try:
            payload = _encoder.encode([msgspec.Raw(r.recipient) for r in batch])
            encoded = _encoder.encode(route or site.route)
            if compiled.verp:  # only then: a campaign without VERP pays nothing
                delivery = self._transport._inner.start(
                    compiled, payload, encoded, envelope_ids=[r.id for r in batch]
                )
            else:
                delivery = self._transport._inner.start(compiled, payload, encoded)
            self._deliveries.add(delivery)
            if self.cancelled:
                delivery.cancel()
            while (ready := await delivery.next()) is not None:
                fresh = [
                    (i, o)
                    for i, o in _progress.decode(ready)
                    if 0 <= i < len(batch) and outcomes[i] is None
                ]
                for i, o in fresh:
                    outcomes[i] = o
                await self._record(site, [batch[i] for i, _ in fresh], [o for _, o in fresh])
        except Exception as e:  # a fault must defer the batch, not lose it
            fault = e
        finally:
            del self.in_flight[id(batch)]
            if delivery is not None:
                self._deliveries.discard(delivery)
        missing = [i for i, o in enumerate(outcomes) if o is None]
        if missing:
            gap = _internal(fault)
            for i in missing:
                outcomes[i] = gap
            await self._record(site, [batch[i] for i in missing], [gap] * len(missing))
        return [o for o in outcomes if o is not None]

    def cancel(self) -> None:
        """Cuts the sessions of every batch in flight, and of any started from now on."""
        self.cancelled = True
        for delivery in list(self._deliveries):
            delivery.cancel()

    async def _record(self, site: Site, leased: list[Leased], outcomes: list[Outcome]) -> None:
        """Judges and records outcomes; recipients a cancel cut before their message
        was sent go back to the queue untried instead."""
        now = time.time()
        if any(_untried(o) for o in outcomes):  # only while stopping: rare
            back = [(r, now) for r, o in zip(leased, outcomes, strict=True) if _untried(o)]
            kept = [(r, o) for r, o in zip(leased, outcomes, strict=True) if not _untried(o)]
            leased, outcomes = [r for r, _ in kept], [o for _, o in kept]
            await self._recorder.release(back)
        if leased:
            shape = site.shape
            verdict = self._judge.batch(
                leased[0].campaign,
                leased,
                outcomes,
                now,
                retry=shape.retry if shape else None,
                classifier=shape.classifier if shape else None,
            )
            await self._recorder.record(verdict)


def _untried(outcome: Outcome) -> bool:
    """Cut by a cancel before the whole message was sent: no attempt was made."""
    return outcome.kind == OutcomeKind.CANCELLED and outcome.stage != "dot"


def _internal(fault: Exception | None) -> Outcome:
    if fault is None:
        text = "internal error: the transport ended the batch without an outcome for this recipient"
    else:
        text = f"internal error: {type(fault).__name__}: {fault}"
    return Outcome.without_reply("transient", "engine", text, kind=OutcomeKind.INTERNAL)
