//! Keyed reductions (group-by) and small partitions against the exact CPU
//! reference (`State::of` per group, itself checked against an independent
//! exact reference in tests/exact.rs): random keys at many cardinalities,
//! sparse and extreme keys, every value dtype, NaN/inf/-0.0 per group under
//! both NaN policies, row permutations giving identical bits, windows and
//! chunks forced by tiny binding caps, every way rows reach their groups
//! and accumulate (with the limits of each), a property test over random
//! keys and values, and bad input.

mod common;

use std::collections::BTreeMap;

use common::{
    POLICIES, SplitMix, assert_grouped_same, engine, grouped_bits, keyed_reference, no_host_sort,
    no_subgroup_engine, reduction_bits, scalar_bits, small_binding_engine, tiny_engine,
    tiny_options, unsorted_engine,
};
use gpulanes::{
    Element, Engine, Error, Grouped, Key, NanPolicy, Op, Partitions, Scalar, State, StateKind,
};

const OPS: [Op; 5] = [Op::Sum, Op::Mean, Op::Max, Op::Min, Op::Count];

/// The CPU reference: rows grouped in a BTreeMap, each group's exact state.
fn reference<K: Key, E: Element>(
    keys: &[K],
    values: &[E],
    ops: &[Op],
    nan: NanPolicy,
) -> Grouped<K> {
    keyed_reference(keys, values, None, ops, nan)
}

fn check<K: Key + std::fmt::Debug, E: Element>(
    e: &Engine,
    what: &str,
    keys: &[K],
    values: &[E],
    nan: NanPolicy,
) -> Grouped<K> {
    let got = e
        .reduce_by_key(keys, values, &OPS, nan)
        .unwrap_or_else(|err| panic!("{what}: {err}"));
    let want = reference(keys, values, &OPS, nan);
    assert_grouped_same(what, &got, &want);
    got
}

/// [`check`] on `e`, and the same bits from `other`.
fn check_same_as<K: Key + std::fmt::Debug, E: Element>(
    e: &Engine,
    other: &Engine,
    what: &str,
    keys: &[K],
    values: &[E],
    nan: NanPolicy,
) {
    let got = check(e, what, keys, values, nan);
    let theirs = other.reduce_by_key(keys, values, &OPS, nan).unwrap();
    assert_eq!(reduction_bits(&got), reduction_bits(&theirs), "{what}");
}

fn shuffle<T>(rng: &mut SplitMix, v: &mut [T]) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i as u64 + 1) as usize);
    }
}

/// Values with wide exponents, cancellation, subnormals and specials.
fn adversarial_f32(rng: &mut SplitMix, n: usize, specials: bool) -> Vec<f32> {
    (0..n)
        .map(|_| match rng.below(40) {
            0 if specials => f32::NAN,
            1 if specials => f32::INFINITY,
            2 if specials => f32::NEG_INFINITY,
            3 => -0.0,
            4 => f32::from_bits(rng.below(0x80_0000) as u32), // subnormal
            5 => 3.0e38,
            6 => -3.0e38,
            _ => {
                let x = f32::from_bits(rng.next_u64() as u32);
                if x.is_finite() { x } else { 1.5 }
            }
        })
        .collect()
}

fn adversarial_f64(rng: &mut SplitMix, n: usize, specials: bool) -> Vec<f64> {
    (0..n)
        .map(|_| match rng.below(40) {
            0 if specials => f64::NAN,
            1 if specials => f64::INFINITY,
            2 if specials => f64::NEG_INFINITY,
            3 => -0.0,
            4 => f64::from_bits(rng.below(1 << 52)),
            5 => 1.7e308,
            6 => -1.7e308,
            _ => {
                let x = f64::from_bits(rng.next_u64());
                if x.is_finite() { x } else { -2.5 }
            }
        })
        .collect()
}

#[test]
fn random_keys_at_every_cardinality_match_the_reference() {
    let mut rng = SplitMix::new(7);
    let n = 100_000;
    for card in [1, 7, 1000, 65536, n / 2, n] {
        let keys: Vec<i32> = (0..n).map(|_| rng.below(card as u64) as i32).collect();
        let values = adversarial_f32(&mut rng, n, true);
        for (e, how) in [(engine(), "default"), (unsorted_engine(), "unsorted")] {
            for nan in POLICIES {
                let what = format!("f32, cardinality {card}, {how}");
                check(e, &what, &keys, &values, nan);
            }
        }
    }
}

#[test]
fn every_value_dtype_and_key_type() {
    let e = engine();
    let mut rng = SplitMix::new(11);
    let n = 20_011;
    let k32: Vec<i32> = (0..n).map(|_| rng.below(300) as i32 - 150).collect();
    let ku32: Vec<u32> = (0..n).map(|_| u32::MAX - rng.below(500) as u32).collect();
    let k64: Vec<i64> = (0..n).map(|_| rng.below(97) as i64 - (1 << 40)).collect();
    let f64s = adversarial_f64(&mut rng, n, true);
    let i32s: Vec<i32> = (0..n)
        .map(|_| match rng.below(4) {
            0 => i32::MIN,
            1 => i32::MAX,
            _ => rng.next_u64() as i32,
        })
        .collect();
    let u32s: Vec<u32> = (0..n).map(|_| rng.next_u64() as u32).collect();
    let i64s: Vec<i64> = (0..n).map(|_| (rng.next_u64() as i64) >> 12).collect();
    for nan in POLICIES {
        check(e, "f64 by int32", &k32, &f64s, nan);
        check(e, "f64 by int64", &k64, &f64s, nan);
        check(e, "int32 by uint32", &ku32, &i32s, nan);
        check(e, "uint32 by int64", &k64, &u32s, nan);
        check(e, "int64 by int32", &k32, &i64s, nan);
        check(
            e,
            "f32 by uint32",
            &ku32,
            &adversarial_f32(&mut rng, n, true),
            nan,
        );
    }
}

/// Rows put in group order on the host before the pass (forced here on
/// any adapter; CPU adapters do it by default for keys that change on most
/// rows): every key type, dense and sparse, against the reference, and the
/// same bits as the rows as given. (The sort's own order and its parallel
/// scatter are checked in src/keyed/sort.rs; 5M host rows in
/// `host_columns_larger_than_an_upload_staging_buffer` sort over several
/// threads on CPU adapters.)
#[test]
fn rows_sorted_on_the_host_match_the_reference() {
    use gpulanes::EngineOptions;
    use gpulanes::kernels::GroupStrategy;
    let sorted = Engine::with_options(
        EngineOptions::default().group_strategy(GroupStrategy::default().with_sort(true)),
    )
    .unwrap();
    let unsorted = unsorted_engine();
    let mut rng = SplitMix::new(19);
    let n = 20_011;
    for card in [2u64, 3000, n as u64] {
        // Dense int64 keys far from zero (group = key - min in 64 bits),
        // int32 keys around zero, uint32 keys at the top of their range,
        // and sparse int64 keys (through the dictionary).
        let k64: Vec<i64> = (0..n).map(|_| rng.below(card) as i64 - (1 << 45)).collect();
        let k32: Vec<i32> = (0..n).map(|_| rng.below(card) as i32 - 1000).collect();
        let ku32: Vec<u32> = (0..n).map(|_| u32::MAX - rng.below(card) as u32).collect();
        let sparse: Vec<i64> = (0..n)
            .map(|_| (rng.below(card) as i64).wrapping_mul(0x9E37_79B9_7F4A_7C15u64 as i64))
            .collect();
        let f32s = adversarial_f32(&mut rng, n, true);
        let f64s = adversarial_f64(&mut rng, n, true);
        let i64s: Vec<i64> = (0..n).map(|_| (rng.next_u64() as i64) >> 12).collect();
        for nan in POLICIES {
            let what = |s: &str| format!("sorted on the host, cardinality {card}, {s}, {nan:?}");
            check_same_as(&sorted, unsorted, &what("f32 by int64"), &k64, &f32s, nan);
            check(&sorted, &what("f64 by int32"), &k32, &f64s, nan);
            check(&sorted, &what("int64 by uint32"), &ku32, &i64s, nan);
            check_same_as(
                &sorted,
                unsorted,
                &what("f64 by sparse int64"),
                &sparse,
                &f64s,
                nan,
            );
        }
    }
}

#[test]
fn sparse_and_extreme_keys_use_the_dictionary_and_agree() {
    let e = engine();
    let mut rng = SplitMix::new(13);
    let n = 30_000;
    let pool: Vec<i64> = (0..5000)
        .map(|i| match i {
            0 => i64::MIN,
            1 => i64::MAX,
            2 => -1,
            3 => 0,
            _ => rng.next_u64() as i64,
        })
        .collect();
    let keys: Vec<i64> = (0..n)
        .map(|_| pool[rng.below(pool.len() as u64) as usize])
        .collect();
    let values = adversarial_f64(&mut rng, n, true);
    for nan in POLICIES {
        check(e, "sparse int64 keys", &keys, &values, nan);
    }
    let k32: Vec<i32> = (0..n)
        .map(|i| match i % 3 {
            0 => i32::MIN,
            1 => i32::MAX,
            _ => rng.next_u64() as i32,
        })
        .collect();
    let v32 = adversarial_f32(&mut rng, n, false);
    check(e, "int32 extremes", &k32, &v32, NanPolicy::Propagate);
    // Every row its own key, and one key for every row.
    let distinct: Vec<i64> = (0..n as i64).map(|i| i * 1_000_003 - (1 << 50)).collect();
    check(e, "all distinct", &distinct, &values, NanPolicy::Ignore);
    check(e, "one key", &vec![-5i64; n], &values, NanPolicy::Ignore);
}

#[test]
fn nan_inf_and_signed_zero_per_group() {
    let e = engine();
    let keys = [0i32, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 6, 6];
    let values = [
        f32::NAN,
        1.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -0.0,
        -0.0,
        -0.0,
        0.0,
        f32::NAN,
        f32::NAN,
        f32::INFINITY,
        1e-45,
        -1e-45,
    ];
    for nan in POLICIES {
        let g = check(e, "specials", &keys, &values, nan);
        assert_eq!(g.keys, vec![0, 1, 2, 3, 4, 5, 6]);
    }
    let g = e
        .reduce_by_key(&keys, &values, &[Op::Sum, Op::Count], NanPolicy::Ignore)
        .unwrap();
    let sum = g.get(Op::Sum).unwrap();
    assert_eq!(
        scalar_bits(sum.values[2]),
        scalar_bits(Some(Scalar::F32(-0.0))),
        "-0.0 + -0.0"
    );
    assert_eq!(
        scalar_bits(sum.values[3]),
        scalar_bits(Some(Scalar::F32(0.0))),
        "-0.0 + 0.0"
    );
    assert_eq!(
        g.get(Op::Count).unwrap().counts[4],
        0,
        "all-NaN group under Ignore"
    );
}

#[test]
fn row_order_does_not_change_a_bit() {
    let e = engine();
    let mut rng = SplitMix::new(17);
    let n = 50_000;
    let mut rows: Vec<(i32, f64)> = (0..n)
        .map(|_| (rng.below(40) as i32, adversarial_f64(&mut rng, 1, false)[0]))
        .collect();
    let run = |rows: &[(i32, f64)]| {
        let (k, v): (Vec<i32>, Vec<f64>) = rows.iter().copied().unzip();
        e.reduce_by_key(&k, &v, &OPS, NanPolicy::Propagate).unwrap()
    };
    let first = run(&rows);
    for _ in 0..3 {
        shuffle(&mut rng, &mut rows);
        assert_eq!(run(&rows).keys, first.keys);
        let again = run(&rows);
        for (a, b) in again.reductions.iter().zip(&first.reductions) {
            let ab: Vec<_> = a.values.iter().map(|v| scalar_bits(*v)).collect();
            let bb: Vec<_> = b.values.iter().map(|v| scalar_bits(*v)).collect();
            assert_eq!(ab, bb, "{} after a shuffle", a.op.name());
        }
    }
    // Sorted keys (long runs in one invocation) give the same bits too.
    rows.sort_by_key(|r| r.0);
    let sorted = run(&rows);
    assert_eq!(sorted.keys, first.keys);
    assert_eq!(reduction_bits(&sorted), reduction_bits(&first));
}

#[test]
fn windows_and_chunks_under_tiny_caps_agree() {
    // 64 KiB bindings: 528 float32 groups (124 bytes each) per window and
    // 16384 rows per chunk, so these cases take several of each; the
    // workgroup shape runs 256 invocations over contiguous runs of rows.
    let mut rng = SplitMix::new(19);
    let n = 40_000;
    let keys: Vec<u32> = (0..n).map(|_| rng.below(3000) as u32).collect();
    let values = adversarial_f32(&mut rng, n, true);
    // The tiny-caps engine again without host sorting: rows one by one
    // across chunks and windows on CPU adapters too.
    let tiny_unsorted = Engine::with_options(no_host_sort(tiny_options())).unwrap();
    for e in [
        tiny_engine(),
        &tiny_unsorted,
        small_binding_engine(),
        no_subgroup_engine(),
    ] {
        for nan in POLICIES {
            check(e, "tiny caps f32", &keys, &values, nan);
        }
        let v64 = adversarial_f64(&mut rng, n, true);
        check(e, "tiny caps f64", &keys, &v64, NanPolicy::Propagate);
        // Sparse keys: ids in key order, several windows of them.
        let sparse: Vec<i64> = keys.iter().map(|&k| ((k as i64) << 33) - 7).collect();
        check(e, "tiny caps sparse", &sparse, &values, NanPolicy::Ignore);
    }
}

/// Rows sorted by group read only their window's rows: under the tiny
/// caps (64 KiB bindings: a few hundred groups a window, a few thousand
/// rows a chunk) windows start and end inside chunks, at rows the binding alignment does not
/// divide, and dense keys with wide gaps leave windows with no rows at
/// all. Against the reference, and bit for bit against the same caps
/// without sorting.
#[test]
fn sorted_rows_read_only_their_windows_rows() {
    let sorting = Engine::with_options(
        tiny_options().group_strategy(gpulanes::kernels::GroupStrategy::default().with_sort(true)),
    )
    .unwrap();
    let unsorted = Engine::with_options(no_host_sort(tiny_options())).unwrap();
    let mut rng = SplitMix::new(29);
    let n = 50_003;
    // Dense keys in three clusters with gaps of many windows between.
    let gapped: Vec<i32> = (0..n)
        .map(|_| match rng.below(3) {
            0 => rng.below(700) as i32 - 350,
            1 => 9_000 + rng.below(1500) as i32,
            _ => 40_000 + rng.below(30) as i32,
        })
        .collect();
    // Every row its own group (rows one by one after the sort), and sparse
    // int64 keys through the dictionary.
    let distinct: Vec<i64> = (0..n as i64).map(|i| (i * 7919) % n as i64 - 1).collect();
    let sparse: Vec<i64> = (0..n)
        .map(|_| (rng.below(5000) as i64).wrapping_mul(0x2545_F491_4F6C_DD1D))
        .collect();
    // Sparse keys nearly all distinct: the dictionary sorts them.
    let sparse_distinct: Vec<i64> = (0..n)
        .map(|_| (rng.below(4 * n as u64) as i64).wrapping_mul(0x2545_F491_4F6C_DD1D))
        .collect();
    let f32s = adversarial_f32(&mut rng, n, true);
    let f64s = adversarial_f64(&mut rng, n, true);
    for nan in POLICIES {
        let what = |s: &str| format!("sorted rows, windows inside chunks, {s}, {nan:?}");
        let cases = [
            ("sparse distinct int64 keys", &sparse_distinct, &f64s),
            ("distinct int64 keys", &distinct, &f64s),
        ];
        for (name, keys, values) in cases {
            check_same_as(&sorting, &unsorted, &what(name), keys, values, nan);
        }
        check_same_as(
            &sorting,
            &unsorted,
            &what("gapped int32 keys"),
            &gapped,
            &f32s,
            nan,
        );
        check_same_as(
            &sorting,
            &unsorted,
            &what("sparse int64 keys"),
            &sparse,
            &f32s,
            nan,
        );
    }
}

#[test]
fn few_keys_on_the_workgroup_shape_agree() {
    // The 256-wide shape accumulates up to a few hundred keyed groups in
    // workgroup memory first, 256 invocations to a workgroup: every dtype,
    // both NaN policies, cardinalities inside and just past what one
    // workgroup holds.
    let e = no_subgroup_engine();
    let mut rng = SplitMix::new(23);
    let n = 30_011;
    for card in [1u64, 7, 200, 400] {
        let keys: Vec<i32> = (0..n).map(|_| rng.below(card) as i32 - 3).collect();
        let f32s = adversarial_f32(&mut rng, n, true);
        let f64s = adversarial_f64(&mut rng, n, true);
        let i64s: Vec<i64> = (0..n).map(|_| (rng.next_u64() as i64) >> 9).collect();
        let i32s: Vec<i32> = (0..n).map(|_| rng.next_u64() as i32).collect();
        for nan in POLICIES {
            check(e, &format!("f32, {card} keys"), &keys, &f32s, nan);
            check(e, &format!("f64, {card} keys"), &keys, &f64s, nan);
        }
        check(
            e,
            &format!("i64, {card} keys"),
            &keys,
            &i64s,
            NanPolicy::Propagate,
        );
        check(
            e,
            &format!("i32, {card} keys"),
            &keys,
            &i32s,
            NanPolicy::Propagate,
        );
    }
}

#[test]
fn rows_one_by_one_and_run_by_run_agree_on_every_accumulation() {
    // The same rows in random order (keys change on most rows: added one by
    // one), sorted (long runs) and in pairs (runs of two): cardinalities in
    // compact, private and global accumulation, on both shapes.
    let mut rng = SplitMix::new(29);
    let n = 70_001;
    for e in [engine(), unsorted_engine(), no_subgroup_engine()] {
        for card in [3u64, 250, 1000, 1100, 5000] {
            let keys: Vec<i32> = (0..n).map(|_| rng.below(card) as i32).collect();
            let f32s = adversarial_f32(&mut rng, n, true);
            let i32s: Vec<i32> = (0..n).map(|_| rng.next_u64() as i32).collect();
            let random = check(
                e,
                &format!("f32 random, {card} keys"),
                &keys,
                &f32s,
                NanPolicy::Propagate,
            );
            check(
                e,
                &format!("i32 random, {card} keys"),
                &keys,
                &i32s,
                NanPolicy::Propagate,
            );
            let mut rows: Vec<(i32, f32)> =
                keys.iter().copied().zip(f32s.iter().copied()).collect();
            rows.sort_by_key(|r| r.0);
            let (k, v): (Vec<i32>, Vec<f32>) = rows.iter().copied().unzip();
            let sorted = check(
                e,
                &format!("f32 sorted, {card} keys"),
                &k,
                &v,
                NanPolicy::Propagate,
            );
            assert_eq!(
                reduction_bits(&sorted),
                reduction_bits(&random),
                "sorted, {card} keys"
            );
            // Keys in pairs: runs of two.
            let paired: Vec<i32> = keys
                .iter()
                .map(|&k| k & !1)
                .flat_map(|k| [k, k])
                .take(n)
                .collect();
            check(
                e,
                &format!("f32 pairs, {card} keys"),
                &paired,
                &f32s,
                NanPolicy::Ignore,
            );
        }
    }
}

#[test]
fn signed_zero_sums_with_rows_added_one_by_one() {
    // Random keys over enough groups for global accumulation: a group whose
    // values cancel sums to +0.0, one of -0.0 only to -0.0, and +0.0 with
    // -0.0 to +0.0, in every accumulation.
    let e = unsorted_engine();
    let mut rng = SplitMix::new(31);
    for card in [5u64, 600, 3000] {
        let n = 40_000;
        let keys: Vec<i32> = (0..n).map(|_| rng.below(card) as i32).collect();
        let pick = |k: i32, r: u64| -> f64 {
            match k % 4 {
                0 => (if r.is_multiple_of(2) { 1.5 } else { -1.5 }) * (1 << (r % 5)) as f64,
                1 => -0.0,
                2 if r.is_multiple_of(2) => 0.0,
                2 => -0.0,
                _ => (r % 7) as f64 - 3.0,
            }
        };
        // Cancelling groups get equal numbers of each sign: row i's value
        // pairs with row i's twin below.
        let mut f64s: Vec<f64> = keys.iter().map(|&k| pick(k, rng.next_u64())).collect();
        let mut twin_keys = keys.clone();
        twin_keys.extend(keys.iter().copied());
        let twins: Vec<f64> = keys
            .iter()
            .zip(&f64s)
            .map(|(&k, &v)| if k % 4 == 0 { -v } else { v })
            .collect();
        f64s.extend(twins);
        let f32s: Vec<f32> = f64s.iter().map(|&v| v as f32).collect();
        let sums = check(
            e,
            &format!("f32, {card} keys"),
            &twin_keys,
            &f32s,
            NanPolicy::Propagate,
        );
        check(
            e,
            &format!("f64, {card} keys"),
            &twin_keys,
            &f64s,
            NanPolicy::Propagate,
        );
        let zeros = sums.reductions[0]
            .values
            .iter()
            .zip(&sums.keys)
            .filter(|(v, k)| *k % 4 == 0 && matches!(v, Some(Scalar::F32(x)) if x.to_bits() == 0))
            .count();
        assert!(zeros > 0, "{card} keys: some cancelling group sums to +0.0");
    }
}

#[test]
fn host_columns_larger_than_an_upload_staging_buffer() {
    // Over 16 MiB of keys and of values: host columns go through the
    // upload ring in several staging chunks. Random keys over many groups:
    // rows added one by one to the global accumulators (GPUs, and CPU
    // adapters without the host sort), or sorted on the host over several
    // threads first (CPU adapters by default).
    let mut rng = SplitMix::new(41);
    let n = (5 << 20) + 3;
    let keys: Vec<i32> = (0..n).map(|_| rng.below(300_000) as i32 - 1000).collect();
    let values = adversarial_f32(&mut rng, n, true);
    for e in [engine(), unsorted_engine()] {
        for nan in POLICIES {
            check(e, "5M host rows", &keys, &values, nan);
        }
    }
}

#[test]
fn random_keys_going_run_by_run_over_many_rows() {
    // Keys in a buffer without COPY_SRC are not sampled and go run by run;
    // random ones end a run on nearly every row, the most loop iterations
    // an invocation runs (CPU drivers stop an invocation after a fixed
    // number of them, which would drop rows). Few groups: private
    // accumulation.
    use gpulanes::wgpu::util::DeviceExt;
    let e = engine();
    let mut rng = SplitMix::new(37);
    let n = (1 << 22) + 4; // whole 16-byte words, as from_buffer asks
    let keys: Vec<i32> = (0..n).map(|_| rng.below(200) as i32).collect();
    let values = adversarial_f32(&mut rng, n, false);
    let buffer = e
        .device()
        .create_buffer_init(&gpulanes::wgpu::util::BufferInitDescriptor {
            label: Some("keys without COPY_SRC"),
            contents: bytemuck::cast_slice(&keys),
            usage: gpulanes::wgpu::BufferUsages::STORAGE,
        });
    let dk = gpulanes::DeviceArray::from_buffer(e, buffer, gpulanes::Dtype::I32, n as u64).unwrap();
    let dv = e.upload(&values).unwrap();
    let dev = e
        .reduce_by_key_device(&dk, &dv, &OPS, NanPolicy::Propagate)
        .unwrap();
    let want = reference(&keys, &values, &OPS, NanPolicy::Propagate);
    assert_eq!(
        dev.keys,
        want.keys.iter().map(|&k| k as i64).collect::<Vec<_>>()
    );
    assert_eq!(
        reduction_bits(&dev),
        reduction_bits(&want),
        "run by run, {n} rows"
    );
}

#[test]
fn compact_sums_at_their_window_limits_and_past_them() {
    // Rows added one by one into few groups: compact accumulation. Each
    // invocation's first rows are small and set their group's window; the
    // other rows lie at the top of the window (where a workgroup's sum
    // comes within a factor of two of what it may hold; one binade more
    // overflows it), past it, or under it.
    let e = unsorted_engine();
    // Enough rows that every workgroup takes as many rows as it may.
    let n = (1 << 21) + 5;
    // Two keys in the pattern 0, 0, 1: two rows in three change key (rows
    // one by one), and key 0 takes two thirds of a workgroup's rows.
    let keys: Vec<u32> = (0..n).map(|i| (i % 3 == 2) as u32).collect();
    // Binades above the first value's: the window's top (the most a
    // workgroup's sum may hold, for the 8-wide shape) and past it, where a
    // window taking them would overflow.
    let mut cases: Vec<(String, f32, f32)> = [15, 16, 18]
        .into_iter()
        .map(|b| {
            let v = (2.0f32).powi(b + 1) * (1.0 - f32::EPSILON);
            (format!("2^{b} above"), 1.0, v)
        })
        .collect();
    let v = (2.0f32).powi(16) * (1.0 - f32::EPSILON);
    cases.push(("2^15 above, negative".into(), -1.0, -v));
    cases.push(("far above the window".into(), 1.0, 1.0e9));
    cases.push(("under the window".into(), 1.0e6, 3.0e-3));
    for (what, first, rest) in cases {
        let what = what.as_str();
        let values: Vec<f32> = (0..n)
            .map(|i| if i % 256 < 3 { first } else { rest })
            .collect();
        check(e, what, &keys, &values, NanPolicy::Propagate);
        let mixed: Vec<f32> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| if i % 7 == 3 { -v } else { v })
            .collect();
        check(
            e,
            &format!("{what}, mixed signs"),
            &keys,
            &mixed,
            NanPolicy::Propagate,
        );
    }
    // float64 (private accumulation in the global layout) over as many
    // rows per workgroup.
    let f64s: Vec<f64> = (0..n).map(|i| (i % 1000) as f64 * 0.001 - 0.4).collect();
    check(e, "float64, private", &keys, &f64s, NanPolicy::Propagate);
    // int32 values at their extremes.
    let ints: Vec<i32> = (0..n)
        .map(|i| if i % 3 == 0 { i32::MIN } else { i32::MAX })
        .collect();
    check(e, "int32 extremes", &keys, &ints, NanPolicy::Propagate);
    let uints = vec![u32::MAX; n];
    check(e, "uint32 extremes", &keys, &uints, NanPolicy::Propagate);
}

#[test]
fn empty_input_and_bad_input() {
    let e = engine();
    let g = e
        .reduce_by_key::<i32, f32>(&[], &[], &OPS, NanPolicy::Propagate)
        .unwrap();
    assert!(g.is_empty());
    assert_eq!(g.reductions.len(), OPS.len());
    match e.reduce_by_key(&[1i32, 2], &[1.0f32], &OPS, NanPolicy::Propagate) {
        Err(Error::InvalidInput(m)) => assert!(m.contains("2 keys, 1 values"), "{m}"),
        other => panic!("length mismatch must be InvalidInput, got {other:?}"),
    }
    assert!(matches!(
        e.reduce_by_key(&[1i32], &[1.0f32], &[], NanPolicy::Propagate),
        Err(Error::InvalidInput(_))
    ));
    // An int64 group sum outside int64 is an error, not a wrapped value.
    let r = e.reduce_by_key(&[1i32, 1], &[i64::MAX, 1], &[Op::Sum], NanPolicy::Propagate);
    assert!(matches!(r, Err(Error::Overflow(_))), "{r:?}");
    // ... also where a window's groups are finished on several threads (on
    // a host with several cores) and the group that overflows is the last
    // of the last thread's range.
    let groups = 40_000i32;
    let mut keys: Vec<i32> = (0..groups).collect();
    let mut values = vec![1i64; groups as usize];
    values[groups as usize - 1] = i64::MAX;
    keys.push(groups - 1);
    values.push(1);
    let r = e.reduce_by_key(&keys, &values, &[Op::Count, Op::Sum], NanPolicy::Propagate);
    assert!(matches!(r, Err(Error::Overflow(_))), "{r:?}");
    // Without the overflowing row every group is there.
    let g = e
        .reduce_by_key(
            &keys[..groups as usize],
            &values[..groups as usize],
            &[Op::Sum],
            NanPolicy::Propagate,
        )
        .unwrap();
    assert_eq!(g.keys, (0..groups).collect::<Vec<_>>());
    assert_eq!(
        g.reductions[0].values[groups as usize - 1],
        Some(Scalar::I64(i64::MAX))
    );
    assert_eq!(g.reductions[0].values[0], Some(Scalar::I64(1)));
}

#[test]
fn states_by_key_merge_across_splits_to_the_whole() {
    let e = engine();
    let mut rng = SplitMix::new(23);
    let n = 30_000;
    let keys: Vec<i64> = (0..n).map(|_| rng.below(50) as i64).collect();
    let values = adversarial_f32(&mut rng, n, true);
    for kind in [StateKind::Sum, StateKind::Max, StateKind::Min] {
        let whole = e.states_by_key(&keys, &values, kind).unwrap();
        let a = e
            .states_by_key(&keys[..n / 3], &values[..n / 3], kind)
            .unwrap();
        let b = e
            .states_by_key(&keys[n / 3..], &values[n / 3..], kind)
            .unwrap();
        let mut merged: BTreeMap<i64, State> = BTreeMap::new();
        for part in [a, b] {
            for (k, s) in part.keys.into_iter().zip(part.states) {
                match merged.get_mut(&k) {
                    Some(m) => m.merge(&s).unwrap(),
                    None => {
                        merged.insert(k, s);
                    }
                }
            }
        }
        assert_eq!(merged.keys().copied().collect::<Vec<_>>(), whole.keys);
        for (s, w) in merged.values().zip(&whole.states) {
            assert_eq!(s.to_bytes(), w.to_bytes(), "{kind:?}");
        }
    }
}

/// Partitions of sizes 0, 1, 2, 31, 32, 33, 64, 255, 256, 257 mixed in one
/// offsets array, and equal sizes around the small-partition rule, agree
/// with the CPU on every dtype (single values: 37,240 partitions, whose
/// results the host writes on several threads where it has several cores).
#[test]
fn small_and_mixed_partitions_match_the_cpu() {
    let mut rng = SplitMix::new(29);
    let sizes = [0u64, 1, 2, 31, 32, 33, 64, 255, 256, 257];
    let mut offsets = vec![0u64];
    for _ in 0..40 {
        for &s in &sizes {
            offsets.push(offsets.last().unwrap() + s);
        }
    }
    let n = *offsets.last().unwrap() as usize;
    let f32s = adversarial_f32(&mut rng, n, true);
    let f64s = adversarial_f64(&mut rng, n, true);
    let i64s: Vec<i64> = (0..n).map(|_| rng.next_u64() as i64 >> 8).collect();
    for e in [engine(), tiny_engine(), no_subgroup_engine()] {
        for parts in [
            Partitions::Offsets(offsets.clone()),
            Partitions::EqualSize(1),
            Partitions::EqualSize(3),
            Partitions::EqualSize(64),
            Partitions::EqualSize(1023),
        ] {
            for nan in POLICIES {
                for op in OPS {
                    let want = gpulanes::cpu::reduce(&f32s, op, &parts, nan).unwrap();
                    let got = e.reduce_slice(&f32s, op, &parts, nan).unwrap();
                    assert_eq!(got.counts, want.counts);
                    let gb: Vec<_> = got.values.iter().map(|v| scalar_bits(*v)).collect();
                    let wb: Vec<_> = want.values.iter().map(|v| scalar_bits(*v)).collect();
                    assert_eq!(gb, wb, "f32 {op:?} {parts:?}");
                    for (what, got, want) in [
                        (
                            "f64",
                            e.reduce_slice(&f64s, op, &parts, nan),
                            gpulanes::cpu::reduce(&f64s, op, &parts, nan),
                        ),
                        (
                            "i64",
                            e.reduce_slice(&i64s, op, &parts, nan),
                            gpulanes::cpu::reduce(&i64s, op, &parts, nan),
                        ),
                    ] {
                        let (got, want) = (got.unwrap(), want.unwrap());
                        assert_eq!(got.counts, want.counts, "{what}");
                        let gb: Vec<_> = got.values.iter().map(|v| scalar_bits(*v)).collect();
                        let wb: Vec<_> = want.values.iter().map(|v| scalar_bits(*v)).collect();
                        assert_eq!(gb, wb, "{what} {op:?} {parts:?}");
                    }
                }
            }
        }
    }
}

/// Device-resident keys and values (dense and sparse keys, split into
/// several buffers by the tiny caps) give the bits of the host path, and so
/// do small partitions of a device array and ndarray views.
#[test]
fn device_arrays_and_views_give_the_host_bits() {
    let mut rng = SplitMix::new(31);
    let n = 70_001;
    let dense: Vec<i32> = (0..n).map(|_| rng.below(900) as i32 - 400).collect();
    let sparse: Vec<i64> = (0..n).map(|_| (rng.below(2000) as i64) << 40).collect();
    let f64s = adversarial_f64(&mut rng, n, true);
    let f32s = adversarial_f32(&mut rng, n, true);
    for e in [engine(), tiny_engine()] {
        let dv = e.upload(&f64s).unwrap();
        for nan in POLICIES {
            let host = e.reduce_by_key(&dense, &f64s, &OPS, nan).unwrap();
            let dk = e.upload(&dense).unwrap();
            let dev = e.reduce_by_key_device(&dk, &dv, &OPS, nan).unwrap();
            assert_eq!(
                dev.keys,
                host.keys.iter().map(|&k| k as i64).collect::<Vec<_>>()
            );
            assert_eq!(
                reduction_bits(&dev),
                reduction_bits(&host),
                "dense device keys"
            );
            let host = e.reduce_by_key(&sparse, &f64s, &OPS, nan).unwrap();
            let sk = e.upload(&sparse).unwrap();
            let dev = e.reduce_by_key_device(&sk, &dv, &OPS, nan).unwrap();
            assert_eq!(dev.keys, host.keys, "sparse device keys");
            assert_eq!(
                reduction_bits(&dev),
                reduction_bits(&host),
                "sparse device keys"
            );
        }
        // Device keys are sampled to choose rows one by one (random keys,
        // above) or run by run (sorted, here; int64 keys two words each).
        let mut rows: Vec<(i32, f64)> = dense.iter().copied().zip(f64s.iter().copied()).collect();
        rows.sort_by_key(|r| r.0);
        let (sk, sv): (Vec<i64>, Vec<f64>) = rows.iter().map(|&(k, v)| (k as i64, v)).unzip();
        let host = e
            .reduce_by_key(&sk, &sv, &OPS, NanPolicy::Propagate)
            .unwrap();
        let dev = e
            .reduce_by_key_device(
                &e.upload(&sk).unwrap(),
                &e.upload(&sv).unwrap(),
                &OPS,
                NanPolicy::Propagate,
            )
            .unwrap();
        assert_eq!(dev.keys, host.keys, "sorted int64 device keys");
        assert_eq!(
            reduction_bits(&dev),
            reduction_bits(&host),
            "sorted int64 device keys"
        );
        let wide: Vec<i64> = dense.iter().map(|&k| k as i64 * 3).collect();
        let host = e
            .reduce_by_key(&wide, &f64s, &OPS, NanPolicy::Propagate)
            .unwrap();
        let dev = e
            .reduce_by_key_device(&e.upload(&wide).unwrap(), &dv, &OPS, NanPolicy::Propagate)
            .unwrap();
        assert_eq!(
            reduction_bits(&dev),
            reduction_bits(&host),
            "random int64 device keys"
        );
        let view = e
            .reduce_by_key_view(
                ndarray::ArrayView1::from(&dense[..]).slice_move(ndarray::s![..;2]),
                ndarray::ArrayView1::from(&f32s[..]).slice_move(ndarray::s![..;2]),
                &OPS,
                NanPolicy::Ignore,
            )
            .unwrap();
        let strided_k: Vec<i32> = dense.iter().step_by(2).copied().collect();
        let strided_v: Vec<f32> = f32s.iter().step_by(2).copied().collect();
        check(
            e,
            "strided views",
            &strided_k,
            &strided_v,
            NanPolicy::Ignore,
        );
        let copied = e
            .reduce_by_key(&strided_k, &strided_v, &OPS, NanPolicy::Ignore)
            .unwrap();
        assert_eq!(view.keys, copied.keys);
        assert_eq!(reduction_bits(&view), reduction_bits(&copied));
        let df = e.upload(&f32s).unwrap();
        for parts in [Partitions::EqualSize(7), Partitions::EqualSize(64)] {
            for op in OPS {
                let got = e
                    .reduce_device_typed(&df, op, &parts, NanPolicy::Propagate)
                    .unwrap();
                let want = gpulanes::cpu::reduce(&f32s, op, &parts, NanPolicy::Propagate).unwrap();
                let gb: Vec<_> = got.values.iter().map(|v| scalar_bits(*v)).collect();
                let wb: Vec<_> = want.values.iter().map(|v| scalar_bits(*v)).collect();
                assert_eq!(
                    (gb, &got.counts),
                    (wb, &want.counts),
                    "device {op:?} {parts:?}"
                );
            }
        }
    }
    // Keys of a float dtype, or of another length, are refused.
    let e = engine();
    let fk = e.upload(&f32s).unwrap();
    let dv = e.upload(&f64s[..10]).unwrap();
    let dk = e.upload(&dense).unwrap();
    for (k, v, what) in [(&fk, &dv, "float keys"), (&dk, &dv, "lengths")] {
        assert!(
            matches!(
                e.reduce_by_key_device(k, v, &OPS, NanPolicy::Propagate),
                Err(Error::InvalidInput(_))
            ),
            "{what}"
        );
    }
}

/// Keys over a cardinality that crosses the compact, private and global
/// accumulations, and values from the property tests' element strategy
/// (80 binades, subnormals, signed zeros, specials at a case's rate).
fn keyed_strategy() -> impl proptest::strategy::Strategy<Value = (Vec<i32>, Vec<f32>)> {
    use proptest::prelude::*;
    let card = prop_oneof![
        Just(1i32),
        Just(3),
        Just(50),
        Just(1000),
        Just(1500),
        Just(5000)
    ];
    let len = prop_oneof![3 => 0usize..3000, 1 => 0usize..40_000];
    let rate = prop_oneof![Just(0u32), Just(2u32), Just(40u32)];
    (card, len, rate).prop_flat_map(|(card, n, rate)| {
        (
            proptest::collection::vec(-7..card - 7, n),
            proptest::collection::vec(common::element(rate), n),
        )
    })
}

proptest::proptest! {
    #![proptest_config(common::config(24))]

    /// Random keys and values, in their order (rows one by one where keys
    /// change on most rows, or sorted on the host first: the default on
    /// CPU adapters) and sorted by key (run by run), on the 8-wide and the
    /// 256-wide shapes: the exact reference's bits.
    #[test]
    fn keyed_matches_the_reference((keys, values) in keyed_strategy()) {
        let mut rows: Vec<(i32, f32)> = keys.iter().copied().zip(values.iter().copied()).collect();
        rows.sort_by_key(|r| r.0);
        let (sk, sv): (Vec<i32>, Vec<f32>) = rows.into_iter().unzip();
        for e in [engine(), unsorted_engine(), no_subgroup_engine()] {
            for nan in POLICIES {
                check(e, "rows in their order", &keys, &values, nan);
                check(e, "rows sorted by key", &sk, &sv, nan);
            }
        }
    }
}

#[test]
fn every_forced_strategy_gives_the_same_bits() {
    use gpulanes::EngineOptions;
    use gpulanes::kernels::{GroupStrategy, Local};
    assert_eq!(
        GroupStrategy::parse(" Direct, compact,"),
        Some(
            GroupStrategy::default()
                .with_direct(true)
                .with_local(Local::Compact)
        )
    );
    assert_eq!(
        GroupStrategy::parse("SORT"),
        Some(GroupStrategy::default().with_sort(true))
    );
    assert_eq!(
        GroupStrategy::parse("no-sort,runs").map(|s| (s.sort, s.direct)),
        Some((Some(false), Some(false)))
    );
    assert_eq!(GroupStrategy::parse(""), Some(GroupStrategy::default()));
    assert_eq!(GroupStrategy::parse("runs,hash"), None);
    let mut rng = SplitMix::new(43);
    let n = 30_000;
    let cases: Vec<(Vec<i32>, Vec<f32>, Vec<f64>)> = [5u64, 700, 3000]
        .iter()
        .map(|&card| {
            let keys = (0..n).map(|_| rng.below(card) as i32).collect();
            (
                keys,
                adversarial_f32(&mut rng, n, true),
                adversarial_f64(&mut rng, n, true),
            )
        })
        .collect();
    let want: Vec<_> = cases
        .iter()
        .map(|(k, v, w)| {
            (
                reduction_bits(
                    &engine()
                        .reduce_by_key(k, v, &OPS, NanPolicy::Propagate)
                        .unwrap(),
                ),
                reduction_bits(
                    &engine()
                        .reduce_by_key(k, w, &OPS, NanPolicy::Ignore)
                        .unwrap(),
                ),
            )
        })
        .collect();
    // Every way of taking rows and accumulating on rows as given, and
    // rows put in group order on the host (alone: the engine's choices
    // after it; with a way: that way on the sorted rows).
    let mut strategies = vec![
        GroupStrategy::default().with_sort(true),
        GroupStrategy::default().with_sort(false),
        GroupStrategy::default()
            .with_direct(true)
            .with_local(Local::Global)
            .with_sort(true),
    ];
    for direct in [true, false] {
        for local in [Local::Global, Local::Private, Local::Compact] {
            strategies.push(
                GroupStrategy::default()
                    .with_direct(direct)
                    .with_local(local),
            );
        }
    }
    for strategy in strategies {
        let e = Engine::with_options(EngineOptions::default().group_strategy(strategy)).unwrap();
        for ((k, v, w), (f32_bits, f64_bits)) in cases.iter().zip(&want) {
            let got = e.reduce_by_key(k, v, &OPS, NanPolicy::Propagate).unwrap();
            assert_eq!(&reduction_bits(&got), f32_bits, "{strategy:?}, float32");
            let got = e.reduce_by_key(k, w, &OPS, NanPolicy::Ignore).unwrap();
            assert_eq!(&reduction_bits(&got), f64_bits, "{strategy:?}, float64");
        }
    }
}

/// A float of `E`'s bit layout at grid position `pos` (its biased exponent
/// less one) with the magnitude `mant` (top bit set).
fn at_position<E: Element>(pos: u32, mant: u64, negative: bool) -> E {
    match E::DTYPE {
        gpulanes::Dtype::F32 => {
            let bits = (negative as u32) << 31 | (pos + 1) << 23 | (mant as u32 & 0x7f_ffff);
            bytemuck::pod_read_unaligned(&bits.to_le_bytes())
        }
        _ => {
            let bits =
                (negative as u64) << 63 | ((pos + 1) as u64) << 52 | (mant & ((1 << 52) - 1));
            bytemuck::pod_read_unaligned(&bits.to_le_bytes())
        }
    }
}

/// `n` rows of four groups: three quarters of them positive and as large
/// as position `top` allows, in group 0 (a sum one bit under the top bit of
/// a span that just holds it); values at `hi` and at the lowest position
/// `lo` cancelling (group 1); a lone value whose lowest bit is bit `lo`
/// among cancelling large ones (group 2); random positions in `lo ..= hi`
/// and signs (group 3).
fn narrow_span_rows<E: Element>(
    rng: &mut SplitMix,
    n: usize,
    (lo, hi, top): (u32, u32, u32),
    mant_bits: u32,
) -> (Vec<i32>, Vec<E>) {
    let top_mant = (1u64 << mant_bits) - 1;
    let low_mant = (1u64 << (mant_bits - 1)) | 1;
    let mut rows: Vec<(i32, E)> = Vec::new();
    for _ in 0..n * 3 / 4 {
        rows.push((0, at_position(top, top_mant, false)));
    }
    for i in 0..n / 32 {
        let negative = i % 2 == 1;
        rows.push((1, at_position(hi, top_mant, negative)));
        rows.push((1, at_position(lo, low_mant, negative)));
    }
    rows.push((2, at_position(lo, low_mant, true)));
    for i in 0..n / 32 {
        rows.push((2, at_position(hi, top_mant - 2, i % 2 == 0)));
    }
    while rows.len() < n {
        let pos = lo + rng.below((hi - lo + 1) as u64) as u32;
        let mant = (1u64 << (mant_bits - 1)) | rng.below(1u64 << (mant_bits - 1));
        rows.push((3, at_position(pos, mant, rng.below(2) == 1)));
    }
    shuffle(rng, &mut rows);
    rows.into_iter().unzip()
}

/// Host-held columns get accumulators narrowed to their values' range
/// (src/keyed/limbs.rs): sums one bit under the top of a narrow span, and
/// one position higher (which needs the next layout), from the lowest base
/// to the highest, rows shuffled and sorted by key, under every way of
/// taking rows and accumulating, and small partitions of the same values,
/// match the exact reference and the same column held on the device (full
/// accumulators for four groups, sized from the device's scan of the
/// column for 4,000); each key's state matches the CPU's state of its
/// values.
#[test]
fn narrow_accumulators_hold_sums_at_their_limits() {
    use gpulanes::EngineOptions;
    use gpulanes::kernels::{GroupStrategy, Limbs, Local, Spread};
    fn run<E: Element>(engines: &[Engine], what: &str, keys: &[i32], values: &[E]) {
        let e = engine();
        for nan in POLICIES {
            let host = check(e, what, keys, values, nan);
            let dev = e
                .reduce_by_key_device(
                    &e.upload(keys).unwrap(),
                    &e.upload(values).unwrap(),
                    &OPS,
                    nan,
                )
                .unwrap();
            assert_eq!(
                reduction_bits(&dev),
                reduction_bits(&host),
                "{what}: device-resident values"
            );
            for forced in engines {
                let got = forced.reduce_by_key(keys, values, &OPS, nan).unwrap();
                assert_eq!(
                    reduction_bits(&got),
                    reduction_bits(&host),
                    "{what}: a forced way"
                );
            }
        }
        // The same rows over 4,000 groups: device-resident floats then
        // find their spread on the device (more groups than workgroup
        // memory holds in the full layout).
        let many: Vec<i32> = keys
            .iter()
            .enumerate()
            .map(|(i, &k)| k * 1000 + (i % 1000) as i32)
            .collect();
        let host = check(
            e,
            &format!("{what}, 4,000 groups"),
            &many,
            values,
            NanPolicy::Propagate,
        );
        let dev = e
            .reduce_by_key_device(
                &e.upload(&many).unwrap(),
                &e.upload(values).unwrap(),
                &OPS,
                NanPolicy::Propagate,
            )
            .unwrap();
        assert_eq!(
            reduction_bits(&dev),
            reduction_bits(&host),
            "{what}: 4,000 groups on the device"
        );
        let mut groups: BTreeMap<i32, Vec<E>> = BTreeMap::new();
        for (&k, &v) in keys.iter().zip(values) {
            groups.entry(k).or_default().push(v);
        }
        let states = e.states_by_key(keys, values, StateKind::Sum).unwrap();
        for (k, s) in states.keys.iter().zip(&states.states) {
            let want = State::of(&groups[k], StateKind::Sum);
            assert_eq!(s.to_bytes(), want.to_bytes(), "{what}: state of key {k}");
        }
        for size in [3, 40] {
            let parts = Partitions::EqualSize(size);
            let got = e
                .reduce_slice(values, Op::Sum, &parts, NanPolicy::Propagate)
                .unwrap();
            let want =
                gpulanes::cpu::reduce(values, Op::Sum, &parts, NanPolicy::Propagate).unwrap();
            let bits = |r: &gpulanes::Reduction<Scalar>| -> Vec<_> {
                r.values.iter().map(|v| scalar_bits(*v)).collect()
            };
            assert_eq!(bits(&got), bits(&want), "{what}: partitions of {size}");
        }
    }
    fn both<E: Element>(engines: &[Engine], rng: &mut SplitMix, n: usize, base: u32, bits: u32) {
        let dtype = E::DTYPE;
        // The highest position whose sums of n values stay under the top
        // bit of a 3-limb span from `base` (n < 2^13), or the largest finite
        // value's (253 for float32, 2045 for float64) where that is lower.
        let max_pos = if dtype == gpulanes::Dtype::F32 {
            253
        } else {
            2045
        };
        let lo = 32 * base;
        let hi = (32 * (base + 3) - bits - 13 - 1).min(max_pos);
        let narrow = Limbs::for_values(dtype, Spread::Within { lo, hi }, n as u64);
        assert_eq!(
            (narrow.base, narrow.len),
            (base, 3),
            "{dtype}: the span under test"
        );
        let mut tops = vec![(hi, "")];
        if hi < max_pos {
            let wider = Limbs::for_values(dtype, Spread::Within { lo, hi: hi + 1 }, n as u64);
            assert!(wider.len > 3, "{dtype}: one position more needs more limbs");
            tops.push((hi + 1, ", one position higher"));
        }
        for (top, how) in tops {
            let what = format!("{dtype} from limb {base}{how}");
            let (keys, values) = narrow_span_rows::<E>(rng, n, (lo, hi, top), bits);
            run(engines, &what, &keys, &values);
            let mut rows: Vec<(i32, E)> = keys.into_iter().zip(values).collect();
            rows.sort_by_key(|r| r.0);
            let (keys, values): (Vec<i32>, Vec<E>) = rows.into_iter().unzip();
            run(engines, &format!("{what}, sorted"), &keys, &values);
        }
    }
    let engines: Vec<Engine> = [
        (true, Local::Global),
        (false, Local::Global),
        (false, Local::Private),
    ]
    .into_iter()
    .map(|(direct, local)| {
        let strategy = GroupStrategy::default()
            .with_direct(direct)
            .with_local(local);
        Engine::with_options(EngineOptions::default().group_strategy(strategy)).unwrap()
    })
    .collect();
    let mut rng = SplitMix::new(47);
    // 2^13 - 1 rows: three quarters of them at the top reach the bit under
    // the span's sign bit (from every base but the highest, whose span
    // reaches past the largest finite value).
    let n = 8191;
    for base in [0, 3, 6, 7] {
        both::<f32>(&engines, &mut rng, n, base, 24);
    }
    for base in [1, 30, 62, 63] {
        both::<f64>(&engines, &mut rng, n, base, 53);
    }
}

/// Keys and values read from readers in chunks within a small budget
/// (keys that appear in one chunk only, in every chunk, or in a run of
/// chunks, so each chunk's merge meets keys on one side, the other and
/// both) give the bits of one in-memory reduction and of the exact
/// reference, for every op under both NaN policies and every value type.
#[test]
fn streamed_keyed_reductions_match_one_in_memory_reduction() {
    use gpulanes::{Column, StreamOptions};
    use std::path::Path;
    fn run<E: gpulanes::Element>(values: &[E], keys: &[i64], what: &str) {
        let e = engine();
        let options = StreamOptions {
            budget_bytes: gpulanes::stream::MIN_BUDGET_BYTES,
            ..StreamOptions::default()
        };
        let key_bytes: &[u8] = bytemuck::cast_slice(keys);
        let value_bytes: &[u8] = bytemuck::cast_slice(values);
        for nan in POLICIES {
            let column = |bytes| Column {
                reader: std::io::Cursor::new(bytes),
                name: Path::new("in-memory"),
                data_offset: 0,
            };
            let streamed = e
                .reduce_by_key_readers::<i64, E, _, _>(
                    column(key_bytes),
                    column(value_bytes),
                    keys.len() as u64,
                    &OPS,
                    nan,
                    &options,
                )
                .unwrap();
            let whole = e.reduce_by_key(keys, values, &OPS, nan).unwrap();
            assert_eq!(
                grouped_bits(&streamed),
                grouped_bits(&whole),
                "{what} {nan:?}"
            );
            let reference = keyed_reference(keys, values, None, &OPS, nan);
            assert_eq!(
                grouped_bits(&streamed),
                grouped_bits(&reference),
                "{what} {nan:?}"
            );
        }
    }
    let mut rng = SplitMix::new(77);
    let n = 120_000;
    let keys: Vec<i64> = (0..n)
        .map(|i| match rng.below(4) {
            0 => (rng.below(50) as i64 - 25) << 40, // in every chunk
            1 => i as i64 / 20_000 * 1_000 + rng.below(7) as i64, // a run of chunks
            2 => i64::MIN + i as i64,               // one chunk
            _ => i64::MAX - rng.below(3) as i64,
        })
        .collect();
    let f64s: Vec<f64> = (0..n)
        .map(|i| match rng.below(40) {
            0 => f64::NAN,
            1 => f64::INFINITY,
            2 => -0.0,
            3 => f64::MAX,
            4 => f64::from_bits(1 + i as u64),
            _ => rng.range(-1e6, 1e6),
        })
        .collect();
    run(&f64s, &keys, "f64");
    let f32s: Vec<f32> = f64s.iter().map(|&v| v as f32).collect();
    run(&f32s, &keys, "f32");
    let ints: Vec<i32> = (0..n)
        .map(|_| rng.below(u32::MAX as u64) as u32 as i32)
        .collect();
    run(&ints, &keys, "i32");
    run(&ints[..0], &keys[..0], "empty");
    run(&ints[..1], &keys[..1], "one row");
}
