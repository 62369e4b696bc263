"""The spool: the engine's durable store of campaigns, recipients' states and suppressions."""

from .rows import DomainStatus, Leased, NewRecipient, Report, Status, Update
from .sqlite import SqliteSpool
from .states import FINAL, PENDING
from .suppression import suppression_key

__all__ = [
    "FINAL",
    "PENDING",
    "DomainStatus",
    "Leased",
    "NewRecipient",
    "Report",
    "SqliteSpool",
    "Status",
    "Update",
    "suppression_key",
]
