//! Criterion: throughput of sum / mean / max over f32 buffers, device
//! resident (`sum/f32/16M`), from host memory with the upload included
//! (`sum/f32-host/16M`) and in equal partitions of 4096 elements
//! (`sum/f32-p4K/16M`). Sizes are bytes (16M = 16 MiB = 4 Mi floats);
//! `Throughput::Bytes` counts input bytes. Inputs are random, rotated over
//! several buffers, and every op is checked against the exact CPU reference
//! before it is timed.
//!
//! `cargo bench --bench reduce` (set `GPULANES_BENCH_SIZES=64K,1M` to choose
//! sizes); `cargo test --benches` runs each benchmark once on a small input.
//! Criterion times with the wall clock (submit to result); `gpulanes bench`
//! uses GPU timestamps and reports the bandwidth floors.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gpulanes::{DeviceArray, Engine, NanPolicy, Op, Partitions};

mod common;
use common::{check, data, size, test_mode};

const PARTITION: u64 = 4096;
const SEED: u64 = 0x005E_ED0F_BE7C;

fn sizes(software: bool) -> Vec<u64> {
    if let Ok(list) = std::env::var("GPULANES_BENCH_SIZES") {
        return size::parse_list(&list).expect("GPULANES_BENCH_SIZES: a list like 64K,1M,16M");
    }
    match (test_mode(), software) {
        (true, _) => vec![64 << 10],
        (false, true) => vec![64 << 10, 1 << 20, 16 << 20],
        (false, false) => vec![1 << 20, 16 << 20, 256 << 20],
    }
}

struct Inputs {
    bytes: u64,
    host: Vec<Vec<f32>>,
    device: Vec<DeviceArray>,
}

/// Checks `op` over every input (whole, in partitions, and from host
/// memory) against the exact reference; a benchmark of wrong results is
/// worthless.
fn check_op(engine: &Engine, inputs: &Inputs, op: Op) {
    for (i, (host, array)) in inputs.host.iter().zip(&inputs.device).enumerate() {
        for parts in [Partitions::Whole, Partitions::EqualSize(PARTITION)] {
            let want = check::reference(host, op, &parts).unwrap();
            let from_device = engine
                .reduce_device(array, op, &parts, NanPolicy::Propagate)
                .unwrap();
            let from_host = engine
                .reduce_partitions(host, op, &parts, NanPolicy::Propagate)
                .unwrap();
            for (source, got) in [("device", from_device), ("host", from_host)] {
                let c = check::compare(&got, &want);
                assert!(
                    c.pass(),
                    "{op} {} {parts:?} from {source}, input {i}: {}",
                    size::label(inputs.bytes),
                    c.first_bad.unwrap_or_default()
                );
            }
        }
    }
}

fn reduce(c: &mut Criterion) {
    let (engine, software) = common::engine("reduce");
    let threads = common::threads();
    let rotate_bytes: u64 = if software { 64 << 20 } else { 512 << 20 };
    let all: Vec<Inputs> = sizes(software)
        .into_iter()
        .map(|bytes| {
            let r = (rotate_bytes.div_ceil(bytes) as usize).clamp(2, 16);
            let host: Vec<Vec<f32>> = (0..r)
                .map(|i| {
                    data::random_f32(
                        (bytes / 4) as usize,
                        SEED ^ bytes ^ ((i as u64) << 40),
                        threads,
                    )
                })
                .collect();
            let device = host.iter().map(|h| engine.upload(h).unwrap()).collect();
            Inputs {
                bytes,
                host,
                device,
            }
        })
        .collect();
    for op in [Op::Sum, Op::Mean, Op::Max] {
        let mut group = c.benchmark_group(op.name());
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(if software { 3 } else { 2 }));
        for inputs in &all {
            check_op(&engine, inputs, op);
            let label = size::label(inputs.bytes);
            let r = inputs.device.len();
            group.throughput(Throughput::Bytes(inputs.bytes));
            group.bench_function(BenchmarkId::new("f32", &label), |b| {
                let mut k = 0;
                b.iter(|| {
                    k += 1;
                    black_box(
                        engine
                            .reduce_device(
                                &inputs.device[k % r],
                                op,
                                &Partitions::Whole,
                                NanPolicy::Propagate,
                            )
                            .unwrap(),
                    )
                })
            });
            group.bench_function(BenchmarkId::new("f32-host", &label), |b| {
                let mut k = 0;
                b.iter(|| {
                    k += 1;
                    black_box(
                        engine
                            .reduce_partitions(
                                &inputs.host[k % r],
                                op,
                                &Partitions::Whole,
                                NanPolicy::Propagate,
                            )
                            .unwrap(),
                    )
                })
            });
            group.bench_function(
                BenchmarkId::new(format!("f32-p{}", size::label(PARTITION)), &label),
                |b| {
                    let mut k = 0;
                    b.iter(|| {
                        k += 1;
                        black_box(
                            engine
                                .reduce_device(
                                    &inputs.device[k % r],
                                    op,
                                    &Partitions::EqualSize(PARTITION),
                                    NanPolicy::Propagate,
                                )
                                .unwrap(),
                        )
                    })
                },
            );
        }
        group.finish();
    }
}

criterion_group!(benches, reduce);
criterion_main!(benches);
