//! How the SMTP client behaves: HELO name, TLS policy, egress address, pool limits and per-stage timeouts.
//!
//! Python's `ferrymail.SmtpOptions` (a wire struct) becomes a [`ClientOptions`] here,
//! checked once when a transport is made, so a session never meets a bad setting.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::wire::{SessionTimeouts, SmtpOptions};

/// RSET waits at most this long (Postfix's `smtp_rset_timeout`); the option set of
/// RFC 5321 §4.5.3.2 has no value for it.
pub const RSET_TIMEOUT: Duration = Duration::from_secs(20);
/// QUIT is a courtesy to a server we are done with: waiting minutes for its reply (as
/// Postfix's `smtp_quit_timeout` of 300 s allows) would hold a connection slot for
/// nothing.
pub const QUIT_TIMEOUT: Duration = Duration::from_secs(5);

/// When to use STARTTLS (RFC 3207).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsPolicy {
    /// Never: plaintext even when the server offers STARTTLS.
    Off,
    /// STARTTLS whenever offered, any certificate accepted (RFC 7435 opportunistic
    /// security: it defeats passive listeners, which is all an MX lookup without DANE
    /// or MTA-STS can promise). A failed handshake falls back to plaintext on a new
    /// connection, as Postfix does with `smtp_tls_security_level = may`.
    Opportunistic,
    /// STARTTLS with a certificate valid for the MX name, from the system's roots or
    /// the configured CA file; anything less is a transient failure of that host.
    Required,
}

impl TlsPolicy {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "off" => Some(Self::Off),
            "opportunistic" => Some(Self::Opportunistic),
            "required" => Some(Self::Required),
            _ => None,
        }
    }
}

/// How long the client waits at each stage; a wait that runs out is a transient
/// failure of the attempt, reported with the stage it happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// The 220 banner (RFC 5321 §4.5.3.2.1: 5 minutes).
    pub greeting: Duration,
    /// The EHLO (or HELO) reply.
    pub ehlo: Duration,
    /// The STARTTLS reply and the TLS handshake.
    pub starttls: Duration,
    /// The MAIL FROM reply (§4.5.3.2.2: 5 minutes).
    pub mail: Duration,
    /// Each RCPT TO reply (§4.5.3.2.3: 5 minutes).
    pub rcpt: Duration,
    /// The reply to DATA (§4.5.3.2.4: 2 minutes).
    pub data: Duration,
    /// Each write of message content (§4.5.3.2.5: 3 minutes).
    pub data_block: Duration,
    /// The reply to the final "." (§4.5.3.2.6: 10 minutes).
    pub dot: Duration,
}

/// Everything a transport needs to know to open, use and keep connections.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The name sent with EHLO/HELO: this host's name, as its PTR record says.
    pub helo_name: String,
    pub tls: TlsPolicy,
    /// The local address connections leave from (an ESP's IP pool), or the system's choice.
    pub source_address: Option<IpAddr>,
    /// Extra CA certificates (PEM) trusted under [`TlsPolicy::Required`].
    pub ca_file: Option<PathBuf>,
    /// Most connections open at once to one address (busy, connecting or idle).
    pub max_connections_per_host: usize,
    /// A connection closes after this many transactions.
    pub max_messages_per_connection: usize,
    /// A connection unused this long is closed with QUIT.
    pub idle_timeout: Duration,
    pub timeouts: Timeouts,
}

impl ClientOptions {
    /// Checks and converts the wire form; the error names the field and says why.
    pub fn from_wire(o: &SmtpOptions) -> Result<Self, String> {
        let count = |name: &str, value: u32| -> Result<usize, String> {
            if value == 0 {
                Err(format!("{name}: must be at least 1"))
            } else {
                Ok(value as usize)
            }
        };
        Ok(Self {
            helo_name: helo_name("helo_name", &o.helo_name)?.to_string(),
            tls: tls_policy("tls", &o.tls)?,
            source_address: match &o.source_address {
                None => None,
                Some(text) => Some(source_address("source_address", text)?),
            },
            ca_file: o.ca_file.as_ref().map(PathBuf::from),
            max_connections_per_host: count(
                "max_connections_per_host",
                o.max_connections_per_host,
            )?,
            max_messages_per_connection: count(
                "max_messages_per_connection",
                o.max_messages_per_connection,
            )?,
            idle_timeout: seconds("idle_timeout", o.idle_timeout)?,
            timeouts: Timeouts::from_wire(&SessionTimeouts {
                connect_timeout: o.connect_timeout,
                greeting_timeout: o.greeting_timeout,
                ehlo_timeout: o.ehlo_timeout,
                starttls_timeout: o.starttls_timeout,
                mail_timeout: o.mail_timeout,
                rcpt_timeout: o.rcpt_timeout,
                data_timeout: o.data_timeout,
                data_block_timeout: o.data_block_timeout,
                dot_timeout: o.dot_timeout,
            })?,
        })
    }
}

impl Timeouts {
    /// Checks and converts the wire form; the error names the timeout.
    pub fn from_wire(t: &SessionTimeouts) -> Result<Self, String> {
        Ok(Self {
            connect: seconds("connect_timeout", t.connect_timeout)?,
            greeting: seconds("greeting_timeout", t.greeting_timeout)?,
            ehlo: seconds("ehlo_timeout", t.ehlo_timeout)?,
            starttls: seconds("starttls_timeout", t.starttls_timeout)?,
            mail: seconds("mail_timeout", t.mail_timeout)?,
            rcpt: seconds("rcpt_timeout", t.rcpt_timeout)?,
            data: seconds("data_timeout", t.data_timeout)?,
            data_block: seconds("data_block_timeout", t.data_block_timeout)?,
            dot: seconds("dot_timeout", t.dot_timeout)?,
        })
    }
}

/// A HELO name, trimmed: this host's domain name or an address literal, at most 255
/// octets (what check_helo_name lets on the wire). The error names `field`.
pub(super) fn helo_name<'a>(field: &str, text: &'a str) -> Result<&'a str, String> {
    let name = text.trim();
    if name.is_empty()
        || name.len() > 255
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b))
    {
        return Err(format!(
            "{field} {text:?}: must be this host's domain name (letters, digits, '-' and '.') \
             or an address literal, at most 255 octets"
        ));
    }
    Ok(name)
}

/// A TLS policy by its wire name; the error names `field`.
pub(super) fn tls_policy(field: &str, name: &str) -> Result<TlsPolicy, String> {
    TlsPolicy::parse(name).ok_or_else(|| {
        format!("{field} {name:?}: must be \"off\", \"opportunistic\" or \"required\"")
    })
}

/// A local address to bind connections to; the error names `field`.
pub(super) fn source_address(field: &str, text: &str) -> Result<IpAddr, String> {
    text.parse::<IpAddr>()
        .map_err(|_| format!("{field} {text:?}: not an IPv4 or IPv6 address"))
}

/// A timeout in seconds: above 0, at most a day.
pub(super) fn seconds(name: &str, value: f64) -> Result<Duration, String> {
    if value.is_finite() && value > 0.0 && value <= 86_400.0 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(format!(
            "{name} {value}: must be a number of seconds above 0 and at most one day"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire() -> SmtpOptions {
        SmtpOptions {
            helo_name: "mta1.example.com".into(),
            tls: "opportunistic".into(),
            source_address: None,
            connect_timeout: 30.0,
            max_connections_per_host: 10,
            max_messages_per_connection: 100,
            idle_timeout: 30.0,
            greeting_timeout: 300.0,
            ehlo_timeout: 300.0,
            starttls_timeout: 300.0,
            mail_timeout: 300.0,
            rcpt_timeout: 300.0,
            data_timeout: 120.0,
            data_block_timeout: 180.0,
            dot_timeout: 600.0,
            ca_file: None,
        }
    }

    #[test]
    fn good_options_convert() {
        let o = ClientOptions::from_wire(&SmtpOptions {
            source_address: Some("2001:db8::1".into()),
            tls: "required".into(),
            ..wire()
        })
        .unwrap();
        assert_eq!(o.tls, TlsPolicy::Required);
        assert_eq!(o.source_address, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(o.timeouts.dot, Duration::from_secs(600));
        assert_eq!(o.timeouts.data, Duration::from_secs(120));
    }

    #[test]
    fn each_bad_option_is_named() {
        let cases: Vec<(SmtpOptions, &str)> = vec![
            (
                SmtpOptions {
                    tls: "yes".into(),
                    ..wire()
                },
                "tls \"yes\"",
            ),
            (
                SmtpOptions {
                    helo_name: "".into(),
                    ..wire()
                },
                "helo_name",
            ),
            (
                SmtpOptions {
                    helo_name: "a b".into(),
                    ..wire()
                },
                "helo_name",
            ),
            (
                SmtpOptions {
                    source_address: Some("eth0".into()),
                    ..wire()
                },
                "source_address \"eth0\"",
            ),
            (
                SmtpOptions {
                    rcpt_timeout: 0.0,
                    ..wire()
                },
                "rcpt_timeout",
            ),
            (
                SmtpOptions {
                    dot_timeout: f64::NAN,
                    ..wire()
                },
                "dot_timeout",
            ),
            (
                SmtpOptions {
                    connect_timeout: -1.0,
                    ..wire()
                },
                "connect_timeout",
            ),
            (
                SmtpOptions {
                    max_connections_per_host: 0,
                    ..wire()
                },
                "max_connections_per_host",
            ),
            (
                SmtpOptions {
                    max_messages_per_connection: 0,
                    ..wire()
                },
                "max_messages_per_connection",
            ),
        ];
        for (options, named) in cases {
            let err = ClientOptions::from_wire(&options).unwrap_err();
            assert!(err.starts_with(named), "{err:?} should name {named}");
        }
    }
}
