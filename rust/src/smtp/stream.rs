//! The bytes of one SMTP connection: plaintext or TLS, writes with a timeout, replies read and parsed from a buffer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

use super::error::ClientError;
use super::reply::{Reply, ReplyParser};

/// Bytes asked of the kernel per read: a whole EHLO reply or a pipelined group of
/// replies fits, so one read usually serves a whole round trip.
const READ_CHUNK: usize = 8 * 1024;
/// Content is written in pieces of at most this size, each under the data-block
/// timeout (RFC 5321 §4.5.3.2.5 times each TCP send, not the whole message).
const WRITE_CHUNK: usize = 64 * 1024;

/// A connection before or after STARTTLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// The TCP socket under either form.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref().0,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One connection's stream with its read buffer and reply parser.
pub struct Wire {
    stream: Stream,
    /// Bytes read and not yet consumed start at `start`.
    buf: Vec<u8>,
    start: usize,
    parser: ReplyParser,
    /// The token of the delivery using the connection: once it is cancelled, every
    /// wait ends at once with [`ClientError::Cancelled`].
    pub cancel: CancellationToken,
}

impl Wire {
    pub fn new(stream: Stream, cancel: CancellationToken) -> Self {
        Self {
            stream,
            buf: Vec::with_capacity(READ_CHUNK),
            start: 0,
            parser: ReplyParser::default(),
            cancel,
        }
    }

    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// Gives the stream up (for the TLS handshake); fails if the server sent bytes
    /// that were not read yet: after "220 go ahead" to STARTTLS, anything already in
    /// the buffer came in plaintext and must not be taken as if it were protected
    /// (the STARTTLS command injection of CVE-2011-0411).
    pub fn into_stream(self) -> Result<Stream, ClientError> {
        if self.start < self.buf.len() {
            return Err(ClientError::Tls(
                "the server sent data after its reply to STARTTLS, before the handshake".into(),
            ));
        }
        Ok(self.stream)
    }

    /// Whether unread bytes are buffered: a server that speaks unasked (a 421 before
    /// closing an idle connection) makes the connection unfit for reuse.
    pub fn has_unread(&self) -> bool {
        self.start < self.buf.len()
    }

    /// Writes all of `bytes` within `limit`.
    pub async fn send(&mut self, bytes: &[u8], limit: Duration) -> Result<(), ClientError> {
        let write = timeout(limit, self.stream.write_all(bytes));
        match self.cancel.run_until_cancelled(write).await {
            Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(ClientError::Io(e)),
            Some(Err(_)) => Err(ClientError::Timeout(limit)),
            None => Err(ClientError::Cancelled),
        }
    }

    /// Writes message content in pieces, each within `block_limit`.
    pub async fn send_content(
        &mut self,
        bytes: &[u8],
        block_limit: Duration,
    ) -> Result<(), ClientError> {
        for piece in bytes.chunks(WRITE_CHUNK) {
            self.send(piece, block_limit).await?;
        }
        Ok(())
    }

    /// Reads the next reply, waiting at most `limit` for it to be complete.
    pub async fn read_reply(&mut self, limit: Duration) -> Result<Reply, ClientError> {
        let cancel = self.cancel.clone();
        match cancel
            .run_until_cancelled(timeout(limit, self.next_reply()))
            .await
        {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(ClientError::Timeout(limit)),
            None => Err(ClientError::Cancelled),
        }
    }

    async fn next_reply(&mut self) -> Result<Reply, ClientError> {
        loop {
            if let Some((reply, used)) = self.parser.parse(&self.buf[self.start..])? {
                self.start += used;
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                }
                return Ok(reply);
            }
            if self.start > 0 && self.buf.capacity() - self.buf.len() < READ_CHUNK / 2 {
                // Drop what was consumed before the partial reply. The parser's offsets
                // are relative to the unconsumed bytes, so they stay right.
                self.buf.drain(..self.start);
                self.start = 0;
            }
            self.buf.reserve(READ_CHUNK);
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => return Err(ClientError::closed()),
                Ok(_) => {}
                Err(e) => return Err(ClientError::Io(e)),
            }
        }
    }

    /// Closes the write side politely; errors do not matter any more.
    pub async fn shutdown(&mut self) {
        let _ = timeout(Duration::from_secs(1), self.stream.shutdown()).await;
    }
}
