//! Renders a dumped campaign and recipient batch in pure Rust, for profilers
//! (`valgrind --tool=callgrind`, `perf`): `cargo run --release --example render_profile
//! -- SPEC.msgpack RECIPIENTS.msgpack [REPEAT]`. bench/render.py --dump writes the files.

use std::time::Instant;

use _core::render::{render_batch, CompiledCampaign, Now};
use _core::wire::{CampaignSpec, Recipient};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: render_profile SPEC.msgpack RECIPIENTS.msgpack [REPEAT]");
        std::process::exit(2);
    }
    let spec: CampaignSpec =
        rmp_serde::from_slice(&std::fs::read(&args[1]).expect("spec file")).expect("spec");
    let recipients: Vec<Recipient> =
        rmp_serde::from_slice(&std::fs::read(&args[2]).expect("recipients file"))
            .expect("recipients");
    let repeat: usize = args
        .get(3)
        .map_or(1, |r| r.parse().expect("REPEAT is a number"));
    let campaign = CompiledCampaign::compile(&spec).expect("campaign compiles");
    let now = Now::at(1_795_936_322);
    let started = Instant::now();
    let mut bytes = 0;
    for _ in 0..repeat {
        for outcome in render_batch(&campaign, &recipients, &now, 1) {
            bytes += outcome.data.map_or(0, |d| d.len());
        }
    }
    let n = recipients.len() * repeat;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{n} messages, {bytes} bytes, {:.2} µs/message",
        secs * 1e6 / n as f64
    );
}
