"""What goes into the spool and comes out of it: msgspec structs, whatever the backend."""

from __future__ import annotations

import msgspec

from .actions import ShapingAction


class NewRecipient(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One recipient as submit hands it to `insert`."""

    #: The MessagePack of `ferrymail.wire.Recipient`: stored as is and handed back as is
    #: in `Leased.recipient`, which the engine passes to Rust untouched.
    recipient: bytes
    #: The address as submitted, for reports and events.
    address: str
    #: The domain in lower-case A-labels ("" when the address has none): leasing,
    #: flush, status and reports group by it.
    domain: str
    #: The ESP's recipient id as text, or the address when there is none.
    key: str
    #: "queued", or a final state decided at submit ("rejected", "suppressed" …).
    state: str
    #: The reason for a final state decided at submit, as a reply would give it.
    code: int | None = None
    enhanced: str | None = None
    text: str | None = None


class Leased(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A recipient leased for one delivery attempt: in flight until its lease ends."""

    id: int
    campaign: str
    recipient: bytes
    address: str
    domain: str
    key: str
    #: Attempts made before this one (an attempt whose lease expired, outcome unrecorded,
    #: is not counted).
    attempts: int
    submitted_at: float
    #: Attempts of this recipient in a row that were under way when their process died
    #: (started, see `SqliteSpool.started`, with no outcome recorded). A recipient
    #: whose attempt kills the process every time would otherwise be tried forever.
    interrupted: int = 0


class Update(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """The outcome of one leased recipient's attempt, for `record`.

    `state` is "delivered", "bounced", "deferred", "expired" or "failed" after an attempt,
    or "queued" to release the recipient without one (its last reply stays as it was).
    `next_attempt` is when a "deferred" or "queued" recipient is due again (required for
    "deferred"; None for "queued" means at once); it is ignored for final states.
    """

    id: int
    state: str
    #: The new count of attempts.
    attempts: int
    next_attempt: float | None
    code: int | None
    enhanced: str | None
    text: str | None
    #: The bounce or deferral category (ferrymail.bounce).
    category: str | None
    mx: str | None
    ip: str | None


class Signal(msgspec.Struct, frozen=True, gc=False):
    """One signal that came back about one recipient, for `record_feedback`.

    `kind` is one of schema.FEEDBACK_KINDS: "clicked", "opened", "unsubscribed" (the
    web endpoints), "bounced-late", "complained", "auto-reply" (inbound mail). `key` is
    the recipient key the token (or the VERP address) names."""

    kind: str
    campaign: str
    key: str
    #: Seconds since the epoch when it came (the request's time, not the commit's).
    at: float
    #: A scanner, prefetcher or image proxy rather than a person.
    machine: bool = False
    #: The link's number in its message and its URL (clicks).
    link: int | None = None
    url: str | None = None
    user_agent: str | None = None
    #: What an inbound signal carries (status, diagnostic, feedback type), as JSON.
    detail: str | None = None


class Recorded(msgspec.Struct, frozen=True, gc=False):
    """What `record_feedback` stored for one signal, for its event."""

    #: No person's signal of this kind (and link) from this recipient came before.
    first: bool
    #: The recipient's address and domain, when the spool has the recipient.
    address: str | None
    domain: str | None


class Unsubscribed(msgspec.Struct, frozen=True, gc=False):
    """What `unsubscribe` did: `new` is False when the address was already suppressed
    in that scope and the unsubscribe already recorded (a second POST)."""

    new: bool
    address: str
    domain: str
    #: "" for the global list, else the list's name.
    scope: str
    #: The signal recorded, for its event (when `new`).
    signal: Signal

    @property
    def recorded(self) -> Recorded:
        """What the spool stored for `signal`, for its event."""
        return Recorded(True, self.address, self.domain)


class FeedbackCounts(msgspec.Struct, frozen=True):
    """What came back for one campaign (part of `Report`). Machine signals (scanners,
    prefetchers, image proxies, HEAD requests) never count as clicks or human opens."""

    #: Clicks by people: every click, and the recipients who clicked at least once.
    clicks: int = 0
    unique_clicks: int = 0
    #: Requests for tracked links by scanners and prefetchers.
    machine_clicks: int = 0
    #: Opens by people (every one, and the recipients who opened), and by proxies
    #: (Apple Mail Privacy Protection, Google's image proxy), which say nothing of a
    #: person having read the message.
    opens: int = 0
    unique_opens: int = 0
    machine_opens: int = 0
    #: Recipients who unsubscribed.
    unsubscribes: int = 0
    #: Filled by the inbound listener: bounces that came back by mail after the
    #: receiver's 250, complaints (feedback loops), auto-replies (never bounces).
    late_bounces: int = 0
    complaints: int = 0
    auto_replies: int = 0
    #: Recipients who complained / recipients delivered (0.0 when none was delivered):
    #: the number Gmail and Yahoo hold a sender to (under 0.3%).
    complaint_rate: float = 0.0
    #: The same per receiving domain that had a complaint and deliveries.
    complaint_rate_by_domain: dict[str, float] = {}


class Report(msgspec.Struct, frozen=True):
    """Where one campaign stands: what `ferrymail report` prints and ESPs bill by."""

    campaign: str
    #: Every state, 0 included.
    states: dict[str, int]
    #: Domain -> state -> count (non-zero counts only).
    domains: dict[str, dict[str, int]]
    #: Bounce or deferral category -> the count of recipients whose last outcome had it.
    categories: dict[str, int]
    #: The 20 most common last replies ("550 5.1.1 text") of bounced, deferred and
    #: expired recipients, with their counts, most common first.
    replies: list[tuple[str, int]]
    #: Clicks, opens, unsubscribes, late bounces and complaints.
    feedback: FeedbackCounts = FeedbackCounts()


class DomainStatus(msgspec.Struct, frozen=True):
    """One destination's pending recipients."""

    domain: str
    pending: int
    in_flight: int
    deferred: int
    #: The earliest time a deferred recipient of the domain is due again (None: none is
    #: deferred).
    next_attempt: float | None


class CancelledRecipient(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A recipient the spool ended as cancelled (for its event; see spool/cancelled.py)."""

    campaign: str
    key: str
    address: str
    domain: str
    attempts: int
    submitted_at: float
    #: When it was cancelled (its event's timestamp).
    at: float


class Suspension(msgspec.Struct, frozen=True):
    """A site the engine stopped sending to for a while (see `Engine`): every MX was
    unreachable, or it said 421 or that we send too fast."""

    #: The MX host names the site's domains share and the port ("mx1.example,mx2.example:25").
    site: str
    #: Until when (seconds since the epoch); its recipients are due again then.
    until: float
    #: Why, with the reply that said so.
    reason: str
    #: The domains it had recipients of when suspended.
    domains: list[str]
    since: float


class Status(msgspec.Struct, frozen=True):
    """The whole spool at a glance: what `ferrymail status` prints."""

    #: Every state, 0 included.
    states: dict[str, int]
    #: The 50 domains with the most pending recipients, most first.
    domains: list[DomainStatus]
    #: How many domains have pending recipients (`domains` lists at most 50).
    pending_domains: int
    #: See `SqliteSpool.next_due`.
    next_due: float | None
    #: The sites suspended now, the one whose suspension ends soonest first.
    suspended: list[Suspension] = []
    #: The shaping automation's actions in force (or whose limits are coming back up).
    actions: list[ShapingAction] = []
