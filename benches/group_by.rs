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
//! `group_by_states/f64/...`: the keyed partial states a distributed
//! group-by ships (sum and max of float64 values by 2^33-apart int64 keys
//! over an index, 8 chunks, rows / 20 keys): `per-key-states` makes one
//! `State` a key and kind and serialises each, `state-columns` one
//! `StateColumns` a chunk (both kinds from one pass) as one buffer; the
//! `merge-` rows read the 8 chunks' bytes back and merge them by key.
//! `Throughput::Bytes` counts the values (and keys) of the rows behind
//! the states.
//!
//! `cargo bench --bench group_by`; `cargo test --benches` runs each
//! benchmark once on a small input. `gpulanes bench` has the float32 rows
//! from host memory beside the whole-buffer sum.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gpulanes::{
    Element, Engine, GroupIndex, Grouped, NanPolicy, Op, State, StateColumns, StateKind,
};

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

/// Chunks of the states benchmark.
const CHUNKS: usize = 8;

/// A chunk's keys and the bytes of each key's sum and max states.
type PerKey = (Vec<i64>, Vec<Vec<u8>>, Vec<Vec<u8>>);

/// The per-key states of one chunk, one `State` a key and kind, each
/// serialised.
fn per_key_states(engine: &Engine, index: &GroupIndex<'_, i64>, values: &[f64]) -> PerKey {
    let sums = engine
        .states_by_index(index, values, StateKind::Sum)
        .unwrap();
    let maxes = engine
        .states_by_index(index, values, StateKind::Max)
        .unwrap();
    let bytes = |s: &[State]| s.iter().map(State::to_bytes).collect::<Vec<_>>();
    (sums.keys, bytes(&sums.states), bytes(&maxes.states))
}

/// Merges chunks' per-key state bytes by key (as a merge task receives
/// them): the distinct keys and one merged state a key and kind.
fn merge_per_key(parts: &[PerKey]) -> (Vec<i64>, Vec<State>, Vec<State>) {
    let mut entries: Vec<(i64, usize, usize)> = parts
        .iter()
        .enumerate()
        .flat_map(|(p, (k, _, _))| k.iter().enumerate().map(move |(i, &key)| (key, p, i)))
        .collect();
    entries.sort_unstable();
    let (mut keys, mut sums, mut maxes) = (Vec::new(), Vec::<State>::new(), Vec::<State>::new());
    for run in entries.chunk_by(|a, b| a.0 == b.0) {
        let read = |kind: usize, (_, p, i): (i64, usize, usize)| {
            let part = &parts[p];
            State::from_bytes(if kind == 0 { &part.1[i] } else { &part.2[i] }).unwrap()
        };
        let mut s = read(0, run[0]);
        let mut m = read(1, run[0]);
        for &e in &run[1..] {
            s.merge(&read(0, e)).unwrap();
            m.merge(&read(1, e)).unwrap();
        }
        keys.push(run[0].0);
        sums.push(s);
        maxes.push(m);
    }
    (keys, sums, maxes)
}

fn states(c: &mut Criterion) {
    let (engine, software) = common::engine("group_by_states");
    let threads = common::threads();
    let n = rows(software) as usize;
    let values = data::random_f64(n, SEED ^ 0x57A7, threads);
    let cardinality = (n / 20).max(1) as u64;
    let keys: Vec<i64> = data::random_u32(n, SEED ^ cardinality, threads)
        .into_iter()
        .map(|x| sparse_key(((x as u64 * cardinality) >> 32) as i32))
        .collect();
    let kinds = [StateKind::Sum, StateKind::Max];
    let cuts: Vec<usize> = (0..=CHUNKS).map(|c| n * c / CHUNKS).collect();
    let indexes: Vec<GroupIndex<'_, i64>> = cuts
        .windows(2)
        .map(|w| engine.group_index(&keys[w[0]..w[1]]).unwrap())
        .collect();
    let chunk = |c: usize| &values[cuts[c]..cuts[c + 1]];
    // Both forms hold the same states, and merge to the same.
    let per_key: Vec<_> = (0..CHUNKS)
        .map(|c| per_key_states(&engine, &indexes[c], chunk(c)))
        .collect();
    let columns: Vec<(Vec<i64>, Vec<u8>)> = (0..CHUNKS)
        .map(|c| {
            let g = engine
                .state_columns_by_index(&indexes[c], chunk(c), &kinds)
                .unwrap();
            (g.keys, g.states.to_bytes())
        })
        .collect();
    let read_columns = |parts: &[(Vec<i64>, Vec<u8>)]| {
        let states: Vec<StateColumns> = parts
            .iter()
            .map(|(_, b)| StateColumns::from_bytes(b).unwrap())
            .collect();
        let refs: Vec<(&[i64], &StateColumns)> = parts
            .iter()
            .zip(&states)
            .map(|((k, _), s)| (&k[..], s))
            .collect();
        StateColumns::merge_by_key(&refs).unwrap()
    };
    let (keys_a, sums, maxes) = merge_per_key(&per_key);
    let (keys_b, merged) = read_columns(&columns);
    assert_eq!(keys_a, keys_b, "merged keys");
    for (g, (s, m)) in sums.iter().zip(&maxes).enumerate() {
        assert_eq!(
            &merged.state(g, StateKind::Sum).unwrap(),
            s,
            "merged sum of group {g}"
        );
        assert_eq!(
            &merged.state(g, StateKind::Max).unwrap(),
            m,
            "merged max of group {g}"
        );
    }
    let mut group = c.benchmark_group("group_by_states/f64");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(if software { 4 } else { 2 }))
        .throughput(Throughput::Bytes((n * (8 + 8)) as u64));
    let label = size::label(n as u64);
    group.bench_function(BenchmarkId::new("per-key-states", &label), |b| {
        b.iter(|| {
            black_box(
                (0..CHUNKS)
                    .map(|c| per_key_states(&engine, &indexes[c], chunk(c)))
                    .collect::<Vec<_>>(),
            )
        })
    });
    group.bench_function(BenchmarkId::new("state-columns", &label), |b| {
        b.iter(|| {
            black_box(
                (0..CHUNKS)
                    .map(|c| {
                        engine
                            .state_columns_by_index(&indexes[c], chunk(c), &kinds)
                            .unwrap()
                            .states
                            .to_bytes()
                    })
                    .collect::<Vec<_>>(),
            )
        })
    });
    group.bench_function(BenchmarkId::new("merge-per-key-states", &label), |b| {
        b.iter(|| black_box(merge_per_key(&per_key)))
    });
    group.bench_function(BenchmarkId::new("merge-state-columns", &label), |b| {
        b.iter(|| black_box(read_columns(&columns)))
    });
    group.finish();
}

criterion_group!(benches, group_by, states);
criterion_main!(benches);
