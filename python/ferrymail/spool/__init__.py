"""The spool: the engine's durable store of campaigns, recipients' states and suppressions."""

from .rows import DomainStatus, Leased, NewRecipient, Report, Status, Suspension, Update
from .sqlite import SqliteSpool
from .states import FINAL, PENDING
from .suppression import domain_key, suppression_key

__all__ = [
    "FINAL",
    "PENDING",
    "DomainStatus",
    "Leased",
    "NewRecipient",
    "Report",
    "SqliteSpool",
    "Status",
    "Suspension",
    "Update",
    "domain_key",
    "suppression_key",
]
