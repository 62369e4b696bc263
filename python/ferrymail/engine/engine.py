"""ferrymail.Engine: the store-and-forward MTA an ESP embeds: submit, lease, route, deliver, record.

The pump only moves work between the parts: the scheduler leases due recipients into a
bounded window; routes resolves their domains in the background and puts them in their
sites' queues as each answer arrives; the pump starts one delivery batch per ready
site; dispatch runs it through Rust (render + SMTP); the judge says what each outcome
means and the recorder writes it to the spool, then publishes the events. Spool calls
run on their own thread (spooler.py), so the loop never waits on a disk, and never on
DNS either.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Coroutine, Iterable, Iterator
from types import TracebackType
from typing import Any, cast

import msgspec

from ..bounce import BounceClassifier
from ..campaign import Campaign
from ..config import Config
from ..errors import ConfigError, Error
from ..events import Event, EventBus
from ..judge import Judge, Verdict
from ..routing import Destination, Router
from ..shaping import Shaping, empty
from ..shaping.egress import Egress
from ..shaping.fleet import FleetConnections
from ..shaping.grants import FleetBucket
from ..shaping.in_force import ActionsInForce
from ..sites import Site
from ..spool import Leased, NewRecipient, OutboxRow, Report, open_spool
from ..spool.sqlite import CANCEL_PAGE
from ..spooler import Spooler
from ..submit import SubmitResult, chunks, rows
from ..suspensions import Suspensions
from ..transport import Transport
from ..webhooks.outbox import Outbox
from ..wire import Outcome, OutcomeKind, Recipient
from .automate import Automator
from .campaigns import Campaigns
from .dispatch import Dispatcher
from .recorder import Recorder
from .routes import Routes
from .scheduler import Scheduler
from .traffic import Start, Traffic, provider_of

_encoder = msgspec.msgpack.Encoder()
# Attempts of one recipient in a row that may be cut short by the death of the process
# (a crash, a kill, a machine lost) before the recipient is deferred as if the attempt
# had failed, as Postfix defers a message whose delivery agent crashed: one death is
# likely chance and the recipient is tried again at once; from the second, retries back
# off and expire after max_age like any other, so a recipient that kills the process
# every time still ends in a final state. (Recipients leased but not yet attempted when
# the process died do not count: a big lease window is not a hundred thousand suspects.)
INTERRUPTED_DEFERRED = 2
# How long the batches in flight get, after `stop`, to finish before their sessions are
# cut: a batch to a receiver that answers ends well within it (so a stop makes no
# duplicates), one that does not answer is cut instead of holding the stop for its
# timeouts (300 s for a greeting, RFC 5321 §4.5.3.2).
STOP_GRACE = 2.0


class EngineClosedError(Error, RuntimeError):
    """The engine was used before `open()` (or `async with`) or after `close()`."""


class _Parts:
    """What an open engine has: built by `open()`, gone after `close()`."""

    def __init__(self, engine: Engine, spooler: Spooler, transport: Transport) -> None:
        self.spooler = spooler
        self.transport = transport
        self.suspensions = Suspensions(spooler)
        self.scheduler = Scheduler(spooler, engine.config, engine._owner)
        self.recorder = Recorder(
            spooler, engine._bus, self.scheduler.settled, engine._outbox, engine.config.node
        )
        self.campaigns = Campaigns(spooler)
        self.actions = ActionsInForce(spooler)
        self.egress = Egress(spooler)

        async def suspend(site: Site, why: str, until: float) -> None:
            await engine._suspend(self, site, why, until)

        self.automator = Automator(self.actions, self.recorder, engine._judge, suspend)
        self.dispatcher = Dispatcher(spooler, transport, engine._judge, self.recorder)
        self.routes = Routes(engine._router, engine._routed, engine._wake.set)
        # Each site's limits are the fleet's, whoever shares the spool: connections split
        # among the engines alive, the rate taken from the spool in grants.
        spool = spooler.spool

        async def heartbeat(owner: str, node: str, live_for: float) -> tuple[float, list[str]]:
            return await spooler.call(spool.fleet_heartbeat, owner, node, live_for)

        async def take(key: str, per_second: float, want: int) -> int:
            return await spooler.call(spool.take_tokens, key, per_second, want)

        self.fleet = FleetConnections(engine._owner, engine.config.node or "", heartbeat)
        self.traffic = Traffic(
            engine.config,
            engine._shaping,
            self.actions,
            self.egress,
            self.campaigns,
            fleet_bucket=lambda key: FleetBucket(key, None, take, engine._wake.set),
            connection_share=self.fleet.share,
        )


class Engine:
    """A delivery engine on one spool: an SQLite file (a path), or a PostgreSQL database
    (`postgresql://user@host/db`) that engines on many machines share. Use as an async
    context manager.

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
        self._router = Router(self.config)
        self._bus = EventBus(self.config.event_log)
        # The webhooks' events, written to the spool's outbox with the outcomes.
        self._outbox = Outbox(self.config.webhooks)
        self._judge = Judge(
            self.config.retry,
            BounceClassifier(self.config.bounce_rules),
            self.config.suppress_hard_bounces,
            listened=self._listened,
            node=self.config.node,
        )
        # The shaping file in force (`reload_shaping` swaps it).
        self._shaping = self.config.shaping if isinstance(self.config.shaping, Shaping) else empty()
        self._parts: _Parts | None = None
        self._batches: set[asyncio.Task[None]] = set()
        # A batch that failed (the spool could not be written): raised by the pump.
        self._failure: BaseException | None = None
        self._submitting = 0  # submits in progress: drain waits for them
        self._wake = asyncio.Event()
        self._stopping = False
        self._cut: asyncio.TimerHandle | None = None  # the cut that `stop` set
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
        spool = await loop.run_in_executor(None, open_spool, self._path)
        # A spool on a server may be out of reach for a while: the engine's calls wait
        # for it to come back (spooler.py), holding their work, instead of failing.
        spooler = Spooler(spool, wait_for_server=True)
        parts = _Parts(self, spooler, Transport(self.config.smtp_options))
        await parts.suspensions.load()
        await parts.actions.load()
        await parts.egress.load(time.time())
        await parts.fleet.beat(time.time())  # no site has a share before it
        self._parts = parts

    async def close(self) -> None:
        """Stops (see `stop`), waits for the batches in flight to record what they know,
        puts the recipients still leased back in the queue, closes connections and the
        spool."""
        self.stop()
        parts, self._parts = self._parts, None
        if parts is not None:
            await parts.routes.close()
            if self._batches:
                await asyncio.gather(*self._batches, return_exceptions=True)
            if self._cut is not None:
                self._cut.cancel()
                self._cut = None
            await parts.spooler.call(parts.spooler.spool.release_owner, self._owner)
            parts.recorder.publish_cancelled()  # those of a cancelled campaign ended there
            await parts.spooler.call(parts.spooler.spool.fleet_leave, self._owner)
            parts.spooler.close()
            await parts.transport.close()
        self._bus.close()

    def _listened(self) -> bool:
        """Whether events are wanted (a log, a subscriber, a webhook): if not, none is built."""
        return self._bus.listened or bool(self._outbox)

    def stop(self) -> None:
        """Makes `run` (or `drain`) return promptly: no new batch starts, and the
        batches in flight get STOP_GRACE seconds to finish before their SMTP sessions
        are cut (a peer that never answers holds nobody for its timeouts). The
        recipients of a cut session go back to the queue without an attempt counted,
        except one whose whole message was sent and whose reply had not come: it may
        have been delivered, and is deferred like a connection lost after the dot."""
        self._stopping = True
        self._wake.set()
        parts = self._parts
        if parts is not None and self._cut is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # called from outside the engine's loop: cut now
                parts.dispatcher.cancel()
                return
            self._cut = loop.call_later(STOP_GRACE, parts.dispatcher.cancel)

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
        parts = self._open()
        spooler = parts.spooler
        if campaign.pool is not None and campaign.pool not in self._shaping.pools:
            raise ConfigError(
                f"pool: campaign {campaign.id!r} sends from pool {campaign.pool!r}, which "
                f"the shaping file {self._shaping.name} does not have (its pools: "
                f"{', '.join(self._shaping.pools)})",
                "pool",
            )
        await spooler.call(spooler.spool.put_campaign, campaign.id, _encoder.encode(campaign.spec))
        parts.campaigns.add(campaign.id, campaign._inner, campaign.pool)
        accepted = rejected = suppressed = duplicates = 0
        async for chunk in chunks(recipients):
            addresses = [r.address for r in chunk]
            # Globally suppressed, or unsubscribed from this campaign's list.
            on_list = await spooler.call(spooler.spool.suppressed_among, addresses, campaign.id)
            new = rows(chunk, on_list)
            now = time.time()
            events: list[Event] = []

            def outboxed(
                ids: list[int | None],
                new: list[NewRecipient] = new,
                now: float = now,
                events: list[Event] = events,
            ) -> list[OutboxRow]:
                # In the insert's transaction (on the spool's thread): the submit events
                # reach the webhook outbox with the recipients, or neither does.
                events[:] = self._submit_events(campaign.id, new, ids, now)
                return self._outbox.rows(events)

            hooked = bool(self._outbox)
            ids = await spooler.call(
                spooler.spool.insert, campaign.id, new, outboxed if hooked else None
            )
            if not hooked and self._listened():
                events = self._submit_events(campaign.id, new, ids, now)
            for row, id_ in zip(new, ids, strict=True):
                if id_ is None:  # the campaign has this recipient already
                    duplicates += 1
                    continue
                accepted += row.state == "queued"
                rejected += row.state == "rejected"
                suppressed += row.state == "suppressed"
            self._bus.publish(events)
            self._wake.set()
        return SubmitResult(accepted, rejected, suppressed, duplicates)

    def _submit_events(
        self, campaign_id: str, new: list[NewRecipient], ids: list[int | None], now: float
    ) -> list[Event]:
        """The events of the rows an insert added (id not None)."""
        events = []
        for row, id_ in zip(new, ids, strict=True):
            if id_ is not None:
                events.append(
                    Event(
                        row.state,
                        campaign_id,
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
                        None,
                        self.config.node,
                    )
                )
        return events

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
        parts = self._open()
        # Lifted before the recipients are made due, or they would go back to wait.
        await parts.suspensions.lift(parts.traffic.sites.values(), domain)
        await parts.actions.lift(domain)
        count = await parts.spooler.call(parts.spooler.spool.flush, domain)
        parts.recorder.publish_cancelled()  # those of a cancelled campaign ended there
        self._router.flush()
        self._wake.set()
        return count

    async def cancel(self, campaign_id: str) -> int:
        """Cancels a campaign: its queued and deferred recipients end as "cancelled"
        (final, an event each); those whose attempt has begun finish it and are recorded
        as usual; and none is sent once the first page is committed, also those leased
        before by this engine or another process (the spool ends them at the start of
        their batch: see SqliteSpool.cancel). Returns how many recipients were cancelled
        now. ConfigError for a campaign the spool does not have."""
        parts = self._open()
        spooler = parts.spooler
        total = 0
        while True:
            page = await spooler.call(spooler.spool.cancel, campaign_id, CANCEL_PAGE)
            total += len(page)
            parts.recorder.publish_cancelled()
            if len(page) < CANCEL_PAGE:
                break
        self._wake.set()  # a drain waiting for them sees they are final
        return total

    async def _pump(self, *, until_done: bool) -> None:
        parts = self._open()
        spooler, scheduler = parts.spooler, parts.scheduler
        self._stopping = False
        if self._cut is not None:  # a stop's cut must not reach this run's batches
            self._cut.cancel()
            self._cut = None
        parts.dispatcher.cancelled = False
        while not self._stopping:
            self._wake.clear()
            parts.routes.check()
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise failure
            await self._lease(parts)
            parts.recorder.publish_cancelled()  # a lease ends a dead process's leases
            now = time.time()
            await parts.fleet.beat(now)
            self._dispatch(parts, now)
            await scheduler.renew(now, self._held(parts))
            if await parts.suspensions.refresh(parts.traffic.sites.values(), now):
                self._wake.set()
            if await parts.actions.refresh(now):
                self._wake.set()
            if (
                until_done
                and scheduler.active == 0
                and self._submitting == 0
                and await spooler.call(spooler.spool.pending) == 0
            ):
                break
            with contextlib.suppress(TimeoutError):
                idle = await scheduler.idle_for(now, parts.traffic.sites.values())
                await asyncio.wait_for(self._wake.wait(), idle)
        if self._batches:
            await asyncio.gather(*self._batches, return_exceptions=True)

    async def _lease(self, parts: _Parts) -> None:
        """Fills the window with due recipients and hands them to routing, which puts
        each domain's recipients in their site's queue when its DNS answer comes."""
        if self._stopping:
            return
        leased = await parts.scheduler.lease()
        if not leased:
            return
        for campaign_id in {r.campaign for r in leased}:
            await parts.campaigns.load(campaign_id)
        now = time.time()
        judged = Verdict([], [], [])
        routable = []
        for r in leased:
            unusable = parts.campaigns.why_unusable(r.campaign)
            if r.interrupted >= INTERRUPTED_DEFERRED:
                self._judge.one(judged, r.campaign, r, _interrupted(r.interrupted), now)
            elif unusable is not None:
                outcome = Outcome.without_reply(
                    "permanent", "render", unusable, kind=OutcomeKind.RENDER
                )
                self._judge.one(judged, r.campaign, r, outcome, now)
            else:
                routable.append(r)
        parts.routes.add(routable)
        await parts.recorder.record(judged)

    async def _routed(
        self, domain: str, dest: Destination | Exception, waiting: list[Leased]
    ) -> None:
        """A domain's DNS answer came: its recipients go to their site's queue, back to
        the spool while the site is suspended, or to the judge when DNS decided."""
        parts = self._open()
        now = time.time()
        if isinstance(dest, Exception) or dest.route is None:
            outcome = _dns_outcome(dest)
            judged = Verdict([], [], [])
            for r in waiting:
                self._judge.one(judged, r.campaign, r, outcome, now)
            await parts.recorder.record(judged)
            return
        site, new = parts.traffic.site(dest, domain)
        if new:
            parts.suspensions.restore(site)  # from before a restart
        if parts.suspensions.holds(parts.traffic.sites, site.key, now):
            # Before recipients go back for a suspension: `ferrymail flush` (another
            # process) may have lifted it, and made these due for that very reason.
            await parts.suspensions.refresh(parts.traffic.sites.values(), now, due=True)
        if site.suspended(now):
            await parts.recorder.release([(r, site.suspended_until) for r in waiting])
            return
        bouncing = parts.actions.bouncing(site.key, now)
        if bouncing is not None:
            await parts.automator.bounce(waiting, bouncing.rule, bouncing.reply)
            return
        held = parts.actions.held(site.key, now)
        if held:
            await parts.recorder.release(
                [(r, held[r.campaign]) for r in waiting if r.campaign in held]
            )
            waiting = [r for r in waiting if r.campaign not in held]
        await parts.recorder.release(parts.traffic.assign(site, waiting, now))

    def _held(self, parts: _Parts) -> Iterator[Leased]:
        """Every recipient leased here and not yet settled, for renewals."""
        yield from parts.routes.held()
        yield from parts.traffic.queued()
        for batch in parts.dispatcher.in_flight.values():
            yield from batch

    def _dispatch(self, parts: _Parts, now: float) -> None:
        """Starts a batch on every lane whose site's and source's limits allow one."""
        if self._stopping:
            return
        starts, back = parts.traffic.plan(now)
        if back:
            self._spawn(parts.recorder.release(back))
        for start in starts:
            self._spawn(self._deliver(parts, start))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Runs a batch (or a release) as a task the pump waits for when it ends."""
        task = asyncio.create_task(work)
        self._batches.add(task)
        task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        """Forgets a finished batch; one that failed stops the pump with its error
        (retrieved here, so asyncio never reports it as lost)."""
        self._batches.discard(task)
        if task.cancelled():
            return
        failure = task.exception()
        if failure is not None and self._failure is None:
            self._failure = failure
            self._wake.set()

    async def _deliver(self, parts: _Parts, start: Start) -> None:
        """One batch of a lane; then automation and, if the outcomes say so, the site is
        suspended."""
        site, lane, campaign_id = start.site, start.lane, start.campaign
        outcomes: list[Outcome] = []
        try:
            compiled = parts.campaigns.get(campaign_id)
            if compiled is None:  # loaded when leased: only a bug could lose it
                raise Error(f"campaign {campaign_id!r} is not loaded")
            outcomes = await parts.dispatcher.deliver(
                site, campaign_id, compiled, start.batch, start.route
            )
        finally:
            try:
                delivered = sum(o.status == "delivered" for o in outcomes)
                provider = provider_of(site)
                await parts.egress.sent(start.source, provider, delivered, time.time())
                # A reply that a shaping rule matches is the rule's to act on; the
                # others get the built-in reaction (a 421 suspends the site).
                unmatched = await parts.automator.observe(site, campaign_id, outcomes, lane.source)
                why = self._judge.suspension(unmatched)
                if why is not None:
                    await self._suspend(parts, site, why)
            finally:
                site.finished(lane)
                self._wake.set()

    async def _suspend(
        self, parts: _Parts, site: Site, why: str, until: float | None = None
    ) -> None:
        """Suspends the site, here and in the spool (`ferrymail status` shows it, a
        restart keeps it), for `suspend_for` or until `until`; its waiting recipients go
        back to the spool."""
        end = time.time() + self.config.suspend_for if until is None else until
        until = max(site.suspended_until, end)
        await parts.suspensions.suspend(site, until, why)
        waiting = site.suspend(until)
        await parts.recorder.release([(r, until) for r in waiting])

    def reload_shaping(self, shaping: Shaping) -> None:
        """Puts a new shaping file in force: every site's limits, retry policy, bounce
        rules and automation rules are taken from it from its next batch on. Nothing
        queued is touched, and the actions in force stay."""
        self._shaping = shaping
        if self._parts is not None:
            self._parts.traffic.reload(shaping)

    # --- reading ----------------------------------------------------------------------

    def events(self) -> AsyncIterator[Event]:
        """Every state change from now on, as `Event`s."""
        # The engine's bus carries only Events (FeedbackEvents come from the web and
        # inbound processes' buses).
        return cast("AsyncIterator[Event]", self._bus.subscribe())

    async def report(self, campaign_id: str) -> Report:
        """Counts by state, by domain and by bounce category, and the commonest replies."""
        spooler = self._open().spooler
        return await spooler.call(spooler.spool.report, campaign_id)

    @property
    def owner(self) -> str:
        """The name this engine's leases carry in the spool: "host:pid:random"."""
        return self._owner

    async def leases(self) -> list[tuple[str, int, float, bool]]:
        """Who holds leased recipients: (owner, recipients, when its first lease ends,
        whether it is a dead process of this host), the biggest first."""
        spooler = self._open().spooler
        return await spooler.call(spooler.spool.leases)

    async def stored_spec(self, campaign_id: str) -> bytes | None:
        """The campaign's spec as the spool holds it (wire.CampaignSpec's MessagePack),
        or None when the spool has no such campaign."""
        spooler = self._open().spooler
        return await spooler.call(spooler.spool.campaign_spec, campaign_id)

    def connections(self) -> tuple[int, int]:
        """The SMTP connections this engine has open now, as (busy, idle); (0, 0)
        when it is not open. Any thread may ask (the metrics' scrape does)."""
        parts = self._parts
        return (0, 0) if parts is None else parts.transport.connections()

    async def counts(self) -> dict[str, int]:
        """Recipients of every campaign in the spool, by state."""
        spooler = self._open().spooler
        return await spooler.call(spooler.spool.counts)

    def _open(self) -> _Parts:
        if self._parts is None:
            raise EngineClosedError("the engine is not open: use `async with Engine(...)`")
        return self._parts


class Suppressions:
    """The suppression list: addresses never sent to (submit marks them suppressed).
    Each call runs on the spool's thread, so it never blocks the event loop."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def add(self, address: str, reason: str = "added by hand") -> None:
        spooler = self._engine._open().spooler
        await spooler.call(spooler.spool.suppress, address, reason)

    async def remove(self, address: str) -> bool:
        spooler = self._engine._open().spooler
        return await spooler.call(spooler.spool.unsuppress, address)

    async def contains(self, address: str) -> bool:
        spooler = self._engine._open().spooler
        return await spooler.call(spooler.spool.is_suppressed, address)

    async def list(self, limit: int | None = None) -> list[tuple[str, str, float]]:
        spooler = self._engine._open().spooler
        return await spooler.call(spooler.spool.suppressions, limit)


def _dns_outcome(dest: Destination | Exception) -> Outcome:
    if isinstance(dest, Exception) or dest.failure is None:
        text = f"internal error while routing: {dest!r}"
        return Outcome.without_reply("transient", "engine", text, kind=OutcomeKind.INTERNAL)
    failure = dest.failure
    status = "transient" if failure.status == "temporary" else "permanent"
    return Outcome.without_reply(
        status, "connect", failure.text, failure.code, failure.enhanced, kind=OutcomeKind.DNS
    )


def _interrupted(times: int) -> Outcome:
    text = (
        f"the process stopped {times} times in a row while delivering to this "
        "recipient, before the outcome was known (the message may have been delivered)"
    )
    return Outcome.without_reply("transient", "engine", text, kind=OutcomeKind.INTERRUPTED)
