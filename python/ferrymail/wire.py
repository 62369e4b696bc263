"""The msgspec structs that cross between Python and Rust; rust/src/wire.rs mirrors them.

Every struct is `array_like` (a MessagePack array in field order) and frozen. Add fields
only at the end, with defaults: rmp-serde rejects trailing elements it does not know.
Times cross as integer epoch milliseconds, binary as bytes.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec


class TrackingSpec(msgspec.Struct, array_like=True, frozen=True):
    base_url: str
    secret: bytes
    opens: bool
    clicks: bool


class UnsubscribeSpec(msgspec.Struct, array_like=True, frozen=True):
    url: str | None
    mailto: str | None
    secret: bytes


class VerpSpec(msgspec.Struct, array_like=True, frozen=True):
    secret: bytes


class DkimKeySpec(msgspec.Struct, array_like=True, frozen=True):
    domain: str
    selector: str
    private_key: str
    algorithm: str | None
    headers: list[str] | None
    canonicalization: str
    aligned: bool = True
    for_domain: str | None = None


class CampaignSpec(msgspec.Struct, array_like=True, frozen=True):
    id: str
    sender: str
    from_: str
    subject: str
    html: str | None
    text: str | None
    reply_to: str | None
    headers: list[tuple[str, str]]
    tracking: TrackingSpec | None
    unsubscribe: UnsubscribeSpec | None
    dkim: list[DkimKeySpec] = []
    #: Specs stored in a spool by an older ferrymail end before this field: None.
    verp: VerpSpec | None = None
    pool: str | None = None


class Recipient(msgspec.Struct, array_like=True, frozen=True):
    """One recipient: the address, the variables its message is personalised with, and
    the ESP's own key for it (`id`, a string or an integer), which tokens, Message-IDs
    and events name. Without an id, they name the address."""

    address: str
    vars: dict[str, Any] = {}
    id: str | int | None = None


class RenderOutcome(msgspec.Struct, array_like=True, frozen=True, gc=False):
    envelope_from: str
    data: bytes | None
    message_id: str | None
    error: str | None
    smtputf8: bool
    rcpt_to: str | None


# Defaults of SmtpOptions, with where they come from.
CONNECT_TIMEOUT = 30.0  # Postfix smtp_connect_timeout
GREETING_TIMEOUT = 300.0  # RFC 5321 §4.5.3.2.1 initial 220 message: 5 minutes
EHLO_TIMEOUT = 300.0  # Postfix smtp_helo_timeout
STARTTLS_TIMEOUT = 300.0  # Postfix smtp_starttls_timeout
MAIL_TIMEOUT = 300.0  # RFC 5321 §4.5.3.2.2 MAIL: 5 minutes
RCPT_TIMEOUT = 300.0  # RFC 5321 §4.5.3.2.3 RCPT: 5 minutes
DATA_TIMEOUT = 120.0  # RFC 5321 §4.5.3.2.4 DATA initiation: 2 minutes
DATA_BLOCK_TIMEOUT = 180.0  # RFC 5321 §4.5.3.2.5 data block: 3 minutes
DOT_TIMEOUT = 600.0  # RFC 5321 §4.5.3.2.6 DATA termination: 10 minutes
# Ten connections per MX address: Postfix allows 20 per destination (domain) and large
# mailbox providers start deferring beyond about ten per sending IP.
MAX_CONNECTIONS_PER_HOST = 10
# 100 messages per connection, PowerMTA's usual max-msg-per-connection: long enough to
# amortise the handshake, short enough that receivers' per-connection limits rarely bite.
MAX_MESSAGES_PER_CONNECTION = 100
# An idle connection is closed after 30 s: between batches to a busy domain it is reused;
# far below the 5 minutes a server waits (RFC 5321 §4.5.3.2.7) before dropping it.
IDLE_TIMEOUT = 30.0


class SmtpOptions(msgspec.Struct, array_like=True, frozen=True):
    """How the SMTP client behaves. Times are in seconds. `tls` is "off", "opportunistic"
    (STARTTLS when offered, any certificate; plaintext again if the handshake fails) or
    "required" (a certificate valid for the MX name from the system's roots or
    `ca_file`, else a transient failure). `source_address` binds connections to one
    local IP (an ESP's IP pool). Checked when a `Transport` is made."""

    helo_name: str
    tls: str = "opportunistic"
    source_address: str | None = None
    connect_timeout: float = CONNECT_TIMEOUT
    max_connections_per_host: int = MAX_CONNECTIONS_PER_HOST
    max_messages_per_connection: int = MAX_MESSAGES_PER_CONNECTION
    idle_timeout: float = IDLE_TIMEOUT
    greeting_timeout: float = GREETING_TIMEOUT
    ehlo_timeout: float = EHLO_TIMEOUT
    starttls_timeout: float = STARTTLS_TIMEOUT
    mail_timeout: float = MAIL_TIMEOUT
    rcpt_timeout: float = RCPT_TIMEOUT
    data_timeout: float = DATA_TIMEOUT
    data_block_timeout: float = DATA_BLOCK_TIMEOUT
    dot_timeout: float = DOT_TIMEOUT
    ca_file: str | None = None


class MxHost(msgspec.Struct, array_like=True, frozen=True):
    """One mail server: its name (reported in outcomes, and what a certificate must
    name under tls="required") and its IP addresses, tried in order."""

    name: str
    addresses: list[str]
    port: int = 25


class SessionTimeouts(msgspec.Struct, array_like=True, frozen=True):
    """The nine SMTP timeouts of one batch (`Route.timeouts`), in seconds, with the
    names, meaning and defaults of `SmtpOptions`' fields (the shaping file's names)."""

    connect_timeout: float = CONNECT_TIMEOUT
    greeting_timeout: float = GREETING_TIMEOUT
    ehlo_timeout: float = EHLO_TIMEOUT
    starttls_timeout: float = STARTTLS_TIMEOUT
    mail_timeout: float = MAIL_TIMEOUT
    rcpt_timeout: float = RCPT_TIMEOUT
    data_timeout: float = DATA_TIMEOUT
    data_block_timeout: float = DATA_BLOCK_TIMEOUT
    dot_timeout: float = DOT_TIMEOUT


class ConnectionRate(msgspec.Struct, array_like=True, frozen=True):
    """A token bucket pacing the new connections of a `Route`'s batch: `key` names it
    (every batch of the transport naming the same key shares it, whatever its source),
    `per_second` is its rate, above 0; it saves up at most one second's worth (at
    least one token) and starts full."""

    key: str
    per_second: float


class Route(msgspec.Struct, array_like=True, frozen=True):
    """Where a batch goes: mail servers in the order to try them (MX preference order),
    and how it leaves this host.

    `max_connections`: most connections open at once from the batch's source to one
    address of the route (busy, being opened or idle), counted over every batch the
    transport runs, and most this batch opens; 0 keeps the transport's
    `max_connections_per_host`, which caps it too. `max_messages_per_connection`
    narrows the transport's for this batch; 0 keeps it.

    The egress settings, each None for the transport's (`SmtpOptions`):
    `source_address`, the local IPv4 or IPv6 address the batch's connections are bound
    to; `helo_name`, their EHLO/HELO name (the name the source's PTR record gives);
    `tls`, "off", "opportunistic" or "required"; `timeouts`, the batch's
    `SessionTimeouts`. Connections are pooled per destination address, source, HELO
    name and TLS policy: batches from different sources never share one. A setting that
    is not valid (an address that is not an IP, a HELO name with a space or over 255
    octets, an unknown policy, a timeout not above 0) makes every recipient of the
    batch a "transient" outcome of kind "local" saying which; a source the host does
    not have is one at stage "connect" naming it. Nothing is sent in either case.

    `connection_rates`: the `ConnectionRate` buckets the batch's new connections take
    from (the engine names the site's and the site-and-source one, keyed by the site and
    by site + "\\x00" + source name). A connection is opened only when every bucket
    named has a token, one taken from each; until then the batch waits (a cancel cuts
    the wait). Reusing an idle pooled connection takes none. A rate not above 0 (or
    not a number) is an unusable setting like those above: every recipient a
    "transient" outcome of kind "local". Empty: new connections are not paced.

    `idle_timeout`: how long the batch's connections may wait idle in the pool for the
    next batch, in seconds (a site's own); None: the transport's (`SmtpOptions`). Not
    above 0, or over a day, is an unusable setting as above.
    """

    hosts: list[MxHost]
    max_connections: int = 0
    max_messages_per_connection: int = 0
    source_address: str | None = None
    helo_name: str | None = None
    tls: str | None = None
    timeouts: SessionTimeouts | None = None
    connection_rates: list[ConnectionRate] = []
    idle_timeout: float | None = None


class OutcomeKind(enum.StrEnum):
    """What decided an `Outcome`, for the judge, the bounce rules and shaping to match on
    (with `code` and `enhanced`) instead of reading `text`. The values cross the wire as
    these strings; rust/src/wire.rs's `OutcomeKind` has the same ones.

    A StrEnum, not a Literal: msgspec decodes both through the same lookup table into a
    cached object (about 20 ns each, a third of a plain str's 70 ns, which allocates),
    and the enum adds named members, iteration and exhaustive `match`; its members still
    compare equal to the plain strings.
    """

    REPLY = "reply"
    """The receiver answered and its reply decided: `code`, `enhanced` and `text` are
    that reply (2xx, 4xx or 5xx)."""
    REFUSED = "refused"
    """The TCP connection was refused (by the last address tried)."""
    UNREACHABLE = "unreachable"
    """Another connect failure: no route, reset, an address that cannot be used."""
    TIMEOUT = "timeout"
    """A timeout; `stage` says which."""
    LOST = "lost"
    """The connection closed or failed mid-session; at stage "dot" the message may have
    been delivered."""
    TLS = "tls"
    """The TLS handshake or the certificate check failed."""
    PROTOCOL = "protocol"
    """A reply that does not parse, or a peer that breaks the protocol."""
    LOCAL = "local"
    """ferrymail decided not to send: the message is over the peer's SIZE, it needs
    SMTPUTF8 and the peer lacks it, an envelope address is unsafe for the wire. `code`
    and `enhanced` are ones ferrymail chose, as a server would have."""
    RENDER = "render"
    """The message could not be rendered (or the recipient could not be encoded)."""
    CANCELLED = "cancelled"
    """The caller cancelled the delivery (`Delivery.cancel`, `Transport.abort`) and the
    session was cut at `stage`."""
    DNS = "dns"
    """The DNS answer decided (no such domain, null MX, a failed look-up)."""
    INTERRUPTED = "interrupted"
    """The process died during earlier attempts, before the outcome was known."""
    INTERNAL = "internal"
    """A fault inside ferrymail: a bug, a panic, an outcome filled in for a gap."""


class Outcome(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """What became of one recipient's message in one delivery attempt.

    `status`: "delivered" (2xx to the final dot), "transient" (4xx, or no usable
    answer: try again later) or "permanent" (5xx, or refused before sending).
    `code`, `enhanced` and `text` are the deciding reply (`code` is None when there was
    none: a connection failure, a timeout, a render error). `stage`: connect, banner,
    ehlo, starttls, mail, rcpt, data, dot or render ("engine" for the engine's own
    verdict on a recipient whose process died with it twice in a row). `mx`
    and `address`: the MX host and IP the attempt ended on; `tls`: the TLS version or
    None; `elapsed_ms`: from the start of this message's attempt (including any
    connection it opened) to the outcome; `message_id`: the Message-ID header value;
    `kind`: what decided it (`OutcomeKind`), the field to match on; `source`: the
    local IP address of the connection the attempt ended on (the route's
    `source_address`, or the one the system chose), None when no connection was made.

    A "transient" outcome at stage "dot" of kind "lost", "timeout" or "cancelled"
    means the whole message was sent and no reply came: the server may have delivered
    it, and a retry may deliver it twice, as with every MTA.
    """

    status: str
    code: int | None
    enhanced: str | None
    text: str
    stage: str
    mx: str | None
    address: str | None
    tls: str | None
    elapsed_ms: float
    message_id: str | None
    kind: OutcomeKind = OutcomeKind.INTERNAL
    source: str | None = None

    @classmethod
    def without_reply(
        cls,
        status: str,
        stage: str,
        text: str,
        code: int | None = None,
        enhanced: str | None = None,
        *,
        kind: OutcomeKind,
    ) -> Outcome:
        """An outcome decided without an SMTP session (a render or DNS failure)."""
        return cls(status, code, enhanced, text, stage, None, None, None, 0.0, None, kind)
