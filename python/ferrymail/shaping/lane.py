"""Lane: the ready queue of one (source, site) path: recipients by campaign, the batch in
flight, the source's own rate at the site."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from ..spool import Leased
from .bucket import TokenBucket


class Lane:
    """What one source has to send to one site (KumoMTA's ready queue, "source->site").
    Each lane sends one batch at a time, and the lanes of a site send at once, sharing
    the site's connections and rate (Site). Campaigns take turns, batch by batch, so a
    big campaign queued first does not keep a small one waiting for all of it.

    `source` is the source's name in the shaping file, "" for the host's own address.
    """

    __slots__ = (
        "bucket",
        "connections",
        "in_flight",
        "last_batch_at",
        "queues",
        "sending",
        "source",
    )

    def __init__(self, source: str) -> None:
        self.source = source
        self.queues: dict[str, deque[Leased]] = {}
        self.in_flight = False
        #: Recipients in the batch in flight.
        self.sending = 0
        #: Connections the batch in flight may have open (its share of the site's).
        self.connections = 0
        #: The per-source message rate at the site (None: only the site's applies).
        self.bucket = TokenBucket()
        #: When it last started a batch: the lane that waited longest goes first.
        self.last_batch_at = 0.0

    def add(self, campaign: str, leased: Leased) -> None:
        queue = self.queues.get(campaign)
        if queue is None:
            queue = self.queues[campaign] = deque()
        queue.append(leased)

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def __iter__(self) -> Iterator[Leased]:
        for queue in self.queues.values():
            yield from queue

    def take(self, most: int) -> tuple[str, list[Leased]] | None:
        """Up to `most` recipients of the campaign whose turn it is; that campaign then
        goes to the back of the turn."""
        for campaign, queue in self.queues.items():
            batch = [queue.popleft() for _ in range(min(most, len(queue)))]
            del self.queues[campaign]
            if queue:
                self.queues[campaign] = queue  # to the back: the next campaign's turn
            return campaign, batch
        return None

    def hold(self, campaign: str) -> list[Leased]:
        """Takes one campaign's recipients out."""
        return list(self.queues.pop(campaign, ()))

    def take_all(self) -> list[Leased]:
        waiting = [r for q in self.queues.values() for r in q]
        self.queues.clear()
        return waiting
