//! Arrow input (the `arrow` feature) against exact references: every
//! result equals `State::of` over the non-null values finalised the same
//! way (itself checked in tests/exact.rs), and agrees with arrow-rs's own
//! `sum`/`min`/`max` kernels where their semantics meet. Covers nulls beside NaN under
//! both NaN policies, sliced arrays, empty and all-null arrays, every
//! dtype, chunked columns, lists with null, empty and all-null lists
//! (i32 and i64 offsets, sliced), and dictionary codes as group keys.
#![cfg(feature = "arrow")]

mod common;

use std::sync::Arc;

use arrow_arith::aggregate;
use arrow_array::ArrowNumericType;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int8Type, Int32Type};
use arrow_array::{
    Array, ArrayRef, DictionaryArray, Float32Array, Float64Array, Int32Array, Int64Array,
    LargeListArray, ListArray, PrimitiveArray, StringArray, UInt32Array,
};
use common::{POLICIES, engine, scalar_bits};
use gpulanes::{Dtype, Element, NanPolicy, Op, Scalar, State, StateKind};

const OPS: [Op; 5] = [Op::Sum, Op::Mean, Op::Max, Op::Min, Op::Count];

/// The exact reference: `op` over the non-null values; values that are
/// all null have a count of 0 and no other value (SQL).
fn reference<E: Element>(values: &[Option<E>], op: Op, nan: NanPolicy) -> Option<Scalar> {
    let dense: Vec<E> = values.iter().flatten().copied().collect();
    if dense.is_empty() && !values.is_empty() && op != Op::Count {
        return None;
    }
    State::of(&dense, StateKind::for_op(op))
        .finalize(op, nan)
        .unwrap()
}

/// Slot `i` of a result array as a scalar (`None` for a null slot).
fn slot(a: &ArrayRef, i: usize) -> Option<Scalar> {
    if a.is_null(i) {
        return None;
    }
    Some(if let Some(a) = a.as_any().downcast_ref::<Float32Array>() {
        Scalar::F32(a.value(i))
    } else if let Some(a) = a.as_any().downcast_ref::<Float64Array>() {
        Scalar::F64(a.value(i))
    } else if let Some(a) = a.as_any().downcast_ref::<Int32Array>() {
        Scalar::I32(a.value(i))
    } else if let Some(a) = a.as_any().downcast_ref::<UInt32Array>() {
        Scalar::U32(a.value(i))
    } else {
        Scalar::I64(a.as_primitive::<arrow_array::types::Int64Type>().value(i))
    })
}

#[test]
fn nulls_are_skipped_and_nan_follows_the_policy() {
    let e = engine();
    // Polars' example: sum NaN under propagate, the null skipped.
    let a = Float64Array::from(vec![Some(1.0), Some(f64::NAN), None, Some(3.0)]);
    let sum = e.reduce_arrow(&a, Op::Sum, NanPolicy::Propagate).unwrap();
    assert!(sum.unwrap().is_nan());
    let count = e.reduce_arrow(&a, Op::Count, NanPolicy::Propagate).unwrap();
    assert_eq!(count, Some(Scalar::I64(3)));
    let mean = e.reduce_arrow(&a, Op::Mean, NanPolicy::Ignore).unwrap();
    assert_eq!(mean, Some(Scalar::F64(2.0)));
    // A null slot's hidden value (999) is never read.
    let b = Float32Array::from(vec![Some(1.0), None, Some(3.0), None]);
    let b = {
        let (_, values, nulls) = b.into_parts();
        let mut v = values.to_vec();
        v[1] = 999.0;
        Float32Array::new(v.into(), nulls)
    };
    assert_eq!(
        e.reduce_arrow(&b, Op::Mean, NanPolicy::Propagate).unwrap(),
        Some(Scalar::F32(2.0))
    );
    assert_eq!(
        e.reduce_arrow(&b, Op::Count, NanPolicy::Propagate).unwrap(),
        Some(Scalar::I64(2))
    );
    assert_eq!(
        e.reduce_arrow(&b, Op::Sum, NanPolicy::Propagate).unwrap(),
        Some(Scalar::F32(4.0))
    );
}

/// A value of an Arrow array as a scalar of its own type.
fn native<E: Element>(v: E) -> Scalar {
    match E::DTYPE {
        Dtype::F32 => Scalar::F32(bytemuck::cast(v)),
        Dtype::F64 => Scalar::F64(bytemuck::cast(v)),
        Dtype::I32 => Scalar::I32(bytemuck::cast(v)),
        Dtype::U32 => Scalar::U32(bytemuck::cast(v)),
        Dtype::I64 => Scalar::I64(bytemuck::cast(v)),
    }
}

/// An integer scalar as i128 (`None` for floats).
fn int(s: Scalar) -> Option<i128> {
    match s {
        Scalar::I32(v) => Some(v as i128),
        Scalar::U32(v) => Some(v as i128),
        Scalar::I64(v) => Some(v as i128),
        _ => None,
    }
}

/// The engine against arrow-rs's own `sum`/`min`/`max` kernels where
/// their semantics agree: arrays with at least one non-null value and no
/// NaN (arrow-rs orders NaN above every number, so its `min` skips NaN);
/// integer sums equal, float sums within rounding (arrow-rs adds in float
/// arithmetic, the engine rounds the exact sum once).
fn check_against_arrow_kernels<T>(array: &PrimitiveArray<T>)
where
    T: ArrowNumericType,
    T::Native: Element,
{
    let e = engine();
    let dense: Vec<T::Native> = array.iter().flatten().collect();
    if dense.is_empty() || dense.iter().any(|&v| native(v).is_nan()) {
        return;
    }
    let nan = NanPolicy::Propagate;
    let want = |v: Option<T::Native>| v.map(native);
    let got_max = e.reduce_arrow(array, Op::Max, nan).unwrap();
    assert_eq!(
        scalar_bits(got_max),
        scalar_bits(want(aggregate::max(array)))
    );
    let got_min = e.reduce_arrow(array, Op::Min, nan).unwrap();
    assert_eq!(
        scalar_bits(got_min),
        scalar_bits(want(aggregate::min(array)))
    );
    let got = e.reduce_arrow(array, Op::Sum, nan).unwrap().unwrap();
    if let Ok(Some(s)) = aggregate::sum_checked(array) {
        match (int(got), int(native(s))) {
            (Some(g), Some(w)) => assert_eq!(g, w),
            _ => {
                let (g, w) = (got.as_f64(), native(s).as_f64());
                let scale: f64 = dense.iter().map(|&v| native(v).as_f64().abs()).sum();
                assert!((g - w).abs() <= scale * 1e-6, "sum {g} vs arrow-rs {w}");
            }
        }
    }
}

fn check_all<T>(values: Vec<Option<T::Native>>)
where
    T: ArrowNumericType,
    T::Native: Element,
{
    let e = engine();
    let array: PrimitiveArray<T> = values.iter().copied().collect();
    // Whole, and a slice whose offset is not 0.
    let n = values.len();
    let (lo, hi) = (n / 3, n - n / 4);
    let sliced = array.slice(lo, hi - lo);
    for nan in POLICIES {
        for op in OPS {
            let got = e.reduce_arrow(&array, op, nan).unwrap();
            assert_eq!(
                scalar_bits(got),
                scalar_bits(reference(&values, op, nan)),
                "{op} {nan:?}"
            );
            let got = e.reduce_arrow(&sliced, op, nan).unwrap();
            let want = reference(&values[lo..hi], op, nan);
            assert_eq!(scalar_bits(got), scalar_bits(want), "sliced {op} {nan:?}");
        }
    }
    check_against_arrow_kernels(&array);
    check_against_arrow_kernels(&sliced);
}

#[test]
fn every_dtype_with_nulls_and_slices() {
    let n = 5000usize;
    let null = |i: usize| i % 7 == 3;
    check_all::<Float32Type>(
        (0..n)
            .map(|i| {
                (!null(i)).then(|| match i % 101 {
                    0 => f32::NAN,
                    1 => -0.0,
                    _ => (i as f32 * 0.37).sin() * 1e6,
                })
            })
            .collect(),
    );
    check_all::<Float64Type>(
        (0..n)
            .map(|i| (!null(i)).then(|| (i as f64 * 1.3).cos() * 1e-3))
            .collect(),
    );
    check_all::<Int32Type>(
        (0..n)
            .map(|i| (!null(i)).then(|| (i as i32 - 2500) * 1000))
            .collect(),
    );
    check_all::<arrow_array::types::UInt32Type>(
        (0..n)
            .map(|i| (!null(i)).then(|| u32::MAX - i as u32))
            .collect(),
    );
    check_all::<arrow_array::types::Int64Type>(
        (0..n)
            .map(|i| (!null(i)).then(|| (i as i64 - 99) << 32))
            .collect(),
    );
    // Without nulls (the in-place path).
    check_all::<Float32Type>((0..n).map(|i| Some(i as f32 - 7.5)).collect());
}

#[test]
fn empty_and_all_null() {
    let e = engine();
    // Chunks: only nulls and an empty chunk have no sum; one value has.
    let nulls = Float64Array::from(vec![None, None]);
    let none = Float64Array::from(Vec::<Option<f64>>::new());
    let one = Float64Array::from(vec![Some(2.5)]);
    for nan in POLICIES {
        let chunks = |c: &[&Float64Array], op| e.reduce_arrow_chunks(c, op, nan).unwrap();
        assert_eq!(chunks(&[&nulls, &none], Op::Sum), None);
        assert_eq!(chunks(&[&nulls, &none], Op::Count), Some(Scalar::I64(0)));
        assert_eq!(chunks(&[&none], Op::Sum), Some(Scalar::F64(0.0)));
        assert_eq!(chunks(&[&nulls, &one], Op::Sum), Some(Scalar::F64(2.5)));
        assert_eq!(chunks(&[&nulls, &one], Op::Count), Some(Scalar::I64(1)));
    }
    for (a, empty) in [
        (Float64Array::from(Vec::<Option<f64>>::new()), true),
        (Float64Array::from(vec![None, None, None]), false),
        (Float64Array::from(vec![Some(1.0), None]).slice(1, 1), false),
    ] {
        for nan in POLICIES {
            // Sum of nothing is 0; of only nulls, NULL (SQL).
            assert_eq!(
                e.reduce_arrow(&a, Op::Sum, nan).unwrap(),
                empty.then_some(Scalar::F64(0.0))
            );
            assert_eq!(
                e.reduce_arrow(&a, Op::Count, nan).unwrap(),
                Some(Scalar::I64(0))
            );
            for op in [Op::Mean, Op::Max, Op::Min] {
                assert_eq!(e.reduce_arrow(&a, op, nan).unwrap(), None, "{op}");
            }
        }
    }
}

#[test]
fn chunks_reduce_as_one_column() {
    let e = engine();
    let all: Vec<Option<f32>> = (0..3000)
        .map(|i| (i % 5 != 0).then(|| (i as f32).sqrt() * if i % 2 == 0 { 1.0 } else { -1e3 }))
        .collect();
    let chunks: Vec<Float32Array> = [0..1000, 1000..1000, 1000..2999, 2999..3000]
        .into_iter()
        .map(|r| Float32Array::from(all[r].to_vec()))
        .collect();
    let refs: Vec<&Float32Array> = chunks.iter().collect();
    for nan in POLICIES {
        for op in OPS {
            let got = e.reduce_arrow_chunks(&refs, op, nan).unwrap();
            assert_eq!(
                scalar_bits(got),
                scalar_bits(reference(&all, op, nan)),
                "{op}"
            );
        }
    }
    assert_eq!(
        e.reduce_arrow_chunks::<Float32Type>(&[], Op::Max, NanPolicy::Propagate)
            .unwrap(),
        None
    );
}

#[test]
fn lists_give_one_result_per_list_with_validity() {
    let e = engine();
    let lists: Vec<Option<Vec<Option<i32>>>> = vec![
        Some(vec![Some(1), Some(2), None, Some(4)]),
        Some(vec![]),
        None,
        Some(vec![None, None]),
        Some(vec![Some(-5)]),
        Some((0..3000).map(|i| (i % 3 != 0).then_some(i)).collect()),
    ];
    let small = ListArray::from_iter_primitive::<Int32Type, _, _>(lists.clone());
    let large = LargeListArray::from_iter_primitive::<Int32Type, _, _>(lists.clone());
    for nan in POLICIES {
        for op in OPS {
            let want: Vec<Option<Scalar>> = lists
                .iter()
                .map(|l| l.as_ref().and_then(|l| reference(l, op, nan)))
                .collect();
            for got in [
                e.reduce_arrow_lists(&small, op, nan).unwrap(),
                e.reduce_arrow_lists(&large, op, nan).unwrap(),
            ] {
                assert_eq!(got.len(), lists.len());
                let got: Vec<_> = (0..got.len()).map(|i| scalar_bits(slot(&got, i))).collect();
                let want: Vec<_> = want.iter().map(|v| scalar_bits(*v)).collect();
                assert_eq!(got, want, "{op} {nan:?}");
            }
            // A slice of the lists: offsets rebased to the child.
            let sliced = e.reduce_arrow_lists(&small.slice(3, 3), op, nan).unwrap();
            let got: Vec<_> = (0..3).map(|i| scalar_bits(slot(&sliced, i))).collect();
            let want: Vec<_> = want[3..].iter().map(|v| scalar_bits(*v)).collect();
            assert_eq!(got, want, "sliced {op} {nan:?}");
        }
    }
    // Float lists with NaN: the result type is the input's float type.
    let f = ListArray::from_iter_primitive::<Float32Type, _, _>(vec![Some(vec![
        Some(1.5),
        Some(f32::NAN),
        None,
    ])]);
    let sum = e
        .reduce_arrow_lists(&f, Op::Sum, NanPolicy::Ignore)
        .unwrap();
    assert_eq!(slot(&sum, 0), Some(Scalar::F32(1.5)));
    let sum = e
        .reduce_arrow_lists(&f, Op::Sum, NanPolicy::Propagate)
        .unwrap();
    assert!(slot(&sum, 0).unwrap().is_nan());
}

#[test]
fn arrays_typed_at_run_time() {
    let e = engine();
    let a: ArrayRef = Arc::new(UInt32Array::from(vec![Some(4), None, Some(u32::MAX)]));
    assert_eq!(
        e.reduce_arrow_dyn(a.as_ref(), Op::Sum, NanPolicy::Propagate)
            .unwrap(),
        Some(Scalar::I64(4 + u32::MAX as i64))
    );
    let s: ArrayRef = Arc::new(StringArray::from(vec!["x"]));
    let err = e
        .reduce_arrow_dyn(s.as_ref(), Op::Sum, NanPolicy::Propagate)
        .unwrap_err()
        .to_string();
    assert!(err.contains("Utf8"), "{err}");
}

#[test]
fn list_of_another_type_is_refused() {
    let e = engine();
    let l = ListArray::from_iter_primitive::<Int8Type, _, _>(vec![Some(vec![Some(1i8)])]);
    let err = e
        .reduce_arrow_lists(&l, Op::Sum, NanPolicy::Propagate)
        .unwrap_err()
        .to_string();
    assert!(err.contains("Int8"), "{err}");
}

#[test]
fn dictionary_codes_are_group_keys() {
    let e = engine();
    let names = ["b", "a", "c", "a", "b", "a", "c", "a"];
    let dict: DictionaryArray<Int32Type> = names.iter().copied().collect();
    let values = Float64Array::from(vec![
        Some(1.0),
        Some(2.0),
        None,
        Some(f64::NAN),
        Some(5.0),
        Some(6.0),
        None,
        Some(8.0),
    ]);
    for nan in POLICIES {
        let g = e
            .reduce_arrow_dictionary(&dict, &values, &OPS, nan)
            .unwrap();
        // Groups named by dictionary value; "c" has only null values: a
        // group with count 0 and null for every other op (SQL).
        let group_names = g.keys.downcast_dict::<StringArray>().unwrap();
        let group_names: Vec<&str> = group_names.into_iter().map(|s| s.unwrap()).collect();
        assert_eq!(group_names.len(), g.keys.len());
        for (gi, name) in group_names.iter().enumerate() {
            let rows: Vec<Option<f64>> = (0..names.len())
                .filter(|&r| names[r] == *name)
                .map(|r| values.is_valid(r).then(|| values.value(r)))
                .collect();
            let all_null = rows.iter().all(|r| r.is_none());
            for (oi, op) in g.ops.iter().enumerate() {
                let want = match (all_null, op) {
                    (true, Op::Count) => Some(Scalar::I64(0)),
                    (true, _) => None,
                    _ => reference(&rows, *op, nan),
                };
                assert_eq!(
                    scalar_bits(slot(&g.results[oi], gi)),
                    scalar_bits(want),
                    "{name} {op}"
                );
            }
        }
        assert_eq!(group_names, ["b", "a", "c"]);
    }
    // Int8 codes (widened), a null code and a length mismatch.
    let dict8: DictionaryArray<Int8Type> = vec![Some("x"), None, Some("y"), Some("x")]
        .into_iter()
        .collect();
    let v = Int64Array::from(vec![10, 20, 30, 40]);
    let g = e
        .reduce_arrow_dictionary(&dict8, &v, &[Op::Sum, Op::Count], NanPolicy::Propagate)
        .unwrap();
    let names = g.keys.downcast_dict::<StringArray>().unwrap();
    let names: Vec<_> = names.into_iter().map(|s| s.unwrap()).collect();
    assert_eq!(names, ["x", "y"]);
    assert_eq!(slot(&g.results[0], 0), Some(Scalar::I64(50)));
    assert_eq!(slot(&g.results[1], 1), Some(Scalar::I64(1)));
    // Widened codes with a null value: "y"'s only value is null.
    let v = Int64Array::from(vec![Some(10), Some(20), None, Some(40)]);
    let g = e
        .reduce_arrow_dictionary(&dict8, &v, &[Op::Sum, Op::Count], NanPolicy::Propagate)
        .unwrap();
    assert_eq!(g.keys.len(), 2);
    assert_eq!(slot(&g.results[0], 0), Some(Scalar::I64(50)));
    assert_eq!(slot(&g.results[0], 1), None);
    assert_eq!(slot(&g.results[1], 1), Some(Scalar::I64(0)));
    let short = Int64Array::from(vec![1]);
    let err = e
        .reduce_arrow_dictionary(&dict8, &short, &[Op::Sum], NanPolicy::Propagate)
        .unwrap_err()
        .to_string();
    assert!(err.contains("rows"), "{err}");
}

#[test]
fn integer_key_columns_group_values_with_nulls() {
    let e = engine();
    let n = 5000;
    let keys: Vec<i64> = (0..n).map(|i| (i * 7919 % 613) as i64 - 300).collect();
    // Keys above 250 have only nulls; other rows are null one in four.
    let values: Vec<Option<f32>> = (0..n)
        .map(|i| (keys[i] <= 250 && i % 4 != 1).then_some((i as f32 - 2500.0) * 1.25e-3))
        .collect();
    let key_col = Int64Array::from(keys.clone());
    let value_col = Float32Array::from(values.clone());
    for (lo, len) in [(0, n), (13, 3001)] {
        let (kc, vc) = (key_col.slice(lo, len), value_col.slice(lo, len));
        for nan in POLICIES {
            let g = e.reduce_arrow_by_key(&kc, &vc, &OPS, nan).unwrap();
            let mut want: std::collections::BTreeMap<i64, Vec<Option<f32>>> = Default::default();
            for i in lo..lo + len {
                want.entry(keys[i]).or_default().push(values[i]);
            }
            assert_eq!(g.keys, want.keys().copied().collect::<Vec<_>>());
            for r in &g.reductions {
                for (gi, rows) in want.values().enumerate() {
                    let w = reference(rows, r.op, nan);
                    assert_eq!(
                        scalar_bits(r.values[gi]),
                        scalar_bits(w),
                        "{} at {lo}",
                        r.op
                    );
                }
            }
            assert!(g.keys.iter().any(|&k| k > 250));
        }
    }
    let err = e
        .reduce_arrow_by_key(
            &Int32Array::from(vec![Some(1), None]),
            &Float64Array::from(vec![1.0, 2.0]),
            &OPS,
            NanPolicy::Propagate,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("null"), "{err}");
    let err = e
        .reduce_arrow_by_key(
            &UInt32Array::from(vec![1]),
            &Float64Array::from(vec![1.0, 2.0]),
            &OPS,
            NanPolicy::Propagate,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("rows"), "{err}");
}

/// A key of an integer result array as an i128.
fn key_at(a: &ArrayRef, i: usize) -> i128 {
    use arrow_array::types::{Int16Type, Int64Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type};
    macro_rules! try_as {
        ($t:ty) => {
            if let Some(p) = a.as_primitive_opt::<$t>() {
                return p.value(i) as i128;
            }
        };
    }
    try_as!(Int8Type);
    try_as!(Int16Type);
    try_as!(Int32Type);
    try_as!(Int64Type);
    try_as!(UInt8Type);
    try_as!(UInt16Type);
    try_as!(UInt32Type);
    try_as!(UInt64Type);
    panic!("not an integer key array: {}", a.data_type())
}

/// A record batch of key columns of every integer type and value columns
/// of every dtype (NaN, infinities, extremes; nulls in two of them).
fn mixed_batch(n: usize, seed: u64) -> arrow_array::RecordBatch {
    use arrow_array::{Int8Array, Int16Array, UInt8Array, UInt16Array, UInt64Array};
    let mut rng = common::SplitMix::new(seed);
    let mut pick = |m: u64| rng.below(m);
    let k8: Vec<i8> = (0..n).map(|_| pick(256) as u8 as i8).collect();
    let k16: Vec<i16> = (0..n).map(|_| (pick(7) as i16 - 3) * 9000).collect();
    let ku8: Vec<u8> = (0..n).map(|_| pick(3) as u8 * 127).collect();
    let ku16: Vec<u16> = (0..n).map(|_| pick(40) as u16 * 1600).collect();
    let k32: Vec<i32> = (0..n)
        .map(|_| {
            if pick(2) == 0 {
                i32::MIN
            } else {
                pick(50) as i32
            }
        })
        .collect();
    let ku32: Vec<u32> = (0..n).map(|_| u32::MAX - pick(4) as u32).collect();
    let k64: Vec<i64> = (0..n).map(|_| (pick(5000) as i64 - 2500) << 40).collect();
    let ku64: Vec<u64> = (0..n)
        .map(|_| {
            if pick(3) == 0 {
                i64::MAX as u64
            } else {
                pick(9)
            }
        })
        .collect();
    let f: Vec<Option<f32>> = (0..n)
        .map(|i| match pick(20) {
            0 => Some(f32::NAN),
            1 => Some(f32::NEG_INFINITY),
            2 => None,
            3 => Some(-0.0),
            _ => Some((i as f32 - 700.0) * 0.37),
        })
        .collect();
    let d: Vec<Option<f64>> = (0..n)
        .map(|i| match pick(15) {
            0 => Some(f64::MAX),
            1 => Some(-f64::MAX),
            2 => None,
            3 => Some(f64::from_bits(1 + i as u64)),
            _ => Some(i as f64 * 1e-3 - 2.0),
        })
        .collect();
    let i: Vec<i32> = (0..n)
        .map(|_| {
            if pick(9) == 0 {
                i32::MIN
            } else {
                pick(1000) as i32
            }
        })
        .collect();
    let u: Vec<u32> = (0..n).map(|_| u32::MAX - pick(1000) as u32).collect();
    let l: Vec<Option<i64>> = (0..n)
        .map(|_| match pick(10) {
            0 => None,
            1 => Some(-(1i64 << 52)),
            _ => Some(pick(1 << 40) as i64),
        })
        .collect();
    arrow_array::RecordBatch::try_from_iter([
        ("k8", Arc::new(Int8Array::from(k8)) as ArrayRef),
        ("k16", Arc::new(Int16Array::from(k16)) as ArrayRef),
        ("ku8", Arc::new(UInt8Array::from(ku8)) as ArrayRef),
        ("ku16", Arc::new(UInt16Array::from(ku16)) as ArrayRef),
        ("k32", Arc::new(Int32Array::from(k32)) as ArrayRef),
        ("ku32", Arc::new(UInt32Array::from(ku32)) as ArrayRef),
        ("k64", Arc::new(Int64Array::from(k64)) as ArrayRef),
        ("ku64", Arc::new(UInt64Array::from(ku64)) as ArrayRef),
        ("f", Arc::new(Float32Array::from(f)) as ArrayRef),
        ("d", Arc::new(Float64Array::from(d)) as ArrayRef),
        ("i", Arc::new(Int32Array::from(i)) as ArrayRef),
        ("u", Arc::new(UInt32Array::from(u)) as ArrayRef),
        ("l", Arc::new(Int64Array::from(l)) as ArrayRef),
    ])
    .unwrap()
}

#[test]
fn record_batches_group_by_key_columns_of_every_integer_type() {
    let values = ["f", "d", "i", "u", "l"];
    for (n, seed) in [(0usize, 1u64), (1, 2), (300, 3), (5000, 4)] {
        let batch = mixed_batch(n, seed);
        for key in ["k8", "k16", "ku8", "ku16", "k32", "ku32", "k64", "ku64"] {
            check_value_keys(&batch, &[key], &values, &format!("{n} rows by {key}"));
        }
        check_value_keys(
            &batch,
            &["k16", "ku64"],
            &values,
            &format!("{n} rows by k16, ku64"),
        );
        check_value_keys(
            &batch,
            &["ku8", "k64", "k8"],
            &["d", "l"],
            &format!("{n} rows by three"),
        );
        if n > 10 {
            // A slice reads only its own rows, keys and nulls alike.
            let sliced = batch.slice(7, n - 10);
            check_value_keys(
                &sliced,
                &["k32"],
                &values,
                &format!("{n} rows sliced by k32"),
            );
            check_value_keys(
                &sliced,
                &["ku16", "k8"],
                &values,
                &format!("{n} rows sliced by two"),
            );
        }
    }
}

#[test]
fn record_batch_aggregates_repeat_and_mix_columns() {
    use gpulanes::Aggregate;
    let batch = mixed_batch(2000, 9);
    let aggs = [
        Aggregate::new("d", Op::Max),
        Aggregate::new("f", Op::Sum),
        Aggregate::new("d", Op::Max),
        Aggregate::new("d", Op::Count),
    ];
    let out = engine()
        .group_record_batch(&batch, &["ku8"], &aggs, NanPolicy::Ignore)
        .unwrap();
    let names: Vec<String> = out
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["ku8", "max(d)", "sum(f)", "max(d)", "count(d)"]);
    assert_eq!(out.column(1).as_ref(), out.column(3).as_ref());
    assert!(!out.schema().field(0).is_nullable() && out.schema().field(1).is_nullable());
}

#[test]
fn bad_record_batches_are_refused_by_name() {
    use arrow_array::{BooleanArray, Int8Array, UInt64Array};
    use gpulanes::Aggregate;
    let e = engine();
    let batch = arrow_array::RecordBatch::try_from_iter([
        (
            "k",
            Arc::new(Int32Array::from(vec![Some(1), None, Some(2)])) as ArrayRef,
        ),
        (
            "s",
            Arc::new(StringArray::from(vec!["a", "b", "c"])) as ArrayRef,
        ),
        (
            "b",
            Arc::new(BooleanArray::from(vec![true, false, true])) as ArrayRef,
        ),
        ("n", Arc::new(Int8Array::from(vec![1, 2, 3])) as ArrayRef),
        (
            "big",
            Arc::new(UInt64Array::from(vec![1, u64::MAX, 3])) as ArrayRef,
        ),
        (
            "v",
            Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0])) as ArrayRef,
        ),
        (
            "nan",
            Arc::new(Float32Array::from(vec![1.0, f32::NAN, 3.0])) as ArrayRef,
        ),
        (
            "list",
            Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
                Some(vec![Some(1)]),
                Some(vec![]),
                Some(vec![Some(2)]),
            ])) as ArrayRef,
        ),
        (
            "nandict",
            Arc::new(
                DictionaryArray::<Int8Type>::try_new(
                    PrimitiveArray::from_iter_values([0, 1, 0]),
                    Arc::new(Float64Array::from(vec![1.0, f64::NAN])),
                )
                .unwrap(),
            ) as ArrayRef,
        ),
        (
            "unused",
            Arc::new(
                DictionaryArray::<Int8Type>::try_new(
                    PrimitiveArray::from_iter_values([3, 0, 3]),
                    Arc::new(Float64Array::from(vec![
                        Some(2.0),
                        None,
                        Some(f64::NAN),
                        Some(0.5),
                    ])),
                )
                .unwrap(),
            ) as ArrayRef,
        ),
        (
            "nulldict",
            Arc::new(
                DictionaryArray::<Int8Type>::try_new(
                    PrimitiveArray::from_iter_values([0, 1, 0]),
                    Arc::new(StringArray::from(vec![Some("a"), None])),
                )
                .unwrap(),
            ) as ArrayRef,
        ),
    ])
    .unwrap();
    let sum_v = [Aggregate::new("v", Op::Sum)];
    let err = |keys: &[&str], aggs: &[Aggregate<'_>]| {
        e.group_record_batch(&batch, keys, aggs, NanPolicy::Propagate)
            .unwrap_err()
            .to_string()
    };
    let m = err(&["nope"], &sum_v);
    assert!(m.contains("\"nope\"") && m.contains("\"big\""), "{m}");
    assert!(err(&["n"], &[Aggregate::new("nope", Op::Sum)]).contains("no column named"));
    assert!(err(&["k"], &sum_v).contains("null"));
    assert!(err(&["big"], &sum_v).contains("past the int64"));
    assert!(err(&["n"], &[Aggregate::new("big", Op::Sum)]).contains("at row 1, past the int64"));
    assert!(err(&["n"], &[Aggregate::new("s", Op::Sum)]).contains("Utf8"));
    assert!(err(&["nan"], &sum_v).contains("NaN"));
    assert!(err(&["list"], &sum_v).contains("List"));
    assert!(err(&["nulldict"], &sum_v).contains("1 of the 3 keys of column \"nulldict\" are null"));
    assert!(err(&["nandict"], &sum_v).contains("NaN"));
    // Entries no row names may be null or NaN.
    let out = e
        .group_record_batch(&batch, &["unused"], &sum_v, NanPolicy::Propagate)
        .unwrap();
    assert_eq!(
        out.column(0).as_ref(),
        &Float64Array::from(vec![0.5, 2.0]) as &dyn Array
    );
    assert_eq!(
        out.column(1).as_ref(),
        &Float64Array::from(vec![4.0, 2.0]) as &dyn Array
    );
    assert!(err(&[], &sum_v).contains("no key columns"));
    assert!(err(&["n"], &[]).contains("no aggregates"));
}

/// A key as the oracle orders and compares it: integers (booleans and
/// temporal ticks too), bytes (strings), floats by a total order in
/// which -0.0 is 0.0.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum KeyValue {
    Int(i128),
    Bytes(Vec<u8>),
    Float(u64),
}

fn float_key(v: f64) -> KeyValue {
    let bits = (v + 0.0).to_bits();
    KeyValue::Float(if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    })
}

/// Row `i` of key column `a` as the oracle reads it (a dictionary's
/// value, not its code).
fn key_value(a: &dyn Array, i: usize) -> KeyValue {
    use arrow_array::types::{Date32Type, DurationSecondType, TimestampMillisecondType};
    if let Some(d) = a.as_any_dictionary_opt() {
        return key_value(d.values().as_ref(), d.normalized_keys()[i]);
    }
    if let Some(p) = a.as_primitive_opt::<Float64Type>() {
        return float_key(p.value(i));
    }
    if let Some(p) = a.as_primitive_opt::<Float32Type>() {
        return float_key(f64::from(p.value(i)));
    }
    if let Some(b) = a.as_boolean_opt() {
        return KeyValue::Int(i128::from(b.value(i)));
    }
    if let Some(p) = a.as_primitive_opt::<Date32Type>() {
        return KeyValue::Int(p.value(i).into());
    }
    if let Some(p) = a.as_primitive_opt::<TimestampMillisecondType>() {
        return KeyValue::Int(p.value(i).into());
    }
    if let Some(p) = a.as_primitive_opt::<DurationSecondType>() {
        return KeyValue::Int(p.value(i).into());
    }
    if let Some(s) = a.as_string_opt::<i32>() {
        return KeyValue::Bytes(s.value(i).as_bytes().to_vec());
    }
    if let Some(s) = a.as_string_opt::<i64>() {
        return KeyValue::Bytes(s.value(i).as_bytes().to_vec());
    }
    if let Some(s) = a.as_string_view_opt() {
        return KeyValue::Bytes(s.value(i).as_bytes().to_vec());
    }
    if let Some(s) = a.as_binary_opt::<i32>() {
        return KeyValue::Bytes(s.value(i).to_vec());
    }
    let a: ArrayRef = arrow_array::make_array(a.to_data());
    KeyValue::Int(key_at(&a, i))
}

/// A value column widened as the engine reads it, for the reference.
fn widened_values(a: &ArrayRef) -> ArrayRef {
    use arrow_array::types::{Int16Type, UInt8Type, UInt64Type};
    if let Some(p) = a.as_primitive_opt::<Int8Type>() {
        return Arc::new(p.unary::<_, Int32Type>(i32::from));
    }
    if let Some(p) = a.as_primitive_opt::<Int16Type>() {
        return Arc::new(p.unary::<_, Int32Type>(i32::from));
    }
    if let Some(p) = a.as_primitive_opt::<UInt8Type>() {
        return Arc::new(p.unary::<_, arrow_array::types::UInt32Type>(u32::from));
    }
    if let Some(p) = a.as_primitive_opt::<UInt64Type>() {
        return Arc::new(p.unary::<_, arrow_array::types::Int64Type>(|v| v as i64));
    }
    if let Some(b) = a.as_boolean_opt() {
        return Arc::new(UInt32Array::from_iter(b.iter().map(|v| v.map(u32::from))));
    }
    a.clone()
}

/// Slot `i` of a result column of any numeric or boolean type as a
/// scalar of the engine's widened type (`None` for a null slot).
fn wide_slot(a: &ArrayRef, i: usize) -> Option<Scalar> {
    if a.is_null(i) {
        return None;
    }
    match a.data_type() {
        arrow_schema::DataType::Int8 | arrow_schema::DataType::Int16 => {
            Some(Scalar::I32(key_at(a, i) as i32))
        }
        arrow_schema::DataType::UInt8 | arrow_schema::DataType::Boolean => Some(Scalar::U32(
            a.as_boolean_opt()
                .map(|b| u32::from(b.value(i)))
                .unwrap_or_else(|| key_at(a, i) as u32),
        )),
        arrow_schema::DataType::UInt64 => Some(Scalar::I64(key_at(a, i) as i64)),
        _ => slot(a, i),
    }
}

/// Checks `group_record_batch` of `batch` by key columns of any type
/// (every op over every value column) against `reduce_arrow_by_key` by
/// dense ids of the oracle's key tuples, numbered in tuple order, and
/// each returned key, column name and type against the oracle's.
fn check_value_keys(batch: &arrow_array::RecordBatch, keys: &[&str], values: &[&str], what: &str) {
    use gpulanes::Aggregate;
    let e = engine();
    let aggregates: Vec<Aggregate<'_>> = values
        .iter()
        .flat_map(|&c| OPS.iter().map(move |&op| Aggregate::new(c, op)))
        .collect();
    let tuples: Vec<Vec<KeyValue>> = (0..batch.num_rows())
        .map(|r| {
            keys.iter()
                .map(|k| key_value(batch.column_by_name(k).unwrap().as_ref(), r))
                .collect()
        })
        .collect();
    let distinct: std::collections::BTreeSet<&Vec<KeyValue>> = tuples.iter().collect();
    let ids: std::collections::BTreeMap<&Vec<KeyValue>, i64> = distinct
        .iter()
        .enumerate()
        .map(|(i, t)| (*t, i as i64))
        .collect();
    let id_keys = Int64Array::from(tuples.iter().map(|t| ids[t]).collect::<Vec<_>>());
    for nan in POLICIES {
        let out = e.group_record_batch(batch, keys, &aggregates, nan).unwrap();
        assert_eq!(out.num_rows(), distinct.len(), "{what}");
        assert_eq!(out.num_columns(), keys.len() + aggregates.len());
        for (c, k) in keys.iter().enumerate() {
            assert_eq!(out.schema().field(c).name(), k);
            let input = batch.column_by_name(k).unwrap();
            let want_type = match input.data_type() {
                arrow_schema::DataType::Dictionary(_, v) => v.as_ref().clone(),
                t => t.clone(),
            };
            assert_eq!(out.column(c).data_type(), &want_type, "{what}: {k}");
            let got: Vec<KeyValue> = (0..out.num_rows())
                .map(|i| key_value(out.column(c).as_ref(), i))
                .collect();
            let want: Vec<KeyValue> = distinct.iter().map(|t| t[c].clone()).collect();
            assert_eq!(got, want, "{what}: key column {k}");
        }
        for (j, a) in aggregates.iter().enumerate() {
            let col = out.column(keys.len() + j);
            assert_eq!(out.schema().field(keys.len() + j).name(), &a.name());
            let v = widened_values(batch.column_by_name(a.column).unwrap());
            if matches!(a.op, Op::Max | Op::Min) {
                assert_eq!(
                    col.data_type(),
                    batch.column_by_name(a.column).unwrap().data_type(),
                    "{what}: {} keeps its column's type",
                    a.name()
                );
            }
            macro_rules! want {
                ($t:ty) => {
                    v.as_primitive_opt::<$t>()
                        .map(|p| e.reduce_arrow_by_key(&id_keys, p, &[a.op], nan).unwrap())
                };
            }
            let g = want!(Float32Type)
                .or_else(|| want!(Float64Type))
                .or_else(|| want!(Int32Type))
                .or_else(|| want!(arrow_array::types::UInt32Type))
                .or_else(|| want!(arrow_array::types::Int64Type))
                .unwrap();
            let got: Vec<_> = (0..col.len())
                .map(|i| scalar_bits(wide_slot(col, i)))
                .collect();
            let want: Vec<_> = g.reductions[0]
                .values
                .iter()
                .map(|&s| scalar_bits(s))
                .collect();
            assert_eq!(got, want, "{what}: {} {nan:?}", a.name());
        }
    }
}

/// A record batch of key columns of every non-integer key type and value
/// columns of narrow types, with nulls.
fn value_key_batch(n: usize, seed: u64) -> arrow_array::RecordBatch {
    use arrow_array::types::{Int8Type, UInt8Type};
    use arrow_array::{
        BinaryArray, BooleanArray, Date32Array, DurationSecondArray, Int8Array, Int16Array,
        LargeStringArray, StringViewArray, TimestampMillisecondArray, UInt8Array, UInt64Array,
    };
    let mut rng = common::SplitMix::new(seed);
    let mut pick = |m: u64| rng.below(m);
    const WORDS: [&str; 9] = ["", "a", "ab", "b", "ba", "zz", "é", "日本", "a\u{0}"];
    let floats = [
        f64::NEG_INFINITY,
        -1e300,
        -2.5,
        -5e-324,
        -0.0,
        0.0,
        5e-324,
        1.0,
        1.0 + f64::EPSILON,
        1e300,
        f64::INFINITY,
    ];
    let w: Vec<&str> = (0..n).map(|_| WORDS[pick(9) as usize]).collect();
    let f: Vec<f64> = (0..n).map(|_| floats[pick(11) as usize]).collect();
    let f32s: Vec<f32> = (0..n).map(|_| floats[pick(11) as usize] as f32).collect();
    let ticks: Vec<i64> = (0..n)
        .map(|_| (pick(50) as i64 - 25) * 86_400_000)
        .collect();
    // A dictionary whose values repeat: codes 0 and 3 both name "x".
    let dict_values = StringArray::from(vec!["x", "y", "", "x", "w"]);
    let codes = PrimitiveArray::<Int8Type>::from_iter_values((0..n).map(|_| pick(5) as i8));
    let dict = DictionaryArray::<Int8Type>::try_new(codes, Arc::new(dict_values)).unwrap();
    let float_dict = DictionaryArray::<UInt8Type>::try_new(
        PrimitiveArray::from_iter_values((0..n).map(|_| pick(3) as u8)),
        Arc::new(Float64Array::from(vec![-0.0, 0.0, 2.0])),
    )
    .unwrap();
    let narrow8: Vec<Option<i8>> = (0..n)
        .map(|_| match pick(8) {
            0 => None,
            1 => Some(i8::MIN),
            2 => Some(i8::MAX),
            _ => Some(pick(256) as u8 as i8),
        })
        .collect();
    let narrow16: Vec<i16> = (0..n).map(|_| pick(65536) as u16 as i16).collect();
    let byte: Vec<u8> = (0..n).map(|_| pick(256) as u8).collect();
    let wide: Vec<u64> = (0..n)
        .map(|_| if pick(4) == 0 { 1 << 50 } else { pick(1000) })
        .collect();
    let flags: Vec<Option<bool>> = (0..n)
        .map(|_| match pick(3) {
            0 => None,
            1 => Some(true),
            _ => Some(false),
        })
        .collect();
    let d: Vec<Option<f64>> = (0..n)
        .map(|i| {
            if pick(7) == 0 {
                None
            } else {
                Some(i as f64 * 0.25 - 3.0)
            }
        })
        .collect();
    arrow_array::RecordBatch::try_from_iter([
        ("s", Arc::new(StringArray::from(w.clone())) as ArrayRef),
        (
            "ls",
            Arc::new(LargeStringArray::from(w.clone())) as ArrayRef,
        ),
        ("sv", Arc::new(StringViewArray::from(w.clone())) as ArrayRef),
        (
            "bin",
            Arc::new(BinaryArray::from_iter_values(
                w.iter().map(|s| s.as_bytes()),
            )) as ArrayRef,
        ),
        ("dict", Arc::new(dict) as ArrayRef),
        ("fdict", Arc::new(float_dict) as ArrayRef),
        ("f64", Arc::new(Float64Array::from(f)) as ArrayRef),
        ("f32", Arc::new(Float32Array::from(f32s)) as ArrayRef),
        (
            "flag",
            Arc::new(BooleanArray::from_iter((0..n).map(|i| Some(i % 3 == 0)))) as ArrayRef,
        ),
        (
            "day",
            Arc::new(Date32Array::from_iter_values(
                ticks.iter().map(|&t| (t / 86_400_000) as i32),
            )) as ArrayRef,
        ),
        (
            "at",
            Arc::new(TimestampMillisecondArray::from(ticks.clone()).with_timezone("Europe/Paris"))
                as ArrayRef,
        ),
        (
            "took",
            Arc::new(DurationSecondArray::from(
                ticks.iter().map(|t| t / 1000).collect::<Vec<_>>(),
            )) as ArrayRef,
        ),
        ("i8", Arc::new(Int8Array::from(narrow8)) as ArrayRef),
        ("i16", Arc::new(Int16Array::from(narrow16)) as ArrayRef),
        ("u8", Arc::new(UInt8Array::from(byte)) as ArrayRef),
        ("u64", Arc::new(UInt64Array::from(wide)) as ArrayRef),
        ("bool", Arc::new(BooleanArray::from(flags)) as ArrayRef),
        ("d", Arc::new(Float64Array::from(d)) as ArrayRef),
    ])
    .unwrap()
}

#[test]
fn record_batches_group_by_string_float_temporal_and_dictionary_keys() {
    let values = ["i8", "i16", "u8", "u64", "bool", "d"];
    for (n, seed) in [(0usize, 5u64), (1, 6), (400, 7), (6000, 8)] {
        let batch = value_key_batch(n, seed);
        for key in [
            "s", "ls", "sv", "bin", "dict", "fdict", "f64", "f32", "flag", "day", "at", "took",
        ] {
            check_value_keys(&batch, &[key], &values, &format!("{n} rows by {key}"));
        }
        check_value_keys(
            &batch,
            &["dict", "f32"],
            &["d", "i8"],
            &format!("{n} rows by dict, f32"),
        );
        check_value_keys(
            &batch,
            &["s", "flag", "at"],
            &["u64", "bool"],
            &format!("{n} rows by three"),
        );
        if n > 10 {
            let sliced = batch.slice(3, n - 7);
            check_value_keys(&sliced, &["sv"], &values, &format!("{n} rows sliced by sv"));
            check_value_keys(
                &sliced,
                &["dict", "bin"],
                &["d"],
                &format!("{n} rows sliced by two"),
            );
        }
    }
}

#[test]
fn float_keys_keep_every_bit_and_join_signed_zeros() {
    use gpulanes::Aggregate;
    let keys = vec![
        1.0,
        1.0 + f64::EPSILON,
        -0.0,
        0.0,
        5e-324,
        -5e-324,
        1.0 - f64::EPSILON / 2.0,
        f64::MAX,
        -f64::MAX,
    ];
    let batch = arrow_array::RecordBatch::try_from_iter([
        ("k", Arc::new(Float64Array::from(keys)) as ArrayRef),
        ("v", Arc::new(Int32Array::from(vec![1; 9])) as ArrayRef),
    ])
    .unwrap();
    let out = engine()
        .group_record_batch(
            &batch,
            &["k"],
            &[Aggregate::new("v", Op::Sum)],
            NanPolicy::Propagate,
        )
        .unwrap();
    let got: Vec<u64> = out
        .column(0)
        .as_primitive::<Float64Type>()
        .values()
        .iter()
        .map(|v| v.to_bits())
        .collect();
    let want: Vec<u64> = [
        -f64::MAX,
        -5e-324,
        0.0,
        5e-324,
        1.0 - f64::EPSILON / 2.0,
        1.0,
        1.0 + f64::EPSILON,
        f64::MAX,
    ]
    .iter()
    .map(|v| v.to_bits())
    .collect();
    assert_eq!(got, want);
    let sums = out
        .column(1)
        .as_primitive::<arrow_array::types::Int64Type>();
    assert_eq!(sums.values().to_vec(), vec![1, 1, 2, 1, 1, 1, 1, 1]);
}
