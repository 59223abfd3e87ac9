//! The README's lanes snippet as a program: a fresh scheduler, one large
//! batch job, and at once a small real-time request with a 50 ms timeout,
//! which must be answered in time although it arrives during the
//! scheduler's first batch job. Prints both latencies.
//! `cargo run --release --example lanes_snippet`

use gpulanes::{Engine, Lanes, LanesConfig, Op, Request};
use std::{sync::Arc, time::Duration, time::Instant};

fn main() -> Result<(), gpulanes::Error> {
    env_logger::init();
    let engine = Engine::new()?;
    let lanes = Lanes::new(&engine, LanesConfig::default())?; // calibrates, warms the kernels
    let column = Arc::new(engine.upload(&vec![1.0f32; 1 << 24])?); // on the device when it returns
    let t = Instant::now();
    let job = lanes.batch(Request::device(column, Op::Sum))?; // big, chunked
    let tile = lanes
        .realtime(Request::host(vec![2.0f32; 4096], Op::Max).timeout(Duration::from_millis(50)))?; // small, first
    assert_eq!(tile.wait()?.value(), Some(2.0)); // or `.await`
    let tile_at = t.elapsed();
    assert_eq!(job.wait()?.value(), Some(16777216.0));
    let job_at = t.elapsed();
    println!("{:?}", lanes.metrics().realtime.latency); // p50/p99/p99.9
    println!(
        "real-time request answered {:.2} ms after the batch job was submitted; the job took {:.1} ms",
        tile_at.as_secs_f64() * 1e3,
        job_at.as_secs_f64() * 1e3
    );
    Ok(())
}
