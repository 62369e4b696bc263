//! Delivering one batch: render on rayon while workers send over pooled sessions, failing over host by host; one outcome per recipient.
//!
//! Up to `max_connections_per_host` workers share the batch's queue, each holding one
//! session and sending message after message on it. The first worker starts alone and
//! the others join when it has a session, so a dead host costs one attempt per batch. A worker that cannot connect
//! anywhere hands its message back and stops while others still hold sessions (the
//! server turned away one connection too many); the last worker standing declares
//! the route dead, and every message left gets the last failure as a transient
//! outcome: only when every host and address has failed is a recipient deferred.
//!
//! A cancelled delivery (its token, or the transport's, cancelled) cuts every wait of
//! its workers at once: the message in flight gets a "cancelled" outcome at the stage
//! it was cut, every message not yet sent one at the stage it never left, and the cut
//! connections are dropped, never pooled.
//!
//! A route may name connection-rate buckets (smtp/connection_rate.rs): a worker that
//! must open a connection, not one that reuses a pooled session, first waits for a
//! token of each (in the pool, which hands it an idle session instead if one comes
//! back meanwhile), and a cancel cuts that wait too.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::client::Client;
use super::egress::Egress;
use super::error::{ClientError, Failure, Stage};
use super::outcomes;
use super::pool::{Lease, Permit};
use super::session::Session;
use super::transaction::{Message, Transaction};
use crate::render::{render_batch, CompiledCampaign, Now};
use crate::wire::{Outcome, OutcomeKind, Recipient, RenderOutcome, Route};

/// Recipients rendered per step: enough to keep every core busy for a few
/// milliseconds, few enough that the first messages leave at once.
const RENDER_CHUNK: usize = 256;

/// A route's hosts with their addresses parsed, and how to reach them.
pub struct Destination {
    hosts: Vec<(Arc<str>, Vec<SocketAddr>)>,
    /// The route's own limits; 0 takes the transport's.
    max_connections: usize,
    max_messages_per_connection: usize,
    /// The connection-rate buckets a new connection takes a token from; empty for
    /// most routes, which then never touch the buckets' lock.
    connection_rates: Vec<(Arc<str>, f64)>,
    /// The batch's source, HELO name, TLS policy and timeouts; or why the route's
    /// settings cannot be used, which every recipient's outcome then says.
    egress: Result<Arc<Egress>, String>,
}

impl Destination {
    /// Checks a wire route for `client`; the error names the host and the address
    /// that is wrong. The route's egress settings are checked too, but a bad one is
    /// no error here: it fails the batch's recipients (an operator's setting in a
    /// shaping file, not the caller's fault), as outcomes the engine records.
    pub fn from_wire(route: &Route, client: &Client) -> Result<Self, String> {
        let mut hosts = Vec::with_capacity(route.hosts.len());
        for host in &route.hosts {
            let mut addresses = Vec::with_capacity(host.addresses.len());
            for text in &host.addresses {
                let ip: IpAddr = text
                    .parse()
                    .map_err(|_| format!("MX host {}: {text:?} is not an IP address", host.name))?;
                addresses.push(SocketAddr::new(ip, host.port));
            }
            hosts.push((Arc::from(host.name.as_str()), addresses));
        }
        let connection_rates = route
            .connection_rates
            .iter()
            .map(|rate| (Arc::from(rate.key.as_str()), rate.per_second))
            .collect();
        Ok(Self {
            hosts,
            max_connections: route.max_connections as usize,
            max_messages_per_connection: route.max_messages_per_connection as usize,
            connection_rates,
            egress: check_rates(route).and_then(|()| Egress::of_route(route, &client.egress)),
        })
    }
}

/// Every connection rate of `route` must be a number above 0: a bucket that never
/// fills would hold the batch forever. The error names the bucket.
fn check_rates(route: &Route) -> Result<(), String> {
    match route
        .connection_rates
        .iter()
        .find(|rate| !(rate.per_second.is_finite() && rate.per_second > 0.0))
    {
        Some(rate) => Err(format!(
            "route connection_rates {:?}: {} per second is not a number above 0",
            rate.key, rate.per_second
        )),
        None => Ok(()),
    }
}

/// Each outcome as soon as it is known, with the recipient's index in the batch: the
/// engine records deliveries as they happen, so a crash can repeat only those whose
/// reply came in the last moments.
pub type Progress = mpsc::UnboundedSender<(usize, Outcome)>;

/// Renders and delivers `recipients` of `campaign` to `route`; outcomes in order, and
/// each one to `progress` (when given) as soon as it is known. Cancelling `cancel`
/// ends the delivery within moments, every recipient not yet finished getting a
/// transient outcome of kind "cancelled".
pub async fn deliver(
    client: Arc<Client>,
    campaign: Arc<CompiledCampaign>,
    recipients: Vec<Recipient>,
    route: Destination,
    now: Now,
    progress: Option<Progress>,
    cancel: CancellationToken,
) -> Vec<Outcome> {
    let count = recipients.len();
    let egress = match &route.egress {
        Ok(egress) => egress.clone(),
        Err(reason) => return unusable_route(reason, count, progress.as_ref()),
    };
    let connection_limit = match route.max_connections {
        0 => client.options.max_connections_per_host,
        n => n.min(client.options.max_connections_per_host),
    };
    let batch = Arc::new(Batch {
        workers_wanted: connection_limit.min(count.max(1)),
        connection_limit,
        client,
        egress,
        route,
        progress,
        cancel,
        state: Mutex::new(State {
            outcomes: vec![None; count],
            workers: 1,
            ..State::default()
        }),
        work: Notify::new(),
        room: Notify::new(),
        finished: Notify::new(),
    });
    // Slow start: one worker first; the others join once it has a session. A dead or
    // refusing host then sees one connection attempt per batch, not one per worker.
    tokio::spawn(work(batch.clone()));
    produce(&batch, campaign, recipients, now).await;
    loop {
        let mut finished = pin!(batch.finished.notified());
        finished.as_mut().enable();
        if batch.lock().workers == 0 {
            break;
        }
        finished.await;
    }
    // Recipients a cancel kept from being rendered, and the message of a worker that
    // panicked, have no outcome yet; they get one here, so nothing is lost.
    let missing: Vec<usize> = {
        let state = batch.lock();
        (0..state.outcomes.len())
            .filter(|&i| state.outcomes[i].is_none())
            .collect()
    };
    let gap = if batch.cancel.is_cancelled() {
        outcomes::cancelled_before_sending(Stage::Connect)
    } else {
        outcomes::internal(Stage::Connect, "delivery ended without an outcome")
    };
    for index in missing {
        batch.finish(index, gap.clone());
    }
    let outcomes = std::mem::take(&mut batch.lock().outcomes);
    outcomes
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect()
}

/// The outcomes of a batch whose route's egress settings cannot be used: nothing is
/// rendered or sent, and every recipient is deferred with the reason, as a refusal of
/// ferrymail's own (kind "local"): fixing the setting lets the retry go through.
fn unusable_route(reason: &str, count: usize, progress: Option<&Progress>) -> Vec<Outcome> {
    let outcome = outcomes::without_reply(
        "transient",
        OutcomeKind::Local,
        Stage::Connect,
        format!("not sent: the route's settings cannot be used: {reason}"),
    );
    if let Some(progress) = progress {
        for index in 0..count {
            let _ = progress.send((index, outcome.clone()));
        }
    }
    vec![outcome; count]
}

/// One rendered message waiting to be sent.
struct Job {
    index: usize,
    envelope_from: String,
    rcpt_to: String,
    data: Vec<u8>,
    message_id: String,
    smtputf8: bool,
}

impl Job {
    fn message(&self) -> Message<'_> {
        Message {
            from: &self.envelope_from,
            to: &self.rcpt_to,
            data: &self.data,
            smtputf8: self.smtputf8,
        }
    }
}

struct Batch {
    client: Arc<Client>,
    progress: Option<Progress>,
    /// Cancelled when the caller cuts the delivery.
    cancel: CancellationToken,
    /// Workers once the first has a session: one per connection allowed.
    workers_wanted: usize,
    /// Most connections open at once from the batch's source to one address of the
    /// route, counted over every batch of the transport (the pool's slot per key).
    connection_limit: usize,
    /// Where the batch's connections come from, and how they are run.
    egress: Arc<Egress>,
    route: Destination,
    state: Mutex<State>,
    /// Jobs were queued, or production ended.
    work: Notify,
    /// A job was taken off the queue.
    room: Notify,
    /// The last worker stopped.
    finished: Notify,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    produced: bool,
    outcomes: Vec<Option<Outcome>>,
    /// Workers that have not stopped.
    workers: usize,
    /// The workers beyond the first have been started.
    ramped: bool,
    /// Sessions workers hold, per address: a refused extra connection to an address
    /// that already carries sessions means "enough", not "down".
    live: HashMap<SocketAddr, usize>,
    /// Addresses that failed and are not tried again in this batch.
    failed: HashSet<SocketAddr>,
    /// The last connection failure, with its host and address.
    last_failure: Option<(Failure, Arc<str>, SocketAddr)>,
    /// Set when no host can be reached: every job left gets this outcome.
    dead: Option<Outcome>,
}

impl Batch {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn finish(&self, index: usize, outcome: Outcome) {
        settle(&mut self.lock(), self.progress.as_ref(), index, outcome);
    }

    /// The next job if one is queued now, without waiting.
    fn try_next(&self) -> Option<Job> {
        let job = self.lock().queue.pop_front();
        if job.is_some() {
            self.room.notify_one();
        }
        job
    }

    /// Puts a job back at the front of the queue for any worker.
    fn hand_back(&self, job: Job) {
        self.lock().queue.push_front(job);
        self.work.notify_one();
    }

    /// The next job, waiting for the renderer; None when all are taken.
    async fn next(&self) -> Option<Job> {
        loop {
            let mut queued = pin!(self.work.notified());
            queued.as_mut().enable();
            {
                let mut state = self.lock();
                if let Some(job) = state.queue.pop_front() {
                    drop(state);
                    self.room.notify_one();
                    return Some(job);
                }
                if state.produced {
                    return None;
                }
            }
            queued.await;
        }
    }
}

/// Renders chunk by chunk on rayon and queues the messages, staying at most two
/// chunks ahead of the workers so memory stays bounded whatever the batch size.
async fn produce(
    batch: &Arc<Batch>,
    campaign: Arc<CompiledCampaign>,
    recipients: Vec<Recipient>,
    now: Now,
) {
    let recipients = Arc::new(recipients);
    let now = Arc::new(now);
    'chunks: for start in (0..recipients.len()).step_by(RENDER_CHUNK) {
        loop {
            let mut room = pin!(batch.room.notified());
            room.as_mut().enable();
            if batch.cancel.is_cancelled() {
                // What is left is never rendered: deliver() fills those outcomes in.
                break 'chunks;
            }
            if batch.lock().queue.len() < 2 * RENDER_CHUNK {
                break;
            }
            if batch.cancel.run_until_cancelled(room).await.is_none() {
                break 'chunks;
            }
        }
        let end = (start + RENDER_CHUNK).min(recipients.len());
        let (campaign, recipients, now) = (campaign.clone(), recipients.clone(), now.clone());
        let rendered = tokio::task::spawn_blocking(move || {
            render_batch(&campaign, &recipients[start..end], &now, 0)
        })
        .await;
        let mut state = batch.lock();
        let rendered = match rendered {
            Ok(rendered) => rendered,
            Err(e) => {
                // A panic in the renderer is ferrymail's bug, not the recipients':
                // they are deferred, never bounced.
                let outcome =
                    outcomes::internal(Stage::Render, &format!("the renderer failed: {e}"));
                for index in start..end {
                    settle(&mut state, batch.progress.as_ref(), index, outcome.clone());
                }
                Vec::new()
            }
        };
        for (offset, outcome) in rendered.into_iter().enumerate() {
            let index = start + offset;
            match outcome {
                RenderOutcome {
                    envelope_from,
                    data: Some(data),
                    message_id: Some(message_id),
                    rcpt_to: Some(rcpt_to),
                    smtputf8,
                    ..
                } => state.queue.push_back(Job {
                    index,
                    envelope_from,
                    rcpt_to,
                    data,
                    message_id,
                    smtputf8,
                }),
                failed => {
                    let reason = failed
                        .error
                        .unwrap_or_else(|| "no message was produced".into());
                    let outcome = outcomes::render_failed(reason);
                    settle(&mut state, batch.progress.as_ref(), index, outcome);
                }
            }
        }
        drop(state);
        batch.work.notify_waiters();
    }
    batch.lock().produced = true;
    batch.work.notify_waiters();
}

/// A session a worker holds, with its place in the pool.
struct Held {
    session: Session,
    permit: Permit,
}

/// Why a worker has no session.
enum NoSession {
    /// An address that carries other sessions of this batch refused one more.
    Busy,
    /// Every address has failed.
    Exhausted,
    /// The delivery was cancelled while connecting: the failure says at which stage,
    /// with the host and address being tried.
    Cancelled(Failure, Arc<str>, SocketAddr),
}

/// Counts a worker out when it stops, however it stops (a panic too), unless
/// [`give_up`] already did.
struct Shift {
    batch: Arc<Batch>,
    counted_out: bool,
}

impl Drop for Shift {
    fn drop(&mut self) {
        if self.counted_out {
            return;
        }
        let mut state = self.batch.lock();
        state.workers -= 1;
        if state.workers == 0 {
            drop(state);
            self.batch.finished.notify_one();
        }
    }
}

/// One worker: takes jobs and sends each on its session until the queue is empty.
async fn work(batch: Arc<Batch>) {
    let mut shift = Shift {
        batch: batch.clone(),
        counted_out: false,
    };
    let client = batch.client.clone();
    let timeouts = batch.egress.timeouts;
    let most = match batch.route.max_messages_per_connection {
        0 => client.options.max_messages_per_connection,
        n => n.min(client.options.max_messages_per_connection),
    };
    let mut held: Option<Held> = None;
    // The job lined up behind the last transaction, and whether its envelope went out
    // (behind the final dot, on `held`).
    let mut chained: Option<(Job, bool)> = None;
    loop {
        let (job, lined_up, envelope_sent) = match chained.take() {
            Some((job, sent)) => (job, true, sent),
            None => match batch.next().await {
                Some(job) => (job, false, false),
                None => break,
            },
        };
        let started = Instant::now();
        if batch.cancel.is_cancelled() {
            // A chained envelope went out, unanswered, on a session now cut.
            let stage = if envelope_sent {
                Stage::Mail
            } else {
                Stage::Connect
            };
            batch.finish(
                job.index,
                with_message_id(outcomes::cancelled_before_sending(stage), &job),
            );
            continue;
        }
        // A lined-up job may own the held session's next transaction: it always goes.
        let dead = batch.lock().dead.clone().filter(|_| !lined_up);
        if let Some(dead) = dead {
            batch.finish(job.index, with_message_id(dead, &job));
            continue;
        }
        let mut stale_retries = 0;
        loop {
            let mut h = match held.take() {
                Some(h) => h,
                None => match connect(&batch).await {
                    Ok(h) => {
                        ramp_up(&batch);
                        h
                    }
                    Err(NoSession::Cancelled(failure, mx, address)) => {
                        let outcome = outcomes::of_failure(&failure, Some(&mx), Some(address));
                        let mut outcome = with_message_id(outcome, &job);
                        outcome.elapsed_ms = millis(started);
                        batch.finish(job.index, outcome);
                        break;
                    }
                    Err(why) => {
                        if give_up(&batch, job, why, started) {
                            shift.counted_out = true;
                            return;
                        }
                        break;
                    }
                },
            };
            // Line up the following message to chain behind this one, when the
            // connection will still take it.
            let next = if h.session.caps.pipelining && h.session.transactions + 2 <= most {
                batch.try_next()
            } else {
                None
            };
            let transaction = h
                .session
                .transact(
                    &job.message(),
                    next.as_ref().map(Job::message).as_ref(),
                    &timeouts,
                )
                .await;
            if transaction.stale && stale_retries < 2 {
                stale_retries += 1;
                drop_session(&batch, h);
                if let Some(next) = next {
                    batch.hand_back(next);
                }
                continue;
            }
            let outcome = outcome(&transaction, &h.session, started, &job);
            batch.finish(job.index, outcome);
            if batch.cancel.is_cancelled() {
                // Cut, or about to be: never kept, never pooled.
                drop_session(&batch, h);
            } else if transaction.reusable && h.session.transactions < most {
                held = Some(h);
            } else if transaction.reusable {
                batch.forget_live(h.session.address);
                h.session.idle_timeout = batch.egress.idle_timeout;
                client.pool.release(h.session, h.permit, most);
            } else {
                drop_session(&batch, h);
            }
            // The lined-up message is this worker's next, chained or not: on a new
            // connection when this one is gone (nothing of it was accepted there).
            chained = next.map(|job| (job, transaction.chained));
            break;
        }
    }
    if let Some(mut h) = held {
        if batch.cancel.is_cancelled() {
            drop_session(&batch, h);
        } else {
            batch.forget_live(h.session.address);
            h.session.idle_timeout = batch.egress.idle_timeout;
            client.pool.release(h.session, h.permit, most);
        }
    }
}

/// Starts the other workers, once, when the first session of the batch is up.
fn ramp_up(batch: &Arc<Batch>) {
    let extra = {
        let mut state = batch.lock();
        if state.ramped {
            return;
        }
        state.ramped = true;
        let extra = batch.workers_wanted.saturating_sub(1);
        state.workers += extra;
        extra
    };
    for _ in 0..extra {
        tokio::spawn(work(batch.clone()));
    }
}

impl Batch {
    fn forget_live(&self, address: SocketAddr) {
        let mut state = self.lock();
        if let Some(n) = state.live.get_mut(&address) {
            *n = n.saturating_sub(1);
        }
    }
}

/// Drops a session that cannot go on (closing its socket) and its place in the pool.
fn drop_session(batch: &Batch, h: Held) {
    batch.forget_live(h.session.address);
    drop(h);
}

/// A worker without a session: hands the job back and stops if others still work,
/// else declares the route dead and fails the job. True when the worker must stop.
fn give_up(batch: &Batch, job: Job, why: NoSession, started: Instant) -> bool {
    let mut state = batch.lock();
    if state.workers > 1 {
        state.workers -= 1;
        state.queue.push_front(job);
        drop(state);
        batch.work.notify_one();
        return true;
    }
    let dead = match (&why, &state.last_failure) {
        (_, Some((failure, mx, address))) => {
            outcomes::of_failure(failure, Some(mx), Some(*address))
        }
        (_, None) => outcomes::without_reply(
            "transient",
            OutcomeKind::Unreachable,
            Stage::Connect,
            "the route has no address to connect to".into(),
        ),
    };
    state.dead = Some(dead.clone());
    let mut outcome = with_message_id(dead, &job);
    outcome.elapsed_ms = millis(started);
    settle(&mut state, batch.progress.as_ref(), job.index, outcome);
    false
}

/// A session from the pool or a new one, trying hosts in order and each host's
/// addresses in order, skipping addresses that failed earlier in the batch and those
/// of the other IP version than the batch's source.
async fn connect(batch: &Batch) -> Result<Held, NoSession> {
    let client = &batch.client;
    let egress = &batch.egress;
    let mut other_version = None;
    for (mx, addresses) in &batch.route.hosts {
        for &address in addresses {
            if batch.lock().failed.contains(&address) {
                continue;
            }
            if egress
                .source
                .is_some_and(|s| s.is_ipv4() != address.is_ipv4())
            {
                other_version = Some((mx, address));
                continue;
            }
            // Waiting for a place under the connection limit, or for a token of the
            // route's connection rates, is cut by a cancel too.
            let key = client.key(address, egress);
            let limit = batch.connection_limit;
            let rates = &batch.route.connection_rates;
            let acquired = batch
                .cancel
                .run_until_cancelled(client.pool.acquire(&key, limit, rates))
                .await;
            let permit = match acquired {
                None => {
                    let failure = Failure::new(Stage::Connect, ClientError::Cancelled);
                    return Err(NoSession::Cancelled(failure, mx.clone(), address));
                }
                Some(Lease::Reuse(mut session, permit)) => {
                    session.watch(&batch.cancel);
                    *batch.lock().live.entry(address).or_default() += 1;
                    return Ok(Held {
                        session: *session,
                        permit,
                    });
                }
                Some(Lease::Open(permit)) => permit,
            };
            match client.open(mx, address, egress, &batch.cancel).await {
                Ok(session) => {
                    *batch.lock().live.entry(address).or_default() += 1;
                    return Ok(Held { session, permit });
                }
                Err(failure) if matches!(failure.error, ClientError::Cancelled) => {
                    // Not the address's fault: it is not marked failed.
                    return Err(NoSession::Cancelled(failure, mx.clone(), address));
                }
                Err(failure) => {
                    drop(permit);
                    let mut state = batch.lock();
                    if state.live.get(&address).copied().unwrap_or(0) > 0 {
                        return Err(NoSession::Busy);
                    }
                    // A source the host cannot use fails every address alike.
                    let source_unusable = matches!(failure.error, ClientError::Source { .. });
                    state.failed.insert(address);
                    state.last_failure = Some((failure, mx.clone(), address));
                    if source_unusable {
                        return Err(NoSession::Exhausted);
                    }
                }
            }
        }
    }
    if let (Some((mx, address)), Some(source)) = (other_version, egress.source) {
        // Only addresses of the other IP version were left: say so, not "no address".
        let mut state = batch.lock();
        if state.last_failure.is_none() {
            let error = ClientError::Source {
                address: source,
                problem: format!(
                    "cannot reach {} (nor any address of the route): not the same IP version",
                    address.ip()
                ),
            };
            state.last_failure = Some((Failure::new(Stage::Connect, error), mx.clone(), address));
        }
    }
    Err(NoSession::Exhausted)
}

/// Stores a recipient's outcome and reports it; the first outcome of a recipient is
/// the one that counts.
fn settle(state: &mut State, progress: Option<&Progress>, index: usize, outcome: Outcome) {
    if state.outcomes[index].is_some() {
        return;
    }
    if let Some(progress) = progress {
        // A receiver that is gone (the caller stopped listening) loses nothing: the
        // outcomes are also returned whole at the end.
        let _ = progress.send((index, outcome.clone()));
    }
    state.outcomes[index] = Some(outcome);
}

/// The recipient's outcome from how its transaction ended.
fn outcome(transaction: &Transaction, session: &Session, started: Instant, job: &Job) -> Outcome {
    let mut outcome = outcomes::of_transaction(transaction, session);
    outcome.elapsed_ms = millis(started);
    with_message_id(outcome, job)
}

fn with_message_id(mut outcome: Outcome, job: &Job) -> Outcome {
    outcome.message_id = Some(job.message_id.clone());
    outcome
}

fn millis(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}
