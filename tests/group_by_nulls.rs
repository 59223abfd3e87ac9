//! Keyed reductions over values with nulls (a validity bitmap) against an
//! exact reference with SQL's rule: null values skipped and not counted,
//! their keys still groups, a key whose values are all null with count 0
//! and no other value. Null slots hold values (NaN, infinities, the type's
//! extremes) that would change every result if read. Covers every value
//! dtype and key type, bitmaps at bit offsets, no, some and only nulls,
//! both NaN policies, row permutations, per-key states merged across
//! splits, both lanes, and bad bitmaps.

mod common;

use std::collections::BTreeMap;

use common::{
    POLICIES, SplitMix, assert_grouped_same, engine, keyed_reference, reduction_bits, scalar_bits,
    unsorted_engine,
};
use gpulanes::{
    Element, Engine, Error, Grouped, Key, Lane, Lanes, LanesConfig, NanPolicy, Op, Request, Scalar,
    State, StateKind, Validity,
};

const OPS: [Op; 5] = [Op::Sum, Op::Mean, Op::Max, Op::Min, Op::Count];

/// The reference (`keyed_reference` with the nulls marked).
fn reference<K: Key, E: Element>(
    keys: &[K],
    values: &[E],
    valid: &[bool],
    nan: NanPolicy,
) -> Grouped<K> {
    keyed_reference(keys, values, Some(valid), &OPS, nan)
}

/// `valid` packed at bit `offset` of a bitmap whose other bits are set
/// (so a read outside the range would see values).
fn bitmap_at(valid: &[bool], offset: usize) -> Vec<u8> {
    Validity::pack(
        std::iter::repeat_n(true, offset)
            .chain(valid.iter().copied())
            .chain(std::iter::repeat_n(true, 13)),
    )
}

/// A value that poisons any result it reaches.
trait Poison: Element {
    fn poison(i: usize) -> Self;
}
impl Poison for f32 {
    fn poison(i: usize) -> Self {
        [f32::NAN, f32::INFINITY, f32::MAX, -0.0][i % 4]
    }
}
impl Poison for f64 {
    fn poison(i: usize) -> Self {
        [f64::NAN, f64::NEG_INFINITY, f64::MAX, 1e300][i % 4]
    }
}
impl Poison for i32 {
    fn poison(i: usize) -> Self {
        [i32::MAX, i32::MIN][i % 2]
    }
}
impl Poison for i64 {
    fn poison(i: usize) -> Self {
        [i64::MAX, i64::MIN][i % 2]
    }
}

/// Checks `e` against the reference for these rows at bitmap offsets 0
/// and 5, with poison in the null slots; returns the result.
fn check<K: Key + std::fmt::Debug, E: Poison>(
    e: &Engine,
    what: &str,
    keys: &[K],
    values: &[E],
    valid: &[bool],
    nan: NanPolicy,
) -> Grouped<K> {
    let poisoned: Vec<E> = values
        .iter()
        .zip(valid)
        .enumerate()
        .map(|(i, (&v, &ok))| if ok { v } else { E::poison(i) })
        .collect();
    let want = reference(keys, &poisoned, valid, nan);
    let mut first = None;
    for offset in [0, 5] {
        let bits = bitmap_at(valid, offset);
        let v = Validity::new(&bits, offset, valid.len()).unwrap();
        let got = e
            .reduce_by_key_with_nulls(keys, &poisoned, v, &OPS, nan)
            .unwrap_or_else(|err| panic!("{what}: {err}"));
        assert_grouped_same(&format!("{what} (bit offset {offset})"), &got, &want);
        first.get_or_insert(got);
    }
    first.unwrap()
}

fn floats(rng: &mut SplitMix, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| match rng.below(50) {
            0 => f32::NAN,
            1 => f32::NEG_INFINITY,
            2 => -0.0,
            3 => 1e-42,
            _ => rng.range(-1e30, 1e30) as f32,
        })
        .collect()
}

/// `n` flags of which about `per_mille`/1000 are false.
fn validity(rng: &mut SplitMix, n: usize, per_mille: u64) -> Vec<bool> {
    (0..n).map(|_| rng.below(1000) >= per_mille).collect()
}

#[test]
fn null_values_are_skipped_and_their_keys_kept() {
    let mut rng = SplitMix::new(41);
    for e in [engine(), unsorted_engine()] {
        for n in [1usize, 7, 300, 4099, 70_000] {
            for cardinality in [1u64, 7, 1000, (n as u64 / 2).max(1), n as u64] {
                for per_mille in [0, 100, 900, 1000] {
                    let keys: Vec<i32> = (0..n)
                        .map(|_| rng.below(cardinality) as i32 * 3 - 1000)
                        .collect();
                    let values = floats(&mut rng, n);
                    let valid = validity(&mut rng, n, per_mille);
                    for nan in POLICIES {
                        let what = format!("{n} rows, {cardinality} keys, {per_mille}‰ null");
                        check(e, &what, &keys, &values, &valid, nan);
                    }
                }
            }
        }
    }
}

#[test]
fn every_value_dtype_and_key_type() {
    let e = engine();
    let mut rng = SplitMix::new(42);
    let n = 5000;
    let valid = validity(&mut rng, n, 300);
    let k64: Vec<i64> = (0..n)
        .map(|_| {
            let base = [i64::MIN, i64::MAX, 0, -1][rng.below(4) as usize];
            base.saturating_add(rng.below(50) as i64 - 25)
        })
        .collect();
    let k32: Vec<i32> = (0..n).map(|_| rng.below(900) as i32 - 450).collect();
    let ku: Vec<u32> = (0..n).map(|_| u32::MAX - rng.below(70) as u32).collect();
    let f64s: Vec<f64> = (0..n).map(|_| rng.range(-1e300, 1e300)).collect();
    let i32s: Vec<i32> = (0..n).map(|_| rng.next_u64() as i32).collect();
    let i64s: Vec<i64> = (0..n)
        .map(|_| (rng.next_u64() >> 20) as i64 - (1 << 43))
        .collect();
    for nan in POLICIES {
        check(e, "i64 keys, f64", &k64, &f64s, &valid, nan);
        check(e, "i32 keys, i32", &k32, &i32s, &valid, nan);
        check(e, "u32 keys, i64", &ku, &i64s, &valid, nan);
        check(e, "i64 keys, f32", &k64, &floats(&mut rng, n), &valid, nan);
    }
    // Sparse keys (named by the dictionary) with nulls.
    let sparse: Vec<i64> = (0..n).map(|_| (rng.below(600) as i64) << 35).collect();
    check(
        e,
        "sparse i64 keys",
        &sparse,
        &f64s,
        &valid,
        NanPolicy::Ignore,
    );
}

#[test]
fn null_groups_differ_from_nan_groups_and_row_order_changes_nothing() {
    let e = engine();
    // Key 1: all null; key 2: all NaN; key 3: a value and a null.
    let keys = [2i32, 1, 3, 2, 1, 3];
    let values = [f64::NAN, 5.0, 1.25, f64::NAN, 6.0, 7.0];
    let valid = [true, false, true, true, false, false];
    let g = check(e, "null vs NaN", &keys, &values, &valid, NanPolicy::Ignore);
    assert_eq!(g.keys, vec![1, 2, 3]);
    let sum = &g.reductions[0];
    assert_eq!(sum.values[0], None, "all null: no sum");
    assert_eq!(sum.values[1], Some(Scalar::F64(0.0)), "all NaN, ignored: 0");
    assert_eq!(sum.values[2], Some(Scalar::F64(1.25)));
    assert_eq!(g.reductions[4].values[0], Some(Scalar::I64(0)));
    let g = check(
        e,
        "null vs NaN",
        &keys,
        &values,
        &valid,
        NanPolicy::Propagate,
    );
    assert!(matches!(g.reductions[0].values[1], Some(Scalar::F64(x)) if x.is_nan()));
    assert_eq!(g.reductions[0].values[0], None);

    // A permutation of the rows (each with its bit) gives the same bits.
    let mut rng = SplitMix::new(43);
    let n = 20_000;
    let keys: Vec<i64> = (0..n).map(|_| rng.below(3000) as i64 * 7).collect();
    let values = floats(&mut rng, n);
    let valid = validity(&mut rng, n, 500);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let pk: Vec<i64> = order.iter().map(|&i| keys[i]).collect();
    let pv: Vec<f32> = order.iter().map(|&i| values[i]).collect();
    let pm: Vec<bool> = order.iter().map(|&i| valid[i]).collect();
    for nan in POLICIES {
        let a = check(e, "rows", &keys, &values, &valid, nan);
        let b = check(e, "permuted rows", &pk, &pv, &pm, nan);
        assert_eq!(reduction_bits(&a), reduction_bits(&b));
    }
}

#[test]
fn states_of_any_split_merge_to_the_whole() {
    let e = engine();
    let mut rng = SplitMix::new(44);
    let n = 12_000;
    let keys: Vec<i32> = (0..n).map(|_| rng.below(500) as i32).collect();
    let values = floats(&mut rng, n);
    // Keys 0..50 have only nulls, so some pieces hold only their nulls.
    let valid: Vec<bool> = keys.iter().map(|&k| k >= 50 && rng.below(10) > 2).collect();
    let bits = Validity::pack(valid.iter().copied());
    for kind in [StateKind::Sum, StateKind::Max, StateKind::Min] {
        let mut merged: BTreeMap<i32, State> = BTreeMap::new();
        for piece in [0..3000, 3000..3001, 3001..9000, 9000..n] {
            let v = Validity::new(&bits, piece.start, piece.len()).unwrap();
            let s = e
                .states_by_key_with_nulls(&keys[piece.clone()], &values[piece], v, kind)
                .unwrap();
            for (k, st) in s.keys.iter().zip(&s.states) {
                match merged.get_mut(k) {
                    Some(m) => m.merge(st).unwrap(),
                    None => {
                        merged.insert(*k, st.clone());
                    }
                }
            }
        }
        let whole = e
            .reduce_by_key_with_nulls(
                &keys,
                &values,
                Validity::new(&bits, 0, n).unwrap(),
                &OPS,
                NanPolicy::Propagate,
            )
            .unwrap();
        assert_eq!(merged.keys().copied().collect::<Vec<_>>(), whole.keys);
        for r in whole
            .reductions
            .iter()
            .filter(|r| r.op == Op::Count || StateKind::for_op(r.op) == kind)
        {
            for (i, state) in merged.values().enumerate() {
                // The keyed rule: an empty state is a group of nulls.
                let got = if state.is_empty() && r.op != Op::Count {
                    None
                } else {
                    state.finalize(r.op, NanPolicy::Propagate).unwrap()
                };
                assert_eq!(
                    scalar_bits(got),
                    scalar_bits(r.values[i]),
                    "{kind:?} {}",
                    r.op
                );
            }
        }
        assert!(merged.values().take(50).all(State::is_empty));
    }
}

#[test]
fn both_lanes_give_the_bits_of_the_engine() {
    let e = engine();
    let config = LanesConfig::default()
        .quantum(std::time::Duration::ZERO)
        .min_chunk_units(1)
        .max_chunk_units(1);
    let lanes = Lanes::new(e, config).unwrap();
    let mut rng = SplitMix::new(45);
    for (n, per_mille) in [(0usize, 0u64), (9, 1000), (5000, 200), (60_000, 700)] {
        let keys: Vec<i64> = (0..n).map(|_| rng.below(400) as i64 - 200).collect();
        let values = floats(&mut rng, n);
        let valid = validity(&mut rng, n, per_mille);
        let bits = Validity::pack(valid.iter().copied());
        for lane in [Lane::RealTime, Lane::Batch] {
            for nan in POLICIES {
                let v = Validity::new(&bits, 0, n).unwrap();
                let want = check(e, "lanes", &keys, &values, &valid, nan);
                let request = Request::keyed_with_nulls(&keys, &values, v, &OPS, nan);
                let got = lanes.submit(lane, request).unwrap().wait().unwrap();
                assert_grouped_same(&format!("{n} rows, {lane:?}, {nan:?}"), &got, &want);
            }
        }
    }
}

#[test]
fn a_bitmap_of_another_length_is_refused() {
    let e = engine();
    let keys = [1i32, 2, 3];
    let values = [1.0f32, 2.0, 3.0];
    let bits = Validity::pack([true, false, true, true]);
    let four = Validity::new(&bits, 0, 4).unwrap();
    let err = e
        .reduce_by_key_with_nulls(&keys, &values, four, &OPS, NanPolicy::Propagate)
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput(m) if m.contains("validity") && m.contains('4')),
        "{err}"
    );
    let err = e
        .states_by_key_with_nulls(&keys, &values, four, StateKind::Sum)
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    let three = Validity::new(&bits, 0, 3).unwrap();
    let err = e
        .reduce_by_key_with_nulls(&keys[..2], &values, three, &OPS, NanPolicy::Propagate)
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    let lanes = Lanes::new(e, LanesConfig::default()).unwrap();
    let request = Request::keyed_with_nulls(&keys, &values, four, &OPS, NanPolicy::Propagate);
    match lanes.submit(Lane::RealTime, request) {
        Err(Error::InvalidInput(m)) => assert!(m.contains("validity"), "{m}"),
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a bitmap of another length was accepted"),
    }
    // The engine serves the next request as before.
    let ok = e
        .reduce_by_key_with_nulls(&keys, &values, three, &OPS, NanPolicy::Propagate)
        .unwrap();
    assert_eq!(ok.keys, vec![1, 2, 3]);
}
