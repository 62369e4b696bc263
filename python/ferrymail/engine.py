"""ferrymail.Engine: the store-and-forward MTA an ESP embeds: submit, lease, route, deliver, record.

One pump loop does the scheduling on the event loop: it leases due recipients from the
spool into a bounded window, routes them by domain into sites, and starts one delivery
batch per ready site. A batch is one call into Rust (render + SMTP); its outcomes are
judged (judge.py), written to the spool in one transaction, then published as events.
Spool calls run on their own thread (spooler.py), so the loop never waits on a disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from types import TracebackType

import msgspec

from . import _core
from .bounce import BounceClassifier
from .campaign import Campaign
from .config import Config
from .events import Event, EventBus
from .judge import Judge, Verdict
from .routing import Destination, Router
from .sites import Site
from .spool import Leased, Report, SqliteSpool, Update
from .spooler import Spooler
from .submit import SubmitResult, chunks, rows
from .suspensions import Suspensions
from .transport import Transport
from .wire import Outcome, OutcomeKind, Recipient

_encoder = msgspec.msgpack.Encoder()
_progress = msgspec.msgpack.Decoder(list[tuple[int, Outcome]])
# The longest the pump sleeps with nothing due: it also wakes for submits, finished
# batches, flushes and stops, so this only bounds how late a timer can be noticed.
IDLE_WAKE = 1.0
# Attempts of one recipient in a row that may be cut short by the death of the process
# (a crash, a kill, a machine lost) before the recipient is deferred as if the attempt
# had failed, as Postfix defers a message whose delivery agent crashed: one death is
# likely chance and the recipient is tried again at once; from the second, retries back
# off and expire after max_age like any other, so a recipient that kills the process
# every time still ends in a final state. (Recipients leased but not yet attempted when
# the process died do not count: a big lease window is not a hundred thousand suspects.)
INTERRUPTED_DEFERRED = 2


class Engine:
    """A delivery engine on one spool (an SQLite file). Use as an async context manager.

    `submit` queues a campaign's recipients durably; `drain` delivers until every
    submitted recipient is final; `run` delivers until `stop`. `events()` streams state
    changes; `report` and `suppressions` read the spool.
    """

    def __init__(
        self, spool: str | os.PathLike[str] = "ferrymail.db", config: Config | None = None
    ) -> None:
        self.config = config if config is not None else Config(helo_name=socket.gethostname())
        self._path = spool
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._spooler: Spooler | None = None
        self._transport: Transport | None = None
        self._router = Router(self.config)
        self._judge = Judge(
            self.config.retry,
            BounceClassifier(self.config.bounce_rules),
            self.config.suppress_hard_bounces,
            listened=lambda: self._bus.listened,
        )
        self._bus = EventBus(self.config.event_log)
        self._campaigns: dict[str, _core.CompiledCampaign | None] = {}
        self._sites: dict[str, Site] = {}
        self._active = 0  # leased recipients held in memory or in flight
        self._batches: set[asyncio.Task[None]] = set()
        self._in_flight: dict[int, list[Leased]] = {}  # id(batch) -> batch, for renewals
        self._renewed_at = 0.0
        self._suspensions: Suspensions | None = None
        self._submitting = 0  # submits in progress: drain waits for them
        self._commits: list[tuple[Verdict, asyncio.Future[None]]] = []
        self._committing = False
        self._wake = asyncio.Event()
        self._stopping = False
        self.suppressions = Suppressions(self)

    # --- lifecycle ------------------------------------------------------------------

    async def __aenter__(self) -> Engine:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        spool = await loop.run_in_executor(None, SqliteSpool, self._path)
        self._spooler = Spooler(spool)
        self._suspensions = Suspensions(self._spooler)
        await self._suspensions.load()
        self._transport = Transport(self.config.smtp_options)

    async def close(self) -> None:
        """Stops, lets batches in flight finish and record, puts the recipients still
        leased back in the queue, closes connections and the spool."""
        self.stop()
        if self._batches:
            await asyncio.gather(*self._batches, return_exceptions=True)
        if self._spooler is not None:
            await self._spooler.call(self._spooler.spool.release_owner, self._owner)
            self._spooler.close()
            self._spooler = None
        if self._transport is not None:
            await self._transport.close()
            self._transport = None
        self._bus.close()

    def stop(self) -> None:
        """Makes `run` (or `drain`) return once the batches in flight are done."""
        self._stopping = True
        self._wake.set()

    # --- submitting -----------------------------------------------------------------

    async def submit(
        self,
        campaign: Campaign,
        recipients: Iterable[Recipient | str] | AsyncIterable[Recipient | str],
    ) -> SubmitResult:
        """Queues the recipients durably, streaming (a generator of millions never sits
        in memory). Invalid addresses are rejected and suppressed ones recorded at once;
        when this returns, every accepted recipient is in the spool."""
        self._submitting += 1
        try:
            return await self._submit(campaign, recipients)
        finally:
            self._submitting -= 1
            self._wake.set()

    async def _submit(
        self,
        campaign: Campaign,
        recipients: Iterable[Recipient | str] | AsyncIterable[Recipient | str],
    ) -> SubmitResult:
        spooler = self._open_spooler()
        spec = _encoder.encode(campaign.spec)
        await spooler.call(spooler.spool.put_campaign, campaign.id, spec)
        self._campaigns[campaign.id] = campaign._inner
        accepted = rejected = suppressed = duplicates = 0
        async for chunk in chunks(recipients):
            on_list = await spooler.call(spooler.spool.suppressed_among, [r.address for r in chunk])
            new = rows(chunk, on_list)
            ids = await spooler.call(spooler.spool.insert, campaign.id, new)
            now = time.time()
            events = []
            listened = self._bus.listened
            for row, id_ in zip(new, ids, strict=True):
                if id_ is None:  # the campaign has this recipient already
                    duplicates += 1
                    continue
                accepted += row.state == "queued"
                rejected += row.state == "rejected"
                suppressed += row.state == "suppressed"
                if listened:
                    events.append(
                        Event(
                            row.state,
                            campaign.id,
                            row.key,
                            row.address,
                            row.domain,
                            None,
                            None,
                            0,
                            row.code,
                            row.enhanced,
                            row.text,
                            None,
                            now,
                            0.0,
                        )
                    )
            self._bus.publish(events)
            self._wake.set()
        return SubmitResult(accepted, rejected, suppressed, duplicates)

    # --- delivering -----------------------------------------------------------------

    async def drain(self) -> None:
        """Delivers until every recipient in the spool is final (or `stop`). It may run
        while `submit` streams recipients in: delivery starts with the first chunk, and
        drain waits for the submit to end."""
        await self._pump(until_done=True)

    async def run(self) -> None:
        """Delivers, waiting for new work, until `stop`."""
        await self._pump(until_done=False)

    async def flush(self, domain: str | None = None) -> int:
        """Makes deferred recipients (of one domain, or all) due now and lifts site
        suspensions; returns how many recipients were made due."""
        spooler = self._open_spooler()
        # Lifted before the recipients are made due, or they would go back to wait.
        await self._open_suspensions().lift(self._sites.values(), domain)
        count = await spooler.call(spooler.spool.flush, domain)
        self._router.flush()
        self._wake.set()
        return count

    async def _pump(self, *, until_done: bool) -> None:
        spooler = self._open_spooler()
        self._stopping = False
        while not self._stopping:
            self._wake.clear()
            await self._lease()
            now = time.time()
            self._dispatch(now)
            if now - self._renewed_at > self.config.lease_for / 3:
                await self._renew(now)
            if await self._open_suspensions().refresh(self._sites.values(), now):
                self._wake.set()
            if (
                until_done
                and self._active == 0
                and self._submitting == 0
                and await spooler.call(spooler.spool.pending) == 0
            ):
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), await self._idle_for(now))
        if self._batches:
            await asyncio.gather(*self._batches, return_exceptions=True)

    async def _idle_for(self, now: float) -> float:
        """How long nothing can happen unless woken: until the next due recipient, the
        end of a suspension or a rate token, at most IDLE_WAKE."""
        spooler = self._open_spooler()
        wake_at = now + IDLE_WAKE
        if self._active < self.config.window:
            due = await spooler.call(spooler.spool.next_due)
            if due is not None:
                wake_at = min(wake_at, due)
        for site in self._sites.values():
            if site.waiting and not site.in_flight:
                wake_at = min(wake_at, max(site.suspended_until, site.next_token_at(now)))
        return max(0.0, wake_at - time.time())

    async def _lease(self) -> None:
        """Fills the window with due recipients and routes them into their sites."""
        room = self.config.window - self._active
        if room <= 0 or self._stopping:
            return
        spooler = self._open_spooler()
        leased = await spooler.call(spooler.spool.lease, room, self._owner, self.config.lease_for)
        if not leased:
            return
        self._active += len(leased)
        by_domain: dict[str, list[Leased]] = defaultdict(list)
        for r in leased:
            by_domain[r.domain].append(r)
        domains = list(by_domain)
        destinations = await asyncio.gather(*(self._router.destination(d) for d in domains))
        campaigns = {c: await self._campaign(c) for c in {r.campaign for r in leased}}
        now = time.time()
        suspensions = self._open_suspensions()
        if any(suspensions.holds(self._sites, d.site, now) for d in destinations):
            # Before recipients go back for a suspension: `ferrymail flush` (another
            # process) may have lifted it, and made these due for that very reason.
            await suspensions.refresh(self._sites.values(), now, due=True)
        judged = Verdict([], [], [])
        released: list[tuple[Leased, float]] = []
        for domain, dest in zip(domains, destinations, strict=True):
            for r in by_domain[domain]:
                if r.interrupted >= INTERRUPTED_DEFERRED:
                    self._judge.one(judged, r.campaign, r, _interrupted(r.interrupted), now)
                elif campaigns[r.campaign] is None:
                    self._judge.one(judged, r.campaign, r, _unrenderable(r.campaign), now)
                elif dest.route is None:
                    self._judge.one(judged, r.campaign, r, _dns_outcome(dest), now)
                else:
                    site = self._site(dest, domain)
                    if site.suspended(now):
                        released.append((r, site.suspended_until))
                    else:
                        site.add(r.campaign, r)
        if released:
            await self._release(released)
        if judged.updates:
            await self._record(judged)

    async def _renew(self, now: float) -> None:
        """Extends the leases of every recipient held here, so that one waiting long in
        memory (a slow or rate-limited site) is not taken for a dead process's."""
        self._renewed_at = now
        ids = [r.id for site in self._sites.values() for q in site.queues.values() for r in q]
        ids += [r.id for batch in self._in_flight.values() for r in batch]
        if ids:
            spooler = self._open_spooler()
            await spooler.call(spooler.spool.renew, ids, self.config.lease_for)

    def _dispatch(self, now: float) -> None:
        if self._stopping:
            return
        for site in self._sites.values():
            if not site.ready(now):
                continue
            taken = site.take(self.config.batch_size, now)
            if taken is None:
                continue
            site.in_flight = True
            task = asyncio.create_task(self._deliver(site, *taken))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _deliver(self, site: Site, campaign_id: str, batch: list[Leased]) -> None:
        """One batch through Rust; its outcomes judged, recorded and published as they
        come, so that a crash repeats only deliveries of the last moments."""
        self._in_flight[id(batch)] = batch
        outcomes: list[Outcome | None] = [None] * len(batch)
        try:
            compiled = self._campaigns[campaign_id]
            assert compiled is not None and self._transport is not None
            spooler = self._open_spooler()
            await spooler.call(spooler.spool.started, [r.id for r in batch])
            payload = _encoder.encode([msgspec.Raw(r.recipient) for r in batch])
            delivery = self._transport._inner.start(compiled, payload, _encoder.encode(site.route))
            while (ready := await delivery.next()) is not None:
                pairs = _progress.decode(ready)
                for index, outcome in pairs:
                    outcomes[index] = outcome
                await self._record(
                    self._judge.batch(
                        campaign_id,
                        [batch[i] for i, _ in pairs],
                        [o for _, o in pairs],
                        time.time(),
                    )
                )
        except Exception as e:  # a bug must defer the batch, not lose it
            left = [i for i, o in enumerate(outcomes) if o is None]
            for i in left:
                outcomes[i] = _internal_outcome(e)
            lost = [batch[i] for i in left]
            await self._record(
                self._judge.batch(
                    campaign_id, lost, [_internal_outcome(e)] * len(lost), time.time()
                )
            )
        finally:
            del self._in_flight[id(batch)]
            try:
                why = self._judge.suspension([o for o in outcomes if o is not None])
                if why is not None:
                    await self._suspend(site, why)
            finally:
                site.in_flight = False
                self._wake.set()

    async def _suspend(self, site: Site, why: str) -> None:
        """Suspends the site, here and in the spool (`ferrymail status` shows it, a
        restart keeps it); its waiting recipients go back to the spool."""
        until = max(site.suspended_until, time.time() + self.config.suspend_for)
        await self._open_suspensions().suspend(site, until, why)
        waiting = site.suspend(until)
        await self._release([(r, until) for r in waiting])

    async def _record(self, verdict: Verdict) -> None:
        """Writes a verdict to the spool, then publishes its events; returns when it is
        durable. Group commit: verdicts that arrive while a write is on the disk go
        together in the next one, so ten sites delivering at once cost one fsync, not
        ten, and each outcome still reaches the disk within one write's time."""
        done = asyncio.get_running_loop().create_future()
        self._commits.append((verdict, done))
        if not self._committing:
            self._committing = True
            try:
                while self._commits:
                    group, self._commits = self._commits, []
                    await self._commit([v for v, _ in group])
                    for _, waiting in group:
                        waiting.set_result(None)
            except BaseException as e:
                for _, waiting in [*group, *self._commits]:
                    if not waiting.done():
                        waiting.set_exception(e)
                self._commits = []
                raise
            finally:
                self._committing = False
        await done

    async def _commit(self, verdicts: list[Verdict]) -> None:
        spooler = self._open_spooler()
        updates = [u for v in verdicts for u in v.updates]
        await spooler.call(spooler.spool.record, updates)
        for verdict in verdicts:
            for address, reason in verdict.suppress:
                await spooler.call(spooler.spool.suppress, address, reason)
        self._active -= len(updates)
        for verdict in verdicts:
            self._bus.publish(verdict.events)

    async def _release(self, waiting: list[tuple[Leased, float]]) -> None:
        """Back to the spool without counting an attempt, each due when its site's
        suspension ends."""
        if not waiting:
            return
        # Recipients tried before stay "deferred"; the others are still just "queued".
        updates = [
            Update(
                r.id,
                "deferred" if r.attempts else "queued",
                r.attempts,
                until,
                None,
                None,
                None,
                None,
                None,
                None,
            )
            for r, until in waiting
        ]
        spooler = self._open_spooler()
        await spooler.call(spooler.spool.record, updates)
        self._active -= len(updates)

    def _site(self, dest: Destination, domain: str) -> Site:
        site = self._sites.get(dest.site)
        if site is None:
            assert dest.route is not None
            site = self._sites[dest.site] = Site(dest.site, dest.route, dest.limits)
            self._open_suspensions().restore(site)  # from before a restart
        else:
            site.route = dest.route or site.route  # addresses may have changed with DNS
        site.domains.add(domain)
        return site

    async def _campaign(self, campaign_id: str) -> _core.CompiledCampaign | None:
        """The compiled campaign, from memory or (after a restart) from the spool."""
        if campaign_id not in self._campaigns:
            spooler = self._open_spooler()
            spec = await spooler.call(spooler.spool.campaign_spec, campaign_id)
            try:
                compiled = _core.compile_campaign(spec) if spec is not None else None
            except Exception:
                compiled = None
            self._campaigns[campaign_id] = compiled
        return self._campaigns[campaign_id]

    # --- reading ----------------------------------------------------------------------

    def events(self) -> AsyncIterator[Event]:
        """Every state change from now on, as `Event`s."""
        return self._bus.subscribe()

    def report(self, campaign_id: str) -> Report:
        """Counts by state, by domain and by bounce category, and the commonest replies."""
        spooler = self._open_spooler()
        return spooler.now(spooler.spool.report, campaign_id)

    def _open_suspensions(self) -> Suspensions:
        if self._suspensions is None:
            raise RuntimeError("the engine is not open: use `async with Engine(...)`")
        return self._suspensions

    def _open_spooler(self) -> Spooler:
        if self._spooler is None:
            raise RuntimeError("the engine is not open: use `async with Engine(...)`")
        return self._spooler


class Suppressions:
    """The suppression list: addresses never sent to (submit marks them suppressed)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, address: str, reason: str = "added by hand") -> None:
        spooler = self._engine._open_spooler()
        spooler.now(spooler.spool.suppress, address, reason)

    def remove(self, address: str) -> bool:
        spooler = self._engine._open_spooler()
        return spooler.now(spooler.spool.unsuppress, address)

    def __contains__(self, address: str) -> bool:
        return self.contains(address)

    def contains(self, address: str) -> bool:
        spooler = self._engine._open_spooler()
        return spooler.now(spooler.spool.is_suppressed, address)

    def list(self, limit: int | None = None) -> list[tuple[str, str, float]]:
        spooler = self._engine._open_spooler()
        return spooler.now(spooler.spool.suppressions, limit)


def _dns_outcome(dest: Destination) -> Outcome:
    failure = dest.failure
    assert failure is not None
    status = "transient" if failure.status == "temporary" else "permanent"
    return Outcome.without_reply(
        status, "connect", failure.text, failure.code, failure.enhanced, kind=OutcomeKind.DNS
    )


def _unrenderable(campaign_id: str) -> Outcome:
    text = f"campaign {campaign_id!r} is missing from the spool or no longer compiles"
    return Outcome.without_reply("permanent", "render", text, kind=OutcomeKind.RENDER)


def _interrupted(times: int) -> Outcome:
    text = (
        f"the process stopped {times} times in a row while delivering to this "
        "recipient, before the outcome was known (the message may have been delivered)"
    )
    return Outcome.without_reply("transient", "engine", text, kind=OutcomeKind.INTERRUPTED)


def _internal_outcome(error: Exception) -> Outcome:
    text = f"internal error: {type(error).__name__}: {error}"
    return Outcome.without_reply("transient", "connect", text, kind=OutcomeKind.INTERNAL)
