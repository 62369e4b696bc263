//! Errors of the Rust core: campaign compile errors (raised to the caller) and per-recipient
//! render errors (returned as data, never raised).

use thiserror::Error;

/// Why a campaign could not be built. Python raises these as `ferrymail.TemplateError`
/// or `ferrymail.ConfigError` before anything is rendered or queued.
#[derive(Debug, Error)]
pub enum CompileError {
    #[error("template error in {part} at line {line}, column {column}: {message}")]
    Template {
        part: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{field}: {message}")]
    Config { field: String, message: String },
}

impl CompileError {
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        CompileError::Config {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Why one recipient's message could not be made. The renderer returns it in that
/// recipient's outcome; the other recipients of the batch are unaffected.
#[derive(Debug, Error, PartialEq)]
pub enum RenderError {
    #[error("invalid recipient address {address:?}: {reason}")]
    Address { address: String, reason: String },
    #[error("{part}: {message}")]
    Template { part: String, message: String },
    #[error("header injection: {header} contains {what} after rendering")]
    HeaderInjection { header: String, what: &'static str },
    #[error("{header}: {message}")]
    Header { header: String, message: String },
    #[error("vars: {0}")]
    Vars(String),
    #[error("internal error while rendering: {0}")]
    Internal(String),
}
