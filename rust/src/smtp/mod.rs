//! The SMTP client: reply parsing, EHLO capabilities, dot-stuffing, sessions with PIPELINING and STARTTLS, pools, batch delivery.

pub mod argument;
pub mod capabilities;
pub mod client;
pub mod connection_rate;
pub mod deliver;
pub mod dot;
pub mod egress;
#[cfg(test)]
mod egress_tests;
pub mod error;
pub mod options;
mod outcomes;
pub mod pool;
pub mod reply;
pub mod session;
pub mod stream;
#[cfg(test)]
pub(crate) mod test_peer;
pub mod tls;
pub mod transaction;

pub use capabilities::Capabilities;
pub use client::Client;
pub use deliver::{deliver, Destination};
pub use dot::{dot_stuff, stuffed_len, DotError};
pub use egress::Egress;
pub use error::{ClientError, Failure, Stage};
pub use options::{ClientOptions, TlsPolicy};
pub use reply::{EnhancedCode, Reply, ReplyError, ReplyParser};
