"""Spool: the one interface of the spool, whatever holds it (SQLite file or PostgreSQL).

The contracts are SqliteSpool's (sqlite.py): each method here is documented there, and
PostgresSpool (postgres.py) keeps the same ones. Every method is synchronous and one
transaction; the engine calls them from its single spool thread (spooler.py).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from types import TracebackType
from typing import Protocol, Self

from .actions import ShapingAction
from .cancelled import CancelledHook
from .feedback_events import FeedbackHook
from .lookup import Found
from .outbox import OutboxBatch, OutboxRow, WebhookBacklog
from .rows import (
    CancelledRecipient,
    Leased,
    NewRecipient,
    Recorded,
    Report,
    Signal,
    Status,
    Suspension,
    Unsubscribed,
    Update,
)


class Spool(Protocol):
    """The spool's methods; see SqliteSpool for what each one promises."""

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

    # ---- campaigns (SqliteSpool.put_campaign, campaign_spec, campaign_list) ----

    def put_campaign(self, campaign_id: str, spec: bytes) -> bool: ...

    def campaign_spec(self, campaign_id: str) -> bytes | None: ...

    def campaign_list(self, campaign_id: str) -> str: ...

    # ---- submit and leasing (SqliteSpool.insert, lease …) ----

    def insert(
        self,
        campaign_id: str,
        rows: Sequence[NewRecipient],
        outbox: Callable[[list[int | None]], Sequence[OutboxRow]] | None = None,
    ) -> list[int | None]: ...

    def lease(
        self,
        limit: int,
        owner: str,
        lease_for: float,
        domains: Collection[str] | None = None,
    ) -> list[Leased]: ...

    def leases(self) -> list[tuple[str, int, float, bool]]: ...

    def started(self, ids: Sequence[int]) -> list[int]: ...

    def renew(self, ids: Sequence[int], lease_for: float) -> int: ...

    def record(self, updates: Sequence[Update], outbox: Sequence[OutboxRow] = ()) -> int: ...

    def release_owner(self, owner: str) -> int: ...

    def flush(self, domain: str | None = None) -> int: ...

    # ---- cancelling a campaign (SqliteSpool.cancel) ----

    def cancel(self, campaign_id: str, limit: int = ...) -> list[CancelledRecipient]: ...

    #: The engine's hook for the recipients the spool ends as cancelled (cancelled.py).
    on_cancelled: CancelledHook | None

    def take_cancelled(self) -> list[CancelledRecipient]: ...

    def cancelled_at(self, campaign_id: str) -> float | None: ...

    # ---- the service API's keys (SqliteSpool.add_api_key …) ----

    def add_api_key(self, name: str, digest: bytes, read_only: bool) -> bool: ...

    def find_api_key(self, digest: bytes) -> tuple[str, bool, bytes] | None: ...

    def api_keys(self) -> list[tuple[str, bool, float]]: ...

    def revoke_api_key(self, name: str) -> bool: ...

    # ---- suspended sites ----

    def suspend(self, site: str, until: float, reason: str, domains: Collection[str]) -> None: ...

    def suspensions(self) -> list[Suspension]: ...

    def lift(self, domain: str | None = None) -> list[str]: ...

    # ---- the fleet's share of each site's limits ----

    def take_tokens(self, key: str, per_second: float, want: int) -> int: ...

    def fleet_heartbeat(
        self, owner: str, node: str, live_for: float
    ) -> tuple[float, list[str]]: ...

    def fleet_leave(self, owner: str) -> None: ...

    # ---- automation actions (shaping) ----

    def put_actions(self, actions: Sequence[ShapingAction]) -> None: ...

    def actions(self) -> list[ShapingAction]: ...

    def lift_actions(self, domain: str | None = None) -> list[ShapingAction]: ...

    # ---- warm-up ----

    def add_warmup_sent(self, counts: Sequence[tuple[str, str, str, int]]) -> None: ...

    def warmup_sent(self, day: str) -> dict[tuple[str, str], int]: ...

    # ---- queries ----

    def next_due(self) -> float | None: ...

    def pending(self, campaign_id: str | None = None) -> int: ...

    def counts(self) -> dict[str, int]: ...

    def pending_by_site(self) -> list[tuple[str, str | None, int]]: ...

    def status(self) -> Status: ...

    def report(self, campaign_id: str) -> Report: ...

    def iter_recipients(self, campaign_id: str) -> Iterator[tuple[int, str, str, str, int]]: ...

    def final_states(self, campaign_id: str) -> dict[str, str]: ...

    # ---- suppressions ----

    def suppress(self, address: str, reason: str, scope: str = "") -> None: ...

    def unsuppress(self, address: str, scope: str = "") -> bool: ...

    def is_suppressed(self, address: str, scope: str = "") -> bool: ...

    def suppressed_among(
        self, addresses: Sequence[str], campaign_id: str | None = None
    ) -> set[str]: ...

    def suppressions(
        self, limit: int | None = None, scope: str = ""
    ) -> list[tuple[str, str, float]]: ...

    # ---- feedback ----

    #: The outbox rows of the signals recorded, when webhooks want them (feedback_events.py).
    on_feedback: FeedbackHook | None

    def record_feedback(self, signals: Sequence[Signal]) -> list[Recorded | None]: ...

    def record_inbound(
        self,
        signals: Sequence[Signal],
        suppress: Sequence[tuple[str, str, str]] = (),
        told: Sequence[tuple[Signal, Recorded]] = (),
    ) -> list[Recorded | None]: ...

    def find_recipient(self, row_id: int) -> Found | None: ...

    def find_by_key(self, campaign_id: str, key: str) -> Found | None: ...

    def find_by_address(self, address: str) -> list[Found]: ...

    def unsubscribe(
        self,
        campaign_id: str,
        key: str,
        *,
        scope: str = "list",
        user_agent: str | None = None,
        by: str | None = None,
    ) -> Unsubscribed | None: ...

    def feedback(
        self, campaign_id: str
    ) -> list[tuple[str, str, bool, bool, int | None, float]]: ...

    # ---- the webhook outbox ----

    def webhook_enqueue(self, rows: Sequence[OutboxRow]) -> None: ...

    def webhook_take(self, endpoint: str, limit: int, older_than: float) -> OutboxBatch | None: ...

    def webhook_sent(self, endpoint: str, batch: int) -> int: ...

    def webhook_failed(
        self, endpoint: str, batch: int, error: str, next_attempt: float | None
    ) -> None: ...

    def webhook_replay(self, endpoint: str | None = None) -> int: ...

    def webhook_backlog(self) -> list[WebhookBacklog]: ...
