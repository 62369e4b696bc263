//! The PyO3 glue: the only module that touches Python. Each function decodes
//! MessagePack, calls the pure-Rust core with the GIL released, encodes, maps errors.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::error::CompileError;
use crate::render::address::Mailbox;
use crate::render::{render_batch, CompiledCampaign, Now};
use crate::wire::{CampaignSpec, Recipient, RenderOutcome};

mod tokens;
mod transport;
mod verp;
pub use tokens::open_token;
pub use transport::{failing_task, PyDelivery, PyTransport};
pub use verp::{open_verp_token, seal_verp_token};

/// A compiled campaign, shared by every render and (later) every delivery of it.
#[pyclass(frozen, module = "ferrymail._core", name = "CompiledCampaign")]
pub struct PyCompiledCampaign {
    inner: Arc<CompiledCampaign>,
}

#[pymethods]
impl PyCompiledCampaign {
    /// True when the campaign has VERP: the engine's dispatcher then passes each
    /// batch's spool row ids to the transport (and only then).
    #[getter]
    fn verp(&self) -> bool {
        self.inner.has_verp()
    }
}

/// Compiles a MessagePack `CampaignSpec`; raises `ferrymail.TemplateError` or
/// `ferrymail.ConfigError` naming what is wrong.
#[pyfunction]
pub fn compile_campaign(py: Python<'_>, spec: &[u8]) -> PyResult<PyCompiledCampaign> {
    let spec: CampaignSpec = decode(py, "CampaignSpec", spec)?;
    let compiled = py
        .detach(|| CompiledCampaign::compile(&spec))
        .map_err(|e| compile_error(py, e))?;
    Ok(PyCompiledCampaign {
        inner: Arc::new(compiled),
    })
}

/// Renders a MessagePack array of `Recipient`s; returns a MessagePack array of
/// `RenderOutcome`s in the same order. `threads`: 1 = this thread, 0 = every core.
#[pyfunction]
#[pyo3(signature = (campaign, recipients, threads = 0, now_ms = None))]
pub fn render(
    py: Python<'_>,
    campaign: &PyCompiledCampaign,
    recipients: &[u8],
    threads: usize,
    now_ms: Option<i64>,
) -> PyResult<Py<PyBytes>> {
    let campaign = Arc::clone(&campaign.inner);
    let outcomes = py
        .detach(|| -> Result<Vec<RenderOutcome>, String> {
            let recipients: Vec<Recipient> =
                rmp_serde::from_slice(recipients).map_err(|e| format!("recipients: {e}"))?;
            let now_ms = now_or_clock(now_ms);
            Ok(render_batch(
                &campaign,
                &recipients,
                &Now::at(now_ms.div_euclid(1000)),
                threads,
            ))
        })
        .map_err(|e| error(py, "WireError", e))?;
    // Encode straight into the Python bytes object: one copy of the messages, not two.
    let mut counter = ByteCounter(0);
    rmp_serde::encode::write(&mut counter, &outcomes)
        .map_err(|e| error(py, "WireError", e.to_string()))?;
    let encoded = PyBytes::new_with(py, counter.0, |mut buf: &mut [u8]| {
        rmp_serde::encode::write(&mut buf, &outcomes)
            .map_err(|e| error(py, "WireError", e.to_string()))
    })?;
    py.detach(move || drop(outcomes));
    Ok(encoded.unbind())
}

/// Checks mailboxes as RCPT TO will need them (RFC 5321 syntax and lengths, IDN
/// domains to A-labels): for each, `(a_label_domain, None)` or `("", reason)`.
#[pyfunction]
pub fn check_addresses(py: Python<'_>, addresses: Vec<String>) -> Vec<(String, Option<String>)> {
    py.detach(|| {
        addresses
            .iter()
            .map(|a| match Mailbox::parse(a) {
                Ok(mailbox) => (mailbox.domain, None),
                Err(reason) => (String::new(), Some(reason)),
            })
            .collect()
    })
}

/// `now_ms`, or the clock's time in milliseconds since the epoch.
fn now_or_clock(now_ms: Option<i64>) -> i64 {
    now_ms.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    })
}

/// A writer that only counts, to size the output before encoding into it.
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Decodes `data` as the wire struct `kind` and encodes it again: the Python side's
/// conformance test checks that both sides agree byte for byte.
#[pyfunction]
pub fn wire_roundtrip(py: Python<'_>, kind: &str, data: &[u8]) -> PyResult<Py<PyBytes>> {
    fn again<T: serde::de::DeserializeOwned + serde::Serialize>(
        py: Python<'_>,
        kind: &str,
        data: &[u8],
    ) -> PyResult<Vec<u8>> {
        let value: T = decode(py, kind, data)?;
        rmp_serde::to_vec(&value).map_err(|e| error(py, "WireError", format!("{kind}: {e}")))
    }
    use crate::wire::*;
    let out = match kind {
        "CampaignSpec" => again::<CampaignSpec>(py, kind, data)?,
        "TrackingSpec" => again::<TrackingSpec>(py, kind, data)?,
        "UnsubscribeSpec" => again::<UnsubscribeSpec>(py, kind, data)?,
        "VerpSpec" => again::<VerpSpec>(py, kind, data)?,
        "DkimKeySpec" => again::<DkimKeySpec>(py, kind, data)?,
        "Recipient" => again::<Recipient>(py, kind, data)?,
        "RenderOutcome" => again::<RenderOutcome>(py, kind, data)?,
        "SmtpOptions" => again::<SmtpOptions>(py, kind, data)?,
        "SessionTimeouts" => again::<SessionTimeouts>(py, kind, data)?,
        "MxHost" => again::<MxHost>(py, kind, data)?,
        "ConnectionRate" => again::<ConnectionRate>(py, kind, data)?,
        "Route" => again::<Route>(py, kind, data)?,
        "Outcome" => again::<Outcome>(py, kind, data)?,
        _ => {
            return Err(error(
                py,
                "WireError",
                format!("unknown wire struct {kind:?}"),
            ))
        }
    };
    Ok(PyBytes::new(py, &out).unbind())
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    py: Python<'_>,
    kind: &str,
    data: &[u8],
) -> PyResult<T> {
    rmp_serde::from_slice(data).map_err(|e| error(py, "WireError", format!("{kind}: {e}")))
}

/// Builds an exception of the Python class `ferrymail.errors.<class>`: the hierarchy
/// lives in Python, where each class can also inherit the builtin it is.
pub(crate) fn error(py: Python<'_>, class: &str, message: impl Into<String>) -> PyErr {
    let message = message.into();
    let made = py
        .import("ferrymail.errors")
        .and_then(|m| m.getattr(class))
        .and_then(|cls| cls.call1((message.clone(),)));
    match made {
        Ok(exc) => PyErr::from_value(exc),
        Err(e) => e,
    }
}

fn compile_error(py: Python<'_>, e: CompileError) -> PyErr {
    let message = e.to_string();
    let made = py.import("ferrymail.errors").and_then(|m| match &e {
        CompileError::Template {
            part, line, column, ..
        } => m
            .getattr("TemplateError")?
            .call1((message.clone(), part.clone(), *line, *column)),
        CompileError::Config { field, .. } => m
            .getattr("ConfigError")?
            .call1((message.clone(), field.clone())),
    });
    match made {
        Ok(exc) => PyErr::from_value(exc),
        Err(e) => e,
    }
}
