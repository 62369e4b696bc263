"""Delivery events: one per recipient state change, to a JSON-lines log and to async subscribers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from .spool import Recorded, Signal

# A subscriber that falls this far behind loses its oldest events rather than growing
# without bound; the log file never loses any.
SUBSCRIBER_BACKLOG = 100_000
#: The `type` of the line that stands in the log where events could not be written (a
#: full disk): {"type": "lost", "events": N, "since": t, "reason": "...", "timestamp": t}.
LOST = "lost"

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One state change of one recipient.

    `type` is the new state: queued, rejected, suppressed (at submit); delivered,
    bounced, deferred, expired, failed (after an attempt). `recipient` is the ESP's id
    (or the address when it gave none). `attempt` counts attempts so far. `timestamp` is
    seconds since the epoch; `since_submit` seconds since the recipient was submitted;
    `source` the local address the attempt left from; `node` the name of the engine
    that made the change (Config.node), which tells the nodes of a fleet apart.
    """

    type: str
    campaign: str
    recipient: str
    address: str
    domain: str
    mx: str | None
    ip: str | None
    attempt: int
    code: int | None
    enhanced: str | None
    text: str | None
    category: str | None
    timestamp: float
    since_submit: float
    #: The local address the attempt's connection was bound to (the egress source's),
    #: None without a connection (and for the states of submit).
    source: str | None = None
    #: The engine's name (Config.node: the host name unless set); None from code that
    #: makes events without an engine.
    node: str | None = None


#: The `type`s of FeedbackEvent: what came back after delivery.
FEEDBACK_TYPES = ("clicked", "opened", "unsubscribed", "bounced-late", "complained", "auto-reply")


@dataclasses.dataclass(frozen=True, slots=True)
class FeedbackEvent:
    """One signal that came back about one recipient after its message went out: a
    click, an open, an unsubscribe (from the web endpoints), a late bounce, a complaint
    or an auto-reply (from inbound mail). A type of its own, not an `Event`: it is not a
    change of the recipient's state (a clicked recipient stays delivered), and has
    none of an attempt's fields. In the log, its `type` tells it from an Event.

    `machine`: a scanner, prefetcher or image proxy, not a person (ESPs count neither
    as a click nor as a human open). `first`: no person's signal of this type (and
    link) from this recipient came before. `address` and `domain` are None when the
    spool does not have the recipient. `detail`: what an inbound signal carries.
    """

    type: str
    campaign: str
    recipient: str
    address: str | None
    domain: str | None
    timestamp: float
    machine: bool = False
    first: bool = True
    link: int | None = None
    url: str | None = None
    user_agent: str | None = None
    detail: str | None = None


def feedback_event(signal: Signal, recorded: Recorded) -> FeedbackEvent:
    """The event of a signal the spool recorded (`recorded`: what it stored for it): the
    same one for the event log and, written by the spool, for the webhooks."""
    return FeedbackEvent(
        signal.kind,
        signal.campaign,
        signal.key,
        recorded.address,
        recorded.domain,
        signal.at,
        signal.machine,
        recorded.first,
        signal.link,
        signal.url,
        signal.user_agent,
        signal.detail,
    )


class EventBus:
    """Writes each batch of events to the log in one write and hands them to every
    subscriber's queue.

    A line of the log is whole or absent: a write that fails (a full disk) is cut back
    to the end of the last whole line. The events it held are then missing from the log
    (the spool has the recipients' states: it is the truth, the log its history): a
    warning says so (logging, which reaches stderr when the program set up nothing),
    and once the log can be written again a "lost" line (LOST) says how many are
    missing there, before the events that follow."""

    def __init__(
        self,
        log_path: str | os.PathLike[str] | None,
        observe: Callable[[Event | FeedbackEvent], None] | None = None,
    ) -> None:
        """`observe`: called with every event published (the metrics of `serve`)."""
        self._observe = observe
        self._path = None if log_path is None else os.fspath(log_path)
        self._log: int | None = None
        if self._path is not None:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            self._log = os.open(self._path, flags, 0o644)
        self._subscribers: list[asyncio.Queue[Event | FeedbackEvent | None]] = []
        #: Events that could not be written since the last write that could.
        self.lost = 0
        self._lost_since = 0.0
        self._lost_why = ""

    @property
    def listened(self) -> bool:
        """Whether anyone takes events (a log, a subscriber, an observer): if not, the
        engine does not build them."""
        return self._log is not None or bool(self._subscribers) or self._observe is not None

    def publish(self, events: Sequence[Event | FeedbackEvent]) -> None:
        if not events:
            return
        if self._observe is not None:
            for event in events:
                self._observe(event)
        if self._log is not None:
            self._write(self._log, events)
        for queue in self._subscribers:
            for event in events:
                if queue.qsize() >= SUBSCRIBER_BACKLOG:
                    queue.get_nowait()
                queue.put_nowait(event)

    def _write(self, fd: int, events: Sequence[Event | FeedbackEvent]) -> None:
        lines = b"".join(orjson.dumps(e, option=orjson.OPT_APPEND_NEWLINE) for e in events)
        data = self._lost_line() + lines if self.lost else lines
        if self._write_whole(fd, data):
            self.lost = 0
            return
        if not self.lost:
            self._lost_since = events[0].timestamp
            _log.warning(
                "ferrymail: the event log %s could not be written (%s): events are "
                "missing from it from now on; the spool has every recipient's state "
                "(`ferrymail report`)",
                self._path,
                self._lost_why,
            )
        self.lost += len(events)

    def _write_whole(self, fd: int, data: bytes) -> bool:
        """Appends `data` (whole lines); on a failure, cuts the log back to where it
        ended and returns False."""
        try:
            end = os.lseek(fd, 0, os.SEEK_END)
        except OSError as e:
            self._lost_why = e.strerror or str(e)
            return False
        view = memoryview(data)
        try:
            while view:  # one write() unless the disk takes only part of it
                view = view[os.write(fd, view) :]
        except OSError as e:
            self._lost_why = e.strerror or str(e)
            with contextlib.suppress(OSError):
                os.ftruncate(fd, end)
            return False
        return True

    def _lost_line(self) -> bytes:
        """The LOST line for the events missing before the next ones."""
        line = {
            "type": LOST,
            "events": self.lost,
            "since": self._lost_since,
            "reason": self._lost_why,
            "timestamp": time.time(),
        }
        return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)

    async def subscribe(self) -> AsyncIterator[Event | FeedbackEvent]:
        """Events from now on, until the bus closes."""
        queue: asyncio.Queue[Event | FeedbackEvent | None] = asyncio.Queue()
        self._subscribers.append(queue)
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            self._subscribers.remove(queue)

    def close(self) -> None:
        for queue in self._subscribers:
            queue.put_nowait(None)
        if self._log is not None:
            if self.lost and self._write_whole(self._log, self._lost_line()):
                self.lost = 0
            if self.lost:
                _log.warning(
                    "ferrymail: the event log %s lacks the last %d events (%s); the "
                    "spool has their states",
                    self._path,
                    self.lost,
                    self._lost_why,
                )
            os.close(self._log)
            self._log = None
