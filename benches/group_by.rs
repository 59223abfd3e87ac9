//! Criterion: keyed reductions (sum, mean, max and count in one pass) of
//! float32 and float64 values by int32 keys uniform over 16, 1K, 64K and
//! 1M values, from host memory (`f32-host/1M`: upload, key planning and the
//! values' exponent scan included) and device-resident (`f32-device/1M`:
//! keys and values uploaded once; the device's scan of the values, where
//! the groups need it, included), and the same groups from host memory
//! under int64 keys 2^33 apart (`f32-host-sparse/1M`: named through
//! the host's dictionary of distinct keys; `f32-host-sparse-indexed/1M`:
//! those keys indexed once by `Engine::group_index`, so a row times what
//! each further value column grouped by them costs). `Throughput::Bytes`
//! counts the
//! keys and values read. Rows: 16M on a GPU, 4M on a software adapter, 64K
//! in test mode (`GPULANES_BENCH_ROWS` to choose;
//! `GPULANES_BENCH_CARDINALITIES`, a list like 16,1K,1M, for the key
//! counts). Values are uniform in
//! [-1, 1); every case is checked against the exact CPU reference before
//! it is timed.
//!
//! `cargo bench --bench group_by`; `cargo test --benches` runs each
//! benchmark once on a small input. `gpulanes bench` has the float32 rows
//! from host memory beside the whole-buffer sum.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gpulanes::{Element, Engine, Grouped, NanPolicy, Op, State, StateKind};

mod common;
use common::{check, data, size, test_mode};

const OPS: [Op; 4] = [Op::Sum, Op::Mean, Op::Max, Op::Count];
const SEED: u64 = 0x000C_0FFE_E6B7;

/// A size list from the environment (suffixes K, M), or `default`.
fn env_list(var: &str, default: Vec<u64>) -> Vec<u64> {
    match std::env::var(var) {
        Ok(list) => {
            size::parse_list(&list).unwrap_or_else(|e| panic!("{var}: a list like 16,1K,1M ({e})"))
        }
        Err(_) => default,
    }
}

fn rows(software: bool) -> u64 {
    let default = match (test_mode(), software) {
        (true, _) => 1 << 16,
        (false, true) => 4 << 20,
        (false, false) => 16 << 20,
    };
    env_list("GPULANES_BENCH_ROWS", vec![default])[0]
}

fn cardinalities() -> Vec<u64> {
    let default = if test_mode() {
        vec![16, 1 << 10]
    } else {
        vec![16, 1 << 10, 1 << 16, 1 << 20]
    };
    env_list("GPULANES_BENCH_CARDINALITIES", default)
}

/// Checks the engine's keyed reduction of `values` by `keys` (in
/// `0..cardinality`) against each group's exact CPU state; a benchmark of
/// wrong results is worthless.
fn check_keyed<E: Element>(got: &Grouped<i32>, keys: &[i32], values: &[E], cardinality: u64) {
    let mut groups: Vec<Vec<E>> = vec![Vec::new(); cardinality as usize];
    for (&k, &v) in keys.iter().zip(values) {
        groups[k as usize].push(v);
    }
    let present: Vec<(i32, &Vec<E>)> = groups
        .iter()
        .enumerate()
        .filter(|(_, g)| !g.is_empty())
        .map(|(k, g)| (k as i32, g))
        .collect();
    assert_eq!(
        got.keys,
        present.iter().map(|p| p.0).collect::<Vec<_>>(),
        "keys"
    );
    for r in &got.reductions {
        for (i, (k, group)) in present.iter().enumerate() {
            let s = State::of(group, StateKind::for_op(r.op));
            let want = s.finalize(r.op, NanPolicy::Propagate).unwrap();
            let same = match (r.values[i], want) {
                (Some(a), Some(b)) => check::same_value(a, b),
                (a, b) => a.is_none() && b.is_none(),
            };
            assert!(
                same,
                "{} of key {k}: {:?}, want {want:?}",
                r.op, r.values[i]
            );
            assert_eq!(
                r.counts[i],
                s.count(NanPolicy::Propagate),
                "count of key {k}"
            );
        }
    }
}

/// Key `k` spread out (in the same order) so far that the keys' range
/// exceeds what the kernel takes as group ids.
fn sparse_key(k: i32) -> i64 {
    ((k as i64) << 33) - (1 << 40)
}

/// The host and device-resident cases of one value type.
fn bench_dtype<E: Element>(
    c: &mut Criterion,
    engine: &Engine,
    software: bool,
    name: &str,
    values: &[E],
) {
    let n = values.len();
    let threads = common::threads();
    let mut group = c.benchmark_group(format!("group_by/{name}"));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(if software { 4 } else { 2 }));
    let device_values = engine.upload(values).expect("upload the values");
    for cardinality in cardinalities() {
        let keys: Vec<i32> = data::random_u32(n, SEED ^ cardinality, threads)
            .into_iter()
            .map(|x| ((x as u64 * cardinality) >> 32) as i32)
            .collect();
        let device_keys = engine.upload(&keys).expect("upload the keys");
        // The same groups under int64 keys too far apart to be used as
        // they are: named through the host's dictionary.
        let sparse: Vec<i64> = keys.iter().map(|&k| sparse_key(k)).collect();
        let from_host = engine
            .reduce_by_key(&keys, values, &OPS, NanPolicy::Propagate)
            .unwrap();
        check_keyed(&from_host, &keys, values, cardinality);
        let from_device = engine
            .reduce_by_key_device(&device_keys, &device_values, &OPS, NanPolicy::Propagate)
            .unwrap();
        assert_eq!(
            from_device.keys,
            from_host.keys.iter().map(|&k| k as i64).collect::<Vec<_>>()
        );
        assert_eq!(
            from_device.reductions, from_host.reductions,
            "device-resident, {cardinality} keys"
        );
        let from_sparse = engine
            .reduce_by_key(&sparse, values, &OPS, NanPolicy::Propagate)
            .unwrap();
        assert_eq!(
            from_sparse.keys,
            from_host
                .keys
                .iter()
                .map(|&k| sparse_key(k))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            from_sparse.reductions, from_host.reductions,
            "sparse int64 keys, {cardinality} keys"
        );
        let label = size::label(cardinality);
        group.throughput(Throughput::Bytes(
            (n * (4 + std::mem::size_of::<E>())) as u64,
        ));
        group.bench_function(BenchmarkId::new("host", &label), |b| {
            b.iter(|| {
                black_box(
                    engine
                        .reduce_by_key(&keys, values, &OPS, NanPolicy::Propagate)
                        .unwrap(),
                )
            })
        });
        group.throughput(Throughput::Bytes(
            (n * (8 + std::mem::size_of::<E>())) as u64,
        ));
        group.bench_function(BenchmarkId::new("host-sparse", &label), |b| {
            b.iter(|| {
                black_box(
                    engine
                        .reduce_by_key(&sparse, values, &OPS, NanPolicy::Propagate)
                        .unwrap(),
                )
            })
        });
        // The same sparse keys indexed once (`Engine::group_index`): what
        // each further value column grouped by them costs.
        let index = engine.group_index(&sparse).expect("index the sparse keys");
        let from_index = engine
            .reduce_by_index(&index, values, &OPS, NanPolicy::Propagate)
            .unwrap();
        assert_eq!(
            from_index, from_sparse,
            "indexed sparse keys, {cardinality} keys"
        );
        group.throughput(Throughput::Bytes(
            (n * (4 + std::mem::size_of::<E>())) as u64,
        ));
        group.bench_function(BenchmarkId::new("host-sparse-indexed", &label), |b| {
            b.iter(|| {
                black_box(
                    engine
                        .reduce_by_index(&index, values, &OPS, NanPolicy::Propagate)
                        .unwrap(),
                )
            })
        });
        group.bench_function(BenchmarkId::new("device", &label), |b| {
            b.iter(|| {
                black_box(
                    engine
                        .reduce_by_key_device(
                            &device_keys,
                            &device_values,
                            &OPS,
                            NanPolicy::Propagate,
                        )
                        .unwrap(),
                )
            })
        });
    }
    group.finish();
}

fn group_by(c: &mut Criterion) {
    let (engine, software) = common::engine("group_by");
    let threads = common::threads();
    let n = rows(software) as usize;
    bench_dtype(
        c,
        &engine,
        software,
        "f32",
        &data::random_f32(n, SEED, threads),
    );
    bench_dtype(
        c,
        &engine,
        software,
        "f64",
        &data::random_f64(n, SEED ^ 0xF64, threads),
    );
}

criterion_group!(benches, group_by);
criterion_main!(benches);
