//! Group indexes (`Engine::group_index`): one key column's groups found
//! once, then several value columns of every dtype reduced by them. Each
//! result is checked against the exact reference and bit for bit against
//! `reduce_by_key` over the same keys and values; with nulls against the
//! reference with SQL's rule and `reduce_by_key_with_nulls`; states
//! against `states_by_key`. Covers dense, sparse and extreme keys of each
//! key type, rows around workgroup and binding sizes, windows of groups
//! (tiny caps), rows in group order and as given, both NaN policies,
//! bitmaps at bit offsets with poison in the null slots, and bad input.

mod common;

use std::sync::OnceLock;

use common::{
    POLICIES, SplitMix, assert_grouped_same, engine, keyed_reference, mixed_data, tiny_options,
    unsorted_engine,
};
use gpulanes::kernels::GroupStrategy;
use gpulanes::{Element, Engine, Error, GroupIndex, Key, NanPolicy, Op, StateKind, Validity};

const OPS: [Op; 5] = [Op::Sum, Op::Mean, Op::Max, Op::Min, Op::Count];

/// Tiny caps (windows of groups, split bindings) with rows put in group
/// order on the host, and the same without.
fn tiny_engines() -> [&'static Engine; 2] {
    static SORTED: OnceLock<Engine> = OnceLock::new();
    static UNSORTED: OnceLock<Engine> = OnceLock::new();
    let with = |sort: bool| {
        move || {
            Engine::with_options(
                tiny_options().group_strategy(GroupStrategy::default().with_sort(sort)),
            )
            .expect("engine with tiny caps")
        }
    };
    [
        SORTED.get_or_init(with(true)),
        UNSORTED.get_or_init(with(false)),
    ]
}

/// Every engine a case runs on, named.
fn engines() -> Vec<(&'static str, &'static Engine)> {
    let [sorted, unsorted] = tiny_engines();
    vec![
        ("default", engine()),
        ("no host sort", unsorted_engine()),
        ("tiny caps, sorted", sorted),
        ("tiny caps, unsorted", unsorted),
    ]
}

/// `valid` packed at bit 3 of a bitmap whose other bits are set.
fn bitmap_at_3(valid: &[bool]) -> Vec<u8> {
    Validity::pack(
        [true; 3]
            .into_iter()
            .chain(valid.iter().copied())
            .chain([true; 9]),
    )
}

/// Checks one value column reduced by `index` (over `keys`) against the
/// reference and against the keyed calls, with and without nulls.
fn check_column<K: Key + std::fmt::Debug, E: Element>(
    e: &Engine,
    what: &str,
    index: &GroupIndex<'_, K>,
    keys: &[K],
    values: &[E],
    valid: &[bool],
    poison: E,
) {
    for nan in POLICIES {
        let what = format!("{what}, {}, {nan:?}", E::DTYPE.name());
        let got = e.reduce_by_index(index, values, &OPS, nan).unwrap();
        let want = keyed_reference(keys, values, None, &OPS, nan);
        assert_grouped_same(&format!("{what}: reference"), &got, &want);
        let by_key = e.reduce_by_key(keys, values, &OPS, nan).unwrap();
        assert_grouped_same(&format!("{what}: reduce_by_key"), &got, &by_key);
        assert_eq!(got.keys, index.keys(), "{what}: the index's keys");

        // Nulls, with poison where the bitmap says null.
        let poisoned: Vec<E> = values
            .iter()
            .zip(valid)
            .map(|(&v, &ok)| if ok { v } else { poison })
            .collect();
        let bits = bitmap_at_3(valid);
        let bitmap = Validity::new(&bits, 3, valid.len()).unwrap();
        let got = e
            .reduce_by_index_with_nulls(index, &poisoned, bitmap, &OPS, nan)
            .unwrap();
        let want = keyed_reference(keys, values, Some(valid), &OPS, nan);
        assert_grouped_same(&format!("{what}: nulls, reference"), &got, &want);
        assert_eq!(got.keys, index.keys(), "{what}: nulls keep every key");
        let by_key = e
            .reduce_by_key_with_nulls(keys, &poisoned, bitmap, &OPS, nan)
            .unwrap();
        assert_grouped_same(&format!("{what}: reduce_by_key_with_nulls"), &got, &by_key);
    }
    for kind in [StateKind::Sum, StateKind::Max, StateKind::Min] {
        let got = e.states_by_index(index, values, kind).unwrap();
        let want = e.states_by_key(keys, values, kind).unwrap();
        assert_eq!(got.keys, want.keys, "{what}: {kind:?} state keys");
        let bytes = |s: &[gpulanes::State]| s.iter().map(|s| s.to_bytes()).collect::<Vec<_>>();
        assert_eq!(
            bytes(&got.states),
            bytes(&want.states),
            "{what}: {kind:?} states"
        );

        let bits = bitmap_at_3(valid);
        let bitmap = Validity::new(&bits, 3, valid.len()).unwrap();
        let got = e
            .states_by_index_with_nulls(index, values, bitmap, kind)
            .unwrap();
        let want = e
            .states_by_key_with_nulls(keys, values, bitmap, kind)
            .unwrap();
        assert_eq!(got.keys, index.keys(), "{what}: {kind:?} null states' keys");
        assert_eq!(got.keys, want.keys, "{what}: {kind:?} null state keys");
        assert_eq!(
            bytes(&got.states),
            bytes(&want.states),
            "{what}: {kind:?} null states"
        );
    }
}

/// Builds an index over `keys` on `e` (borrowed) and checks every value
/// dtype against it, the same index reused for each column.
fn check_keys<K: Key + std::fmt::Debug>(
    e: &Engine,
    what: &str,
    keys: &[K],
    rng: &mut SplitMix,
    null_share: u64,
) {
    let n = keys.len();
    let index = e.group_index(keys).unwrap();
    let mut distinct = keys.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(index.keys(), distinct.as_slice(), "{what}: distinct keys");
    assert_eq!(index.len(), distinct.len());
    assert_eq!(index.is_empty(), n == 0);
    assert_eq!(index.rows(), n);

    let valid: Vec<bool> = (0..n).map(|_| rng.below(100) >= null_share).collect();
    let f32s = mixed_data(rng, n, 30);
    let f64s: Vec<f64> = (0..n)
        .map(|i| match rng.below(50) {
            0 => f64::NAN,
            1 => f64::INFINITY,
            2 => -0.0,
            3 => 1e300 * if i % 2 == 0 { 1.0 } else { -1.0 },
            4 => 5e-324,
            _ => rng.range(-1e6, 1e6),
        })
        .collect();
    let i32s: Vec<i32> = (0..n)
        .map(|_| match rng.below(20) {
            0 => i32::MAX,
            1 => i32::MIN,
            _ => rng.below(2001) as i32 - 1000,
        })
        .collect();
    let u32s: Vec<u32> = (0..n).map(|_| rng.next_u64() as u32).collect();
    let i64s: Vec<i64> = (0..n)
        .map(|_| (rng.next_u64() >> 20) as i64 * if rng.below(2) == 0 { 1 } else { -1 })
        .collect();
    check_column(e, what, &index, keys, &f32s, &valid, f32::NAN);
    check_column(e, what, &index, keys, &f64s, &valid, f64::INFINITY);
    check_column(e, what, &index, keys, &i32s, &valid, i32::MAX);
    check_column(e, what, &index, keys, &u32s, &valid, u32::MAX);
    check_column(e, what, &index, keys, &i64s, &valid, i64::MIN);
}

#[test]
fn every_column_matches_the_reference_and_reduce_by_key() {
    let mut rng = SplitMix::new(0x1de7);
    for (name, e) in engines() {
        // Tiny caps split 16,385 rows already; more only costs time there.
        let largest = if name.starts_with("tiny") {
            16_385
        } else {
            70_001
        };
        for n in [0usize, 1, 2, 63, 65, 1000, 16_385, 70_001]
            .into_iter()
            .filter(|&n| n <= largest)
        {
            let share = [0, 30, 100][n % 3];
            let what = format!("{name}, {n} rows, {share}% null");
            // Dense int32 keys, few groups and many.
            let groups = 1 + n as u64 / 3;
            let dense: Vec<i32> = (0..n).map(|_| rng.below(groups) as i32 - 50).collect();
            check_keys(e, &format!("{what}, dense i32"), &dense, &mut rng, share);
            // Sparse int64 keys, 2^33 apart, and a few type extremes.
            let sparse: Vec<i64> = (0..n)
                .map(|_| match rng.below(40) {
                    0 => i64::MIN,
                    1 => i64::MAX,
                    _ => (rng.below(1 + n as u64 / 2) as i64 - 7) << 33,
                })
                .collect();
            check_keys(e, &format!("{what}, sparse i64"), &sparse, &mut rng, share);
            // uint32 keys at both ends of their range (sparse).
            let wide: Vec<u32> = (0..n)
                .map(|_| match rng.below(3) {
                    0 => u32::MAX - rng.below(5) as u32,
                    _ => rng.below(40) as u32,
                })
                .collect();
            check_keys(e, &format!("{what}, u32 ends"), &wide, &mut rng, share);
        }
    }
}

#[test]
fn sorted_clustered_and_single_keys() {
    let mut rng = SplitMix::new(0x50f7);
    for (name, e) in engines() {
        // Every row its own group: more windows than rows under tiny caps.
        let n = if name.starts_with("tiny") {
            6_000
        } else {
            20_000usize
        };
        let sorted: Vec<i64> = (0..n as i64).map(|i| i / 37).collect();
        check_keys(e, &format!("{name}, sorted runs"), &sorted, &mut rng, 20);
        let one: Vec<i32> = vec![-9; n];
        check_keys(e, &format!("{name}, one key"), &one, &mut rng, 50);
        // Every row its own group.
        let mut own: Vec<u32> = (0..n as u32).map(|i| i * 3).collect();
        rng.shuffle(&mut own);
        check_keys(e, &format!("{name}, own group"), &own, &mut rng, 10);
    }
}

#[test]
fn an_owned_index_outlives_its_keys_and_permutations_change_no_bit() {
    let e = engine();
    let mut rng = SplitMix::new(0x0b7e);
    let n = 30_000;
    let keys: Vec<i64> = (0..n).map(|_| (rng.below(500) as i64) << 40).collect();
    let values = mixed_data(&mut rng, n, 10);
    let index: GroupIndex<'static, i64> = e.group_index(keys.clone()).unwrap();
    let got = e
        .reduce_by_index(&index, &values, &OPS, NanPolicy::Ignore)
        .unwrap();
    let mut order: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut order);
    let keys2: Vec<i64> = order.iter().map(|&i| keys[i]).collect();
    let values2: Vec<f32> = order.iter().map(|&i| values[i]).collect();
    drop(keys);
    let index2 = e.group_index(&keys2).unwrap();
    let got2 = e
        .reduce_by_index(&index2, &values2, &OPS, NanPolicy::Ignore)
        .unwrap();
    assert_grouped_same("permuted rows", &got2, &got);
    // An index is Send and Sync: columns reduced from several threads.
    std::thread::scope(|s| {
        let index = &index;
        let values = &values;
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(move || e.reduce_by_index(index, values, &OPS, NanPolicy::Ignore)))
            .collect();
        for h in handles {
            assert_grouped_same("from a thread", &h.join().unwrap().unwrap(), &got);
        }
    });
}

#[test]
fn bad_requests_are_named_errors() {
    let e = engine();
    let keys = [1i32, 2, 3];
    let index = e.group_index(&keys[..]).unwrap();
    let err = e
        .reduce_by_index(&index, &[1.0f32, 2.0], &[Op::Sum], NanPolicy::Propagate)
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput(m) if m.contains("3 rows") && m.contains("2")),
        "{err}"
    );
    let err = e
        .reduce_by_index(&index, &[1.0f32; 3], &[], NanPolicy::Propagate)
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput(m) if m.contains("no ops")),
        "{err}"
    );
    let bits = [0xffu8];
    let short = Validity::new(&bits, 0, 2).unwrap();
    let err = e
        .reduce_by_index_with_nulls(
            &index,
            &[1.0f32; 3],
            short,
            &[Op::Sum],
            NanPolicy::Propagate,
        )
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput(m) if m.contains("validity")),
        "{err}"
    );
    let err = e
        .states_by_index(&index, &[1i64; 4], StateKind::Sum)
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput(m) if m.contains("rows")),
        "{err}"
    );

    // No rows: no keys, every op's result empty.
    let empty = e.group_index(Vec::<u32>::new()).unwrap();
    assert!(empty.is_empty());
    let g = e
        .reduce_by_index(&empty, &[] as &[f64], &OPS, NanPolicy::Propagate)
        .unwrap();
    assert!(g.keys.is_empty() && g.reductions.iter().all(|r| r.values.is_empty()));
}

#[test]
fn an_index_on_the_device_gives_the_host_bits_and_serves_other_engines_from_the_host() {
    let mut rng = SplitMix::new(0xde71);
    let [_, tiny_unsorted] = tiny_engines();
    // Engines that keep rows as given, so the device copy is read.
    for (name, e) in [
        ("no host sort", unsorted_engine()),
        ("tiny caps", tiny_unsorted),
    ] {
        for n in [1usize, 1000, 70_001] {
            let dense32: Vec<i32> = (0..n).map(|_| rng.below(300) as i32 - 9).collect();
            let dense64: Vec<i64> = (0..n).map(|_| rng.below(5000) as i64 - (1 << 40)).collect();
            let sparse: Vec<u32> = (0..n).map(|_| (rng.below(700) as u32) << 22).collect();
            let values = mixed_data(&mut rng, n, 20);
            let valid: Vec<bool> = (0..n).map(|_| rng.below(4) > 0).collect();
            let what = format!("{name}, {n} rows");
            check_uploaded(e, &format!("{what}, dense i32"), &dense32, &values, &valid);
            check_uploaded(e, &format!("{what}, dense i64"), &dense64, &values, &valid);
            check_uploaded(e, &format!("{what}, sparse u32"), &sparse, &values, &valid);
        }
    }
}

/// An index uploaded to `e` reduces `values` (and an int64 column) on `e`
/// and on another engine with the bits of `reduce_by_key`; with nulls too.
fn check_uploaded<K: Key + std::fmt::Debug>(
    e: &Engine,
    what: &str,
    keys: &[K],
    values: &[f32],
    valid: &[bool],
) {
    let mut index = e.group_index(keys).unwrap();
    index.upload(e).unwrap();
    assert!(index.on_device(), "{what}");
    let ints: Vec<i64> = values.iter().map(|v| (v.to_bits() >> 7) as i64).collect();
    let other = engine();
    for (engine_name, on) in [("own engine", e), ("another engine", other)] {
        let what = format!("{what}, {engine_name}");
        for nan in POLICIES {
            let got = on.reduce_by_index(&index, values, &OPS, nan).unwrap();
            let want = on.reduce_by_key(keys, values, &OPS, nan).unwrap();
            assert_grouped_same(&what, &got, &want);
        }
        let got = on
            .reduce_by_index(&index, &ints, &OPS, NanPolicy::Propagate)
            .unwrap();
        assert_grouped_same(
            &format!("{what}, int64"),
            &got,
            &keyed_reference(keys, &ints, None, &OPS, NanPolicy::Propagate),
        );
        let got = on.states_by_index(&index, values, StateKind::Max).unwrap();
        let want = on.states_by_key(keys, values, StateKind::Max).unwrap();
        assert_eq!(got.keys, want.keys, "{what}: state keys");
        assert_eq!(
            got.states.iter().map(|s| s.to_bytes()).collect::<Vec<_>>(),
            want.states.iter().map(|s| s.to_bytes()).collect::<Vec<_>>(),
            "{what}: states"
        );
        let bits = Validity::pack(valid.iter().copied());
        let bitmap = Validity::new(&bits, 0, valid.len()).unwrap();
        let got = on
            .reduce_by_index_with_nulls(&index, values, bitmap, &OPS, NanPolicy::Ignore)
            .unwrap();
        let want = keyed_reference(keys, values, Some(valid), &OPS, NanPolicy::Ignore);
        assert_grouped_same(&format!("{what}, nulls"), &got, &want);
    }
}

#[test]
fn lanes_requests_by_an_index_give_the_bits_of_reduce_by_index() {
    use gpulanes::{Lane, Lanes, LanesConfig, Request};
    use std::sync::Arc;
    use std::time::Duration;

    let e = engine();
    // Small batch steps: a batch job takes many submissions.
    let config = LanesConfig::default()
        .quantum(Duration::ZERO)
        .min_chunk_units(1)
        .max_chunk_units(1);
    let lanes = Lanes::new(e, config).unwrap();
    let mut rng = SplitMix::new(0x1a7e5);
    for n in [0usize, 1, 5000, 70_001] {
        let dense: Vec<i32> = (0..n).map(|_| rng.below(900) as i32 - 450).collect();
        let sparse: Vec<i64> = (0..n).map(|_| (rng.below(400) as i64) << 41).collect();
        let values = mixed_data(&mut rng, n, 20);
        let ints: Vec<i64> = (0..n).map(|_| rng.below(1 << 40) as i64).collect();
        let dense_index = Arc::new(e.group_index(dense.clone()).unwrap());
        let sparse_index = Arc::new(e.group_index(sparse.clone()).unwrap());
        for lane in [Lane::RealTime, Lane::Batch] {
            for nan in POLICIES {
                let what = format!("{n} rows, {lane:?}, {nan:?}");
                let got = lanes
                    .submit(
                        lane,
                        Request::keyed_by_index(dense_index.clone(), values.clone(), &OPS, nan),
                    )
                    .unwrap()
                    .wait()
                    .unwrap();
                let want = e.reduce_by_key(&dense, &values, &OPS, nan).unwrap();
                assert_grouped_same(&format!("{what}, dense"), &got, &want);
                let got = lanes
                    .submit(
                        lane,
                        Request::keyed_by_index(sparse_index.clone(), ints.clone(), &OPS, nan),
                    )
                    .unwrap()
                    .wait()
                    .unwrap();
                let want = keyed_reference(&sparse, &ints, None, &OPS, nan);
                assert_grouped_same(&format!("{what}, sparse"), &got, &want);
                // With nulls (at bit offset 3, the bits around them set):
                // every key of the index, all-null keys with count 0.
                for share in [0u64, 3, 10] {
                    let valid: Vec<bool> = (0..n)
                        .map(|i| (i as u64 * 7 + share) % 10 >= share)
                        .collect();
                    let bits = bitmap_at_3(&valid);
                    let v = Validity::new(&bits, 3, n).unwrap();
                    let got = lanes
                        .submit(
                            lane,
                            Request::keyed_by_index_with_nulls(
                                dense_index.clone(),
                                &values,
                                v,
                                &OPS,
                                nan,
                            ),
                        )
                        .unwrap()
                        .wait()
                        .unwrap();
                    let want = e
                        .reduce_by_index_with_nulls(&dense_index, &values, v, &OPS, nan)
                        .unwrap();
                    assert_grouped_same(&format!("{what}, nulls {share}/10"), &got, &want);
                    let got = lanes
                        .submit(
                            lane,
                            Request::keyed_by_index_with_nulls(
                                sparse_index.clone(),
                                &ints,
                                v,
                                &OPS,
                                nan,
                            ),
                        )
                        .unwrap()
                        .wait()
                        .unwrap();
                    let want = keyed_reference(&sparse, &ints, Some(&valid), &OPS, nan);
                    assert_grouped_same(&format!("{what}, sparse nulls {share}/10"), &got, &want);
                }
            }
        }
    }
    // Values of another length than the index's rows are refused.
    let index = Arc::new(e.group_index(vec![1u32, 2, 3]).unwrap());
    let err = lanes
        .realtime(Request::keyed_by_index(
            index,
            vec![1.0f32; 4],
            &[Op::Sum],
            NanPolicy::Propagate,
        ))
        .and_then(|h| h.wait())
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput(m) if m.contains("3 rows") && m.contains("values 4")),
        "{err}"
    );
    let index = Arc::new(e.group_index(vec![1u32, 2, 3]).unwrap());
    let bits = Validity::pack([true, false]);
    for (values, len) in [(vec![1.0f32; 3], 2), (vec![1.0f32; 2], 2)] {
        let err = lanes
            .realtime(Request::keyed_by_index_with_nulls(
                index.clone(),
                &values,
                Validity::new(&bits, 0, len).unwrap(),
                &[Op::Sum],
                NanPolicy::Propagate,
            ))
            .and_then(|h| h.wait())
            .unwrap_err();
        assert!(matches!(&err, Error::InvalidInput(_)), "{err}");
    }
}

/// Async reductions by a shared index, several in flight at once over
/// different value columns, give the bits of the blocking ones; bad
/// lengths settle the future at once; a dropped future harms none.
#[test]
fn async_reductions_by_an_index_match_the_blocking_ones() {
    use std::sync::Arc;
    let e = engine();
    let mut rng = SplitMix::new(91);
    let n = 30_011;
    let dense: Vec<i32> = (0..n).map(|_| rng.below(500) as i32 - 250).collect();
    let sparse: Vec<i64> = (0..n)
        .map(|_| (rng.below(3000) as i64 - 1500) << 35)
        .collect();
    let f64s: Vec<f64> = (0..n)
        .map(|i| match rng.below(30) {
            0 => f64::NAN,
            1 => -0.0,
            2 => f64::MAX,
            _ => rng.range(-1e9, 1e9) * if i % 7 == 0 { 1e-300 } else { 1.0 },
        })
        .collect();
    let i64s: Vec<i64> = (0..n)
        .map(|_| rng.below(1 << 40) as i64 - (1 << 39))
        .collect();
    let f32s: Vec<f32> = f64s.iter().map(|&v| v as f32).collect();
    fn check<K: Key + std::fmt::Debug>(
        e: &Engine,
        index: Arc<GroupIndex<'static, K>>,
        f64s: &[f64],
        f32s: &[f32],
        i64s: &[i64],
    ) {
        for nan in POLICIES {
            let futures = (
                e.reduce_by_index_async(index.clone(), f64s.to_vec(), &OPS, nan),
                e.reduce_by_index_async(index.clone(), f32s.to_vec(), &OPS, nan),
                e.reduce_by_index_async(index.clone(), i64s.to_vec(), &OPS, nan),
            );
            // A future dropped before its turn is not run; the others settle.
            drop(e.reduce_by_index_async(index.clone(), f64s.to_vec(), &OPS, nan));
            let (a, b, c) =
                pollster::block_on(async { (futures.0.await, futures.1.await, futures.2.await) });
            let blocking = |g: &gpulanes::Grouped<K>| common::grouped_bits(g);
            assert_eq!(
                blocking(&a.unwrap()),
                blocking(&e.reduce_by_index(&index, f64s, &OPS, nan).unwrap())
            );
            assert_eq!(
                blocking(&b.unwrap()),
                blocking(&e.reduce_by_index(&index, f32s, &OPS, nan).unwrap())
            );
            assert_eq!(
                blocking(&c.unwrap()),
                blocking(&e.reduce_by_index(&index, i64s, &OPS, nan).unwrap())
            );
        }
        let short = e.reduce_by_index_async(
            index.clone(),
            f64s[1..].to_vec(),
            &OPS,
            NanPolicy::Propagate,
        );
        let err = pollster::block_on(short).unwrap_err().to_string();
        assert!(err.contains("rows"), "{err}");
        let none = e.reduce_by_index_async(index, f64s.to_vec(), &[], NanPolicy::Propagate);
        assert!(pollster::block_on(none).is_err());
    }
    check(
        e,
        Arc::new(e.group_index(dense).unwrap()),
        &f64s,
        &f32s,
        &i64s,
    );
    check(
        e,
        Arc::new(e.group_index(sparse).unwrap()),
        &f64s,
        &f32s,
        &i64s,
    );
}
