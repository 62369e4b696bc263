//! One mail transaction on an open session: MAIL, RCPT, DATA (pipelined when offered, RFC 2920), content, final dot.
//!
//! Every message ferrymail sends is personalised, so a transaction carries one
//! message to one recipient. Its [`Transaction`] says how it ended and whether the
//! connection can carry the next one.
//!
//! With PIPELINING the next message's MAIL, RCPT and DATA ride in the same write as
//! this message's content and final dot (RFC 2920 §3.1: message content may be the
//! first "command" of a group), so a stream of messages costs one round trip each.

use std::time::Duration;

use super::argument::{check_mailbox, UnsafeArgument};
use super::dot::{dot_stuff, stuffed_len};
use super::error::{ClientError, Failure, Stage};
use super::options::{Timeouts, RSET_TIMEOUT};
use super::reply::{EnhancedCode, Reply};
use super::session::Session;

/// A rendered message and its envelope.
pub struct Message<'a> {
    /// MAIL FROM address (A-label domain), without angle brackets.
    pub from: &'a str,
    /// RCPT TO address, without angle brackets.
    pub to: &'a str,
    /// The message as DATA carries it, before dot-stuffing; CRLF line ends.
    pub data: &'a [u8],
    /// An address needs SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
}

/// How a transaction ended.
#[derive(Debug)]
pub enum Ending {
    /// The reply that decided the recipient's fate and the stage it answered: 2xx at
    /// `Dot` is a delivery.
    Reply { stage: Stage, reply: Reply },
    /// ferrymail did not send the message (a message over the server's SIZE, an
    /// extension the message needs and the server lacks), with a reply it made up as
    /// the server would have answered; its text ends in "not sent".
    NotSent(Reply),
    /// No usable reply: the connection broke, timed out or spoke garbage.
    Failed(Failure),
}

/// The result of [`Session::transact`].
#[derive(Debug)]
pub struct Transaction {
    pub ending: Ending,
    /// The connection can carry another transaction.
    pub reusable: bool,
    /// A reused connection turned out dead before it said anything about this
    /// message (or said 421 at once): nothing happened, send it on a fresh connection.
    pub stale: bool,
    /// The next message's envelope went out behind this one's final dot: when the
    /// connection is reusable, that message must be its next transaction; when not,
    /// it goes on a new connection (nothing of it was accepted on this one).
    pub chained: bool,
}

impl Transaction {
    fn ended(stage: Stage, reply: Reply, reusable: bool) -> Self {
        let reusable = reusable && reply.code != 421;
        Self {
            ending: Ending::Reply { stage, reply },
            reusable,
            stale: false,
            chained: false,
        }
    }

    fn not_sent(reply: Reply) -> Self {
        Self {
            ending: Ending::NotSent(reply),
            reusable: true,
            stale: false,
            chained: false,
        }
    }

    fn failed(failure: Failure) -> Self {
        Self {
            ending: Ending::Failed(failure),
            reusable: false,
            stale: false,
            chained: false,
        }
    }
}

impl Session {
    /// Runs one transaction. Never panics and never leaves the session half-way: when
    /// the result says `reusable`, the next transaction can begin. `next`, when given,
    /// is the message the caller will send next on this session: its envelope may be
    /// chained behind this message's content (see [`Transaction::chained`]).
    pub async fn transact(
        &mut self,
        message: &Message<'_>,
        next: Option<&Message<'_>>,
        t: &Timeouts,
    ) -> Transaction {
        // A chained envelope was checked when it was sent.
        let chained = std::mem::take(&mut self.envelope_sent);
        if !chained {
            if let Some(refusal) = self.refusal(message) {
                return Transaction::not_sent(refusal);
            }
        }
        let reused = self.transactions > 0;
        self.transactions += 1;
        let mut heard = Heard::default();
        let result = if self.caps.pipelining {
            self.pipelined(message, next, chained, t, &mut heard).await
        } else {
            self.lockstep(message, t, &mut heard).await
        };
        // A connection that sat in the pool may have been closed by the server in the
        // meantime (with or without a 421) though it looked alive when taken.
        let stale = reused
            && match &result {
                Ok(_) => heard.first == Some(421),
                Err(failure) => {
                    heard.first.is_none() && matches!(failure.error, ClientError::Io(_))
                }
            };
        let transaction = result.unwrap_or_else(Transaction::failed);
        Transaction {
            stale,
            // Also when the reply to the final dot never came: the caller must know
            // that the next envelope went out (a cancelled delivery reports it).
            chained: self.envelope_sent,
            ..transaction
        }
    }

    /// What the client refuses to send, as a made-up permanent reply: the server would
    /// refuse it, or could not deliver it faithfully.
    fn refusal(&self, message: &Message<'_>) -> Option<Reply> {
        // Checked again where the commands are written; here it becomes the
        // recipient's outcome while the session goes on.
        if let Err(e) = check_mailbox(SENDER, message.from, message.smtputf8) {
            return Some(made_up(553, (5, 1, 7), format!("{e}; not sent")));
        }
        if let Err(e) = check_mailbox(RECIPIENT, message.to, message.smtputf8) {
            return Some(made_up(553, (5, 1, 3), format!("{e}; not sent")));
        }
        let caps = &self.caps;
        if message.smtputf8 && !caps.smtputf8 {
            return Some(made_up(
                553,
                (5, 6, 7),
                format!(
                    "{} does not offer SMTPUTF8, which the address {} needs; not sent",
                    self.mx, message.to
                ),
            ));
        }
        let size = declared_size(message.data);
        if let Some(limit) = caps.max_size.filter(|&limit| size > limit) {
            return Some(made_up(
                552,
                (5, 3, 4),
                format!(
                    "message of {size} bytes exceeds the size limit of {limit} bytes of {}; not sent",
                    self.mx
                ),
            ));
        }
        if !message.data.is_ascii() && !caps.eight_bit_mime && !caps.smtputf8 {
            return Some(made_up(
                554,
                (5, 6, 3),
                format!(
                    "the message has 8-bit content and {} offers neither 8BITMIME nor SMTPUTF8; not sent",
                    self.mx
                ),
            ));
        }
        if let Err(e) = stuffed_len(message.data) {
            return Some(made_up(554, (5, 6, 0), format!("{e}; not sent")));
        }
        None
    }

    /// MAIL, RCPT and DATA in one write, then their replies (RFC 2920). A preceding
    /// RSET joins the group: RFC 2920 §3.1 allows it anywhere in one.
    async fn pipelined(
        &mut self,
        message: &Message<'_>,
        next: Option<&Message<'_>>,
        chained: bool,
        t: &Timeouts,
        heard: &mut Heard,
    ) -> Result<Transaction, Failure> {
        // A chained envelope follows a final dot, which ends the transaction before it
        // whatever its reply: no RSET is ever due then.
        let rset = std::mem::take(&mut self.needs_rset) && !chained;
        if !chained {
            let mut commands = std::mem::take(&mut self.commands);
            commands.clear();
            if rset {
                commands.extend_from_slice(b"RSET\r\n");
            }
            if let Err(e) = self.write_envelope(message, &mut commands) {
                self.commands = commands;
                return Err(Failure::new(Stage::Mail, ClientError::Unsafe(e)));
            }
            let sent = self.wire.send(&commands, t.mail).await;
            self.commands = commands;
            sent.map_err(|e| Failure::new(Stage::Mail, e))?;
        }

        if rset {
            let reply = self.expect(RSET_TIMEOUT, Stage::Mail, heard).await?;
            if !reply.is_positive_completion() {
                return Ok(Transaction::ended(Stage::Mail, reply, false));
            }
        }
        let mail = self.expect(t.mail, Stage::Mail, heard).await?;
        if mail.code == 421 {
            return Ok(Transaction::ended(Stage::Mail, mail, false));
        }
        let rcpt = self.expect(t.rcpt, Stage::Rcpt, heard).await?;
        if rcpt.code == 421 {
            return Ok(Transaction::ended(Stage::Rcpt, rcpt, false));
        }
        let data = self.expect(t.data, Stage::Data, heard).await?;
        let (stage, refusal) = if !mail.is_positive_completion() {
            (Stage::Mail, Some(mail))
        } else if !rcpt.is_positive_completion() {
            (Stage::Rcpt, Some(rcpt))
        } else {
            (Stage::Data, None)
        };
        if let Some(refusal) = refusal {
            if data.code == 354 {
                // RFC 2920 §3.1: DATA accepted though nothing else was. A lone "."
                // ends that empty message; the server must refuse it for want of
                // recipients. The refusal decides the recipient's outcome whatever
                // happens then: no message went out. Only the connection may be lost.
                let ended = match self.wire.send(b".\r\n", t.data_block).await {
                    Ok(()) => self.wire.read_reply(t.dot).await.is_ok(),
                    Err(_) => false,
                };
                if !ended {
                    return Ok(Transaction::ended(stage, refusal, false));
                }
            }
            self.needs_rset = true;
            return Ok(Transaction::ended(stage, refusal, data.code != 421));
        }
        if data.code != 354 {
            self.needs_rset = true;
            return Ok(Transaction::ended(Stage::Data, data, true));
        }
        self.content_and_dot(message, next, t).await
    }

    /// One command at a time, for servers without PIPELINING.
    async fn lockstep(
        &mut self,
        message: &Message<'_>,
        t: &Timeouts,
        heard: &mut Heard,
    ) -> Result<Transaction, Failure> {
        if std::mem::take(&mut self.needs_rset) {
            let reply = self
                .ask(b"RSET\r\n", RSET_TIMEOUT, Stage::Mail, heard)
                .await?;
            if !reply.is_positive_completion() {
                return Ok(Transaction::ended(Stage::Mail, reply, false));
            }
        }
        let mut line = Vec::with_capacity(128);
        self.write_mail_from(message, &mut line)
            .map_err(|e| Failure::new(Stage::Mail, ClientError::Unsafe(e)))?;
        let mail = self.ask(&line, t.mail, Stage::Mail, heard).await?;
        if !mail.is_positive_completion() {
            self.needs_rset = true;
            return Ok(Transaction::ended(Stage::Mail, mail, true));
        }
        let mut line = Vec::with_capacity(128);
        write_rcpt_to(message, &mut line)
            .map_err(|e| Failure::new(Stage::Rcpt, ClientError::Unsafe(e)))?;
        let rcpt = self.ask(&line, t.rcpt, Stage::Rcpt, heard).await?;
        if !rcpt.is_positive_completion() {
            self.needs_rset = true;
            return Ok(Transaction::ended(Stage::Rcpt, rcpt, true));
        }
        let data = self.ask(b"DATA\r\n", t.data, Stage::Data, heard).await?;
        if data.code != 354 {
            self.needs_rset = true;
            return Ok(Transaction::ended(Stage::Data, data, true));
        }
        self.content_and_dot(message, None, t).await
    }

    /// After 354: the dot-stuffed content with its final "." (and `next`'s envelope
    /// behind it when the server pipelines and would take `next`), then the reply that
    /// decides the message. Whatever that reply says, the transaction is over (RFC 5321
    /// §4.1.1.4), so no RSET is needed after it.
    async fn content_and_dot(
        &mut self,
        message: &Message<'_>,
        next: Option<&Message<'_>>,
        t: &Timeouts,
    ) -> Result<Transaction, Failure> {
        let mut content = std::mem::take(&mut self.content);
        content.clear();
        if let Err(e) = dot_stuff(message.data, &mut content) {
            // Checked before MAIL, so this cannot happen; if it did, the only honest
            // way out of the data phase is to drop the connection.
            self.content = content;
            let error = std::io::Error::new(std::io::ErrorKind::InvalidData, e);
            return Err(Failure::new(Stage::Data, ClientError::Io(error)));
        }
        let mut next = next.filter(|n| self.caps.pipelining && self.refusal(n).is_none());
        if let Some(n) = next {
            if self.write_envelope(n, &mut content).is_err() {
                // Not chained then: the next message's own transaction refuses it.
                next = None;
            }
        }
        let sent = self.wire.send_content(&content, t.data_block).await;
        self.content = content;
        sent.map_err(|e| Failure::new(Stage::Data, e))?;
        self.envelope_sent = next.is_some();
        match self.wire.read_reply(t.dot).await {
            Ok(reply) => Ok(Transaction {
                chained: next.is_some(),
                ..Transaction::ended(Stage::Dot, reply, true)
            }),
            // The message went out whole; without the reply nobody knows whether it
            // was delivered. A retry may deliver it twice, as with every MTA (RFC
            // 1047); losing it would be worse.
            Err(error) => Err(Failure::new(Stage::Dot, error)),
        }
    }

    /// Sends `line`, then reads its reply.
    async fn ask(
        &mut self,
        line: &[u8],
        limit: Duration,
        stage: Stage,
        heard: &mut Heard,
    ) -> Result<Reply, Failure> {
        self.wire
            .send(line, limit)
            .await
            .map_err(|e| Failure::new(stage, e))?;
        self.expect(limit, stage, heard).await
    }

    /// Reads one reply, noting the first of the transaction in `heard`.
    async fn expect(
        &mut self,
        limit: Duration,
        stage: Stage,
        heard: &mut Heard,
    ) -> Result<Reply, Failure> {
        let reply = self
            .wire
            .read_reply(limit)
            .await
            .map_err(|e| Failure::new(stage, e))?;
        heard.first.get_or_insert(reply.code);
        Ok(reply)
    }

    /// MAIL, RCPT and DATA for `message`, as one pipelined group; nothing is written
    /// when an address is unsafe.
    fn write_envelope(
        &self,
        message: &Message<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), UnsafeArgument> {
        let start = out.len();
        let written = self
            .write_mail_from(message, out)
            .and_then(|()| write_rcpt_to(message, out));
        if written.is_err() {
            out.truncate(start);
        }
        written?;
        out.extend_from_slice(b"DATA\r\n");
        Ok(())
    }

    /// `MAIL FROM:<…>` with the parameters the server and the message call for;
    /// nothing when the address is unsafe.
    fn write_mail_from(
        &self,
        message: &Message<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), UnsafeArgument> {
        check_mailbox(SENDER, message.from, message.smtputf8)?;
        out.extend_from_slice(b"MAIL FROM:<");
        out.extend_from_slice(message.from.as_bytes());
        out.push(b'>');
        if self.caps.size {
            out.extend_from_slice(format!(" SIZE={}", declared_size(message.data)).as_bytes());
        }
        if self.caps.eight_bit_mime && !message.data.is_ascii() {
            out.extend_from_slice(b" BODY=8BITMIME");
        }
        if message.smtputf8 {
            out.extend_from_slice(b" SMTPUTF8");
        }
        out.extend_from_slice(b"\r\n");
        Ok(())
    }
}

/// What the envelope's addresses are called in refusals.
const SENDER: &str = "sender address";
const RECIPIENT: &str = "recipient address";

/// What the server has said so far in a transaction: the code of its first reply.
#[derive(Default)]
struct Heard {
    first: Option<u16>,
}

/// `RCPT TO:<…>`; nothing when the address is unsafe.
fn write_rcpt_to(message: &Message<'_>, out: &mut Vec<u8>) -> Result<(), UnsafeArgument> {
    check_mailbox(RECIPIENT, message.to, message.smtputf8)?;
    out.extend_from_slice(b"RCPT TO:<");
    out.extend_from_slice(message.to.as_bytes());
    out.extend_from_slice(b">\r\n");
    Ok(())
}

/// RFC 1870 §3: the size counts the message with its CRLFs, not the dot-stuffing.
fn declared_size(data: &[u8]) -> u64 {
    let final_crlf = if data.is_empty() || data.ends_with(b"\r\n") {
        0
    } else {
        2
    };
    (data.len() + final_crlf) as u64
}

/// A reply the client makes up for a refusal of its own.
fn made_up(code: u16, (class, subject, detail): (u8, u16, u16), text: String) -> Reply {
    Reply {
        code,
        enhanced: EnhancedCode::new(class, subject, detail),
        lines: vec![text],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_size_counts_crlfs_and_a_missing_final_one() {
        assert_eq!(declared_size(b"a\r\n.b\r\n"), 7);
        assert_eq!(declared_size(b"a\r\nb"), 6);
        assert_eq!(declared_size(b""), 0);
    }

    use crate::smtp::test_peer::{self, Behaviour};

    const DATA: &[u8] = b"Subject: hi\r\n\r\nhello\r\n";

    fn message<'a>(from: &'a str, to: &'a str) -> Message<'a> {
        Message {
            from,
            to,
            data: DATA,
            smtputf8: false,
        }
    }

    #[tokio::test]
    async fn an_unsafe_address_is_not_sent_and_the_session_goes_on() {
        let peer = test_peer::start(Behaviour::default()).await;
        let options = test_peer::options(None);
        let t = &options.timeouts;
        let mut session = test_peer::session(&peer, &options).await;
        let cases = [
            (
                "bounces@sender.test",
                "a\r\nRSET\r\nRCPT TO:<evil1@x.test>",
                "5.1.3",
            ),
            ("bounces@sender.test", "b\n@evil2.test", "5.1.3"),
            ("evil3\0@x.test", "c@dest.test", "5.1.7"),
            ("bounces@sender.test", "d@evil4.test> NOTIFY=NEVER", "5.1.3"),
        ];
        for (from, to, enhanced) in cases {
            let done = session.transact(&message(from, to), None, t).await;
            let Ending::NotSent(reply) = &done.ending else {
                panic!("{to:?}: {:?}", done.ending);
            };
            assert_eq!(reply.code, 553);
            assert_eq!(reply.enhanced.unwrap().to_string(), enhanced);
            assert!(reply.text().ends_with("not sent"), "{}", reply.text());
            assert!(done.reusable);
        }
        // A bad message lined up behind a good one is not chained to it either.
        let good = message("bounces@sender.test", "ok@dest.test");
        let bad = message("bounces@sender.test", "e\r\n@evil5.test");
        let done = session.transact(&good, Some(&bad), t).await;
        assert!(
            matches!(&done.ending, Ending::Reply { stage: Stage::Dot, reply } if reply.code == 250)
        );
        assert!(!done.chained);
        let done = session.transact(&bad, None, t).await;
        assert!(matches!(done.ending, Ending::NotSent(_)));
        session.quit().await;

        let received = peer.received();
        assert!(
            received.contains("RCPT TO:<ok@dest.test>\r\n"),
            "{received:?}"
        );
        for smuggled in ["evil", "RSET", "NOTIFY", "\0"] {
            assert!(!received.contains(smuggled), "{smuggled:?} in {received:?}");
        }
    }

    #[test]
    fn the_writer_itself_refuses_an_unsafe_recipient() {
        let mut out = b"RSET\r\n".to_vec();
        let e = write_rcpt_to(&message("a@b.test", "x\r\nQUIT@y.test"), &mut out).unwrap_err();
        assert_eq!(e.problem, "a carriage return (CR)");
        assert_eq!(out, b"RSET\r\n");
    }

    #[test]
    fn made_up_replies_carry_their_enhanced_code() {
        let reply = made_up(552, (5, 3, 4), "too big; not sent".into());
        assert!(reply.is_permanent());
        assert_eq!(reply.enhanced.unwrap().to_string(), "5.3.4");
        assert_eq!(reply.text(), "too big; not sent");
    }
}
