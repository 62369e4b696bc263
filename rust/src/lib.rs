//! ferrymail's Rust core: the renderer (render/), the SMTP client (smtp/), and the thin PyO3 module (py/).

pub mod error;
pub mod py;
pub mod render;
pub mod smtp;
pub mod wire;

use pyo3::prelude::*;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The extension module `ferrymail._core`: the whole surface Python sees.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<py::PyCompiledCampaign>()?;
    m.add_class::<py::PyTransport>()?;
    m.add_class::<py::PyDelivery>()?;
    m.add_function(wrap_pyfunction!(py::check_addresses, m)?)?;
    m.add_function(wrap_pyfunction!(py::compile_campaign, m)?)?;
    m.add_function(wrap_pyfunction!(py::open_token, m)?)?;
    m.add_function(wrap_pyfunction!(py::open_verp_token, m)?)?;
    m.add_function(wrap_pyfunction!(py::seal_verp_token, m)?)?;
    m.add_function(wrap_pyfunction!(py::render, m)?)?;
    m.add_function(wrap_pyfunction!(py::wire_roundtrip, m)?)?;
    m.add_function(wrap_pyfunction!(py::failing_task, m)?)?;
    Ok(())
}
