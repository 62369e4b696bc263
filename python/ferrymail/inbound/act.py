"""What the listener does with one parsed inbound message: signals, suppressions, events.

A late bounce or a complaint is a feedback row beside the recipient's final state, not
a new state: the recipient was delivered (the receiver said 250), and the report and
the complaint rate count it as such. Hard late bounces and complaints add the address
to the suppression list, in the same transaction as the row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import msgspec
import orjson

from ..bounce import HARD_CATEGORIES
from ..events import FeedbackEvent, feedback_event
from ..feedback import Feedback, RecipientReport
from ..spool import Found, Recorded, Signal, Spool
from .config import InboundConfig
from .match import Matcher

#: The longest diagnostic kept in a signal's detail and a suppression's reason.
MAX_TEXT = 500


class Handled(msgspec.Struct, frozen=True):
    """What one message did: for the listener's log line and the event bus."""

    kind: str
    events: list[FeedbackEvent]
    #: Addresses added to the suppression list.
    suppressed: list[str]
    #: Addresses (or "?" for none) the message spoke of that matched no recipient.
    unmatched: list[str]


class Handler:
    """Acts on parsed messages for one listener; every method runs on the spool thread."""

    def __init__(self, spool: Spool, config: InboundConfig, clock: Callable[[], float]) -> None:
        self._spool = spool
        self._config = config
        self._match = Matcher(spool, config)
        self._clock = clock

    def __call__(self, feedback: Feedback) -> Handled:
        kind = feedback.kind
        if kind in ("bounce", "delay"):
            return self._report(feedback)
        if kind == "complaint":
            return self._complaint(feedback)
        if kind == "auto-reply":
            return self._auto_reply(feedback)
        if kind == "unsubscribe":
            return self._unsubscribe(feedback)
        return Handled(kind, [], [], [])

    def _report(self, feedback: Feedback) -> Handled:
        """A delivery report: each failed recipient a late bounce; delays an event only."""
        wanted = "failed" if feedback.kind == "bounce" else "delayed"
        reports = [r for r in feedback.recipients if r.action == wanted]
        verp = self._match.by_verp(feedback)
        quoted = None if verp else self._match.by_quoted_token(feedback)
        message_id = feedback.original.message_id if feedback.original else None
        matched: dict[int, tuple[Found, str, RecipientReport]] = {}
        unmatched: list[str] = []
        for report in reports:
            reported = report.original or report.address
            # One VERP address is one recipient: it names it whatever the report says
            # (a forward's failure is still our message's).
            hit = verp or quoted
            if hit is None and reported:
                hit = self._match.by_address(reported, message_id)
            if hit is None:
                unmatched.append(reported or "?")
            else:
                matched.setdefault(hit[0].id, (hit[0], hit[1], report))
        if feedback.kind == "delay":
            # Not stored (a delay changes nothing), only told: its webhook events are
            # written to the outbox all the same, in a transaction of their own.
            now = self._clock()
            told = [
                (
                    Signal(
                        "delayed",
                        found.campaign,
                        found.key,
                        now,
                        detail=_detail(feedback, report, how),
                    ),
                    Recorded(True, found.address, found.domain),
                )
                for found, how, report in matched.values()
            ]
            if told:
                self._spool.record_inbound([], [], told)
            return Handled("delay", [feedback_event(s, r) for s, r in told], [], unmatched)
        signals = []
        suppress = []
        for found, how, report in matched.values():
            detail = _detail(feedback, report, how)
            signals.append(
                Signal("bounced-late", found.campaign, found.key, self._clock(), detail=detail)
            )
            if self._config.suppress_hard_bounces and report.category in HARD_CATEGORIES:
                said = " ".join(filter(None, (report.status, report.diagnostic)))
                why = f"{report.category}: late bounce {said}".strip()
                suppress.append((found.address, why[:MAX_TEXT], ""))
        return self._record("bounce", signals, suppress, unmatched)

    def _complaint(self, feedback: Feedback) -> Handled:
        complaint = feedback.complaint
        assert complaint is not None  # (the parser's kind says so)
        hit = self._match.by_verp(feedback) or self._match.by_quoted_token(feedback)
        addresses = list(feedback.addresses)
        original = feedback.original
        if hit is None and original is not None and original.to:
            addresses.append(original.to)
        message_id = original.message_id if original else None
        for address in addresses:
            if hit is not None:
                break
            hit = self._match.by_address(_bare(address), message_id)
        if hit is None:
            return Handled("complaint", [], [], addresses or ["?"])
        found, how = hit
        detail = {
            "feedback_type": complaint.feedback_type,
            "user_agent": complaint.user_agent,
            "source_ip": complaint.source_ip,
            "reported_domains": list(complaint.reported_domains),
            "matched_by": how,
        }
        signal = Signal(
            "complained", found.campaign, found.key, self._clock(), detail=_json(detail)
        )
        suppress = []
        if self._config.suppress_complaints:
            by = complaint.user_agent or "a feedback loop"
            suppress.append(
                (
                    found.address,
                    f"complained: {complaint.feedback_type} report from {by}"[:MAX_TEXT],
                    "",
                )
            )
        return self._record("complaint", [signal], suppress, [])

    def _auto_reply(self, feedback: Feedback) -> Handled:
        hit = self._match.by_verp(feedback)
        message_id = feedback.original.message_id if feedback.original else None
        if hit is None and feedback.sender:
            hit = self._match.by_address(feedback.sender, message_id)
        if hit is None:
            return Handled("auto-reply", [], [], [feedback.sender or "?"])
        found, how = hit
        detail = {"from": feedback.sender, "subject": _cut(feedback.subject), "matched_by": how}
        signal = Signal(
            "auto-reply", found.campaign, found.key, self._clock(), detail=_json(detail)
        )
        return self._record("auto-reply", [signal], [], [])

    def _unsubscribe(self, feedback: Feedback) -> Handled:
        named = (
            self._match.by_unsubscribe_token(feedback.unsubscribe_token)
            if feedback.unsubscribe_token
            else None
        )
        if named is None:
            return Handled("unsubscribe", [], [], [feedback.sender or "?"])
        campaign, key = named
        scope = self._config.unsubscribe_scope
        done = self._spool.unsubscribe(campaign, key, scope=scope, by="mailto")
        if done is None:
            return Handled("unsubscribe", [], [], [feedback.sender or "?"])
        if not done.new:
            return Handled("unsubscribe", [], [], [])
        event = feedback_event(done.signal, done.recorded)
        return Handled("unsubscribe", [event], [done.address], [])

    def _record(
        self,
        kind: str,
        signals: list[Signal],
        suppress: list[tuple[str, str, str]],
        unmatched: list[str],
    ) -> Handled:
        recorded = self._spool.record_inbound(signals, suppress) if signals else []
        events = [
            feedback_event(s, done)
            for s, done in zip(signals, recorded, strict=True)
            if done is not None
        ]
        return Handled(kind, events, [address for address, _, _ in suppress], unmatched)


def _detail(feedback: Feedback, report: RecipientReport, how: str) -> str:
    return _json(
        {
            "address": report.original or report.address,
            "action": report.action,
            "status": report.status,
            "code": report.reply_code,
            "diagnostic": _cut(report.diagnostic),
            "category": report.category,
            "remote_mta": report.remote_mta,
            "reporting_mta": feedback.reporting_mta,
            "matched_by": how,
        }
    )


def _json(detail: Mapping[str, object]) -> str:
    return orjson.dumps({k: v for k, v in detail.items() if v not in (None, [])}).decode()


def _cut(text: str | None) -> str | None:
    return None if text is None else text[:MAX_TEXT]


def _bare(address: str) -> str:
    """The mailbox of a To header ("Ann <ann@example.com>" -> "ann@example.com")."""
    inside = address.rpartition("<")[2].partition(">")[0] if "<" in address else address
    return inside.strip()
