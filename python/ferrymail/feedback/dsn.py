"""Delivery status notifications (RFC 3464): the status part's fields -> recipient reports."""

from __future__ import annotations

from ..bounce import BounceClassifier
from .addresses import address, enhanced_code, reply_code, untyped
from .model import Kind, RecipientReport

#: Per-recipient blocks read from one report; the rest are counted and named in
#: `problem`. A genuine DSN lists the recipients of one message at one site (Postfix
#: sends one per message); thousands are an attack or a mistake.
MAX_RECIPIENTS = 100

ACTIONS = ("failed", "delayed", "delivered", "relayed", "expanded")


def recipient(block: dict[str, str], classifier: BounceClassifier) -> RecipientReport:
    """One per-recipient block (field names lower case) as a report."""
    diagnostic = untyped(block.get("diagnostic-code"))
    status = enhanced_code(block.get("status")) or enhanced_code(diagnostic)
    raw = (block.get("action") or "").strip().lower().split(" ")[0]
    # "failure", "delay" and other near misses read as the action they spell; without
    # an Action (RFC 3464 requires one), the status class says it.
    action = next((a for a in ACTIONS if raw[:4] == a[:4]), raw)
    if not action:
        action = {"2": "delivered", "4": "delayed"}.get((status or "5")[0], "failed")
    code = reply_code(diagnostic)
    category = None
    if action in ("failed", "delayed"):
        if action == "failed" and status is not None and status.startswith("4"):
            # The reporting MTA gave up after transient failures (its queue lifetime
            # ran out): nothing lasting is known about the mailbox.
            category = "message-expired"
        else:
            category = classifier.classify(code, status, diagnostic or "", "reply")
    return RecipientReport(
        address=address(block.get("final-recipient")),
        original=address(block.get("original-recipient")),
        action=action,
        status=status,
        reply_code=code,
        diagnostic=diagnostic,
        remote_mta=untyped(block.get("remote-mta")),
        category=category,
    )


def is_recipient(block: dict[str, str]) -> bool:
    """Whether a block speaks of a recipient (rather than being noise between blocks)."""
    return "final-recipient" in block or "original-recipient" in block or "action" in block


def first(block: list[tuple[str, str]]) -> dict[str, str]:
    """A block's fields by name, the first value of each."""
    fields: dict[str, str] = {}
    for name, value in block:
        fields.setdefault(name, value)
    return fields


def kind_of(recipients: tuple[RecipientReport, ...]) -> Kind:
    """ "bounce" if a recipient failed, else "delay" if one was delayed, else "unknown"."""
    actions = {r.action for r in recipients}
    if "failed" in actions:
        return "bounce"
    if "delayed" in actions:
        return "delay"
    return "unknown"
