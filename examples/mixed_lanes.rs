//! Two lanes on one GPU queue: a steady stream of small real-time requests
//! keeps its latency while a large batch job runs.
//! `cargo run --release --example mixed_lanes [--full]` (`--full` runs the
//! 3-second phases of `gpulanes mixed`; the default is a short run).

use std::sync::Arc;
use std::time::{Duration, Instant};

use gpulanes::{Engine, Lanes, LanesConfig, Op, Request};

fn main() -> Result<(), gpulanes::Error> {
    env_logger::init();
    let full = std::env::args().any(|a| a == "--full");
    let engine = Engine::new()?;
    let a = engine.adapter();
    println!(
        "adapter: {} ({}, {}{})",
        a.name,
        a.backend,
        a.device_type,
        if a.software { ", software" } else { "" }
    );
    let lanes = Lanes::new(&engine, LanesConfig::default())?;

    // A batch job: a big device-resident column, reduced in time-sliced chunks.
    let n = if full && !a.software {
        256 << 20
    } else {
        4 << 20
    };
    let column: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 0.001).collect();
    let array = Arc::new(engine.upload(&column)?);
    let batch = lanes.batch(Request::device(array, Op::Sum))?;

    // Meanwhile, real-time requests: 4096 values each, every millisecond.
    let window: Arc<[f32]> = (0..4096)
        .map(|i| (i % 17) as f32)
        .collect::<Vec<_>>()
        .into();
    let count = if full { 3000 } else { 200 };
    let mut latencies = Vec::new();
    for _ in 0..count {
        let t = Instant::now();
        let r = lanes
            .realtime(Request::host(window.clone(), Op::Max).timeout(Duration::from_secs(1)))?
            .wait()?;
        latencies.push(t.elapsed());
        assert_eq!(r.value(), Some(16.0));
        std::thread::sleep(Duration::from_millis(1));
    }
    let total = batch.wait()?.value().unwrap_or(0.0);
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!("batch sum of {n} values = {total}");
    println!(
        "{count} real-time requests while it ran: p50 {:?}, p99 {:?}, max {:?}",
        p(0.5),
        p(0.99),
        p(1.0)
    );
    let m = lanes.metrics();
    println!(
        "scheduler: {} real-time submits for {} requests, {} batch chunks (p50 {} KiB)",
        m.realtime.submits,
        m.realtime.completed,
        m.batch.submits,
        m.batch.chunk_bytes_p50 >> 10
    );
    Ok(())
}
