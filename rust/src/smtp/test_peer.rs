//! A small real SMTP peer on loopback for the session tests: it records every byte it receives, who connected with which EHLO name, and can stall.
//!
//! The Python tests run the full range of peers (aiosmtpd, smtp-sink, a hand-written
//! misbehaving server); this one lets Rust tests drive a [`Session`] directly with
//! input the renderer would never produce, and check on the server side what reached
//! the wire.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::egress::Egress;
use super::options::{ClientOptions, Timeouts};
use super::session::Session;
use super::tls::TlsSetup;
use crate::wire::SmtpOptions;

/// What the peer does; it answers like a plain Postfix otherwise.
#[derive(Clone, Copy, Default)]
pub struct Behaviour {
    /// Accept connections and never send the banner.
    pub silent: bool,
    /// Never answer the final dot.
    pub stall_after_dot: bool,
}

/// A running peer: its address and the bytes each connection sent it.
pub struct Peer {
    pub address: SocketAddr,
    received: Arc<Mutex<Vec<u8>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// One connection the peer accepted: the client's address and the name it gave with
/// EHLO or HELO (empty until it did).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub client: IpAddr,
    pub helo: String,
}

impl Peer {
    /// Everything every connection sent, in order of arrival.
    pub fn received(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()).into_owned()
    }

    /// The connections accepted so far, in order.
    pub fn connections(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// What every connection of a peer records into.
#[derive(Clone)]
struct Record {
    bytes: Arc<Mutex<Vec<u8>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// Starts a peer on 127.0.0.1 on the current runtime.
pub async fn start(behaviour: Behaviour) -> Peer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let record = Record {
        bytes: Arc::default(),
        seen: Arc::default(),
    };
    let (received, seen) = (record.bytes.clone(), record.seen.clone());
    tokio::spawn(async move {
        while let Ok((tcp, client)) = listener.accept().await {
            let index = {
                let mut seen = record.seen.lock().unwrap();
                seen.push(Seen {
                    client: client.ip(),
                    helo: String::new(),
                });
                seen.len() - 1
            };
            tokio::spawn(serve(tcp, behaviour, record.clone(), index));
        }
    });
    Peer {
        address,
        received,
        seen,
    }
}

async fn serve(tcp: tokio::net::TcpStream, behaviour: Behaviour, record: Record, index: usize) {
    let (read, mut write) = tcp.into_split();
    let mut lines = BufReader::new(read);
    if behaviour.silent {
        // Hold the connection open, reading (and recording) whatever comes.
        let mut line = Vec::new();
        while lines
            .read_until(b'\n', &mut line)
            .await
            .is_ok_and(|n| n > 0)
        {
            record.bytes.lock().unwrap().extend_from_slice(&line);
            line.clear();
        }
        return;
    }
    let _ = write.write_all(b"220 peer.test ESMTP\r\n").await;
    let mut in_data = false;
    let mut line = Vec::new();
    loop {
        line.clear();
        match lines.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        record.bytes.lock().unwrap().extend_from_slice(&line);
        let reply: &[u8] = if in_data {
            if line != b".\r\n" {
                continue;
            }
            in_data = false;
            if behaviour.stall_after_dot {
                continue;
            }
            b"250 2.0.0 queued\r\n"
        } else {
            let verb = line
                .split(|&b| b == b' ' || b == b'\r')
                .next()
                .unwrap_or_default()
                .to_ascii_uppercase();
            if verb == b"EHLO" || verb == b"HELO" {
                let name = String::from_utf8_lossy(&line[4..]).trim().to_string();
                record.seen.lock().unwrap()[index].helo = name;
            }
            match verb.as_slice() {
                b"EHLO" => b"250-peer.test\r\n250-PIPELINING\r\n250-SMTPUTF8\r\n250 8BITMIME\r\n",
                b"DATA" => {
                    in_data = true;
                    b"354 go ahead\r\n"
                }
                b"QUIT" => {
                    let _ = write.write_all(b"221 2.0.0 bye\r\n").await;
                    return;
                }
                _ => b"250 2.1.0 ok\r\n",
            }
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}

/// Client options for tests: plaintext, short timeouts unless a test sets its own.
pub fn options(timeouts: Option<Timeouts>) -> ClientOptions {
    let mut options = ClientOptions::from_wire(&SmtpOptions {
        helo_name: "client.test".into(),
        tls: "off".into(),
        source_address: None,
        connect_timeout: 5.0,
        max_connections_per_host: 2,
        max_messages_per_connection: 100,
        idle_timeout: 5.0,
        greeting_timeout: 5.0,
        ehlo_timeout: 5.0,
        starttls_timeout: 5.0,
        mail_timeout: 5.0,
        rcpt_timeout: 5.0,
        data_timeout: 5.0,
        data_block_timeout: 5.0,
        dot_timeout: 5.0,
        ca_file: None,
    })
    .unwrap();
    if let Some(timeouts) = timeouts {
        options.timeouts = timeouts;
    }
    options
}

/// A greeted session to `peer`.
pub async fn session(peer: &Peer, options: &ClientOptions) -> Session {
    let tls = TlsSetup::new(options).unwrap();
    let cancel = CancellationToken::new();
    Session::open(
        Arc::from("peer.test"),
        peer.address,
        &Egress::of_options(options),
        &tls,
        false,
        &cancel,
    )
    .await
    .unwrap_or_else(|f| panic!("{f}"))
}
