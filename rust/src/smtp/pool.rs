//! The connection pool: greeted sessions kept per destination for reuse, and the cap on connections to one address.
//!
//! A slot per [`PoolKey`] counts the connections to it, busy, being opened or idle,
//! and never lets them pass `max_connections_per_host`, nor the lower limit of the
//! batch that asks (its route's `max_connections`); a task that wants one more waits
//! until one is handed back or closed. The key holds the source address, so every
//! limit is per source × destination address. Idle sessions are checked before reuse
//! and closed with QUIT after the idle timeout, by a reaper task. The pool also keeps
//! the transport's connection-rate buckets, which the reaper prunes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::connection_rate::{ConnectionRates, Rates};
use super::options::{ClientOptions, TlsPolicy};
use super::session::Session;

/// What makes two connections interchangeable: the same server address and port,
/// from the same source address, under the same TLS policy and HELO name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub address: SocketAddr,
    pub source: Option<IpAddr>,
    pub tls: TlsPolicy,
    pub helo: Arc<str>,
}

/// The right to one connection to a key's address. Dropping it (the connection is
/// closed, or was never opened) frees the place for a waiting task.
pub struct Permit {
    slot: Arc<Slot>,
    armed: bool,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.armed {
            self.slot.lock().open -= 1;
            self.slot.notify.notify_waiters();
        }
    }
}

/// What [`Pool::acquire`] hands out.
pub enum Lease {
    /// An idle session that looked alive.
    Reuse(Box<Session>, Permit),
    /// A place for a new connection: open it, keep the permit with it.
    Open(Permit),
}

/// What [`Pool::connections`] counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionCounts {
    pub busy: usize,
    pub idle: usize,
}

pub struct Pool {
    slots: Mutex<HashMap<PoolKey, Arc<Slot>>>,
    max_connections: usize,
    max_transactions: usize,
    closed: std::sync::atomic::AtomicBool,
    /// The buckets that pace new connections, by the keys routes name.
    pub rates: ConnectionRates,
}

/// How long a connection-rate bucket stays unused before the reaper may drop it (once
/// it has filled up again, it is what a new one would be).
const RATE_IDLE: Duration = Duration::from_secs(300);

struct Slot {
    state: Mutex<SlotState>,
    /// Wakes every waiter when a place frees up or a session goes idle: waiters have
    /// limits of their own, and the one a single wake-up would pick may be one still
    /// at its limit while another could go on.
    notify: Notify,
}

#[derive(Default)]
struct SlotState {
    /// Connections counted against the limit: with a permit out, or idle.
    open: usize,
    idle: Vec<Session>,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Pool {
    /// A pool with `options`' limits, and its reaper running on the current tokio
    /// runtime for as long as the pool lives.
    pub fn new(options: &ClientOptions) -> Arc<Self> {
        let pool = Arc::new(Self {
            slots: Mutex::default(),
            max_connections: options.max_connections_per_host,
            max_transactions: options.max_messages_per_connection,
            closed: Default::default(),
            rates: ConnectionRates::default(),
        });
        // Each session waits its own batch's idle timeout (a site's may be shorter than
        // the transport's): one is closed at most a second past it.
        let period =
            (options.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        tokio::spawn(reap(Arc::downgrade(&pool), period));
        pool
    }

    /// Every destination's slot now, taken out of the map's lock (each slot has its own).
    fn all_slots(&self) -> Vec<Arc<Slot>> {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.values().cloned().collect()
    }

    fn slot(&self, key: &PoolKey) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Slot {
                    state: Mutex::default(),
                    notify: Notify::new(),
                })
            })
            .clone()
    }

    /// An idle session to `key` or the right to open one, waiting while the key has
    /// `limit` connections or more (or the pool's own limit, if lower). The right to
    /// open one also takes a token from each bucket of `rates`, waiting until each has
    /// one: without holding a place meanwhile, and taking an idle session instead if
    /// one comes back first. Empty `rates` (most routes) never touch their lock.
    pub async fn acquire(&self, key: &PoolKey, limit: usize, rates: &Rates) -> Lease {
        let limit = limit.min(self.max_connections);
        let slot = self.slot(key);
        loop {
            let freed = slot.notify.notified();
            let mut dead = Vec::new();
            let mut token_due = Duration::ZERO;
            let lease = {
                let mut state = slot.lock();
                let mut lease = None;
                // A limit lower than the connections open (a fleet engine's share of the
                // site shrank, automation lowered it): idle sessions over it are closed
                // now, oldest first, so the receiver sees the new limit without waiting
                // for the idle timeout.
                while state.open > limit && !state.idle.is_empty() {
                    let session = state.idle.remove(0);
                    state.open -= 1;
                    dead.push(session);
                }
                while let Some(session) = state.idle.pop() {
                    if session.idle_since.elapsed() < session.idle_timeout && session.is_alive() {
                        lease = Some(Lease::Reuse(Box::new(session), self.permit(&slot)));
                        break;
                    }
                    state.open -= 1;
                    dead.push(session);
                }
                if lease.is_none() && state.open < limit {
                    if !rates.is_empty() {
                        token_due = self.rates.try_take(rates);
                    }
                    if token_due.is_zero() {
                        state.open += 1;
                        lease = Some(Lease::Open(self.permit(&slot)));
                    }
                }
                lease
            };
            if !dead.is_empty() {
                slot.notify.notify_waiters();
            }
            for session in dead {
                tokio::spawn(session.quit());
            }
            if let Some(lease) = lease {
                return lease;
            }
            if token_due.is_zero() {
                freed.await;
            } else {
                tokio::select! {
                    () = freed => {}
                    () = tokio::time::sleep(token_due) => {}
                }
            }
        }
    }

    fn permit(&self, slot: &Arc<Slot>) -> Permit {
        Permit {
            slot: slot.clone(),
            armed: true,
        }
    }

    /// Takes a session back after a transaction it can follow with another; closes
    /// it instead when it has carried its share (`most`, at most the pool's limit) or
    /// the pool is closing.
    pub fn release(&self, mut session: Session, mut permit: Permit, most: usize) {
        // Idle or closing, it belongs to no delivery: cancelling the one that used it
        // must not cut its QUIT, and the next user watches its own token.
        session.watch(&CancellationToken::new());
        let closing = self.closed.load(std::sync::atomic::Ordering::Acquire);
        let spent = session.transactions >= most.min(self.max_transactions);
        // A session with a chained envelope in flight belongs to that message; it is
        // never handed to anyone else.
        if closing || spent || session.envelope_sent {
            tokio::spawn(async move {
                session.quit().await;
                drop(permit);
            });
            return;
        }
        session.idle_since = Instant::now();
        permit.armed = false;
        permit.slot.lock().idle.push(session);
        permit.slot.notify.notify_waiters();
    }

    /// The connections counted against the limits now, over every destination:
    /// `busy` ones are in a delivery, being opened or saying QUIT (a permit is out);
    /// `idle` ones wait here for reuse. For the metrics (`ferrymail_connections_open`).
    pub fn connections(&self) -> ConnectionCounts {
        let slots = self.all_slots();
        let mut counts = ConnectionCounts::default();
        for slot in slots {
            let state = slot.lock();
            counts.idle += state.idle.len();
            counts.busy += state.open - state.idle.len();
        }
        counts
    }

    /// Closes every idle session with QUIT, and makes sessions handed back later close
    /// too. Returns when the QUITs are done.
    pub async fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        let idle = self.take_idle(|_| true);
        quit_all(idle).await;
    }

    /// Removes the idle sessions `pick` chooses, freeing their places.
    fn take_idle(&self, pick: impl Fn(&Session) -> bool) -> Vec<Session> {
        let slots = self.all_slots();
        let mut taken = Vec::new();
        for slot in slots {
            let mut state = slot.lock();
            let (out, keep): (Vec<_>, Vec<_>) = state.idle.drain(..).partition(|s| pick(s));
            state.idle = keep;
            state.open -= out.len();
            drop(state);
            if !out.is_empty() {
                slot.notify.notify_waiters();
            }
            taken.extend(out);
        }
        taken
    }
}

async fn quit_all(sessions: Vec<Session>) {
    let quits: Vec<_> = sessions
        .into_iter()
        .map(|s| tokio::spawn(s.quit()))
        .collect();
    for quit in quits {
        let _ = quit.await;
    }
}

/// Closes sessions idle past the timeout, every `period`, and drops stale
/// connection-rate buckets every [`RATE_IDLE`], until the pool is gone.
async fn reap(pool: Weak<Pool>, period: Duration) {
    let mut ticks = tokio::time::interval(period);
    let mut pruned = Instant::now();
    loop {
        ticks.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        let expired = pool.take_idle(|s| s.idle_since.elapsed() >= s.idle_timeout);
        if pruned.elapsed() >= RATE_IDLE {
            pool.rates.prune(RATE_IDLE);
            pruned = Instant::now();
        }
        drop(pool);
        if !expired.is_empty() {
            tokio::spawn(quit_all(expired));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::test_peer::{self, Behaviour};

    fn open(slot: &Arc<Slot>) -> usize {
        slot.lock().open
    }

    #[tokio::test]
    async fn a_lower_limit_closes_the_idle_sessions_over_it() {
        let peer = test_peer::start(Behaviour::default()).await;
        let options = test_peer::options(None);
        let pool = Pool::new(&options);
        let key = PoolKey {
            address: peer.address,
            source: None,
            tls: TlsPolicy::Off,
            helo: Arc::from("client.test"),
        };
        // Two connections at a limit of two, both handed back idle.
        let mut permits = Vec::new();
        for _ in 0..2 {
            match pool.acquire(&key, 2, &[]).await {
                Lease::Open(permit) => permits.push(permit),
                Lease::Reuse(..) => panic!("nothing idle yet"),
            }
        }
        for permit in permits {
            pool.release(test_peer::session(&peer, &options).await, permit, 100);
        }
        let slot = pool.slot(&key);
        assert_eq!(open(&slot), 2);
        // The limit drops to one: one idle session is reused, the other closed now.
        let Lease::Reuse(session, permit) = pool.acquire(&key, 1, &[]).await else {
            panic!("an idle session was there")
        };
        assert_eq!(open(&slot), 1);
        assert!(slot.lock().idle.is_empty());
        drop((session, permit));
        assert_eq!(open(&slot), 0);
    }
}
