//! Two lanes on one GPU queue: a steady stream of small real-time requests
//! keeps its latency while batch jobs keep the GPU busy, from a fresh
//! scheduler's first batch job on; then a keyed request (group-by) in each
//! lane.
//! `cargo run --release --example mixed_lanes [--full]` (`--full` runs
//! 3000 requests per phase and, on a GPU, 1 GiB batch jobs; the default is
//! a short run). `gpulanes mixed` measures the same more thoroughly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gpulanes::{Engine, Lane, Lanes, LanesConfig, NanPolicy, Op, Partitions, Request};

/// Real-time requests (4096 values each), one per millisecond, `count` of
/// them, or while `until` says to go on (at least one); their latencies,
/// sorted.
fn realtime_stream(
    lanes: &Lanes,
    count: usize,
    until: impl Fn() -> bool,
) -> Result<Vec<Duration>, gpulanes::Error> {
    let window: Arc<[f32]> = (0..4096)
        .map(|i| (i % 17) as f32)
        .collect::<Vec<_>>()
        .into();
    let mut latencies = Vec::with_capacity(count);
    while latencies.len() < count && (latencies.is_empty() || until()) {
        let t = Instant::now();
        let r = lanes
            .realtime(Request::host(window.clone(), Op::Max).timeout(Duration::from_secs(1)))?
            .wait()?;
        latencies.push(t.elapsed());
        assert_eq!(r.value(), Some(16.0));
        std::thread::sleep(Duration::from_millis(1));
    }
    latencies.sort();
    Ok(latencies)
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q) as usize]
}

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
    let count = if full { 3000 } else { 200 };
    let n = if full && !a.software {
        256 << 20
    } else {
        16 << 20
    };
    let column: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 0.001).collect();
    let array = Arc::new(engine.upload(&column)?);
    let alone = engine.reduce_device(&array, Op::Sum, &Partitions::Whole, NanPolicy::Propagate)?;
    let bits = |r: &gpulanes::Reduction| -> Vec<Option<u32>> {
        r.values.iter().map(|v| v.map(f32::to_bits)).collect()
    };
    let want = bits(&alone);

    // Phase 0, the cold start: a fresh scheduler (which calibrates itself
    // and warms its kernels in `Lanes::new`), its first batch job
    // submitted at once, and the stream while that job runs. Nothing here
    // was warmed up by an earlier request.
    let lanes = Arc::new(Lanes::new(&engine, LanesConfig::default())?);
    let first_job = lanes.batch(Request::device(array.clone(), Op::Sum))?;
    let cold = realtime_stream(&lanes, count, || !first_job.is_finished())?;
    assert_eq!(
        bits(&first_job.wait()?),
        want,
        "the first job's result differs"
    );

    // Phase 1: the real-time stream alone.
    let idle = realtime_stream(&lanes, count, || true)?;

    // Phase 2: the same stream while batch jobs over the big device-resident
    // column run back to back (two queued at a time), each reduced in
    // time-sliced chunks and checked against the same reduction run alone.
    let stop = Arc::new(AtomicBool::new(false));
    let batch_driver = {
        let (lanes, array, stop) = (lanes.clone(), array.clone(), stop.clone());
        std::thread::spawn(move || -> Result<u64, gpulanes::Error> {
            let mut queued = std::collections::VecDeque::new();
            let mut done = 0u64;
            while !stop.load(Ordering::Relaxed) || !queued.is_empty() {
                if !stop.load(Ordering::Relaxed) && queued.len() < 2 {
                    queued.push_back(lanes.batch(Request::device(array.clone(), Op::Sum))?);
                    continue;
                }
                let r = queued.pop_front().expect("one queued").wait()?;
                assert_eq!(bits(&r), want, "a chunked batch result differs");
                done += 1;
            }
            Ok(done)
        })
    };
    let started = Instant::now();
    let loaded = realtime_stream(&lanes, count, || true)?;
    stop.store(true, Ordering::Relaxed);
    let jobs = batch_driver.join().expect("batch driver")?;
    let seconds = started.elapsed().as_secs_f64();

    let ratio = quantile(&loaded, 0.99).as_secs_f64() / quantile(&idle, 0.99).as_secs_f64();
    println!(
        "{:>4} real-time requests during a fresh scheduler's first batch job: p50 {:?}, max {:?} ({:.2}x the idle p99)",
        cold.len(),
        quantile(&cold, 0.5),
        quantile(&cold, 1.0),
        quantile(&cold, 1.0).as_secs_f64() / quantile(&idle, 0.99).as_secs_f64()
    );
    println!(
        "{count:>4} real-time requests alone:          p50 {:?}, p99 {:?}",
        quantile(&idle, 0.5),
        quantile(&idle, 0.99)
    );
    println!(
        "{count:>4} real-time requests with batch jobs: p50 {:?}, p99 {:?} ({ratio:.2}x the idle p99)",
        quantile(&loaded, 0.5),
        quantile(&loaded, 0.99)
    );
    println!(
        "meanwhile {jobs} batch jobs of {n} values ({:.2} GB/s), each the same bits as alone (sum {})",
        (jobs * n as u64 * 4) as f64 / seconds / 1e9,
        alone.value().unwrap_or(0.0)
    );
    // Keyed requests (per-key totals) go through both lanes too, with the
    // bits of `reduce_by_key` run alone.
    let keys: Vec<i32> = (0..4096).map(|i| i % 13).collect();
    let values: Vec<f32> = (0..4096).map(|i| (i % 1000) as f32 * 0.001).collect();
    let ops = [Op::Sum, Op::Max, Op::Count];
    let keyed_alone = engine.reduce_by_key(&keys, &values, &ops, NanPolicy::Propagate)?;
    for lane in [Lane::RealTime, Lane::Batch] {
        let keyed = Request::keyed(keys.clone(), values.clone(), &ops, NanPolicy::Propagate);
        let grouped = lanes.submit(lane, keyed)?.wait()?;
        assert_eq!(grouped, keyed_alone, "a keyed {lane:?} result differs");
    }
    println!(
        "a keyed request ({} keys) in each lane: the same bits as alone",
        keyed_alone.len()
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
