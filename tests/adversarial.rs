//! Adversarial inputs, boundary lengths, large inputs forced through the
//! engine's splitting paths, accuracy at scale, determinism of the special
//! paths, and error handling. Results are compared with the exact CPU
//! reference under the rule documented in `tests/common/mod.rs`; where the
//! op table of `src/op.rs` states a semantic rule (all-NaN partitions,
//! signed zeros, infinities) the test asserts the rule itself as well.

mod common;

use std::sync::mpsc;

use common::*;
use gpulanes::{Engine, EngineOptions, Error, KernelShape, NanPolicy, Op, Partitions, Reduction};
use ndarray::{Array2, Axis};

const BLOCK: usize = gpulanes::kernels::BLOCK as usize;
const NEG_ZERO: u32 = 0x8000_0000;

fn bits(v: Option<f32>) -> Option<u32> {
    v.map(f32::to_bits)
}

fn finite_data(seed: u64, n: usize) -> Vec<f32> {
    mixed_data(&mut SplitMix::new(seed), n, 0)
}

/// Reduces with every op and policy, checks against the reference, and
/// returns the results keyed by (op, policy) for further assertions.
fn all_ops(
    engine: &Engine,
    data: &[f32],
    partitions: &Partitions,
    what: &str,
) -> Vec<(Op, NanPolicy, Reduction)> {
    let mut out = Vec::new();
    for op in Op::ALL {
        for nan in POLICIES {
            let got = reduce(engine, data, op, partitions, nan);
            assert_matches_reference(&got, data, op, partitions, nan, what);
            out.push((op, nan, got));
        }
    }
    out
}

// ---------------------------------------------------------------- NaN

#[test]
fn nan_anywhere_propagates_or_is_skipped() {
    let payloads = [
        0x7fc0_0000u32,
        0xffc0_0000,
        0x7f80_0001,
        0xff80_0001,
        0x7fff_ffff,
    ];
    for n in [1usize, 3, 4, 5, 256, 257, 8192, 8193, 20_000] {
        let clean = finite_data(n as u64, n);
        let mut positions = vec![0, n / 2, n - 1, n.min(4) - 1];
        positions.extend(
            [255, 256, BLOCK - 1, BLOCK, BLOCK + 3]
                .iter()
                .filter(|&&p| p < n),
        );
        for (k, &pos) in positions.iter().enumerate() {
            let mut data = clean.clone();
            data[pos] = f32::from_bits(payloads[k % payloads.len()]);
            let what = format!("n={n}, NaN at {pos}");
            for (op, nan, r) in all_ops(engine(), &data, &Partitions::Whole, &what) {
                match (op, nan) {
                    (Op::Count, NanPolicy::Propagate) => assert_eq!(r.counts, [n as u64]),
                    (Op::Count, NanPolicy::Ignore) => assert_eq!(r.counts, [n as u64 - 1]),
                    (_, NanPolicy::Propagate) => {
                        assert!(r.value().unwrap().is_nan(), "{what}: {op} must be NaN")
                    }
                    (_, NanPolicy::Ignore) => {
                        // Skipping NaN is reducing the data without it.
                        let mut without = data.clone();
                        without.remove(pos);
                        let alone = reduce(engine(), &without, op, &Partitions::Whole, nan);
                        assert_eq!(bits(r.value()), bits(alone.value()), "{what}: {op} ignore");
                    }
                }
            }
        }
    }
}

#[test]
fn all_nan_partitions() {
    // Partitions: [1, 2] | [NaN x3] | [3] | [NaN x 9000 (two blocks)] | [4, NaN].
    let mut data = vec![1.0, 2.0, f32::NAN, -f32::NAN, f32::NAN, 3.0];
    data.extend(std::iter::repeat_n(f32::NAN, 9000));
    data.extend([4.0, f32::NAN]);
    let len = data.len() as u64;
    let p = Partitions::Offsets(vec![0, 2, 5, 6, 9006, len]);
    for (op, nan, r) in all_ops(engine(), &data, &p, "all-NaN partitions") {
        for i in [1, 3] {
            let v = r.values[i];
            match nan {
                NanPolicy::Ignore => {
                    assert_eq!(r.counts[i], 0, "{op}: ignore counts no NaN");
                    match op {
                        Op::Max | Op::Min | Op::Mean => assert_eq!(v, None, "{op} of all-NaN"),
                        Op::Sum | Op::Count => assert_eq!(bits(v), Some(0), "{op} of all-NaN"),
                    }
                }
                NanPolicy::Propagate => match op {
                    Op::Count => assert_eq!(v, Some(r.counts[i] as f32)),
                    _ => assert!(v.unwrap().is_nan(), "{op} propagates NaN"),
                },
            }
        }
    }
}

// ---------------------------------------------------------------- infinities

#[test]
fn infinities_follow_ieee() {
    let inf = f32::INFINITY;
    let mut spread = vec![0.0f32; 2 * BLOCK + 5];
    spread[3] = inf;
    spread[BLOCK + 1] = -inf;
    let cases: Vec<(&str, Vec<f32>)> = vec![
        ("+inf", vec![inf]),
        ("-inf", vec![-inf]),
        ("+inf among finite", vec![1.0, inf, 2.0, 3.0, 4.0]),
        ("+inf + +inf", vec![inf, inf]),
        ("+inf + -inf", vec![inf, -inf]),
        ("+inf + -inf in other blocks", spread),
        ("+inf, NaN", vec![inf, f32::NAN]),
        ("+inf, -inf, NaN", vec![5.0, inf, f32::NAN, -inf]),
        ("-inf and MAX", vec![-inf, f32::MAX, f32::MAX]),
    ];
    for (what, data) in cases {
        let has_pos = data.contains(&inf);
        let has_neg = data.contains(&-inf);
        for (op, nan, r) in all_ops(engine(), &data, &Partitions::Whole, what) {
            let v = r.value().expect("non-empty");
            let has_nan = data.iter().any(|x| x.is_nan());
            if has_nan && nan == NanPolicy::Propagate && op != Op::Count {
                assert!(v.is_nan());
                continue;
            }
            match op {
                Op::Sum | Op::Mean if has_pos && has_neg => assert!(v.is_nan(), "{what}: {op}"),
                Op::Sum | Op::Mean if has_pos => assert_eq!(v, inf, "{what}: {op}"),
                Op::Sum | Op::Mean if has_neg => assert_eq!(v, -inf, "{what}: {op}"),
                Op::Max if has_pos => assert_eq!(v, inf, "{what}"),
                Op::Min if has_neg => assert_eq!(v, -inf, "{what}"),
                _ => {}
            }
        }
    }
}

// ---------------------------------------------------------------- signed zeros

/// Values that cancel exactly sum to +0.0 (IEEE round to nearest), in the
/// small part, in the big part (|x| >= 2^100, kept apart so sums past f32's
/// range stay exact) or in both; -0.0 among them changes nothing.
#[test]
fn exact_cancellation_is_positive_zero() {
    let big = 2f32.powi(101);
    let cases: [&[f32]; 6] = [
        &[1.0, -1.0],
        &[big, -big],
        &[-big, big, -0.0],
        &[big, 1.0, -big, -1.0],
        &[-0.0, big, -0.0, -big, -0.0],
        &[f32::MAX, f32::MAX, -f32::MAX, -f32::MAX],
    ];
    for data in cases {
        for op in [Op::Sum, Op::Mean] {
            for nan in POLICIES {
                let got = reduce(engine(), data, op, &Partitions::Whole, nan);
                let want = reference(data, op, &Partitions::Whole, nan);
                assert_eq!(bits(want.value()), Some(0), "{data:?} {op}: reference");
                assert_eq!(bits(got.value()), Some(0), "{data:?} {op} {nan:?}");
            }
        }
    }
}

#[test]
fn negative_zero() {
    for n in [1usize, 2, 4, 5, 257, 8193, 20_000] {
        let data = vec![-0.0f32; n];
        let what = format!("{n} x -0.0");
        for (op, _, r) in all_ops(engine(), &data, &Partitions::Whole, &what) {
            match op {
                // The mean of only -0.0 values is their sum over n: -0.0.
                Op::Sum | Op::Mean | Op::Max | Op::Min => {
                    assert_eq!(bits(r.value()), Some(NEG_ZERO), "{what}: {op} is -0.0")
                }
                _ => {}
            }
        }
        // One +0.0 anywhere (same vec4, another thread, another block):
        // max is +0.0, min -0.0, sum +0.0.
        for pos in [0, n / 2, n - 1] {
            let mut data = data.clone();
            data[pos] = 0.0;
            let what = format!("{n} x -0.0 with +0.0 at {pos}");
            for (op, _, r) in all_ops(engine(), &data, &Partitions::Whole, &what) {
                let want = match op {
                    Op::Max | Op::Sum => Some(0),
                    Op::Min if n > 1 => Some(NEG_ZERO),
                    _ => continue,
                };
                assert_eq!(bits(r.value()), want, "{what}: {op}");
            }
        }
    }
    // -0.0 with NaN skipped is still a sum of only -0.0.
    let r = reduce(
        engine(),
        &[-0.0, f32::NAN, -0.0],
        Op::Sum,
        &Partitions::Whole,
        NanPolicy::Ignore,
    );
    assert_eq!(bits(r.value()), Some(NEG_ZERO));
    // max(-0, +0) = +0 and min = -0 in either order.
    for data in [[-0.0f32, 0.0], [0.0, -0.0]] {
        assert_eq!(bits(engine().max(&data).unwrap()), Some(0));
        assert_eq!(bits(engine().min(&data).unwrap()), Some(NEG_ZERO));
    }
}

// ---------------------------------------------------------------- cancellation

#[test]
fn classic_cancellation_is_exact() {
    // Small inputs whose exact sums f32 cannot reach naively; here two-sum
    // is error-free, so the result must be the exactly rounded one, wherever
    // the values sit (one vec4, one invocation, other invocations, other blocks).
    let triples: [&[f32]; 4] = [
        &[1e30, 1.0, -1e30],
        &[16_777_216.0, 1.0, 1.0],
        &[1.0, 1e-8, -1.0],
        &[3.0e38, 1.0e-30, -3.0e38],
    ];
    for t in triples {
        for gap in [1usize, 2, 4, 1024, BLOCK, BLOCK + 1] {
            // `gap` items apart (1: adjacent), zeros between.
            let step = gap;
            let mut data = vec![0.0f32; step * (t.len() - 1) + 1];
            for (i, &x) in t.iter().enumerate() {
                data[i * step] = x;
            }
            let what = format!("{t:?} with gap {gap}");
            for op in [Op::Sum, Op::Mean] {
                for nan in POLICIES {
                    let got = reduce(engine(), &data, op, &Partitions::Whole, nan);
                    let want = reference(&data, op, &Partitions::Whole, nan);
                    assert_same_bits(&got, &want, &what);
                }
            }
        }
    }
}

/// A cancelling set: `pairs` values v and their negations (log-uniform over
/// 2^[0, 40)), plus `small` residue values in [-1, 1), shuffled.
fn cancelling_set(seed: u64, pairs: usize, small: usize, hi_exp: i32) -> Vec<f32> {
    let mut rng = SplitMix::new(seed);
    let mut data = Vec::with_capacity(2 * pairs + small);
    for _ in 0..pairs {
        let v = rng.log_uniform(0, hi_exp);
        data.extend([v, -v]);
    }
    for _ in 0..small {
        data.push(rng.range(-1.0, 1.0) as f32);
    }
    rng.shuffle(&mut data);
    data
}

/// Naive left-to-right f32 sum (what the compensation is there to beat).
fn naive_sum(data: &[f32]) -> f32 {
    data.iter().fold(0.0f32, |a, &x| a + x)
}

/// Catastrophic cancellation: condition numbers Σ|x| / |Σx| up to ~10^17
/// here, or an exact sum of zero. The sums are exact integers rounded once,
/// so `all_ops` demands the reference's bits; the test makes sure that
/// means something: a naive f32 sum is far off.
#[test]
fn large_random_cancelling_sets() {
    for (seed, pairs, small, hi_exp) in [
        (1u64, 50_000usize, 1000usize, 40),
        (2, 50_000, 10, 20),
        (3, 5_000, 3, 60),
        (4, 100_000, 0, 30),
    ] {
        let data = cancelling_set(seed, pairs, small, hi_exp);
        let what = format!("seed {seed}: {pairs} cancelling pairs up to 2^{hi_exp}, {small} small");
        let r = all_ops(engine(), &data, &Partitions::Whole, &what);
        let want = reference(&data, Op::Sum, &Partitions::Whole, NanPolicy::Propagate)
            .value()
            .unwrap();
        if small == 0 {
            // Every value cancels exactly: the exact sum is zero.
            assert_eq!(want, 0.0);
        }
        let got = r[0].2.value().unwrap();
        assert_eq!(got.to_bits(), want.to_bits(), "{what}");
        // The test has teeth: a naive f32 sum is far off.
        let naive = naive_sum(&data);
        assert!(
            (naive as f64 - want as f64).abs() > 100.0 * (want as f64).abs().max(1.0) * 1e-7,
            "{what}: naive sum {naive:e} is too close to {want:e} for this test to mean anything"
        );
        // Spread over partitions too (each partition has its own tree).
        all_ops(engine(), &data, &Partitions::EqualSize(9000), &what);
    }
}

/// The kernel shapes combine the 256 per-invocation partials of a unit in
/// one tree (sequential addressing: 0 with 128 first, ...). Here partials
/// 0 and 128 are +2^40 and -2^40, and 8, 24 and 40 are 1, 2^-24 and 2^-30;
/// all others are zero. The tree cancels the big pair at its first level,
/// so the small ones sum exactly to 1 + 2^-24 + 2^-30, which rounds up to
/// 1 + 2^-23. Any tree that meets a small value with a big one first keeps
/// the small ones in the double-single's low word, where 2^-30 and then
/// the tie at 2^-24 round away: 1.0. The element pass sees this as one
/// block (partial p's first element is 4p); the partial pass as 129
/// blocks whose sums are those values (its partial p is block p).
#[test]
fn every_kernel_shape_combines_in_the_same_tree() {
    let place = [
        (0usize, 2f32.powi(40)),
        (128, -(2f32.powi(40))),
        (8, 1.0),
        (24, 2f32.powi(-24)),
        (40, 2f32.powi(-30)),
    ];
    let block = BLOCK;
    let mut one_block = vec![0.0f32; block];
    let mut many_blocks = vec![0.0f32; 129 * block];
    for (p, x) in place {
        one_block[4 * p] = x;
        many_blocks[p * block] = x;
    }
    let want = f32::from_bits(0x3f80_0001); // 1 + 2^-23
    let mut shapes = every_shape_engine();
    shapes.push(("tiny caps", tiny_engine()));
    for (what, data) in [("element pass", &one_block), ("partial pass", &many_blocks)] {
        let exact = reference(data, Op::Sum, &Partitions::Whole, NanPolicy::Propagate);
        assert_eq!(exact.value(), Some(want), "{what}: the exact sum");
        for (name, e) in &shapes {
            let got = reduce(e, data, Op::Sum, &Partitions::Whole, NanPolicy::Propagate);
            assert_eq!(
                bits(got.value()),
                bits(Some(want)),
                "{what}, {name}: got {:?}",
                got.value()
            );
        }
    }
}

/// Every kernel shape gives the same bits on hard data: cancelling pairs
/// up to 2^60 with small residues, inputs over 2^100 (the big sum),
/// partitions with short, unaligned and empty blocks, several levels.
/// (Such data cannot show the shapes share one tree: the double-single sums
/// are exact enough that a narrow kernel pairing its leaves in another
/// order still gave these bits. `every_kernel_shape_combines_in_the_same_tree`
/// does.)
#[test]
fn every_kernel_shape_gives_the_same_bits_on_hard_data() {
    let mut data = cancelling_set(3, 40_000, 200, 60);
    let mut rng = SplitMix::new(31);
    for i in (0..data.len()).step_by(997) {
        // A few big values (the big-sum path) and specials.
        data[i] = match rng.below(4) {
            0 => f32::from_bits(0x7200_0000 | rng.below(1 << 20) as u32),
            1 => -1.5e30,
            _ => data[i],
        };
    }
    let n = data.len() as u64;
    let forms = [
        Partitions::Whole,
        Partitions::EqualSize(BLOCK as u64 * 3 + 5),
        Partitions::Offsets(vec![0, 1, 4099, 4099, 20_001, n]),
    ];
    let shapes = every_shape_engine();
    for p in &forms {
        for op in [Op::Sum, Op::Max] {
            let base = reduce(shapes[0].1, &data, op, p, NanPolicy::Propagate);
            for (name, e) in &shapes[1..] {
                let got = reduce(e, &data, op, p, NanPolicy::Propagate);
                assert_same_bits(&got, &base, &format!("{op} {p:?}: {name}"));
            }
        }
    }
}

// ---------------------------------------------------------------- subnormals

#[test]
fn subnormals() {
    let tiny = f32::from_bits(1);
    // Values are decoded from their bits: no engine flushes subnormals.
    let flushed = engine().sum(&[tiny]).unwrap() == 0.0;
    assert!(!flushed, "the smallest subnormal must count");
    for e in [
        engine(),
        tiny_engine(),
        no_subgroup_engine(),
        narrow_engine(),
    ] {
        assert!(!e.adapter().flushes_subnormals);
    }
    // 20000 x 2^-149 is exactly representable: where subnormals are kept
    // (lavapipe) the sum must be exact; where they flush, the documented
    // allowance applies (checked inside all_ops).
    let data = vec![tiny; 20_000];
    let r = all_ops(engine(), &data, &Partitions::Whole, "20000 x 2^-149");
    if !flushed {
        assert_eq!(r[0].2.value(), Some(20_000.0 * tiny));
        assert_eq!(bits(r[0].2.value()), bits(Some(f32::from_bits(20_000))));
    }
    // Random subnormals of both signs, with zeros and the smallest normals.
    let mut rng = SplitMix::new(11);
    let mut data: Vec<f32> = (0..30_000)
        .map(|_| {
            let b = (rng.below(0x80_0000) as u32) | ((rng.below(2) as u32) << 31);
            f32::from_bits(b)
        })
        .collect();
    data[7] = f32::MIN_POSITIVE;
    data[9000] = -f32::MIN_POSITIVE;
    data[100] = -0.0;
    for p in [
        Partitions::Whole,
        Partitions::EqualSize(1000),
        Partitions::Offsets(vec![0, 1, 5, 5, 8199, 30_000]),
    ] {
        all_ops(engine(), &data, &p, "random subnormals");
    }
    // Subnormal max/min keep their exact bits.
    let data = [
        f32::from_bits(5),
        f32::from_bits(0x8000_0003),
        f32::from_bits(2),
    ];
    assert_eq!(bits(engine().max(&data).unwrap()), Some(5));
    assert_eq!(bits(engine().min(&data).unwrap()), Some(0x8000_0003));
}

// ---------------------------------------------------------------- overflow

#[test]
fn sum_overflow_matches_exact_reference() {
    let max = f32::MAX;
    let mut spread = vec![0.0f32; BLOCK + 2];
    spread[0] = max;
    spread[BLOCK + 1] = max;
    let cases: Vec<(&str, Vec<f32>)> = vec![
        ("MAX + MAX", vec![max, max]),
        ("-MAX - MAX", vec![-max, -max]),
        ("MAX + MAX in two blocks", spread),
        ("MAX + MAX - MAX", vec![max, max, -max]),
        ("1e38 x 8", vec![1e38; 8]),
    ];
    let mut failures = Vec::new();
    for (what, data) in cases {
        for op in Op::ALL {
            for nan in POLICIES {
                let got = reduce(engine(), &data, op, &Partitions::Whole, nan);
                let want = reference(&data, op, &Partitions::Whole, nan);
                // A sum of finite values is never NaN.
                let got_v = got.value().unwrap();
                if got_v.is_nan() || bits(got.value()) != bits(want.value()) {
                    failures.push(format!(
                        "{what}: {op} {nan:?}: got {got_v:e}, exact reference {:e}",
                        want.value().unwrap()
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "sums that overflow f32 (intermediate or final):\n{}",
        failures.join("\n")
    );
}

// ---------------------------------------------------------------- shapes

#[test]
fn empty_input() {
    let data: [f32; 0] = [];
    let array = engine().upload(&data).unwrap();
    assert!(array.is_empty());
    for op in Op::ALL {
        for nan in POLICIES {
            let whole = reduce(engine(), &data, op, &Partitions::Whole, nan);
            assert_matches_reference(&whole, &data, op, &Partitions::Whole, nan, "empty");
            assert_eq!(whole.counts, [0]);
            match op {
                Op::Sum | Op::Count => assert_eq!(bits(whole.value()), Some(0)),
                _ => assert_eq!(whole.values, [None]),
            }
            let dev = engine()
                .reduce_device(&array, op, &Partitions::Whole, nan)
                .unwrap();
            assert_same_bits(&dev, &whole, "empty, device-resident");
            for (p, k) in [
                (Partitions::EqualSize(3), 0),
                (Partitions::Offsets(vec![0]), 0),
                (Partitions::Offsets(vec![0, 0, 0]), 2),
            ] {
                let r = reduce(engine(), &data, op, &p, nan);
                assert_eq!(r.len(), k, "{p:?}");
                assert_matches_reference(&r, &data, op, &p, nan, "empty");
            }
        }
    }
    assert_eq!(engine().sum(&data).unwrap().to_bits(), 0);
    assert_eq!(engine().mean(&data).unwrap(), None);
    assert_eq!(engine().max(&data).unwrap(), None);
}

#[test]
fn empty_partitions_at_start_middle_and_end() {
    let n = 3 * BLOCK + 17;
    let data = mixed_data(&mut SplitMix::new(5), n, 3);
    let offsets = vec![
        0,
        0,
        0,
        5,
        5,
        BLOCK as u64 + 1,
        2 * BLOCK as u64,
        2 * BLOCK as u64,
        n as u64,
        n as u64,
    ];
    let empty = [0usize, 1, 3, 6, 8];
    let p = Partitions::Offsets(offsets);
    for (op, _, r) in all_ops(engine(), &data, &p, "empty partitions") {
        for &i in &empty {
            assert_eq!(r.counts[i], 0);
            match op {
                Op::Sum | Op::Count => assert_eq!(bits(r.values[i]), Some(0), "{op} of empty"),
                _ => assert_eq!(r.values[i], None, "{op} of empty"),
            }
        }
    }
    all_ops(tiny_engine(), &data, &p, "empty partitions, tiny caps");
}

#[test]
fn single_element() {
    let values = [
        1.5f32,
        -2.25,
        0.0,
        -0.0,
        f32::MAX,
        -f32::MAX,
        f32::MIN_POSITIVE,
        f32::from_bits(1),
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ];
    for x in values {
        let what = format!("[{x:e}]");
        for (op, nan, r) in all_ops(engine(), &[x], &Partitions::Whole, &what) {
            let v = r.value();
            match op {
                Op::Count => assert_eq!(
                    r.counts,
                    [u64::from(!(x.is_nan() && nan == NanPolicy::Ignore))]
                ),
                _ if x.is_nan() && nan == NanPolicy::Propagate => assert!(v.unwrap().is_nan()),
                Op::Sum if x.is_nan() => assert_eq!(bits(v), Some(0), "{what}: sum of nothing"),
                _ if x.is_nan() => assert_eq!(v, None, "{what}: {op} of nothing"),
                // A single value is its own sum, max and min, bit for bit...
                Op::Sum | Op::Max | Op::Min => {
                    assert_eq!(bits(v), Some(x.to_bits()), "{what}: {op}")
                }
                // ...and its own mean (the sign of a zero mean is the reference's).
                Op::Mean => assert_eq!(v, Some(x), "{what}: mean"),
            }
        }
    }
}

/// More partitions than one reduction's segment table holds (4095 under
/// 64 KiB bindings): reduced in groups of consecutive partitions, with the
/// same bits as one reduction on a device whose bindings hold them all,
/// groups starting at unaligned offsets and empty partitions at the edges.
#[test]
fn more_partitions_than_one_reduction_holds_are_reduced_in_groups() {
    let small = small_binding_engine();
    assert_eq!(small.max_partitions(), 4095);
    let mut rng = SplitMix::new(77);
    let data = mixed_data(&mut rng, 30_000, 5);
    let mut offsets = vec![0u64];
    while *offsets.last().unwrap() < data.len() as u64 {
        let len = [0u64, 1, 2, 3, 5, 9000][rng.below(6) as usize];
        offsets.push((offsets.last().unwrap() + len).min(data.len() as u64));
    }
    // Whole groups of empty partitions first and last (groups with no GPU
    // work, finished at once), 3 items each between them.
    let n = data.len() as u64;
    let mut empty_edges = vec![0u64; 4105];
    empty_edges.extend((1..=n / 3).map(|i| i * 3));
    empty_edges.extend(std::iter::repeat_n(n, 4100));
    for p in [
        Partitions::EqualSize(1),
        Partitions::EqualSize(3),
        Partitions::Offsets(offsets),
        Partitions::Offsets(empty_edges),
    ] {
        let what = format!("{} partitions", describe(&p));
        let array = small.upload(&data).unwrap();
        for (op, nan, got) in all_ops(small, &data, &p, &what) {
            let want = reduce(engine(), &data, op, &p, nan);
            assert_same_bits(&got, &want, &format!("{what}, {op} {nan:?}"));
            // Device arrays: groups read in place, at their absolute offsets.
            let on_device = small.reduce_device(&array, op, &p, nan).unwrap();
            assert_same_bits(&on_device, &want, &format!("{what}, {op} {nan:?}, device"));
            // Encoded into a caller's encoder: every group in one
            // submission, the result delivered once by the callback.
            let mut encoder = small.device().create_command_encoder(&Default::default());
            let pending = small.encode(&mut encoder, &array, op, &p, nan).unwrap();
            let index = small.queue().submit([encoder.finish()]);
            let (tx, rx) = std::sync::mpsc::channel();
            pending.on_complete(&index, move |r| tx.send(r).unwrap());
            small
                .device()
                .poll(wgpu::PollType::Wait {
                    submission_index: None,
                    timeout: None,
                })
                .unwrap();
            // Every callback has run once the poll returns.
            let encoded = rx
                .try_recv()
                .unwrap_or_else(|_| panic!("{what}: no result after the GPU was done"))
                .unwrap();
            assert_same_bits(&encoded, &want, &format!("{what}, {op} {nan:?}, encoded"));
        }
    }
}

/// Lengths around the vec4 width, the workgroup size (256), one
/// invocation's span (1024) and the block size (8192).
const BOUNDARY_LENGTHS: [usize; 20] = [
    0,
    1,
    3,
    4,
    5,
    255,
    256,
    257,
    1023,
    1024,
    1025,
    8191,
    8192,
    8193,
    2 * 8192 - 1,
    2 * 8192,
    2 * 8192 + 1,
    3 * 8192 - 3,
    4 * 8192 + 2,
    65_537,
];

#[test]
fn boundary_lengths() {
    for n in BOUNDARY_LENGTHS {
        let data = mixed_data(&mut SplitMix::new(100 + n as u64), n, 2);
        let mut forms = vec![
            Partitions::Whole,
            Partitions::EqualSize(256),
            Partitions::EqualSize(8191),
            Partitions::EqualSize(BLOCK as u64),
        ];
        if n >= 2 {
            // Unaligned starts: partitions at 1 and at n/2 | 1.
            let mid = (n as u64 / 2) | 1;
            forms.push(Partitions::Offsets(vec![0, 1, mid.min(n as u64), n as u64]));
        }
        for p in &forms {
            let what = format!("n={n}, {p:?}");
            for (op, nan, r) in all_ops(engine(), &data, p, &what) {
                let tiny = reduce(tiny_engine(), &data, op, p, nan);
                assert_same_bits(&tiny, &r, &format!("{what}: tiny caps"));
                // Short, full and unaligned blocks in every kernel shape.
                let wide = reduce(no_subgroup_engine(), &data, op, p, nan);
                assert_same_bits(&wide, &r, &format!("{what}: wide, workgroup tree"));
                let narrow = reduce(narrow_engine(), &data, op, p, nan);
                assert_same_bits(&narrow, &r, &format!("{what}: narrow"));
            }
        }
    }
}

#[test]
fn unaligned_full_blocks_take_the_scalar_path_with_the_same_bits() {
    // Partitions of exactly BLOCK items starting at offsets = 1, 2, 3 (mod 4):
    // full blocks that cannot use vec4 loads. Their results must equal the
    // same items reduced from an aligned start (vec4 path) bit for bit.
    let b = BLOCK as u64;
    let offsets = vec![
        0,
        1,
        1 + b,
        3 + b,
        3 + 2 * b,
        6 + 2 * b,
        6 + 3 * b,
        6 + 4 * b + 1,
    ];
    let n = *offsets.last().unwrap() as usize;
    for rate in [0u64, 5] {
        let data = mixed_data(&mut SplitMix::new(21 + rate), n, rate);
        let p = Partitions::Offsets(offsets.clone());
        for (op, nan, r) in all_ops(engine(), &data, &p, "unaligned blocks") {
            for (i, w) in offsets.windows(2).enumerate() {
                let copy = data[w[0] as usize..w[1] as usize].to_vec();
                let aligned = reduce(engine(), &copy, op, &Partitions::Whole, nan);
                assert_eq!(
                    bits(r.values[i]),
                    bits(aligned.value()),
                    "{op} {nan:?} partition {i} at {} vs aligned copy",
                    w[0]
                );
            }
            let tiny = reduce(tiny_engine(), &data, op, &p, nan);
            assert_same_bits(&tiny, &r, "unaligned blocks, tiny caps");
        }
    }
}

// ---------------------------------------------------------------- large inputs

#[test]
fn two_pow_24_plus_one_ones_multi_level() {
    // 2^24 + 3 ones, then -2^24. 2^24 + 1 items are 2049 blocks, so the
    // partial pass runs twice (2049 partials -> 2 -> 1).
    let big = 1usize << 24;
    let mut data = vec![1.0f32; big + 3];
    data.push(-16_777_216.0);
    let n = data.len() as u64;

    // Exact sums f32 cannot count to naively.
    assert_eq!(naive_sum(&data[..big + 1]), 16_777_216.0);
    let whole = reduce(
        engine(),
        &data,
        Op::Sum,
        &Partitions::Whole,
        NanPolicy::Propagate,
    );
    assert_matches_reference(
        &whole,
        &data,
        Op::Sum,
        &Partitions::Whole,
        NanPolicy::Propagate,
        "2^24+3 ones - 2^24",
    );
    assert_eq!(whole.value(), Some(3.0), "(2^24 + 3) x 1.0 - 2^24");
    assert_eq!(whole.counts, [n]);

    let ones = &data[..big + 3];
    let r = reduce(
        engine(),
        ones,
        Op::Sum,
        &Partitions::Whole,
        NanPolicy::Ignore,
    );
    assert_matches_reference(
        &r,
        ones,
        Op::Sum,
        &Partitions::Whole,
        NanPolicy::Ignore,
        "2^24+3 ones",
    );
    // 16777219 is a tie between 16777218 and 16777220: even wins.
    assert_eq!(r.value(), Some(16_777_220.0));

    let p = Partitions::Offsets(vec![0, big as u64 + 1, big as u64 + 3, n]);
    for op in Op::ALL {
        for nan in POLICIES {
            let got = reduce(engine(), &data, op, &p, nan);
            assert_matches_reference(&got, &data, op, &p, nan, "2^24+1 ones | 2 ones | -2^24");
            assert_eq!(got.counts, [big as u64 + 1, 2, 1], "exact counts past 2^24");
            if op == Op::Mean {
                assert_eq!(got.values[0], Some(1.0));
            }
            if op == Op::Sum {
                // Exactly 2^24 + 1, rounded once (ties to even) to 2^24.
                assert_eq!(got.values[0], Some(16_777_216.0));
            }
            // Forced over one buffer (256 KiB) and one binding, and with the
            // workgroup-memory tree instead of subgroups: same bits.
            if matches!(op, Op::Sum | Op::Max) {
                let tiny = reduce(tiny_engine(), &data, op, &p, nan);
                assert_same_bits(&tiny, &got, &format!("{op} {nan:?}: tiny caps"));
                let wg = reduce(no_subgroup_engine(), &data, op, &p, nan);
                assert_same_bits(&wg, &got, &format!("{op} {nan:?}: subgroups off"));
                let narrow = reduce(narrow_engine(), &data, op, &p, nan);
                assert_same_bits(&narrow, &got, &format!("{op} {nan:?}: narrow kernels"));
            }
        }
    }
}

#[test]
fn forced_over_one_binding_and_one_buffer() {
    let opts = tiny_options();
    let limits = tiny_engine().limits();
    assert_eq!(Some(limits.max_binding_bytes), opts.max_binding_bytes);
    assert_eq!(Some(limits.max_buffer_bytes), opts.max_buffer_bytes);
    assert_eq!(limits.max_workgroups_per_dim, 3);
    assert_eq!(limits.max_units_per_dispatch, 5);

    // 300k floats: 1.2 MB over 256 KiB buffers and 64 KiB bindings.
    let (rows, cols) = (300, 1000);
    let n = rows * cols;
    let mut rng = SplitMix::new(77);
    let data = mixed_data(&mut rng, n, 1);
    let mut cuts: Vec<u64> = (0..30).map(|_| rng.below(n as u64 + 1)).collect();
    cuts.extend([65_536, 65_537, 2 * 65_536 - 8192]);
    cuts.sort_unstable();
    let mut offsets = vec![0];
    offsets.extend(cuts);
    offsets.push(n as u64);
    let forms = [
        Partitions::Whole,
        Partitions::EqualSize(65_537),
        Partitions::EqualSize(7_777),
        Partitions::Offsets(offsets),
    ];
    let array = tiny_engine().upload(&data).unwrap();
    assert!(
        array.device_bytes() > 4 * (256 << 10),
        "the tiny engine must split 1.2 MB over several buffers"
    );
    for p in &forms {
        let what = format!("tiny caps, {p:?}");
        for (op, nan, r) in all_ops(tiny_engine(), &data, p, &what) {
            let base = reduce(engine(), &data, op, p, nan);
            assert_same_bits(&r, &base, &format!("{what}: vs default caps"));
            let dev = tiny_engine().reduce_device(&array, op, p, nan).unwrap();
            assert_same_bits(&dev, &base, &format!("{what}: device-resident"));
        }
    }
    let a = Array2::from_shape_vec((rows, cols), data).unwrap();
    for axis in [0, 1] {
        for op in Op::ALL {
            for nan in POLICIES {
                let tiny = tiny_engine()
                    .reduce_axis(a.view(), Axis(axis), op, nan)
                    .unwrap();
                let base = engine().reduce_axis(a.view(), Axis(axis), op, nan).unwrap();
                assert_same_bits(
                    &tiny,
                    &base,
                    &format!("axis {axis}, {op} {nan:?}: tiny caps"),
                );
            }
        }
    }
}

#[test]
fn partial_pass_forced_over_one_binding() {
    // 2400 partitions of 8193 items (2 blocks each): 4800 element-pass
    // units, so the partial pass reads 4800 x 16 B = 75 KiB of partials,
    // more than one 64 KiB binding of the tiny engine.
    let long = BLOCK as u64 + 1;
    let k = 2400u64;
    let n = (k * long) as usize;
    let mut rng = SplitMix::new(99);
    let mut data: Vec<f32> = (0..n).map(|_| rng.range(-1.0, 1.0) as f32).collect();
    data[n / 2] = f32::NAN;
    data[long as usize + 3] = f32::INFINITY;
    let p = Partitions::EqualSize(long);
    for op in [Op::Sum, Op::Max, Op::Count] {
        for nan in POLICIES {
            let tiny = reduce(tiny_engine(), &data, op, &p, nan);
            assert_matches_reference(&tiny, &data, op, &p, nan, "partial pass over one binding");
            let base = reduce(engine(), &data, op, &p, nan);
            assert_same_bits(&tiny, &base, &format!("{op} {nan:?}: tiny vs default caps"));
        }
    }
}

#[test]
fn more_partitions_than_one_segment_table_binding_never_panics() {
    // The tiny engine's 64 KiB binding holds 4095 segment entries. Host
    // data, device arrays and encoded reductions with more partitions are
    // reduced in groups (and match the reference); never a panic, and the
    // engine stays usable.
    let data = mixed_data(&mut SplitMix::new(12), 5000, 0);
    let p = Partitions::EqualSize(1);
    let array = tiny_engine().upload(&data).unwrap();
    for op in [Op::Sum, Op::Max] {
        let results = [
            tiny_engine().reduce_partitions(&data, op, &p, NanPolicy::Propagate),
            tiny_engine().reduce_device(&array, op, &p, NanPolicy::Propagate),
        ];
        for r in results {
            let r = r.unwrap();
            assert_matches_reference(&r, &data, op, &p, NanPolicy::Propagate, "5000 partitions");
        }
        let mut encoder = tiny_engine()
            .device()
            .create_command_encoder(&Default::default());
        let pending = tiny_engine()
            .encode(&mut encoder, &array, op, &p, NanPolicy::Propagate)
            .unwrap();
        let index = tiny_engine().queue().submit([encoder.finish()]);
        let r = pending.wait(tiny_engine(), index).unwrap();
        assert_matches_reference(&r, &data, op, &p, NanPolicy::Propagate, "5000 encoded");
    }
    let r = reduce(
        tiny_engine(),
        &data,
        Op::Sum,
        &Partitions::EqualSize(2),
        NanPolicy::Propagate,
    );
    assert_matches_reference(
        &r,
        &data,
        Op::Sum,
        &Partitions::EqualSize(2),
        NanPolicy::Propagate,
        "after",
    );
}

// ---------------------------------------------------------------- accuracy at scale

#[test]
fn accuracy_at_scale_with_heavy_cancellation() {
    // 10^7 values: 5*10^6 pairs a, -a(1 + d) with a in [1, 2) and d in
    // [0, 4e-5), shuffled. The exact sum is about -150 while sum|x| is about
    // 1.5e7: condition number ~1e5, where the bound is a few ulps.
    let pairs = 5_000_000usize;
    let mut rng = SplitMix::new(2024);
    let mut data = Vec::with_capacity(2 * pairs);
    for _ in 0..pairs {
        let a = rng.range(1.0, 2.0);
        let d = rng.range(0.0, 4e-5);
        data.push(a as f32);
        data.push((-a * (1.0 + d)) as f32);
    }
    rng.shuffle(&mut data);
    let want = reference(&data, Op::Sum, &Partitions::Whole, NanPolicy::Propagate)
        .value()
        .unwrap();
    let abs: f64 = data.iter().map(|&x| (x as f64).abs()).sum();
    let cond = abs / (want as f64).abs();
    assert!(
        cond > 3e4,
        "condition number {cond:e} is not heavy cancellation"
    );
    let naive = naive_sum(&data);
    assert!(
        (naive as f64 - want as f64).abs() > 50.0 * f32::EPSILON as f64 * (want as f64).abs(),
        "naive sum {naive} vs exact {want}: test has no teeth"
    );
    for op in [Op::Sum, Op::Mean] {
        let got = reduce(
            engine(),
            &data,
            op,
            &Partitions::Whole,
            NanPolicy::Propagate,
        );
        assert_matches_reference(
            &got,
            &data,
            op,
            &Partitions::Whole,
            NanPolicy::Propagate,
            "1e7 cancelling",
        );
    }
    let p = Partitions::EqualSize(1_000_003);
    let got = reduce(engine(), &data, Op::Sum, &p, NanPolicy::Ignore);
    assert_matches_reference(
        &got,
        &data,
        Op::Sum,
        &p,
        NanPolicy::Ignore,
        "1e7 cancelling, 10 partitions",
    );
}

// ---------------------------------------------------------------- API paths

#[test]
fn device_resident_and_encoded_match_the_slice_path() {
    let data = mixed_data(&mut SplitMix::new(3), 3 * BLOCK + 11, 3);
    let array = engine().upload(&data).unwrap();
    assert_eq!(array.len(), data.len() as u64);
    let forms = [
        Partitions::Whole,
        Partitions::EqualSize(1000),
        Partitions::Offsets(vec![0, 0, 3, 9000, 9000, data.len() as u64]),
    ];
    // Several reductions in one caller-owned encoder, one submit.
    let mut encoder = engine()
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    let mut pending = Vec::new();
    for p in &forms {
        for op in Op::ALL {
            for nan in POLICIES {
                let slice = reduce(engine(), &data, op, p, nan);
                // Twice from the same upload: the array is reusable.
                for _ in 0..2 {
                    let dev = engine().reduce_device(&array, op, p, nan).unwrap();
                    assert_same_bits(&dev, &slice, &format!("{op} {nan:?} {p:?}: device"));
                }
                let pr = engine().encode(&mut encoder, &array, op, p, nan).unwrap();
                pending.push((pr, slice));
            }
        }
    }
    let index = engine().queue().submit([encoder.finish()]);
    let mut last = None;
    for (pr, slice) in pending {
        let r = pr.wait(engine(), index.clone()).unwrap();
        assert_same_bits(&r, &slice, "encode + wait");
        last = Some(slice);
    }

    // on_complete: the callback runs from a device poll.
    let mut encoder = engine()
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    let pr = engine()
        .encode(&mut encoder, &array, Op::Min, &forms[2], NanPolicy::Ignore)
        .unwrap();
    let index = engine().queue().submit([encoder.finish()]);
    let (tx, rx) = mpsc::channel();
    pr.on_complete(&index, move |r| tx.send(r).unwrap());
    engine()
        .device()
        .poll(wgpu::PollType::Wait {
            submission_index: Some(index),
            timeout: None,
        })
        .unwrap();
    let r = rx.recv().unwrap().unwrap();
    let slice = reduce(engine(), &data, Op::Min, &forms[2], NanPolicy::Ignore);
    assert_same_bits(&r, &slice, "encode + on_complete");
    assert!(last.is_some());
}

#[test]
fn concurrent_requests_with_bad_ones_in_between() {
    let data = mixed_data(&mut SplitMix::new(8), 20_000, 2);
    let expected: Vec<Reduction> = Op::ALL
        .iter()
        .map(|&op| {
            reduce(
                engine(),
                &data,
                op,
                &Partitions::EqualSize(3000),
                NanPolicy::Ignore,
            )
        })
        .collect();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (data, expected) = (&data, &expected);
            s.spawn(move || {
                for i in 0..10 {
                    let op = Op::ALL[(t + i) % 5];
                    let r = engine()
                        .reduce_partitions(
                            data,
                            op,
                            &Partitions::EqualSize(3000),
                            NanPolicy::Ignore,
                        )
                        .unwrap();
                    assert_same_bits(
                        &r,
                        &expected[(t + i) % 5],
                        &format!("thread {t} request {i}"),
                    );
                    let bad = Partitions::Offsets(vec![0, 5, 3, data.len() as u64]);
                    assert!(
                        engine()
                            .reduce_partitions(data, op, &bad, NanPolicy::Ignore)
                            .is_err()
                    );
                }
            });
        }
    });
}

// ---------------------------------------------------------------- errors

#[test]
fn bad_partitions_are_errors_naming_the_problem() {
    let data = [1.0f32, 2.0, 3.0, 4.0, 5.0];
    let array = engine().upload(&data).unwrap();
    let cases = [
        (Partitions::Offsets(vec![]), "empty"),
        (Partitions::Offsets(vec![1, 5]), "first offset must be 0"),
        (Partitions::Offsets(vec![0, 4, 3, 5]), "decrease"),
        (Partitions::Offsets(vec![0, 2, 6]), "last offset"),
        (Partitions::Offsets(vec![0, 4]), "last offset"),
        (Partitions::Offsets(vec![0, u64::MAX]), "last offset"),
        (Partitions::EqualSize(0), "partition size"),
    ];
    for (p, needle) in &cases {
        for op in Op::ALL {
            let errors = [
                (
                    "slice",
                    engine()
                        .reduce_partitions(&data, op, p, NanPolicy::Propagate)
                        .err(),
                ),
                (
                    "device",
                    engine()
                        .reduce_device(&array, op, p, NanPolicy::Ignore)
                        .err(),
                ),
                (
                    "reference",
                    gpulanes::cpu::reference(&data, op, p, NanPolicy::Ignore).err(),
                ),
                ("encode", {
                    let mut enc = engine()
                        .device()
                        .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
                    engine()
                        .encode(&mut enc, &array, op, p, NanPolicy::Ignore)
                        .err()
                }),
            ];
            for (path, err) in errors {
                let err = err.unwrap_or_else(|| panic!("{path}: {p:?} must be rejected"));
                assert!(
                    matches!(err, Error::InvalidPartitions(_)),
                    "{path}: {err:?}"
                );
                let msg = err.to_string();
                assert!(
                    msg.contains(needle),
                    "{path}: {p:?}: {msg:?} should mention {needle:?}"
                );
            }
        }
    }
    let err = Partitions::from_signed_offsets(&[0, -3, 5]).unwrap_err();
    assert!(err.to_string().contains("negative"), "{err}");
    assert!(err.to_string().contains("-3"), "{err}");
    assert!(Partitions::from_signed_offsets(&[0, 2, 5]).is_ok());
    let err = engine()
        .reduce_axis(
            Array2::<f32>::zeros((2, 3)).view(),
            Axis(2),
            Op::Sum,
            NanPolicy::Propagate,
        )
        .unwrap_err();
    assert!(err.to_string().contains("axis"), "{err}");
    // The engine is unharmed.
    let r = reduce(
        engine(),
        &data,
        Op::Sum,
        &Partitions::Whole,
        NanPolicy::Propagate,
    );
    assert_matches_reference(
        &r,
        &data,
        Op::Sum,
        &Partitions::Whole,
        NanPolicy::Propagate,
        "after errors",
    );
}

#[test]
fn device_array_from_another_engine_is_rejected() {
    let data = [1.0f32, 2.0, 3.0];
    let foreign = tiny_engine().upload(&data).unwrap();
    let err = engine()
        .reduce_device(&foreign, Op::Sum, &Partitions::Whole, NanPolicy::Propagate)
        .unwrap_err();
    assert!(err.to_string().contains("another engine"), "{err}");
    let mut enc = engine()
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    let err = engine()
        .encode(
            &mut enc,
            &foreign,
            Op::Sum,
            &Partitions::Whole,
            NanPolicy::Propagate,
        )
        .err()
        .expect("encode must reject a foreign array");
    assert!(err.to_string().contains("another engine"), "{err}");
    // Its own engine accepts it.
    let own = tiny_engine()
        .reduce_device(&foreign, Op::Sum, &Partitions::Whole, NanPolicy::Propagate)
        .unwrap();
    assert_eq!(own.value(), Some(6.0));
}

#[test]
fn engine_options_are_checked() {
    for opts in [
        EngineOptions::default().max_binding_bytes(1000),
        EngineOptions::default().max_buffer_bytes(4096),
    ] {
        let err = Engine::with_options(opts)
            .err()
            .expect("caps below 64 KiB are rejected");
        assert!(err.to_string().contains("at least"), "{err}");
    }
    // Subgroups: forced on works exactly where the adapter has them.
    match subgroup_engine() {
        Some(e) => assert!(e.adapter().subgroups),
        None => assert!(!engine().adapter().subgroups),
    }
    assert!(!no_subgroup_engine().adapter().subgroups);
    assert_eq!(
        no_subgroup_engine().adapter().kernels,
        KernelShape::Workgroup
    );
    assert_eq!(narrow_engine().adapter().kernels, KernelShape::Narrow);
    assert!(!narrow_engine().adapter().subgroups);
    // The default: narrow kernels exactly on CPU adapters (unless
    // GPULANES_KERNELS, which Engine::new honours, picks a shape).
    let a = engine().adapter();
    match KernelShape::from_env().expect("GPULANES_KERNELS, if set, names a shape") {
        Some(shape) => assert_eq!(a.kernels, shape),
        None => assert_eq!(a.kernels == KernelShape::Narrow, a.software, "{a:?}"),
    }
}
