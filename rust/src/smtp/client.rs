//! A transport's shared state: its checked options, TLS configurations and connection pool.

use std::net::SocketAddr;
use std::sync::Arc;

use super::error::Failure;
use super::error::{ClientError, Stage};
use super::options::{ClientOptions, TlsPolicy};
use super::pool::{Pool, PoolKey};
use super::session::Session;
use super::tls::TlsSetup;
use tokio_util::sync::CancellationToken;

/// What every batch of one transport shares. Made on the tokio runtime (the pool's
/// reaper is a task there).
pub struct Client {
    pub options: ClientOptions,
    pub tls: TlsSetup,
    pub pool: Arc<Pool>,
    helo: Arc<str>,
}

impl Client {
    pub fn new(options: ClientOptions) -> Result<Self, String> {
        let tls = TlsSetup::new(&options)?;
        let pool = Pool::new(&options);
        let helo = Arc::from(options.helo_name.as_str());
        Ok(Self {
            options,
            tls,
            pool,
            helo,
        })
    }

    /// The pool key of connections to `address` under these options.
    pub fn key(&self, address: SocketAddr) -> PoolKey {
        PoolKey {
            address,
            source: self.options.source_address,
            tls: self.options.tls,
            helo: self.helo.clone(),
        }
    }

    /// Opens a session to `address`. Under the opportunistic policy a failed TLS
    /// handshake is retried once in plaintext on a new connection: the server's TLS is
    /// broken, and plaintext is what it would get from a client without TLS.
    /// Cancelling `cancel` ends the attempt at once with [`ClientError::Cancelled`].
    pub async fn open(
        &self,
        mx: &Arc<str>,
        address: SocketAddr,
        cancel: &CancellationToken,
    ) -> Result<Session, Failure> {
        let (options, tls) = (&self.options, &self.tls);
        let first = Session::open(mx.clone(), address, options, tls, true, cancel).await;
        match first {
            Err(Failure {
                stage: Stage::Starttls,
                error: ClientError::Tls(_) | ClientError::Timeout(_),
            }) if self.options.tls == TlsPolicy::Opportunistic => {
                Session::open(mx.clone(), address, options, tls, false, cancel).await
            }
            other => other,
        }
    }
}
