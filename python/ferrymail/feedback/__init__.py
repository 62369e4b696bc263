"""Inbound feedback: what a message to the bounce domain is (bounce, delay, complaint,
auto-reply, mailto unsubscribe) and what it says, read by a pure parser (no I/O).

    from ferrymail.feedback import parse
    feedback = parse(raw_bytes, envelope_to="bounces+TOKEN@bounces.example.com")
    feedback.kind, feedback.recipients, feedback.complaint, feedback.verp_token
"""

from __future__ import annotations

from .arf import COMPLAINT_TYPES
from .dsn import MAX_RECIPIENTS
from .mime import MAX_BYTES, MAX_DEPTH, MAX_LINES, MAX_NESTING, MAX_PARTS
from .model import Complaint, Feedback, Kind, OriginalMessage, RecipientReport
from .original import MAX_LINKS
from .parse import parse

__all__ = [
    "COMPLAINT_TYPES",
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_LINES",
    "MAX_LINKS",
    "MAX_NESTING",
    "MAX_PARTS",
    "MAX_RECIPIENTS",
    "Complaint",
    "Feedback",
    "Kind",
    "OriginalMessage",
    "RecipientReport",
    "parse",
]
