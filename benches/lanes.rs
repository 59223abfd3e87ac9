//! Criterion: real-time request latency through the scheduler, alone and
//! while batch jobs keep the GPU busy. Small sample sizes so it finishes on
//! a software adapter; `cargo bench --bench lanes`.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gpulanes::{Engine, Lanes, LanesConfig, Op, Request};

fn realtime_latency(c: &mut Criterion) {
    let engine = Engine::new().expect("an adapter (run scripts/ensure-vulkan.sh)");
    let lanes = Arc::new(Lanes::new(&engine, LanesConfig::default()).expect("scheduler"));
    let batch_len = if engine.adapter().software {
        4 << 20
    } else {
        64 << 20
    };
    let column: Vec<f32> = (0..batch_len).map(|i| (i % 1000) as f32).collect();
    let array = Arc::new(engine.upload(&column).expect("upload"));
    let mut group = c.benchmark_group("realtime");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(300));
    for size in [1024usize, 4096, 65536] {
        let window: Arc<[f32]> = (0..size)
            .map(|i| (i % 13) as f32)
            .collect::<Vec<_>>()
            .into();
        group.throughput(Throughput::Bytes(size as u64 * 4));
        group.bench_with_input(BenchmarkId::new("sum/alone", size), &window, |b, w| {
            b.iter(|| {
                black_box(
                    lanes
                        .realtime(Request::host(w.clone(), Op::Sum))
                        .unwrap()
                        .wait()
                        .unwrap(),
                )
            })
        });
        // Keep two batch jobs queued for the whole measurement.
        let stop = Arc::new(AtomicBool::new(false));
        let load = {
            let (lanes, array, stop) = (lanes.clone(), array.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut pending = std::collections::VecDeque::new();
                while !stop.load(Ordering::Relaxed) {
                    pending.push_back(
                        lanes
                            .batch(Request::device(array.clone(), Op::Sum))
                            .unwrap(),
                    );
                    if pending.len() >= 2 {
                        pending.pop_front().unwrap().wait().unwrap();
                    }
                }
                for h in pending {
                    h.wait().unwrap();
                }
            })
        };
        group.bench_with_input(
            BenchmarkId::new("sum/under_batch_load", size),
            &window,
            |b, w| {
                b.iter(|| {
                    black_box(
                        lanes
                            .realtime(Request::host(w.clone(), Op::Sum))
                            .unwrap()
                            .wait()
                            .unwrap(),
                    )
                })
            },
        );
        stop.store(true, Ordering::Relaxed);
        load.join().unwrap();
    }
    group.finish();
}

criterion_group!(benches, realtime_latency);
criterion_main!(benches);
