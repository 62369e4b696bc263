//! Where in an SMTP attempt something went wrong ([`Stage`]) and what, when there was no reply to tell ([`ClientError`]).

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use super::argument::UnsafeArgument;
use super::reply::{Reply, ReplyError};
use crate::wire::OutcomeKind;

/// The step of an attempt an outcome comes from. Python's retry policy and reports
/// read it: a failure at `connect` or `banner` says nothing about the recipient, one
/// at `rcpt` is about the mailbox, one at `dot` about the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Connect,
    Banner,
    Ehlo,
    Starttls,
    Mail,
    Rcpt,
    Data,
    Dot,
    Render,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Banner => "banner",
            Stage::Ehlo => "ehlo",
            Stage::Starttls => "starttls",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
            Stage::Dot => "dot",
            Stage::Render => "render",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An attempt that ended without a reply saying how, or with a reply that ends the
/// session. Every one is transient for the recipients it touches: the message may go
/// through another host or a later attempt. The session that met it is closed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The TCP connection could not be made.
    #[error("connect failed: {0}")]
    Connect(io::Error),
    /// The connection could not leave from the batch's source address: the host does
    /// not have it (EADDRNOTAVAIL), its ports are used up, or the server's address is
    /// of the other IP version. Nothing was sent; this host's setup is at fault, not
    /// the server.
    #[error("source address {address}: {problem}")]
    Source { address: IpAddr, problem: String },
    /// No answer (or no progress writing) within the stage's timeout.
    #[error("timed out after {:.1} s", .0.as_secs_f64())]
    Timeout(Duration),
    /// The connection broke, or the server closed it.
    #[error("connection lost: {0}")]
    Io(io::Error),
    /// The server sent something that is not an SMTP reply.
    #[error("protocol error: {0}")]
    Protocol(#[from] ReplyError),
    /// TLS could not be set up, or the policy forbids going on without it.
    #[error("TLS: {0}")]
    Tls(String),
    /// The server refused the session: a 421 or 5xx banner, EHLO and HELO refused, or a
    /// refused STARTTLS under tls="required".
    #[error("{} {}", .0.code, .0.text())]
    Refused(Reply),
    /// The caller cancelled the delivery (`Delivery.cancel`, `Transport.abort`); the
    /// connection is dropped, never pooled.
    #[error("delivery cancelled")]
    Cancelled,
    /// A command argument that must not go on the wire (see argument.rs); nothing of
    /// it was sent.
    #[error("{0}; not sent")]
    Unsafe(UnsafeArgument),
}

impl ClientError {
    /// The kind of outcome this error makes for the recipients it touches.
    pub fn kind(&self) -> OutcomeKind {
        match self {
            ClientError::Connect(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                OutcomeKind::Refused
            }
            ClientError::Connect(_) => OutcomeKind::Unreachable,
            ClientError::Source { .. } => OutcomeKind::Local,
            ClientError::Timeout(_) => OutcomeKind::Timeout,
            ClientError::Io(_) => OutcomeKind::Lost,
            ClientError::Protocol(_) => OutcomeKind::Protocol,
            ClientError::Tls(_) => OutcomeKind::Tls,
            ClientError::Refused(_) => OutcomeKind::Reply,
            ClientError::Unsafe(_) => OutcomeKind::Local,
            ClientError::Cancelled => OutcomeKind::Cancelled,
        }
    }

    /// The server's reply, when the error is one.
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            ClientError::Refused(reply) => Some(reply),
            _ => None,
        }
    }

    /// The error of a connection the server closed without a word.
    pub fn closed() -> Self {
        ClientError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ))
    }
}

/// A [`ClientError`] and the stage it happened at.
#[derive(Debug)]
pub struct Failure {
    pub stage: Stage,
    pub error: ClientError,
    /// The local address of the connection it happened on; None before one was made.
    pub source: Option<Arc<str>>,
}

impl Failure {
    pub fn new(stage: Stage, error: ClientError) -> Self {
        Self {
            stage,
            error,
            source: None,
        }
    }

    /// The failure, on a connection whose local address is `source`.
    pub fn on(mut self, source: &Arc<str>) -> Self {
        self.source = Some(source.clone());
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.error, self.stage)
    }
}
