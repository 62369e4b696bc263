//! Writes every rendered message of a dumped batch to one file, so that two builds of
//! the renderer can be compared byte for byte: `cargo run --release --example
//! render_dump -- SPEC.msgpack RECIPIENTS.msgpack OUT`. bench/render.py --dump writes
//! the inputs; the time is fixed, so the same code gives the same bytes.

use std::io::Write;

use _core::render::{render_batch, CompiledCampaign, Now};
use _core::wire::{CampaignSpec, Recipient};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: render_dump SPEC.msgpack RECIPIENTS.msgpack OUT");
        std::process::exit(2);
    }
    let spec: CampaignSpec =
        rmp_serde::from_slice(&std::fs::read(&args[1]).expect("spec file")).expect("spec");
    let recipients: Vec<Recipient> =
        rmp_serde::from_slice(&std::fs::read(&args[2]).expect("recipients file"))
            .expect("recipients");
    let campaign = CompiledCampaign::compile(&spec).expect("campaign compiles");
    let now = Now::at(1_795_936_322);
    let mut out = std::io::BufWriter::new(std::fs::File::create(&args[3]).expect("out file"));
    // Each outcome as: its fields, then the message, then a separator line, so that a
    // diff of two dumps points at the recipient that differs.
    for (r, o) in recipients
        .iter()
        .zip(render_batch(&campaign, &recipients, &now, 1))
    {
        writeln!(
            out,
            "=== {} from={} rcpt={:?} id={:?} smtputf8={} error={:?}",
            r.address, o.envelope_from, o.rcpt_to, o.message_id, o.smtputf8, o.error
        )
        .expect("write");
        out.write_all(o.data.as_deref().unwrap_or_default())
            .expect("write");
    }
    out.flush().expect("write");
}
