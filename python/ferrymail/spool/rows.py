"""What goes into the spool and comes out of it: msgspec structs, whatever the backend."""

from __future__ import annotations

import msgspec


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


class DomainStatus(msgspec.Struct, frozen=True):
    """One destination's pending recipients."""

    domain: str
    pending: int
    in_flight: int
    deferred: int
    #: The earliest time a deferred recipient of the domain is due again (None: none is
    #: deferred).
    next_attempt: float | None


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
