//! Connection rates: token buckets, shared by key over every batch of a transport, that pace the new connections batches open.
//!
//! A route names the buckets its batch's new connections take from (a site's, a site ×
//! source one), each with its rate; every batch naming the same key shares the bucket,
//! whatever its source address. A new connection needs a token from every bucket the
//! route names, taken all at once under one lock, so a batch never holds one bucket's
//! token while it waits for another's. A bucket saves up at most one second's worth
//! (at least one token), like the engine's message-rate bucket, and starts full.
//! Reused pooled sessions take nothing: only opening a connection counts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// One route's share of the rates: the keys of the buckets and their tokens per second.
pub type Rates = [(Arc<str>, f64)];

/// The transport's buckets, by key.
#[derive(Default)]
pub struct ConnectionRates {
    buckets: Mutex<HashMap<Arc<str>, Bucket>>,
}

struct Bucket {
    /// The rate of the last batch that asked: a changed shaping file takes effect at
    /// the next connection.
    per_second: f64,
    tokens: f64,
    filled_at: Instant,
}

impl Bucket {
    fn capacity(&self) -> f64 {
        self.per_second.max(1.0)
    }

    /// Adds what the time since the last fill earned, up to the capacity.
    fn fill(&mut self, now: Instant) {
        let earned = now.saturating_duration_since(self.filled_at).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + earned).min(self.capacity());
        self.filled_at = now;
    }

    /// How long until the bucket has a whole token; zero when it has one.
    fn wait(&self) -> Duration {
        if self.tokens >= 1.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((1.0 - self.tokens) / self.per_second)
    }
}

impl ConnectionRates {
    /// Waits until every bucket of `rates` has a token, then takes one from each. Each
    /// rate must be finite and above 0 (`Destination::from_wire` checks). Dropping the
    /// future (a cancel) takes nothing.
    pub async fn take(&self, rates: &Rates) {
        loop {
            let wait = self.try_take(rates);
            if wait.is_zero() {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes a token from every bucket of `rates` if each has one (zero), or takes
    /// nothing and says how long until the emptiest has one.
    pub fn try_take(&self, rates: &Rates) -> Duration {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let mut wait = Duration::ZERO;
        for (key, per_second) in rates {
            let bucket = buckets.entry(key.clone()).or_insert_with(|| Bucket {
                per_second: *per_second,
                tokens: per_second.max(1.0),
                filled_at: now,
            });
            bucket.fill(now);
            if bucket.per_second != *per_second {
                // A lower rate keeps at most its own burst.
                bucket.per_second = *per_second;
                bucket.tokens = bucket.tokens.min(bucket.capacity());
            }
            wait = wait.max(bucket.wait());
        }
        if wait.is_zero() {
            for (key, _) in rates {
                if let Some(bucket) = buckets.get_mut(key) {
                    bucket.tokens -= 1.0;
                }
            }
        }
        wait
    }

    /// Drops the buckets unused for `idle` or longer that have filled up again: a
    /// full bucket is what a new one would be, so nothing is forgotten, and keys of
    /// sites and sources no longer sent to do not pile up.
    pub fn prune(&self, idle: Duration) {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        buckets.retain(|_, bucket| {
            if now.saturating_duration_since(bucket.filled_at) < idle {
                return true;
            }
            bucket.fill(now);
            bucket.tokens < bucket.capacity()
        });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(list: &[(&str, f64)]) -> Vec<(Arc<str>, f64)> {
        list.iter().map(|(k, r)| (Arc::from(*k), *r)).collect()
    }

    /// Takes tokens for `seconds` of the paused clock and says how many it got.
    async fn taken_in(buckets: &ConnectionRates, rates: &Rates, seconds: f64) -> usize {
        let end = Instant::now() + Duration::from_secs_f64(seconds);
        let mut n = 0;
        while tokio::time::timeout_at(end, buckets.take(rates))
            .await
            .is_ok()
        {
            n += 1;
        }
        n
    }

    #[tokio::test(start_paused = true)]
    async fn a_bucket_gives_its_burst_then_its_rate() {
        let buckets = ConnectionRates::default();
        let ten = rates(&[("site", 10.0)]);
        // A burst of 10 at once, then one every 0.1 s: 19 more by 1.95 s.
        assert_eq!(taken_in(&buckets, &ten, 0.001).await, 10);
        assert_eq!(taken_in(&buckets, &ten, 1.95).await, 19);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_below_one_saves_up_one_token() {
        let buckets = ConnectionRates::default();
        let slow = rates(&[("site", 0.5)]);
        assert_eq!(taken_in(&buckets, &slow, 0.001).await, 1);
        tokio::time::advance(Duration::from_secs(60)).await;
        // A minute idle saved up one token, not thirty.
        assert_eq!(taken_in(&buckets, &slow, 0.001).await, 1);
        assert_eq!(taken_in(&buckets, &slow, 2.5).await, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn every_bucket_named_must_have_a_token_and_gives_one() {
        let buckets = ConnectionRates::default();
        let site = rates(&[("site", 10.0)]);
        let both = rates(&[("site", 10.0), ("site\0src", 2.0)]);
        // The site × source bucket (a burst of 2) stops the batch naming both...
        assert_eq!(taken_in(&buckets, &both, 0.001).await, 2);
        // ...and its tokens came out of the site's bucket too.
        assert_eq!(taken_in(&buckets, &site, 0.001).await, 10 - 2);
    }

    #[tokio::test(start_paused = true)]
    async fn batches_naming_one_key_share_its_bucket_and_others_do_not() {
        let buckets = Arc::new(ConnectionRates::default());
        let shared = rates(&[("site", 5.0)]);
        let other = rates(&[("other", 5.0)]);
        let (a, b, c) = tokio::join!(
            taken_in(&buckets, &shared, 1.9),
            taken_in(&buckets, &shared, 1.9),
            taken_in(&buckets, &other, 1.9),
        );
        // A burst of 5, then one every 0.2 s: 9 more by 1.9 s, for both together.
        assert_eq!(a + b, 5 + 9);
        assert_eq!(c, 5 + 9);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lower_rate_takes_effect_with_its_own_burst() {
        let buckets = ConnectionRates::default();
        taken_in(&buckets, &rates(&[("site", 100.0)]), 0.0001).await;
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(taken_in(&buckets, &rates(&[("site", 2.0)]), 0.001).await, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn prune_drops_only_idle_buckets_that_filled_up() {
        let buckets = ConnectionRates::default();
        taken_in(&buckets, &rates(&[("busy", 1.0)]), 0.001).await;
        taken_in(&buckets, &rates(&[("slow", 0.001)]), 0.001).await;
        tokio::time::advance(Duration::from_secs(61)).await;
        taken_in(&buckets, &rates(&[("fresh", 1.0)]), 0.001).await;
        buckets.prune(Duration::from_secs(60));
        // "busy" filled up and went; "slow" is still refilling (1000 s a token);
        // "fresh" was used just now.
        assert_eq!(buckets.len(), 2);
        let wait = buckets.try_take(&rates(&[("slow", 0.001)]));
        assert!(wait > Duration::from_secs(900), "{wait:?}");
    }
}
