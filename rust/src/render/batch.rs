//! Renders a batch of recipients, in order, on one thread or on every core.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};

use rayon::prelude::*;

use super::campaign::{CompiledCampaign, Now};
use crate::error::RenderError;
use crate::wire::{Recipient, RenderOutcome};

/// Below this many recipients, splitting work across threads costs more than it saves.
const PARALLEL_MIN: usize = 64;

/// Renders every recipient; `threads` = 1 renders on the calling thread, 0 on rayon's
/// global pool (one thread per core), n on a pool of n threads kept for reuse.
pub fn render_batch(
    campaign: &CompiledCampaign,
    recipients: &[Recipient],
    now: &Now,
    threads: usize,
) -> Vec<RenderOutcome> {
    let one = |r: &Recipient| render_one(campaign, r, now);
    if threads == 1 || recipients.len() < PARALLEL_MIN {
        return recipients.iter().map(one).collect();
    }
    let work = || recipients.par_iter().with_min_len(16).map(one).collect();
    if threads == 0 {
        work()
    } else {
        pool(threads).install(work)
    }
}

/// One outcome; a panic in this recipient's rendering becomes this recipient's error.
fn render_one(campaign: &CompiledCampaign, recipient: &Recipient, now: &Now) -> RenderOutcome {
    let result = catch_unwind(AssertUnwindSafe(|| campaign.render(recipient, now))).unwrap_or_else(
        |panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(RenderError::Internal(what))
        },
    );
    match result {
        Ok(m) => RenderOutcome {
            envelope_from: m.envelope_from,
            data: Some(m.data),
            message_id: Some(m.message_id),
            error: None,
            smtputf8: m.smtputf8,
            rcpt_to: Some(m.rcpt_to),
        },
        Err(e) => RenderOutcome {
            envelope_from: campaign.envelope_from_for(recipient),
            data: None,
            message_id: None,
            error: Some(e.to_string()),
            smtputf8: false,
            rcpt_to: None,
        },
    }
}

fn pool(threads: usize) -> Arc<rayon::ThreadPool> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    pools
        .entry(threads)
        .or_insert_with(|| {
            Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("ferrymail-render-{i}"))
                    .build()
                    .expect("spawning render threads"),
            )
        })
        .clone()
}
