//! The per-recipient renderer: one campaign, many recipients, one unique message each.

pub mod address;
pub mod alignment;
pub mod batch;
pub mod campaign;
pub mod context;
pub mod dkim;
pub mod dkim_keys;
pub mod extra_headers;
pub mod headers;
pub mod link_plan;
pub mod links;
pub mod mime;
pub mod plain;
pub mod qp;
pub mod template;
#[cfg(test)]
mod testing;
pub mod text_plan;
pub mod token;
pub mod token_url;
pub mod verp;

pub use batch::render_batch;
pub use campaign::{CompiledCampaign, Now};
