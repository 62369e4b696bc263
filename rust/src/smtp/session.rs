//! Opening an SMTP session (connect, banner, EHLO or HELO, STARTTLS, EHLO again), checking an idle one, and QUIT.
//!
//! A [`Session`] is one connection that has been greeted and is ready for mail
//! transactions (see transaction.rs). Everything that goes wrong while opening is a
//! [`Failure`] with the stage it happened at; the caller moves on to the next address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::argument::check_helo_name;
use super::capabilities::Capabilities;
use super::egress::Egress;
use super::error::{ClientError, Failure, Stage};
use super::options::{TlsPolicy, QUIT_TIMEOUT};
use super::reply::Reply;
use super::stream::{Stream, Wire};
use super::tls::{version_name, TlsSetup};

/// A greeted connection to one address of one MX host.
pub struct Session {
    pub(super) wire: Wire,
    /// What the server offered in its (last) EHLO reply; empty after HELO.
    pub caps: Capabilities,
    /// The MX host name this connection was opened for.
    pub mx: Arc<str>,
    pub address: SocketAddr,
    /// The connection's local IP address (its source), as outcomes report it.
    pub source: Arc<str>,
    /// The negotiated TLS version, None in plaintext.
    pub tls: Option<&'static str>,
    /// Mail transactions begun on this connection.
    pub transactions: usize,
    /// The last transaction ended before its final reply: send RSET before the next.
    pub(super) needs_rset: bool,
    /// The next transaction's MAIL, RCPT and DATA were sent behind the last final dot;
    /// their replies are still to be read.
    pub(super) envelope_sent: bool,
    /// When the connection was last handed back to its pool, and how long it may wait
    /// there (its last batch's idle timeout: a site's own, or the transport's).
    pub idle_since: Instant,
    pub idle_timeout: Duration,
    /// Reusable buffers: the commands of one transaction, and its dot-stuffed content.
    pub(super) commands: Vec<u8>,
    pub(super) content: Vec<u8>,
}

impl Session {
    /// Connects to `address` from `egress`'s source and greets it with its HELO name.
    /// `starttls` says whether to upgrade when the server offers STARTTLS (false for
    /// the plaintext retry after a failed handshake under the opportunistic policy).
    /// Cancelling `cancel` ends any wait at once.
    pub async fn open(
        mx: Arc<str>,
        address: SocketAddr,
        egress: &Egress,
        tls: &TlsSetup,
        starttls: bool,
        cancel: &CancellationToken,
    ) -> Result<Session, Failure> {
        let tcp = match cancel.run_until_cancelled(connect(address, egress)).await {
            Some(tcp) => tcp?,
            None => return Err(Failure::new(Stage::Connect, ClientError::Cancelled)),
        };
        let source: Arc<str> = match tcp.local_addr() {
            Ok(local) => Arc::from(local.ip().to_string()),
            Err(e) => return Err(Failure::new(Stage::Connect, ClientError::Connect(e))),
        };
        let session = Session {
            wire: Wire::new(Stream::Plain(tcp), cancel.clone()),
            caps: Capabilities::default(),
            mx,
            address,
            source: source.clone(),
            tls: None,
            transactions: 0,
            needs_rset: false,
            envelope_sent: false,
            idle_since: Instant::now(),
            idle_timeout: egress.idle_timeout,
            commands: Vec::with_capacity(512),
            content: Vec::new(),
        };
        session
            .welcome(egress, tls, starttls)
            .await
            .map_err(|failure| failure.on(&source))
    }

    /// The banner, EHLO, and STARTTLS with EHLO again when the policy wants it.
    async fn welcome(
        mut self,
        egress: &Egress,
        tls: &TlsSetup,
        starttls: bool,
    ) -> Result<Session, Failure> {
        let t = &egress.timeouts;
        let banner = self.read(t.greeting, Stage::Banner).await?;
        if banner.code != 220 {
            // A 5xx greeting invites QUIT (RFC 5321 §3.1); a 421 closes by itself.
            if banner.is_permanent() {
                self.quit().await;
            }
            return Err(Failure::new(Stage::Banner, ClientError::Refused(banner)));
        }
        self.greet(egress).await?;
        if egress.tls == TlsPolicy::Off || !starttls {
            return Ok(self);
        }
        if !self.caps.starttls {
            if egress.tls == TlsPolicy::Required {
                return Err(Failure::new(
                    Stage::Starttls,
                    ClientError::Tls(
                        "tls=\"required\" but the server does not offer STARTTLS".into(),
                    ),
                ));
            }
            return Ok(self);
        }
        let reply = self
            .command(b"STARTTLS\r\n", t.starttls, Stage::Starttls)
            .await?;
        if reply.code != 220 {
            // Under the opportunistic policy a refused STARTTLS leaves the session
            // where it was (RFC 3207 §4): go on in plaintext.
            if egress.tls == TlsPolicy::Required || reply.code == 421 {
                return Err(Failure::new(Stage::Starttls, ClientError::Refused(reply)));
            }
            return Ok(self);
        }
        let mut session = self.upgrade(egress, tls).await?;
        session.greet(egress).await?;
        Ok(session)
    }

    /// EHLO, or HELO when EHLO is refused with a 5xx (RFC 5321 §3.2: a server that
    /// does not know EHLO).
    async fn greet(&mut self, egress: &Egress) -> Result<(), Failure> {
        let limit = egress.timeouts.ehlo;
        // The names were checked when the transport was made and when the batch
        // began; this guards the writer itself, whoever built the settings.
        check_helo_name(&egress.helo)
            .map_err(|e| Failure::new(Stage::Ehlo, ClientError::Unsafe(e)))?;
        let ehlo = format!("EHLO {}\r\n", egress.helo);
        let reply = self.command(ehlo.as_bytes(), limit, Stage::Ehlo).await?;
        if reply.is_positive_completion() {
            self.caps = Capabilities::from_ehlo(&reply);
            return Ok(());
        }
        if !reply.is_permanent() {
            return Err(Failure::new(Stage::Ehlo, ClientError::Refused(reply)));
        }
        let helo = format!("HELO {}\r\n", egress.helo);
        let reply = self.command(helo.as_bytes(), limit, Stage::Ehlo).await?;
        if !reply.is_positive_completion() {
            return Err(Failure::new(Stage::Ehlo, ClientError::Refused(reply)));
        }
        self.caps = Capabilities::default();
        Ok(())
    }

    /// The TLS handshake after "220" to STARTTLS, within the STARTTLS timeout.
    async fn upgrade(mut self, egress: &Egress, tls: &TlsSetup) -> Result<Self, Failure> {
        let fail = |error| Failure::new(Stage::Starttls, error);
        let cancel = self.wire.cancel.clone();
        let Stream::Plain(tcp) = self.wire.into_stream().map_err(fail)? else {
            return Err(fail(ClientError::Tls(
                "STARTTLS on a TLS connection".into(),
            )));
        };
        let limit = egress.timeouts.starttls;
        let handshake = tls.handshake(egress.tls, &self.mx, self.address.ip(), tcp);
        let stream = match cancel.run_until_cancelled(timeout(limit, handshake)).await {
            Some(Ok(Ok(stream))) => stream,
            Some(Ok(Err(e))) => return Err(fail(ClientError::Tls(e))),
            Some(Err(_)) => return Err(fail(ClientError::Timeout(limit))),
            None => return Err(fail(ClientError::Cancelled)),
        };
        self.tls = Some(version_name(&stream));
        self.wire = Wire::new(Stream::Tls(Box::new(stream)), cancel);
        Ok(self)
    }

    /// Sends one command and reads its reply.
    pub(super) async fn command(
        &mut self,
        line: &[u8],
        limit: Duration,
        stage: Stage,
    ) -> Result<Reply, Failure> {
        self.wire
            .send(line, limit)
            .await
            .map_err(|e| Failure::new(stage, e))?;
        self.read(limit, stage).await
    }

    pub(super) async fn read(&mut self, limit: Duration, stage: Stage) -> Result<Reply, Failure> {
        self.wire
            .read_reply(limit)
            .await
            .map_err(|e| Failure::new(stage, e))
    }

    /// Makes `cancel` (a delivery's token) cut this session's waits from now on.
    pub fn watch(&mut self, cancel: &CancellationToken) {
        self.wire.cancel = cancel.clone();
    }

    /// Whether an idle connection can carry another transaction: the server has said
    /// nothing since (a server closing an idle connection sends 421 or just FIN) and
    /// the socket is still open. Costs one non-blocking read.
    pub fn is_alive(&self) -> bool {
        if self.wire.has_unread() || self.envelope_sent {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.wire.stream().tcp().try_read(&mut probe),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Ends the session politely: QUIT, a short wait for its reply, close.
    pub async fn quit(mut self) {
        if self.wire.send(b"QUIT\r\n", QUIT_TIMEOUT).await.is_ok() {
            let _ = self.wire.read_reply(QUIT_TIMEOUT).await;
        }
        self.wire.shutdown().await;
    }
}

/// The TCP connection, from `egress`'s source address, within the connect timeout. A
/// source that cannot be used (the host lacks it, or it is of the other IP version)
/// is a [`ClientError::Source`]: nothing left the host.
async fn connect(address: SocketAddr, egress: &Egress) -> Result<TcpStream, Failure> {
    let fail = |e| Failure::new(Stage::Connect, ClientError::Connect(e));
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(fail)?;
    if let Some(source) = egress.source {
        let unusable = |problem: String| {
            Failure::new(
                Stage::Connect,
                ClientError::Source {
                    address: source,
                    problem,
                },
            )
        };
        if source.is_ipv4() != address.is_ipv4() {
            return Err(unusable(format!(
                "cannot reach {}: not the same IP version",
                address.ip()
            )));
        }
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|e| unusable(format!("cannot bind to it: {e}")))?;
    }
    let limit = egress.timeouts.connect;
    let tcp = match timeout(limit, socket.connect(address)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(fail(e)),
        Err(_) => return Err(Failure::new(Stage::Connect, ClientError::Timeout(limit))),
    };
    // Commands are written whole, one write per group: Nagle would only delay them.
    tcp.set_nodelay(true).map_err(fail)?;
    Ok(tcp)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::smtp::test_peer::{self, Behaviour};
    use crate::smtp::transaction::{Ending, Message};

    #[tokio::test]
    async fn a_cancel_cuts_the_wait_for_a_banner_that_never_comes() {
        let peer = test_peer::start(Behaviour {
            silent: true,
            ..Behaviour::default()
        })
        .await;
        let mut options = test_peer::options(None);
        options.timeouts.greeting = Duration::from_secs(300);
        let tls = TlsSetup::new(&options).unwrap();
        let cancel = CancellationToken::new();
        let cutter = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            cutter.cancel();
        });
        let egress = Egress::of_options(&options);
        let opening = Session::open(
            Arc::from("peer.test"),
            peer.address,
            &egress,
            &tls,
            true,
            &cancel,
        );
        // Well before the greeting timeout: the cancel ended the wait.
        let failure = tokio::time::timeout(Duration::from_secs(10), opening)
            .await
            .expect("the cancel did not cut the wait")
            .err()
            .unwrap();
        assert_eq!(failure.stage, Stage::Banner);
        assert!(matches!(failure.error, ClientError::Cancelled));
    }

    #[tokio::test]
    async fn a_cancel_after_the_dot_fails_the_transaction_at_dot() {
        let peer = test_peer::start(Behaviour {
            stall_after_dot: true,
            ..Behaviour::default()
        })
        .await;
        let options = test_peer::options(None);
        let mut session = test_peer::session(&peer, &options).await;
        let cancel = CancellationToken::new();
        session.watch(&cancel);
        let cutter = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            cutter.cancel();
        });
        let message = Message {
            from: "a@sender.test",
            to: "b@dest.test",
            data: b"Subject: x\r\n\r\nbody\r\n",
            smtputf8: false,
        };
        let done = session.transact(&message, None, &options.timeouts).await;
        let Ending::Failed(failure) = &done.ending else {
            panic!("{:?}", done.ending);
        };
        assert_eq!(failure.stage, Stage::Dot);
        assert!(matches!(failure.error, ClientError::Cancelled));
        assert!(!done.reusable);
        assert!(peer.received().ends_with("body\r\n.\r\n"));
    }
}
