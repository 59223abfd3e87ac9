//! Keyed reductions over several key columns (`CompositeKeys`) against an
//! exact reference grouped by key tuples: int32, uint32 and int64 columns
//! at their extremes, spans that fit one int64 as offsets and ones that
//! need naming, values with nulls, both lanes, and per-key states.

mod common;

use std::collections::BTreeMap;

use common::{SplitMix, engine, scalar_bits, unsorted_engine};
use gpulanes::{
    CompositeKeys, KeyColumn, KeyValues, Lane, Lanes, LanesConfig, NanPolicy, Op, Request, Scalar,
    State, StateKind, Validity,
};

const OPS: [Op; 5] = [Op::Sum, Op::Mean, Op::Max, Op::Min, Op::Count];

/// Row `r`'s key tuple.
fn tuple(columns: &[KeyColumn<'_>], r: usize) -> Vec<i128> {
    columns.iter().map(|c| c.key(r)).collect()
}

/// Groups by tuple with `CompositeKeys` on `e` and checks every group's
/// tuple, values and counts against the reference (rows with `valid`
/// false are null: their tuple is a group, their value is skipped).
fn check(
    e: &gpulanes::Engine,
    what: &str,
    columns: &[KeyColumn<'_>],
    values: &[f64],
    valid: Option<&[bool]>,
    nan: NanPolicy,
) {
    let mut groups: BTreeMap<Vec<i128>, Vec<f64>> = BTreeMap::new();
    for (r, &v) in values.iter().enumerate() {
        let g = groups.entry(tuple(columns, r)).or_default();
        if valid.is_none_or(|m| m[r]) {
            g.push(v);
        }
    }
    let by = CompositeKeys::new(columns).unwrap();
    let g = match valid {
        None => e.reduce_by_key(by.keys(), values, &OPS, nan).unwrap(),
        Some(m) => {
            let bits = Validity::pack(m.iter().copied());
            let v = Validity::new(&bits, 0, m.len()).unwrap();
            e.reduce_by_key_with_nulls(by.keys(), values, v, &OPS, nan)
                .unwrap()
        }
    };
    let decoded = by.columns_of(&g.keys).unwrap();
    assert_eq!(g.keys.len(), groups.len(), "{what}: groups");
    for (i, (t, vals)) in groups.iter().enumerate() {
        let got: Vec<i128> = decoded.iter().map(|c| c.key(i)).collect();
        assert_eq!(&got, t, "{what}: tuple of group {i}");
        for r in &g.reductions {
            let want = if vals.is_empty() {
                (r.op == Op::Count).then_some(Scalar::I64(0))
            } else {
                State::of(vals, StateKind::for_op(r.op))
                    .finalize(r.op, nan)
                    .unwrap()
            };
            assert_eq!(
                scalar_bits(r.values[i]),
                scalar_bits(want),
                "{what}: {} of {t:?}",
                r.op
            );
        }
    }
}

fn floats(rng: &mut SplitMix, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| match rng.below(60) {
            0 => f64::NAN,
            1 => f64::INFINITY,
            2 => -0.0,
            _ => rng.range(-1e12, 1e12),
        })
        .collect()
}

#[test]
fn key_tuples_group_as_the_reference() {
    let mut rng = SplitMix::new(71);
    for e in [engine(), unsorted_engine()] {
        for n in [0usize, 1, 5, 3000, 100_000] {
            let region: Vec<i32> = (0..n).map(|_| rng.below(5) as i32 - 2).collect();
            let product: Vec<u32> = (0..n).map(|_| u32::MAX - rng.below(300) as u32).collect();
            let customer: Vec<i64> = (0..n)
                .map(|_| {
                    [i64::MIN, 0, i64::MAX - 99][rng.below(3) as usize] + rng.below(100) as i64
                })
                .collect();
            let values = floats(&mut rng, n);
            let valid: Vec<bool> = (0..n).map(|_| rng.below(4) != 0).collect();
            for nan in [NanPolicy::Propagate, NanPolicy::Ignore] {
                let small = [
                    KeyColumn::from(region.as_slice()),
                    product.as_slice().into(),
                ];
                check(e, "offsets", &small, &values, None, nan);
                let wide = [
                    KeyColumn::from(customer.as_slice()),
                    region.as_slice().into(),
                    product.as_slice().into(),
                ];
                check(e, "named", &wide, &values, None, nan);
                check(e, "named, nulls", &wide, &values, Some(&valid), nan);
            }
        }
    }
}

#[test]
fn lanes_and_states_group_by_tuples_too() {
    let e = engine();
    let mut rng = SplitMix::new(72);
    let n = 20_000;
    let a: Vec<i64> = (0..n)
        .map(|_| rng.below(40) as i64 * 1_000_000_007)
        .collect();
    let b: Vec<i32> = (0..n).map(|_| rng.below(30) as i32).collect();
    let values = floats(&mut rng, n);
    let by = CompositeKeys::new(&[a.as_slice().into(), b.as_slice().into()]).unwrap();
    let want = e
        .reduce_by_key(by.keys(), &values, &OPS, NanPolicy::Propagate)
        .unwrap();
    let lanes = Lanes::new(e, LanesConfig::default()).unwrap();
    for lane in [Lane::RealTime, Lane::Batch] {
        let request = Request::keyed(
            by.keys().to_vec(),
            values.clone(),
            &OPS,
            NanPolicy::Propagate,
        );
        let got = lanes.submit(lane, request).unwrap().wait().unwrap();
        assert_eq!(got.keys, want.keys, "{lane:?}");
        for (g, w) in got.reductions.iter().zip(&want.reductions) {
            let gb: Vec<_> = g.values.iter().map(|v| scalar_bits(*v)).collect();
            let wb: Vec<_> = w.values.iter().map(|v| scalar_bits(*v)).collect();
            assert_eq!(gb, wb, "{lane:?} {}", g.op);
        }
    }
    // States of two halves, keyed by the decoded tuples, merge to the whole.
    let mut merged: BTreeMap<(i64, i32), State> = BTreeMap::new();
    for half in [0..n / 2, n / 2..n] {
        let part = CompositeKeys::new(&[a[half.clone()].into(), b[half.clone()].into()]).unwrap();
        let s = e
            .states_by_key(part.keys(), &values[half], StateKind::Sum)
            .unwrap();
        let cols = part.columns_of(&s.keys).unwrap();
        let (KeyValues::I64(ka), KeyValues::I32(kb)) = (&cols[0], &cols[1]) else {
            panic!("decoded columns keep their types: {cols:?}");
        };
        for ((&x, &y), st) in ka.iter().zip(kb).zip(&s.states) {
            match merged.get_mut(&(x, y)) {
                Some(m) => m.merge(st).unwrap(),
                None => {
                    merged.insert((x, y), st.clone());
                }
            }
        }
    }
    let cols = by.columns_of(&want.keys).unwrap();
    assert_eq!(merged.len(), want.keys.len());
    for (i, ((x, y), st)) in merged.iter().enumerate() {
        assert_eq!((cols[0].key(i), cols[1].key(i)), (*x as i128, *y as i128));
        let got = st.finalize(Op::Sum, NanPolicy::Propagate).unwrap();
        assert_eq!(scalar_bits(got), scalar_bits(want.reductions[0].values[i]));
    }
}
