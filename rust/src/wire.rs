//! The MessagePack structs that cross between Python and Rust; python/ferrymail/wire.py mirrors them.
//!
//! msgspec encodes `array_like` structs as arrays in field order, and rmp-serde decodes a
//! plain serde struct from such an array. New fields go only at the end, with
//! `#[serde(default)]`, because rmp-serde rejects trailing elements it does not know.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Click and open tracking settings of a campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackingSpec {
    /// Base of every tracking URL; the token is joined to it as a path segment of its
    /// own (render/token_url.rs).
    pub base_url: String,
    /// The secret the tokens' key is derived from (the tracking server opens tokens
    /// with the same secret).
    #[serde(with = "serde_bytes")]
    pub secret: Vec<u8>,
    pub opens: bool,
    pub clicks: bool,
}

/// List-Unsubscribe settings of a campaign (RFC 2369, RFC 8058).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnsubscribeSpec {
    /// One-click URL base (https only); the per-recipient token is joined to it.
    pub url: Option<String>,
    /// Mailbox that receives unsubscribe requests by mail.
    pub mailto: Option<String>,
    /// The secret the unsubscribe tokens' key is derived from.
    #[serde(with = "serde_bytes")]
    pub secret: Vec<u8>,
}

/// VERP settings of a campaign: each message's envelope sender carries a token naming
/// its recipient's spool row (render/verp.rs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerpSpec {
    /// The secret the VERP tokens' key is derived from (the inbound listener opens
    /// tokens with the same secret).
    #[serde(with = "serde_bytes")]
    pub secret: Vec<u8>,
}

/// One campaign as the ESP hands it over: templates and settings shared by all recipients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignSpec {
    pub id: String,
    /// Envelope sender (MAIL FROM).
    pub sender: String,
    /// From header template.
    pub from_: String,
    pub subject: String,
    pub html: Option<String>,
    pub text: Option<String>,
    pub reply_to: Option<String>,
    /// Extra headers in order: (name, value template).
    pub headers: Vec<(String, String)>,
    pub tracking: Option<TrackingSpec>,
    pub unsubscribe: Option<UnsubscribeSpec>,
    /// DKIM keys; one DKIM-Signature per key, in this order.
    #[serde(default)]
    pub dkim: Vec<DkimKeySpec>,
    /// VERP envelope senders, or None for the plain `sender` (and for specs stored by
    /// an older ferrymail, which end before this field).
    #[serde(default)]
    pub verp: Option<VerpSpec>,
    /// The egress pool the engine sends the campaign from (its shaping file's
    /// `[pool.NAME]`), or None for the default pool; the render does not read it.
    #[serde(default)]
    pub pool: Option<String>,
}

/// One DKIM signing key (RFC 6376).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DkimKeySpec {
    /// The signing domain (d=).
    pub domain: String,
    /// The selector (s=): the key's DNS name is `selector._domainkey.domain`.
    pub selector: String,
    /// PEM text: PKCS#1 or PKCS#8 RSA, or PKCS#8 Ed25519.
    pub private_key: String,
    /// "rsa-sha256" or "ed25519-sha256"; None takes it from the key.
    pub algorithm: Option<String>,
    /// Header names to sign; None signs the default set.
    pub headers: Option<Vec<String>>,
    /// "relaxed/relaxed" (the default in Python) or "simple/simple", or a mix.
    pub canonicalization: String,
    /// False: an extra signature whose d= need not be aligned with the From domain
    /// (DMARC); the campaign must also have an aligned key. True: d= must be aligned,
    /// or the campaign is refused (or, with a From template, the recipient fails).
    #[serde(default = "aligned_by_default")]
    pub aligned: bool,
    /// Set for a key of a key set (`DkimKeys`): it signs only the messages whose From
    /// domain is this domain or below it; per message the most specific key is used.
    #[serde(default)]
    pub for_domain: Option<String>,
}

fn aligned_by_default() -> bool {
    true
}

/// The ESP's own key for a recipient: what tokens, Message-IDs and events name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RecipientId {
    Int(i64),
    /// Ids from 2^63 to 2^64 - 1 (MessagePack keeps them unsigned).
    UInt(u64),
    Str(String),
}

/// One recipient of a campaign, with the variables its message is personalised with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipient {
    pub address: String,
    /// A map of template variables; kept as raw MessagePack values so that one
    /// recipient with an unusable value fails alone instead of failing the batch.
    pub vars: rmpv::Value,
    pub id: Option<RecipientId>,
    /// The recipient's spool row id, which a VERP campaign seals into the envelope
    /// sender. Never on the wire (the stored recipient is the ESP's, the row id the
    /// spool's): the transport sets it from the ids the engine passes beside the batch.
    #[serde(skip)]
    pub envelope_id: Option<u64>,
}

/// What rendering one recipient produced: the message, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenderOutcome {
    /// MAIL FROM address (A-label domain).
    pub envelope_from: String,
    /// The exact bytes DATA will carry (CRLF line ends, no dot-stuffing), or None on error.
    #[serde(with = "serde_bytes")]
    pub data: Option<Vec<u8>>,
    pub message_id: Option<String>,
    /// Why the recipient could not be rendered, or None.
    pub error: Option<String>,
    /// True when an address needs the SMTPUTF8 extension (non-ASCII local part).
    pub smtputf8: bool,
    /// The recipient's address as it goes to RCPT TO (A-label domain), or None on error.
    pub rcpt_to: Option<String>,
}

/// How the SMTP client behaves (Python's `ferrymail.SmtpOptions`); checked and turned
/// into `smtp::ClientOptions` when a transport is made. Times are seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmtpOptions {
    pub helo_name: String,
    /// "off", "opportunistic" or "required".
    pub tls: String,
    pub source_address: Option<String>,
    pub connect_timeout: f64,
    pub max_connections_per_host: u32,
    pub max_messages_per_connection: u32,
    pub idle_timeout: f64,
    pub greeting_timeout: f64,
    pub ehlo_timeout: f64,
    pub starttls_timeout: f64,
    pub mail_timeout: f64,
    pub rcpt_timeout: f64,
    pub data_timeout: f64,
    pub data_block_timeout: f64,
    pub dot_timeout: f64,
    /// PEM file of CA certificates trusted under tls="required", besides the system's.
    pub ca_file: Option<String>,
}

/// One mail server of a route: its name (for logs, outcomes and TLS) and the addresses
/// the caller resolved for it, tried in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MxHost {
    pub name: String,
    pub addresses: Vec<String>,
    pub port: u16,
}

/// The nine SMTP timeouts of one batch (Python's `ferrymail.SessionTimeouts`), with
/// the names and meaning of SmtpOptions' fields; seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionTimeouts {
    pub connect_timeout: f64,
    pub greeting_timeout: f64,
    pub ehlo_timeout: f64,
    pub starttls_timeout: f64,
    pub mail_timeout: f64,
    pub rcpt_timeout: f64,
    pub data_timeout: f64,
    pub data_block_timeout: f64,
    pub dot_timeout: f64,
}

/// Where a batch goes: mail servers in the order to try them, and how to reach them
/// (the egress settings: each None takes the transport's). Egress settings that do
/// not check out make every recipient of the batch a transient outcome of kind
/// "local" (smtp/egress.rs); they never fail the call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub hosts: Vec<MxHost>,
    /// Most connections open at once from this batch's source to one address of the
    /// route (busy, being opened or idle, counted over every batch of the transport);
    /// it also caps the connections this batch opens. 0: the transport's
    /// max_connections_per_host, which also caps it.
    #[serde(default)]
    pub max_connections: u32,
    /// Most messages per connection for this batch (a site's limit); 0: the
    /// transport's max_messages_per_connection.
    #[serde(default)]
    pub max_messages_per_connection: u32,
    /// The local IPv4 or IPv6 address this batch's connections are bound to.
    #[serde(default)]
    pub source_address: Option<String>,
    /// The EHLO/HELO name of this batch's connections (it must match the source's PTR).
    #[serde(default)]
    pub helo_name: Option<String>,
    /// "off", "opportunistic" or "required" for this batch.
    #[serde(default)]
    pub tls: Option<String>,
    /// This batch's SMTP timeouts.
    #[serde(default)]
    pub timeouts: Option<SessionTimeouts>,
    /// The token buckets this batch's new connections take from: each is shared by
    /// every batch of the transport naming its key, and a connection is opened only
    /// when every bucket named has a token (one taken from each; a reused pooled
    /// session takes none). A rate not above 0 makes every recipient a transient
    /// outcome of kind "local". Empty: new connections are not paced.
    #[serde(default)]
    pub connection_rates: Vec<ConnectionRate>,
    /// How long this batch's connections may wait idle in the pool for the next batch
    /// (a site's `idle_timeout`), in seconds; None: the transport's.
    #[serde(default)]
    pub idle_timeout: Option<f64>,
}

/// One connection-rate bucket a route names: its key (the engine's: a site, or a site
/// and a source joined by NUL) and the new connections per second it allows, saving up
/// at most one second's worth (at least one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionRate {
    pub key: String,
    pub per_second: f64,
}

/// What became of one recipient's message in one delivery attempt.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// "delivered" (2xx after the final dot), "transient" (4xx, or no usable answer:
    /// retry later) or "permanent" (5xx, or refused before sending: do not retry).
    pub status: String,
    /// The SMTP reply code, or None when there was no reply (connection failure,
    /// timeout, render error).
    pub code: Option<u16>,
    /// The enhanced status code (RFC 3463), e.g. "5.1.1", when the reply had one.
    pub enhanced: Option<String>,
    /// The reply text, or what went wrong.
    pub text: String,
    /// Where it ended: connect, banner, ehlo, starttls, mail, rcpt, data, dot or render.
    pub stage: String,
    /// The MX host name the attempt ended on, if any.
    pub mx: Option<String>,
    /// The IP address the attempt ended on, if any.
    pub address: Option<String>,
    /// The TLS version of the connection ("TLSv1.3"), or None for plaintext.
    pub tls: Option<String>,
    /// Milliseconds from the start of this message's attempt to its outcome.
    pub elapsed_ms: f64,
    /// The Message-ID header value of the message ("<…@…>"), None if it was not rendered.
    pub message_id: Option<String>,
    /// What decided the outcome, for the judge, the bounce rules and shaping to match
    /// on instead of reading `text`.
    #[serde(default)]
    pub kind: OutcomeKind,
    /// The local IP address of the connection the attempt ended on (the batch's
    /// source), None when no connection was made. Shared by every outcome of the
    /// connection: no allocation per message.
    #[serde(default)]
    pub source: Option<Arc<str>>,
}

/// What decided an [`Outcome`]; Python's `ferrymail.OutcomeKind` has the same values,
/// which cross as kebab-case strings. The retry policy reads `status`; the kind says
/// why, so that a fault of ferrymail's own is never mistaken for a dead MX host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutcomeKind {
    /// The receiver answered and its reply decided: `code`, `enhanced` and `text` are
    /// that reply (2xx, 4xx or 5xx).
    Reply,
    /// The TCP connection was refused (the last address tried refused it).
    Refused,
    /// Another connect failure: no route, reset, an address that cannot be used.
    Unreachable,
    /// A timeout; `stage` says which.
    Timeout,
    /// The connection closed or failed mid-session; at stage "dot" the message may
    /// have been delivered.
    Lost,
    /// The TLS handshake or the certificate check failed.
    Tls,
    /// A reply that does not parse, or a peer that breaks the protocol.
    Protocol,
    /// ferrymail decided not to send: the message is over the peer's SIZE, it needs
    /// SMTPUTF8 and the peer lacks it, or an envelope address is unsafe for the wire.
    /// `code` and `enhanced` are ones ferrymail chose, as a server would have.
    Local,
    /// The message could not be rendered.
    Render,
    /// The caller cancelled the delivery and the session was cut at `stage`.
    Cancelled,
    /// Made in Python: the DNS answer decided.
    Dns,
    /// Made in Python: the process died during earlier attempts.
    Interrupted,
    /// A fault inside ferrymail (a bug, a panic, an outcome filled in for a gap).
    #[default]
    Internal,
}
