//! Keyed state columns (`Engine::state_columns_by_key`,
//! `state_columns_by_index` and their forms with nulls): every kind of
//! every key from one pass, checked bit for bit against `states_by_key`
//! (one pass a kind) and, merged over random splits of the rows, against
//! `reduce_by_key` over all of them; through their bytes in between.
//! Covers every value dtype with NaN, infinities, signed zeros,
//! subnormals and extremes; dense, sparse and extreme keys; rows around
//! workgroup and binding sizes; windows of groups (tiny caps); rows in
//! group order and as given; nulls at a bit offset with poison in the
//! null slots; and bad input.

mod common;

use common::{SplitMix, engine, mixed_data, tiny_engine, unsorted_engine};
use gpulanes::{
    Element, Engine, GroupedStateColumns, Key, NanPolicy, Op, State, StateColumns, StateKind,
    Validity,
};

const KINDS: [StateKind; 3] = [StateKind::Sum, StateKind::Max, StateKind::Min];
const OPS: [Op; 5] = [Op::Sum, Op::Mean, Op::Max, Op::Min, Op::Count];

fn engines() -> Vec<(&'static str, &'static Engine)> {
    vec![
        ("default", engine()),
        ("no host sort", unsorted_engine()),
        ("tiny caps", tiny_engine()),
    ]
}

/// Every non-empty set of kinds.
fn kind_sets() -> Vec<Vec<StateKind>> {
    (1u8..8)
        .map(|m| {
            KINDS
                .into_iter()
                .enumerate()
                .filter(|(i, _)| m >> i & 1 == 1)
                .map(|(_, k)| k)
                .collect()
        })
        .collect()
}

/// Checks `got` against one `states_by_key(_with_nulls)` call a kind.
fn assert_states_match<K: Key + std::fmt::Debug, E: Element>(
    what: &str,
    e: &Engine,
    got: &GroupedStateColumns<K>,
    keys: &[K],
    values: &[E],
    valid: Option<Validity<'_>>,
    kinds: &[StateKind],
) {
    assert_eq!(got.states.kinds(), {
        let mut k = kinds.to_vec();
        k.sort_by_key(|k| KINDS.iter().position(|x| x == k));
        k.dedup();
        k
    });
    for &kind in kinds {
        let want = match valid {
            None => e.states_by_key(keys, values, kind).unwrap(),
            Some(v) => e.states_by_key_with_nulls(keys, values, v, kind).unwrap(),
        };
        assert_eq!(got.keys, want.keys, "{what}: keys");
        assert_eq!(got.states.len(), want.states.len(), "{what}");
        for (g, s) in want.states.iter().enumerate() {
            assert_eq!(
                &got.states.state(g, kind).unwrap(),
                s,
                "{what}: group {g} {kind:?}"
            );
        }
    }
}

/// A value column of each dtype.
type Columns = (Vec<f32>, Vec<f64>, Vec<i32>, Vec<u32>, Vec<i64>);

/// Value columns of every dtype from one f32 column with specials.
fn columns(rng: &mut SplitMix, n: usize) -> Columns {
    let f = mixed_data(rng, n, 80);
    let d: Vec<f64> = f
        .iter()
        .enumerate()
        .map(|(i, &x)| match i % 97 {
            3 => f64::MAX,
            5 => -f64::MAX,
            7 => f64::from_bits(1 + i as u64),
            _ => x as f64 * 1e-3,
        })
        .collect();
    let i: Vec<i32> = (0..n)
        .map(|j| {
            if j % 13 == 0 {
                i32::MIN
            } else {
                rng.next_u64() as i32
            }
        })
        .collect();
    let u: Vec<u32> = (0..n)
        .map(|j| {
            if j % 11 == 0 {
                u32::MAX
            } else {
                rng.next_u64() as u32
            }
        })
        .collect();
    let l: Vec<i64> = (0..n)
        .map(|j| {
            if j % 17 == 0 {
                i64::MAX
            } else {
                rng.next_u64() as i64 >> 9
            }
        })
        .collect();
    (f, d, i, u, l)
}

fn check_all<K: Key + std::fmt::Debug>(what: &str, e: &Engine, keys: &[K], seed: u64) {
    let mut rng = SplitMix::new(seed);
    let n = keys.len();
    let (f, d, i, u, l) = columns(&mut rng, n);
    let valid: Vec<bool> = (0..n).map(|_| rng.below(10) >= 3).collect();
    // Bit offset 5, the bits outside set.
    let bits = Validity::pack(
        [true; 5]
            .into_iter()
            .chain(valid.iter().copied())
            .chain([true; 7]),
    );
    let v = Validity::new(&bits, 5, n).unwrap();
    let index = e.group_index(keys).unwrap();
    for kinds in kind_sets() {
        macro_rules! one {
            ($values:expr) => {{
                let what = format!("{what}, {} rows, {kinds:?}", n);
                let by_key = e.state_columns_by_key(keys, $values, &kinds).unwrap();
                assert_states_match(&what, e, &by_key, keys, $values, None, &kinds);
                let by_index = e.state_columns_by_index(&index, $values, &kinds).unwrap();
                assert_eq!(by_index, by_key, "{what}: by index");
                let nulls = e
                    .state_columns_by_key_with_nulls(keys, $values, v, &kinds)
                    .unwrap();
                assert_states_match(
                    &format!("{what}, nulls"),
                    e,
                    &nulls,
                    keys,
                    $values,
                    Some(v),
                    &kinds,
                );
                let nulls_index = e
                    .state_columns_by_index_with_nulls(&index, $values, v, &kinds)
                    .unwrap();
                assert_eq!(nulls_index, nulls, "{what}: nulls by index");
                let back = StateColumns::from_bytes(&nulls.states.to_bytes()).unwrap();
                assert_eq!(back, nulls.states, "{what}: bytes");
            }};
        }
        one!(&f);
        one!(&d);
        one!(&i);
        one!(&u);
        one!(&l);
    }
}

#[test]
fn columns_hold_each_kinds_states_from_one_pass() {
    for (name, e) in engines() {
        for (n, seed) in [
            (0usize, 1u64),
            (1, 2),
            (255, 3),
            (257, 4),
            (4097, 5),
            (20_011, 6),
        ] {
            let mut rng = SplitMix::new(seed * 31);
            let dense: Vec<i32> = (0..n).map(|_| rng.below(97) as i32 - 40).collect();
            check_all(&format!("{name}, dense i32"), e, &dense, seed);
            let sparse: Vec<i64> = (0..n)
                .map(|j| match j % 9 {
                    0 => i64::MIN,
                    1 => i64::MAX,
                    _ => (rng.below(3000) as i64) << 40,
                })
                .collect();
            check_all(&format!("{name}, sparse i64"), e, &sparse, seed + 100);
            let extremes: Vec<u32> = (0..n)
                .map(|j| {
                    if j % 2 == 0 {
                        0
                    } else {
                        u32::MAX - rng.below(5) as u32
                    }
                })
                .collect();
            check_all(&format!("{name}, u32 ends"), e, &extremes, seed + 200);
        }
    }
}

#[test]
fn merged_chunks_finalise_to_the_whole_reduction() {
    // Many groups (windows of groups on the tiny-caps engine), every
    // chunk's columns through bytes, merged in two rounds.
    for (name, e) in engines() {
        let mut rng = SplitMix::new(77);
        let n = 60_000;
        let keys: Vec<i64> = (0..n)
            .map(|_| rng.below(20_000) as i64 * 7 - 5000)
            .collect();
        let values: Vec<f64> = mixed_data(&mut rng, n, 50)
            .iter()
            .map(|&x| x as f64)
            .collect();
        let cuts = [0, 1, 999, 17_000, 17_001, 40_000, n];
        let chunks: Vec<(Vec<i64>, StateColumns)> = cuts
            .windows(2)
            .map(|w| {
                let g = e
                    .state_columns_by_key(&keys[w[0]..w[1]], &values[w[0]..w[1]], &KINDS)
                    .unwrap();
                (
                    g.keys,
                    StateColumns::from_bytes(&g.states.to_bytes()).unwrap(),
                )
            })
            .collect();
        let refs: Vec<(&[i64], &StateColumns)> = chunks.iter().map(|(k, c)| (&k[..], c)).collect();
        let (k1, m1) = StateColumns::merge_by_key(&refs[..3]).unwrap();
        let (k2, m2) = StateColumns::merge_by_key(&refs[3..]).unwrap();
        let (keys_out, merged) =
            StateColumns::merge_by_key(&[(&k2[..], &m2), (&k1[..], &m1)]).unwrap();
        for nan in [NanPolicy::Propagate, NanPolicy::Ignore] {
            let whole = e.reduce_by_key(&keys, &values, &OPS, nan).unwrap();
            assert_eq!(keys_out, whole.keys, "{name}");
            for r in &whole.reductions {
                let got = merged.finalize(r.op, nan).unwrap();
                let same = got.iter().zip(&r.values).all(|(a, b)| match (a, b) {
                    (Some(a), Some(b)) => a == b || (a.is_nan() && b.is_nan()),
                    (None, None) => true,
                    _ => false,
                });
                assert!(same, "{name}: {} {nan:?}", r.op);
            }
        }
    }
}

#[test]
fn all_null_keys_keep_an_empty_group() {
    let e = engine();
    let keys = [4i32, 9, 4, 2];
    let values = [1.5f32, f32::NAN, 2.0, 7.0];
    let bits = Validity::pack([true, false, true, false]);
    let v = Validity::new(&bits, 0, 4).unwrap();
    let g = e
        .state_columns_by_key_with_nulls(&keys, &values, v, &[StateKind::Sum])
        .unwrap();
    assert_eq!(g.keys, vec![2, 4, 9]);
    assert_eq!(g.states.rows(0), Some(0));
    assert_eq!(g.states.rows(2), Some(0));
    assert!(g.states.state(0, StateKind::Sum).unwrap().is_empty());
    let sums = g.states.finalize(Op::Sum, NanPolicy::Propagate).unwrap();
    assert_eq!(sums, vec![None, Some(gpulanes::Scalar::F32(3.5)), None]);
    let counts = g.states.finalize(Op::Count, NanPolicy::Propagate).unwrap();
    assert_eq!(
        counts,
        vec![
            Some(gpulanes::Scalar::I64(0)),
            Some(gpulanes::Scalar::I64(2)),
            Some(gpulanes::Scalar::I64(0))
        ]
    );
    // Merged with rows that have values, the empty group changes nothing.
    let other = e
        .state_columns_by_key(&[2i32], &[-1.0f32], &[StateKind::Sum])
        .unwrap();
    let (k, m) =
        StateColumns::merge_by_key(&[(&g.keys[..], &g.states), (&other.keys[..], &other.states)])
            .unwrap();
    assert_eq!(k, vec![2, 4, 9]);
    assert_eq!(
        m.state(0, StateKind::Sum).unwrap(),
        State::of(&[-1.0f32], StateKind::Sum)
    );
}

#[test]
fn bad_input_is_refused_by_name() {
    let e = engine();
    let err = e
        .state_columns_by_key(&[1i32, 2], &[1.0f32, 2.0], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least one kind"), "{err}");
    let err = e
        .state_columns_by_key(&[1i32, 2], &[1.0f32], &KINDS)
        .unwrap_err()
        .to_string();
    assert!(err.contains("differ in length"), "{err}");
    let index = e.group_index(&[1i32, 2, 3][..]).unwrap();
    let err = e
        .state_columns_by_index(&index, &[1.0f32], &KINDS)
        .unwrap_err()
        .to_string();
    assert!(err.contains("rows"), "{err}");
    let bits = Validity::pack([true; 2]);
    let v = Validity::new(&bits, 0, 2).unwrap();
    let err = e
        .state_columns_by_index_with_nulls(&index, &[1.0f32, 2.0, 3.0], v, &KINDS)
        .unwrap_err()
        .to_string();
    assert!(err.contains("validity"), "{err}");
    let a = e
        .state_columns_by_key(&[1i32], &[1.0f32], &[StateKind::Sum])
        .unwrap();
    let b = e
        .state_columns_by_key(&[1i32], &[1.0f64], &[StateKind::Sum])
        .unwrap();
    let err = StateColumns::merge_by_key(&[(&a.keys[..], &a.states), (&b.keys[..], &b.states)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("do not merge"), "{err}");
}
