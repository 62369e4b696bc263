"""The spool: the engine's durable store of campaigns, recipients' states and suppressions."""

from .actions import ShapingAction
from .lookup import Found
from .opening import open_spool
from .outbox import OutboxBatch, OutboxRow, WebhookBacklog
from .protocol import Spool
from .rows import (
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
    "open_spool",
    "suppression_key",
]
