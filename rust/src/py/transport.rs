//! The PyO3 glue of the SMTP transport: `Transport(options)`, `deliver` and `close` as asyncio awaitables on the tokio runtime.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tokio::sync::{mpsc, Mutex};

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
        })
    }

    /// Renders and delivers a MessagePack array of `Recipient`s along a MessagePack
    /// `Route`; the awaitable gives a MessagePack array of `Outcome`s, in order. The
    /// work is a detached tokio task: cancelling the await does not cut an SMTP
    /// transaction in half, it only drops the result.
    #[pyo3(signature = (campaign, recipients, route, now_ms = None))]
    fn deliver<'py>(
        &self,
        py: Python<'py>,
        campaign: &PyCompiledCampaign,
        recipients: &[u8],
        route: &[u8],
        now_ms: Option<i64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (campaign, recipients, destination, now) =
            batch(py, campaign, recipients, route, now_ms)?;
        let client = self.client.clone();
        let task = pyo3_async_runtimes::tokio::get_runtime().spawn(async move {
            let outcomes = deliver(client, campaign, recipients, destination, now, None).await;
            rmp_serde::to_vec(&outcomes).map_err(|e| e.to_string())
        });
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let encoded = task
                .await
                .map_err(|e| PyRuntimeError::new_err(format!("delivery task failed: {e}")))?
                .map_err(|e| PyRuntimeError::new_err(format!("encoding outcomes: {e}")))?;
            Ok(Cow::<'static, [u8]>::Owned(encoded))
        })
    }

    /// Like `deliver`, but returns at once a `Delivery` whose `next()` gives outcomes
    /// as they happen: the engine records each delivery moments after its reply.
    #[pyo3(signature = (campaign, recipients, route, now_ms = None))]
    fn start(
        &self,
        py: Python<'_>,
        campaign: &PyCompiledCampaign,
        recipients: &[u8],
        route: &[u8],
        now_ms: Option<i64>,
    ) -> PyResult<PyDelivery> {
        let (campaign, recipients, destination, now) =
            batch(py, campaign, recipients, route, now_ms)?;
        let client = self.client.clone();
        let (progress, outcomes) = mpsc::unbounded_channel();
        pyo3_async_runtimes::tokio::get_runtime().spawn(async move {
            deliver(
                client,
                campaign,
                recipients,
                destination,
                now,
                Some(progress),
            )
            .await;
        });
        Ok(PyDelivery {
            outcomes: Arc::new(Mutex::new(outcomes)),
        })
    }

    /// Sends QUIT on every idle connection and closes it; connections in use close
    /// when their batch ends. The awaitable completes when the QUITs are done.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let client = self.client.clone();
        let task = pyo3_async_runtimes::tokio::get_runtime()
            .spawn(async move { client.pool.close().await });
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            task.await
                .map_err(|e| PyRuntimeError::new_err(format!("closing failed: {e}")))?;
            Ok(())
        })
    }
}

/// Decodes a batch's recipients and route (a bad route is a `ConfigError`, bytes that
/// are not the wire structs a `WireError`) and fixes the Date of its messages.
fn batch(
    py: Python<'_>,
    campaign: &PyCompiledCampaign,
    recipients: &[u8],
    route: &[u8],
    now_ms: Option<i64>,
) -> PyResult<(Arc<CompiledCampaign>, Vec<Recipient>, Destination, Now)> {
    let route: Route = decode(py, "Route", route)?;
    let destination = Destination::from_wire(&route).map_err(|e| error(py, "ConfigError", e))?;
    let recipients: Vec<Recipient> = py
        .detach(|| rmp_serde::from_slice(recipients))
        .map_err(|e| error(py, "WireError", format!("recipients: {e}")))?;
    let now = Now::at(now_or_clock(now_ms).div_euclid(1000));
    Ok((campaign.inner.clone(), recipients, destination, now))
}

/// A batch being delivered: its outcomes as they come.
#[pyclass(frozen, module = "ferrymail._core", name = "Delivery")]
pub struct PyDelivery {
    outcomes: Arc<Mutex<mpsc::UnboundedReceiver<(usize, Outcome)>>>,
}

#[pymethods]
impl PyDelivery {
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
                .map_err(|e| PyRuntimeError::new_err(format!("encoding outcomes: {e}")))?;
            Ok(Some(Cow::<'static, [u8]>::Owned(encoded)))
        })
    }
}
