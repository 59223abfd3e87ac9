//! Shared helpers for the integration tests: one engine per configuration
//! per test binary, the comparison rule against the exact CPU reference,
//! bit-for-bit comparison for determinism, a small seeded PRNG and the
//! proptest strategies for f32 data with NaN, infinities and signed zeros.
//!
//! # The comparison rule
//!
//! * `max`, `min`, `count` and every `counts` entry must equal the reference
//!   bit for bit (two NaNs are equal whatever their payload; `-0.0 != +0.0`).
//! * `None` must be `None` and `Some` must be `Some` (empty partitions, and
//!   all-NaN partitions under `NanPolicy::Ignore`).
//! * Sums and means must be the same bits as the reference (two NaNs are
//!   equal whatever their payload), zeros with the reference's sign: the
//!   kernels sum exactly in integers and round once, as the reference does,
//!   on every device (subnormals included: they are decoded from bits, so a
//!   device that flushes them in float arithmetic still counts them).
#![allow(dead_code)]

use std::sync::OnceLock;

use std::collections::BTreeMap;

use gpulanes::{
    Element, Engine, EngineOptions, Grouped, KernelShape, Key, NanPolicy, Op, Partitions,
    Reduction, Scalar, State, StateKind, cpu,
};
use proptest::prelude::*;

/// Both NaN policies.
pub const POLICIES: [NanPolicy; 2] = [NanPolicy::Propagate, NanPolicy::Ignore];

/// The default engine (device limits, the device's default kernel shape or
/// the one `GPULANES_KERNELS` names).
pub fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| Engine::new().expect("default engine (is a Vulkan driver installed?)"))
}

/// The default engine with keyed rows never put in group order on the
/// host (`GPULANES_GROUP=no-sort`): on CPU adapters, where the default
/// engine sorts host-held rows whose keys change often, this one sends
/// them to the kernels that add rows one by one (compact, private and
/// global accumulation).
pub fn unsorted_engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| {
        Engine::with_options(no_host_sort(EngineOptions::default()))
            .expect("engine without host sorting")
    })
}

/// `options` with keyed rows never put in group order on the host.
pub fn no_host_sort(options: EngineOptions) -> EngineOptions {
    options.group_strategy(gpulanes::kernels::GroupStrategy::default().with_sort(false))
}

/// Caps that force binding, buffer, grid and dispatch splitting on small
/// inputs: 64 KiB bindings (16384 floats, 2 blocks), 256 KiB buffers
/// (65536 floats), a 3x3 workgroup grid and 5 units per dispatch.
pub fn tiny_options() -> EngineOptions {
    EngineOptions::default()
        .max_binding_bytes(64 << 10)
        .max_buffer_bytes(256 << 10)
        .max_workgroups_per_dim(3)
        .max_units_per_dispatch(5)
}

/// An engine with [`tiny_options`].
pub fn tiny_engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| Engine::with_options(tiny_options()).expect("engine with tiny caps"))
}

/// An engine whose storage bindings are capped at 64 KiB (the least
/// allowed) and nothing else: one reduction then holds at most 4095
/// partitions (its segment table must fit a binding).
pub fn small_binding_engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| {
        Engine::with_options(EngineOptions::default().max_binding_bytes(64 << 10))
            .expect("engine with 64 KiB bindings")
    })
}

/// An engine with the wide kernels and the workgroup-memory tree.
pub fn no_subgroup_engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| {
        Engine::with_options(EngineOptions::default().kernels(KernelShape::Workgroup))
            .expect("engine with the workgroup tree")
    })
}

/// An engine with the narrow kernels (the default only on CPU adapters).
pub fn narrow_engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| {
        Engine::with_options(EngineOptions::default().kernels(KernelShape::Narrow))
            .expect("engine with the narrow kernels")
    })
}

/// An engine forced onto the subgroup tree, or `None` where the adapter
/// lacks `Features::SUBGROUP` (then asking for it must be an error).
pub fn subgroup_engine() -> Option<&'static Engine> {
    static E: OnceLock<Option<Engine>> = OnceLock::new();
    E.get_or_init(|| {
        let opts = EngineOptions::default().kernels(KernelShape::Subgroup);
        match Engine::with_options(opts) {
            Ok(e) => {
                assert!(e.adapter().subgroups, "the subgroup shape must use them");
                Some(e)
            }
            Err(err) => {
                let msg = err.to_string();
                assert!(
                    msg.contains("subgroup"),
                    "subgroups unavailable must be a clear error, got {msg}"
                );
                None
            }
        }
    })
    .as_ref()
}

/// The default engine and one engine per kernel shape (the subgroup shape
/// where the adapter has it), named for messages.
pub fn every_shape_engine() -> Vec<(&'static str, &'static Engine)> {
    let mut engines = vec![
        ("default", engine()),
        ("wide, workgroup tree", no_subgroup_engine()),
        ("narrow", narrow_engine()),
    ];
    engines.extend(subgroup_engine().map(|e| ("wide, subgroup tree", e)));
    engines
}

/// `engine.reduce_partitions`, panicking with context on error.
pub fn reduce(
    engine: &Engine,
    data: &[f32],
    op: Op,
    partitions: &Partitions,
    nan: NanPolicy,
) -> Reduction {
    engine
        .reduce_partitions(data, op, partitions, nan)
        .unwrap_or_else(|e| {
            panic!(
                "{op} {nan:?} {} on {} items: {e}",
                describe(partitions),
                data.len()
            )
        })
}

/// A short description of partitions (long offset lists abridged).
pub fn describe(partitions: &Partitions) -> String {
    match partitions {
        Partitions::Offsets(o) if o.len() > 12 => format!(
            "Offsets({} values: {:?} .. {:?})",
            o.len(),
            &o[..6],
            &o[o.len() - 6..]
        ),
        p => format!("{p:?}"),
    }
}

/// The exact reference.
pub fn reference(data: &[f32], op: Op, partitions: &Partitions, nan: NanPolicy) -> Reduction {
    cpu::reference(data, op, partitions, nan).expect("reference accepts valid partitions")
}

/// Same f32 bits, or both NaN.
pub fn same_value(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn show(v: Option<f32>) -> String {
    match v {
        Some(x) => format!("{x:e} ({:#010x})", x.to_bits()),
        None => "None".into(),
    }
}

/// Asserts that `got` matches the exact reference for `data` under the
/// comparison rule of the module doc. `what` names the case in messages.
pub fn assert_matches_reference(
    got: &Reduction,
    data: &[f32],
    op: Op,
    partitions: &Partitions,
    nan: NanPolicy,
    what: &str,
) {
    let want = reference(data, op, partitions, nan);
    let offsets = partitions.offsets(data.len() as u64).expect("valid");
    let ctx = format!("{what}: {op} {nan:?}");
    assert_eq!(got.op, op, "{ctx}: op");
    assert_eq!(
        got.values.len(),
        want.values.len(),
        "{ctx}: partition count"
    );
    assert_eq!(got.counts, want.counts, "{ctx}: counts");
    for (i, (g, w)) in got.values.iter().zip(&want.values).enumerate() {
        let part = &data[offsets[i] as usize..offsets[i + 1] as usize];
        let pctx = || {
            format!(
                "{ctx}, partition {i} ({} items at {}): got {}, want {}",
                part.len(),
                offsets[i],
                show(*g),
                show(*w)
            )
        };
        match (g, w) {
            (None, None) => {}
            (Some(g), Some(w)) => assert!(same_value(*g, *w), "{}", pctx()),
            _ => panic!("{}: emptiness differs", pctx()),
        }
    }
}

/// Reduces `data` with every op and both NaN policies on `engine` and checks
/// each result against the reference.
pub fn check_all_ops(engine: &Engine, data: &[f32], partitions: &Partitions, what: &str) {
    for op in Op::ALL {
        for nan in POLICIES {
            let got = reduce(engine, data, op, partitions, nan);
            assert_matches_reference(&got, data, op, partitions, nan, what);
        }
    }
}

/// Asserts two reductions are identical bit for bit (values and counts).
pub fn assert_same_bits(a: &Reduction, b: &Reduction, what: &str) {
    assert_eq!(a.op, b.op, "{what}: op");
    assert_eq!(a.counts, b.counts, "{what}: counts");
    assert_eq!(a.values.len(), b.values.len(), "{what}: partitions");
    for (i, (x, y)) in a.values.iter().zip(&b.values).enumerate() {
        let bits = |v: &Option<f32>| v.map(f32::to_bits);
        assert_eq!(
            bits(x),
            bits(y),
            "{what}: partition {i}: {} vs {}",
            show(*x),
            show(*y)
        );
    }
}

/// SplitMix64: a tiny seeded generator for large deterministic inputs.
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }

    /// A finite value of random sign with magnitude in 2^[lo_exp, hi_exp),
    /// log-uniformly distributed.
    pub fn log_uniform(&mut self, lo_exp: i32, hi_exp: i32) -> f32 {
        let e = self.range(lo_exp as f64, hi_exp as f64);
        let v = 2f64.powf(e) as f32;
        if self.next_u64() & 1 == 0 { v } else { -v }
    }
}

/// Random data of `n` items: mostly finite values of mixed magnitude, with
/// NaN, infinities, signed zeros and subnormals each at about `per_mille`/1000.
pub fn mixed_data(rng: &mut SplitMix, n: usize, per_mille: u64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let sel = rng.below(1000);
            if sel < per_mille {
                special(rng.next_u64())
            } else {
                rng.log_uniform(-10, 20)
            }
        })
        .collect()
}

/// The special values, picked by `sel`.
pub fn special(sel: u64) -> f32 {
    const SPECIALS: [u32; 10] = [
        0x7fc0_0000, // NaN
        0xffc0_0000, // -NaN
        0x7f80_0001, // signalling NaN
        0x7fc1_2345, // NaN with payload
        0x7f80_0000, // +inf
        0xff80_0000, // -inf
        0x8000_0000, // -0.0
        0x0000_0000, // +0.0
        0x0000_0001, // smallest subnormal
        0x807f_ffff, // largest negative subnormal
    ];
    f32::from_bits(SPECIALS[(sel % SPECIALS.len() as u64) as usize])
}

/// One f32: mostly finite values (uniform, integer-valued, scaled by
/// 2^-40..2^40, subnormal, signed zero), else a special value, with the
/// special share set by `per_mille`.
pub fn element(per_mille: u32) -> impl Strategy<Value = f32> {
    let finite = prop_oneof![
        4 => -1.0f32..1.0,
        2 => (-100i32..100).prop_map(|i| i as f32),
        3 => (-1.0f32..1.0, -40i32..40).prop_map(|(m, e)| m * 2f32.powi(e)),
        1 => (1u32..0x80_0000, any::<bool>())
            .prop_map(|(b, neg)| f32::from_bits(b | if neg { 0x8000_0000 } else { 0 })),
        1 => prop_oneof![Just(0.0f32), Just(-0.0f32)],
    ];
    (0u32..1000, finite, any::<u64>()).prop_map(
        move |(sel, x, s)| {
            if sel < per_mille { special(s) } else { x }
        },
    )
}

/// Random data: lengths mostly small (0..700), sometimes over two blocks
/// (0..20000); per case the share of special values is none, low or high.
pub fn data_strategy() -> impl Strategy<Value = Vec<f32>> {
    let len = prop_oneof![3 => 0usize..700, 1 => 0usize..20_000];
    let rate = prop_oneof![Just(0u32), Just(2u32), Just(40u32)];
    (len, rate).prop_flat_map(|(n, r)| proptest::collection::vec(element(r), n))
}

/// Data with random Arrow offsets over it: up to 40 cuts, duplicates (empty
/// partitions) likely, including at the start and the end.
pub fn data_and_offsets() -> impl Strategy<Value = (Vec<f32>, Vec<u64>)> {
    data_strategy().prop_flat_map(|data| {
        let n = data.len() as u64;
        let cut = prop_oneof![1 => Just(0u64), 1 => Just(n), 6 => 0..=n];
        (Just(data), proptest::collection::vec(cut, 0..40)).prop_map(move |(data, mut cuts)| {
            cuts.sort_unstable();
            let mut offsets = Vec::with_capacity(cuts.len() + 2);
            offsets.push(0);
            offsets.extend(cuts);
            offsets.push(n);
            (data, offsets)
        })
    })
}

/// Data with an equal partition size giving at most about 80 partitions.
pub fn data_and_size() -> impl Strategy<Value = (Vec<f32>, u64)> {
    (data_strategy(), 1u64..=80, 0u64..=8).prop_map(|(data, k, extra)| {
        let size = (data.len() as u64 / k).max(1) + extra;
        (data, size)
    })
}

/// Proptest config: few cases (lavapipe runs the shaders on the CPU), no
/// regression files written into the source tree.
pub fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    }
}

/// A typed result's bits, NaN payloads made equal (zeros keep their sign).
pub fn scalar_bits(v: Option<Scalar>) -> Option<(u8, u64)> {
    v.map(|s| match s {
        Scalar::F32(x) if x.is_nan() => (0, u64::MAX),
        Scalar::F64(x) if x.is_nan() => (1, u64::MAX),
        Scalar::F32(x) => (0, x.to_bits() as u64),
        Scalar::F64(x) => (1, x.to_bits()),
        Scalar::I32(x) => (2, x as u32 as u64),
        Scalar::U32(x) => (3, x as u64),
        Scalar::I64(x) => (4, x as u64),
    })
}

/// One reduction of a keyed result as its op, value bits and counts.
pub type ReductionBits = (Op, Vec<Option<(u8, u64)>>, Vec<u64>);

/// Every reduction of a keyed result as bits, its keys left out (compare
/// them apart: the same groups may come keyed by another type).
pub fn reduction_bits<K>(g: &gpulanes::Grouped<K>) -> Vec<ReductionBits> {
    g.reductions
        .iter()
        .map(|r| {
            (
                r.op,
                r.values.iter().map(|v| scalar_bits(*v)).collect(),
                r.counts.clone(),
            )
        })
        .collect()
}

/// A keyed result as bits: its keys, and every reduction's bits.
pub fn grouped_bits<K: Clone>(g: &gpulanes::Grouped<K>) -> (Vec<K>, Vec<ReductionBits>) {
    (g.keys.clone(), reduction_bits(g))
}

/// The exact reference of a keyed reduction: rows grouped in a BTreeMap,
/// each group's exact `State` over its values finalised. With `valid`, a
/// row marked false is null: it names its key's group and adds no value,
/// and a group without values has count 0 and no other value (SQL).
pub fn keyed_reference<K: Key, E: Element>(
    keys: &[K],
    values: &[E],
    valid: Option<&[bool]>,
    ops: &[Op],
    nan: NanPolicy,
) -> Grouped<K> {
    let mut groups: BTreeMap<K, Vec<E>> = BTreeMap::new();
    for (i, (&k, &v)) in keys.iter().zip(values).enumerate() {
        let g = groups.entry(k).or_default();
        if valid.is_none_or(|m| m[i]) {
            g.push(v);
        }
    }
    let mut out = Grouped {
        keys: groups.keys().copied().collect(),
        reductions: ops
            .iter()
            .map(|&op| Reduction {
                op,
                values: Vec::new(),
                counts: Vec::new(),
            })
            .collect(),
    };
    for vals in groups.values() {
        for r in &mut out.reductions {
            if vals.is_empty() {
                r.values.push((r.op == Op::Count).then_some(Scalar::I64(0)));
                r.counts.push(0);
            } else {
                let s = State::of(vals, StateKind::for_op(r.op));
                r.values.push(s.finalize(r.op, nan).unwrap());
                r.counts.push(s.count(nan));
            }
        }
    }
    out
}

/// Asserts `got` has the keys, counts and value bits of `want`, naming the
/// first key whose value differs.
pub fn assert_grouped_same<K: Key + std::fmt::Debug>(
    what: &str,
    got: &Grouped<K>,
    want: &Grouped<K>,
) {
    assert_eq!(got.keys, want.keys, "{what}: keys");
    assert_eq!(got.reductions.len(), want.reductions.len(), "{what}: ops");
    for (g, w) in got.reductions.iter().zip(&want.reductions) {
        assert_eq!(g.op, w.op);
        assert_eq!(g.counts, w.counts, "{what}: {} counts", g.op.name());
        for (i, (a, b)) in g.values.iter().zip(&w.values).enumerate() {
            assert_eq!(
                scalar_bits(*a),
                scalar_bits(*b),
                "{what}: {} of key {:?}: got {a:?}, want {b:?}",
                g.op.name(),
                got.keys[i]
            );
        }
    }
}
