//! Python's way into the token reader: `ferrymail.tracking.verify` calls `open_token`.

use pyo3::prelude::*;

use super::error;
use crate::render::token::{ClaimedRecipient, TokenSealer};

/// What a token names: (kind, campaign, recipient, link, url).
type OpenedToken = (&'static str, String, Py<PyAny>, Option<u32>, Option<String>);

/// Opens `token` with the key derived from `secret`; raises `ferrymail.TokenError` for a
/// malformed, tampered or foreign token, or one of an unknown version.
#[pyfunction]
pub fn open_token(py: Python<'_>, token: &str, secret: &[u8]) -> PyResult<OpenedToken> {
    let claims = py
        .detach(|| TokenSealer::new(secret).open(token))
        .map_err(|e| error(py, "TokenError", e.to_string()))?;
    let recipient = match claims.recipient {
        ClaimedRecipient::Int(i) => i.into_pyobject(py)?.into_any().unbind(),
        ClaimedRecipient::UInt(u) => u.into_pyobject(py)?.into_any().unbind(),
        ClaimedRecipient::Text(s) => s.into_pyobject(py)?.into_any().unbind(),
    };
    Ok((
        claims.kind.name(),
        claims.campaign,
        recipient,
        claims.link,
        claims.url,
    ))
}
