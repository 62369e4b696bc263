//! Python's way into VERP tokens: `ferrymail.verp.open_token` and `seal_token` call these.

use pyo3::prelude::*;

use crate::render::verp::VerpSealer;

/// The spool row id `token` names under the first of `secrets` that opens it, or None
/// when none does (malformed, tampered, or sealed with a secret not given): the inbound
/// listener then matches the bounce another way, so a refusal is data, not an error.
#[pyfunction]
pub fn open_verp_token(py: Python<'_>, token: &str, secrets: Vec<Vec<u8>>) -> Option<u64> {
    py.detach(|| {
        secrets
            .iter()
            .find_map(|secret| VerpSealer::new(secret).open(token).ok())
    })
}

/// The token that names spool row `row_id` under `secret`, as the renderer writes it.
#[pyfunction]
pub fn seal_verp_token(row_id: u64, secret: &[u8]) -> String {
    VerpSealer::new(secret).token(row_id)
}
