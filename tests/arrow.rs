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
