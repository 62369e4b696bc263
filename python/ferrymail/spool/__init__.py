"""The spool: the engine's durable store of campaigns, recipients' states and suppressions."""

from .actions import ShapingAction
from .lookup import Found
from .opening import is_url, open_spool, shown
from .outbox import OutboxBatch, OutboxRow, WebhookBacklog
from .protocol import Spool
from .rows import (
    CancelledRecipient,
    DomainStatus,
    FeedbackCounts,
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
from .sqlite import SqliteSpool
from .states import FINAL, PENDING
from .suppression import domain_key, suppression_key

__all__ = [
    "FINAL",
    "PENDING",
    "CancelledRecipient",
    "DomainStatus",
    "FeedbackCounts",
    "Found",
    "Leased",
    "NewRecipient",
    "OutboxBatch",
    "OutboxRow",
    "Recorded",
    "Report",
    "ShapingAction",
    "Signal",
    "Spool",
    "SqliteSpool",
    "Status",
    "Suspension",
    "Unsubscribed",
    "Update",
    "WebhookBacklog",
    "domain_key",
    "is_url",
    "open_spool",
    "shown",
    "suppression_key",
]
