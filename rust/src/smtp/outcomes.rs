//! The Outcome of each way a delivery attempt ends: a reply, a refusal of our own, a failure without a reply, a render error, a cancel, a fault of ferrymail's.

use std::net::SocketAddr;
use std::sync::Arc;

use super::error::{ClientError, Failure, Stage};
use super::reply::Reply;
use super::session::Session;
use super::transaction::{Ending, Transaction};
use crate::wire::{Outcome, OutcomeKind};

/// The outcome of a transaction on `session`, without its timing and Message-ID.
pub(super) fn of_transaction(transaction: &Transaction, session: &Session) -> Outcome {
    let mx = Some(&session.mx);
    let address = Some(session.address);
    let mut outcome = match &transaction.ending {
        Ending::Reply { stage, reply } => of_reply(*stage, reply, OutcomeKind::Reply),
        Ending::NotSent(reply) => of_reply(Stage::Mail, reply, OutcomeKind::Local),
        Ending::Failed(failure) => of_failure(failure, mx, address),
    };
    outcome.mx = mx.map(|m| m.to_string());
    outcome.address = address.map(|a| a.ip().to_string());
    outcome.tls = session.tls.map(str::to_string);
    outcome.source = Some(session.source.clone());
    outcome
}

/// The outcome a reply (the server's, or one made up for a refusal of our own) decides.
pub(super) fn of_reply(stage: Stage, reply: &Reply, kind: OutcomeKind) -> Outcome {
    Outcome {
        status: match reply.code / 100 {
            2 => "delivered",
            5 => "permanent",
            _ => "transient",
        }
        .into(),
        code: Some(reply.code),
        enhanced: reply.enhanced.map(|e| e.to_string()),
        text: reply.text(),
        stage: stage.as_str().into(),
        kind,
        ..Outcome::default()
    }
}

/// The transient outcome of a failure without a usable reply (or a refused session).
pub(super) fn of_failure(
    failure: &Failure,
    mx: Option<&Arc<str>>,
    address: Option<SocketAddr>,
) -> Outcome {
    let reply = failure.error.reply();
    // A refusal's code and enhanced code have fields of their own, as every reply's do.
    let mut text = reply.map_or_else(|| failure.error.to_string(), |r| r.text());
    if failure.stage == Stage::Dot && !matches!(failure.error, ClientError::Refused(_)) {
        text.push_str(
            " after the whole message was sent; it may have been delivered, and a retry may \
             deliver it twice",
        );
    }
    Outcome {
        status: "transient".into(),
        code: reply.map(|r| r.code),
        enhanced: reply.and_then(|r| r.enhanced).map(|e| e.to_string()),
        text,
        stage: failure.stage.as_str().into(),
        mx: mx.map(|m| m.to_string()),
        address: address.map(|a| a.ip().to_string()),
        tls: None,
        elapsed_ms: 0.0,
        message_id: None,
        kind: failure.error.kind(),
        source: failure.source.clone(),
    }
}

pub(super) fn render_failed(reason: String) -> Outcome {
    without_reply("permanent", OutcomeKind::Render, Stage::Render, reason)
}

/// The outcome of a message a cancel kept from being sent: at `stage` "connect" it never
/// left, at "mail" its envelope went out unanswered on a connection then cut.
pub(super) fn cancelled_before_sending(stage: Stage) -> Outcome {
    without_reply(
        "transient",
        OutcomeKind::Cancelled,
        stage,
        "delivery cancelled before the message was sent".into(),
    )
}

/// A transient outcome for a fault of ferrymail's own: retrying is safe.
pub(super) fn internal(stage: Stage, reason: &str) -> Outcome {
    without_reply(
        "transient",
        OutcomeKind::Internal,
        stage,
        format!("internal error: {reason}"),
    )
}

/// An outcome decided without a session.
pub(super) fn without_reply(
    status: &str,
    kind: OutcomeKind,
    stage: Stage,
    text: String,
) -> Outcome {
    Outcome {
        status: status.into(),
        text,
        stage: stage.as_str().into(),
        kind,
        ..Outcome::default()
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::time::Duration;

    use super::*;

    #[test]
    fn each_failure_has_its_kind() {
        let cases = [
            (
                ClientError::Connect(io::ErrorKind::ConnectionRefused.into()),
                OutcomeKind::Refused,
            ),
            (
                ClientError::Connect(io::ErrorKind::AddrNotAvailable.into()),
                OutcomeKind::Unreachable,
            ),
            (
                ClientError::Timeout(Duration::from_secs(1)),
                OutcomeKind::Timeout,
            ),
            (ClientError::closed(), OutcomeKind::Lost),
            (ClientError::Tls("bad certificate".into()), OutcomeKind::Tls),
            (ClientError::Cancelled, OutcomeKind::Cancelled),
            (
                ClientError::Source {
                    address: "192.0.2.1".parse().unwrap(),
                    problem: "cannot bind to it".into(),
                },
                OutcomeKind::Local,
            ),
        ];
        for (error, kind) in cases {
            let outcome = of_failure(&Failure::new(Stage::Rcpt, error), None, None);
            assert_eq!((outcome.kind, outcome.status.as_str()), (kind, "transient"));
            assert_eq!(outcome.stage, "rcpt");
        }
    }

    #[test]
    fn only_a_failure_after_the_whole_message_may_have_delivered_it() {
        for (stage, says) in [(Stage::Data, false), (Stage::Dot, true)] {
            for error in [ClientError::closed(), ClientError::Cancelled] {
                let outcome = of_failure(&Failure::new(stage, error), None, None);
                assert_eq!(outcome.text.contains("may have been delivered"), says);
            }
        }
    }
}
