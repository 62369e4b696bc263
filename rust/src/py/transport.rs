//! The PyO3 glue of the SMTP transport: `Transport(options)`, `deliver`, `start`, `abort` and `close`, and the streaming `Delivery`, as asyncio awaitables on the tokio runtime.

use std::borrow::Cow;
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::Duration;

use pyo3::prelude::*;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinError;
use tokio_util::sync::CancellationToken;

use super::{decode, error, now_or_clock, PyCompiledCampaign};
use crate::render::{CompiledCampaign, Now};
use crate::smtp::{deliver, Client, ClientOptions, Destination};
use crate::wire::{Outcome, Recipient, Route, SmtpOptions};

/// How long `Delivery.next` waits for more outcomes after the first: it bounds how
/// much later than its reply a delivery reaches the spool.
const COALESCE: Duration = Duration::from_millis(5);
/// Most outcomes handed over at once.
const COALESCE_MOST: usize = 512;

/// One transport: checked options, TLS configurations and a connection pool.
#[pyclass(frozen, module = "ferrymail._core", name = "Transport")]
pub struct PyTransport {
    client: Arc<Client>,
    /// The parent of every delivery's token; `abort` cancels it and puts a new one in
    /// its place, so that deliveries started afterwards run.
    deliveries: SyncMutex<CancellationToken>,
}

impl PyTransport {
    /// A token for a new delivery: cancelled by its own `cancel` or by `abort`.
    fn delivery_token(&self) -> CancellationToken {
        let parent = self.deliveries.lock().unwrap_or_else(|e| e.into_inner());
        parent.child_token()
    }
}

#[pymethods]
impl PyTransport {
    /// Takes a MessagePack `SmtpOptions`; a bad option raises `ferrymail.ConfigError`.
    #[new]
    fn new(py: Python<'_>, options: &[u8]) -> PyResult<Self> {
        let wire: SmtpOptions = decode(py, "SmtpOptions", options)?;
        let options = ClientOptions::from_wire(&wire).map_err(|e| error(py, "ConfigError", e))?;
        // The tokio runtime starts at the first transport, not at import: a runtime
        // does not survive fork(), and importing must stay cheap.
        let runtime = pyo3_async_runtimes::tokio::get_runtime();
        let client = py
            .detach(|| {
                let _entered = runtime.enter();
                Client::new(options)
            })
            .map_err(|e| error(py, "ConfigError", e))?;
        Ok(Self {
            client: Arc::new(client),
            deliveries: SyncMutex::new(CancellationToken::new()),
        })
    }

    /// Renders and delivers a MessagePack array of `Recipient`s along a MessagePack
    /// `Route`; the awaitable gives a MessagePack array of `Outcome`s, in order. The
    /// work is a detached tokio task: cancelling the await does not cut an SMTP
    /// transaction in half, it only drops the result (`abort` cuts it).
    /// `envelope_ids`: the recipients' spool row ids, one each, which a VERP campaign
    /// seals into their envelope senders; without them every message has the plain
    /// sender.
    #[pyo3(signature = (campaign, recipients, route, now_ms = None, envelope_ids = None))]
    fn deliver<'py>(
        &self,
        py: Python<'py>,
        campaign: &PyCompiledCampaign,
        recipients: &[u8],
        route: &[u8],
        now_ms: Option<i64>,
        envelope_ids: Option<Vec<u64>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (campaign, recipients, destination, now) = batch(
            py,
            &self.client,
            campaign,
            recipients,
            route,
            now_ms,
            envelope_ids,
        )?;
        let client = self.client.clone();
        let cancel = self.delivery_token();
        let task = pyo3_async_runtimes::tokio::get_runtime().spawn(async move {
            let outcomes =
                deliver(client, campaign, recipients, destination, now, None, cancel).await;
            rmp_serde::to_vec(&outcomes).map_err(|e| format!("encoding outcomes: {e}"))
        });
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let encoded = task
                .await
                .map_err(|e| task_failed("the delivery task", e))?
                .map_err(internal_error)?;
            Ok(Cow::<'static, [u8]>::Owned(encoded))
        })
    }

    /// Like `deliver`, but returns at once a `Delivery` whose `next()` gives outcomes
    /// as they happen: the engine records each delivery moments after its reply. A task
    /// that fails ends the stream early; the caller fills in what is missing.
    #[pyo3(signature = (campaign, recipients, route, now_ms = None, envelope_ids = None))]
    fn start(
        &self,
        py: Python<'_>,
        campaign: &PyCompiledCampaign,
        recipients: &[u8],
        route: &[u8],
        now_ms: Option<i64>,
        envelope_ids: Option<Vec<u64>>,
    ) -> PyResult<PyDelivery> {
        let (campaign, recipients, destination, now) = batch(
            py,
            &self.client,
            campaign,
            recipients,
            route,
            now_ms,
            envelope_ids,
        )?;
        let client = self.client.clone();
        let cancel = self.delivery_token();
        let (progress, outcomes) = mpsc::unbounded_channel();
        let token = cancel.clone();
        pyo3_async_runtimes::tokio::get_runtime().spawn(async move {
            deliver(
                client,
                campaign,
                recipients,
                destination,
                now,
                Some(progress),
                token,
            )
            .await;
        });
        Ok(PyDelivery {
            outcomes: Arc::new(Mutex::new(outcomes)),
            cancel,
        })
    }

    /// Cuts every delivery of this transport in progress, as `Delivery.cancel` cuts
    /// one; deliveries started afterwards are not affected. Returns at once; idle
    /// pooled connections stay (`close` ends them).
    fn abort(&self) {
        let mut parent = self.deliveries.lock().unwrap_or_else(|e| e.into_inner());
        parent.cancel();
        *parent = CancellationToken::new();
    }

    /// The SMTP connections open now, as (busy, idle): busy ones in a delivery (or
    /// being opened, or saying QUIT), idle ones kept for reuse.
    fn connections(&self) -> (usize, usize) {
        let counts = self.client.pool.connections();
        (counts.busy, counts.idle)
    }

    /// Sends QUIT on every idle connection and closes it; connections in use close
    /// when their batch ends. The awaitable completes when the QUITs are done.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let client = self.client.clone();
        let task = pyo3_async_runtimes::tokio::get_runtime()
            .spawn(async move { client.pool.close().await });
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            task.await.map_err(|e| task_failed("closing the pool", e))?;
            Ok(())
        })
    }
}

/// Decodes a batch's recipients and route (an MX address that is not an IP is a
/// `ConfigError`, bytes that are not the wire structs a `WireError`; bad egress
/// settings become the recipients' outcomes), gives each recipient its spool row id
/// when there are ids, and fixes the Date of its messages.
fn batch(
    py: Python<'_>,
    client: &Client,
    campaign: &PyCompiledCampaign,
    recipients: &[u8],
    route: &[u8],
    now_ms: Option<i64>,
    envelope_ids: Option<Vec<u64>>,
) -> PyResult<(Arc<CompiledCampaign>, Vec<Recipient>, Destination, Now)> {
    let route: Route = decode(py, "Route", route)?;
    let destination =
        Destination::from_wire(&route, client).map_err(|e| error(py, "ConfigError", e))?;
    let mut recipients: Vec<Recipient> = py
        .detach(|| rmp_serde::from_slice(recipients))
        .map_err(|e| error(py, "WireError", format!("recipients: {e}")))?;
    if let Some(ids) = envelope_ids {
        if ids.len() != recipients.len() {
            return Err(error(
                py,
                "WireError",
                format!(
                    "envelope_ids: {} ids for {} recipients (one each)",
                    ids.len(),
                    recipients.len()
                ),
            ));
        }
        for (recipient, id) in recipients.iter_mut().zip(ids) {
            recipient.envelope_id = Some(id);
        }
    }
    let now = Now::at(now_or_clock(now_ms).div_euclid(1000));
    Ok((campaign.inner.clone(), recipients, destination, now))
}

/// A batch being delivered: its outcomes as they come.
#[pyclass(frozen, module = "ferrymail._core", name = "Delivery")]
pub struct PyDelivery {
    outcomes: Arc<Mutex<mpsc::UnboundedReceiver<(usize, Outcome)>>>,
    cancel: CancellationToken,
}

#[pymethods]
impl PyDelivery {
    /// Cuts the delivery: returns at once, and `next()` then gives, within moments, a
    /// transient outcome of kind "cancelled" for every recipient not yet finished
    /// (at the stage it was cut; at "dot" it may have been delivered), then None.
    /// Outcomes already known stay as they are. Cut connections are never pooled.
    fn cancel(&self) {
        self.cancel.cancel();
    }

    /// An awaitable of the outcomes that are ready, at least one, as a MessagePack
    /// array of `[index, Outcome]` pairs; None once every outcome has been given.
    fn next<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let outcomes = self.outcomes.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let mut outcomes = outcomes.lock().await;
            let Some(first) = outcomes.recv().await else {
                return Ok(None);
            };
            // Gather what comes in the next few milliseconds too: each handover costs
            // the engine a Python round and a spool write, and at a few thousand
            // messages a second outcomes would otherwise come one or two at a time.
            let mut ready = vec![first];
            let deadline = tokio::time::Instant::now() + COALESCE;
            while ready.len() < COALESCE_MOST {
                match tokio::time::timeout_at(deadline, outcomes.recv()).await {
                    Ok(Some(more)) => ready.push(more),
                    Ok(None) | Err(_) => break,
                }
            }
            let encoded = rmp_serde::to_vec(&ready)
                .map_err(|e| internal_error(format!("encoding outcomes: {e}")))?;
            Ok(Some(Cow::<'static, [u8]>::Owned(encoded)))
        })
    }
}

/// A tokio task of ours that failed (it panicked): `ferrymail.InternalError`, with the
/// panic's message.
fn task_failed(what: &str, e: JoinError) -> PyErr {
    let why = if e.is_panic() {
        let panic = e.into_panic();
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        format!("panicked: {message}")
    } else {
        "was cancelled".into()
    };
    internal_error(format!("{what} {why}"))
}

/// `ferrymail.InternalError` (a bug in ferrymail, never in the input) from a thread
/// that may not hold the GIL.
fn internal_error(message: String) -> PyErr {
    Python::attach(|py| error(py, "InternalError", format!("internal error: {message}")))
}

/// Runs a tokio task that panics with `message`, and maps its failure as a delivery
/// task's is mapped: the test of that mapping, since no input makes a delivery panic.
#[pyfunction]
#[pyo3(name = "_failing_task")]
pub fn failing_task<'py>(py: Python<'py>, message: String) -> PyResult<Bound<'py, PyAny>> {
    let task = pyo3_async_runtimes::tokio::get_runtime().spawn(async move {
        if !message.is_empty() {
            panic!("{message}");
        }
    });
    pyo3_async_runtimes::tokio::future_into_py(py, async move {
        task.await
            .map_err(|e| task_failed("the delivery task", e))?;
        Ok(())
    })
}
