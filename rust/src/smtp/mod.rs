//! The SMTP client's pure protocol parts: reply parsing, EHLO capabilities, DATA dot-stuffing.

pub mod capabilities;
pub mod dot;
pub mod reply;

pub use capabilities::Capabilities;
pub use dot::{dot_stuff, stuffed_len, DotError};
pub use reply::{EnhancedCode, Reply, ReplyError, ReplyParser};
