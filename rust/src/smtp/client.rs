//! A transport's shared state: its checked options, default egress, TLS configurations and connection pool.

use std::net::SocketAddr;
use std::sync::Arc;

use super::egress::Egress;
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
    /// The source, HELO name, TLS policy and timeouts of batches whose route sets none.
    pub egress: Arc<Egress>,
    pub tls: TlsSetup,
    pub pool: Arc<Pool>,
}

impl Client {
    pub fn new(options: ClientOptions) -> Result<Self, String> {
        let tls = TlsSetup::new(&options)?;
        let pool = Pool::new(&options);
        let egress = Arc::new(Egress::of_options(&options));
        Ok(Self {
            options,
            egress,
            tls,
            pool,
        })
    }

    /// The pool key of connections to `address` with `egress`.
    pub fn key(&self, address: SocketAddr, egress: &Egress) -> PoolKey {
        PoolKey {
            address,
            source: egress.source,
            tls: egress.tls,
            helo: egress.helo.clone(),
        }
    }

    /// Opens a session to `address` with `egress`. Under the opportunistic policy a
    /// failed TLS handshake is retried once in plaintext on a new connection: the
    /// server's TLS is broken, and plaintext is what it would get from a client without
    /// TLS. Cancelling `cancel` ends the attempt at once with [`ClientError::Cancelled`].
    pub async fn open(
        &self,
        mx: &Arc<str>,
        address: SocketAddr,
        egress: &Egress,
        cancel: &CancellationToken,
    ) -> Result<Session, Failure> {
        let tls = &self.tls;
        let first = Session::open(mx.clone(), address, egress, tls, true, cancel).await;
        match first {
            Err(Failure {
                stage: Stage::Starttls,
                error: ClientError::Tls(_) | ClientError::Timeout(_),
                ..
            }) if egress.tls == TlsPolicy::Opportunistic => {
                Session::open(mx.clone(), address, egress, tls, false, cancel).await
            }
            other => other,
        }
    }
}
