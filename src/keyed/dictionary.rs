//! Sparse keys named by dense ids: the distinct keys in ascending order,
//! and for every row the index of its key among them (its group).
//!
//! Two ways, chosen from a sample of the keys (one row at a seeded random
//! place in each of evenly spaced strides, so periodic keys do not alias
//! with it); both give the same ids:
//! - **Few distinct keys, often repeated** (up to [`HASHED_KEYS`], and
//!   [`MERGED_KEYS`] over the threads' tables, each on [`HASHED_REPEATS`]
//!   rows or more on average, as estimated from the sample by
//!   [`estimated_distinct`]): each thread names the keys of its
//!   range of rows with its own hash table; the tables' keys are then
//!   sorted into one list and every thread renames its rows' ids into it.
//!   A table that grows past [`HASH_GIVE_UP`] keys (the sample misled)
//!   stops, and the keys are sorted instead.
//! - **Otherwise**: a sample sort. Splitters taken from the sorted sample
//!   cut the keys into buckets of about [`BUCKET_ROWS`] rows each, so
//!   clustered keys still spread evenly, and a key frequent in the sample
//!   gets a bucket of its own (already in order); every row's (key, row)
//!   pair is scattered to its bucket, the buckets are sorted by key over
//!   the host's threads (each in cache), and the buckets, in order, name
//!   their keys and write their rows' ids. One hash table of millions of
//!   keys would cost a cache miss a row, on one thread. A pair takes 8
//!   bytes where the keys span less than 2^32 values (all 32-bit keys),
//!   else 16; where the pairs cannot be allocated the keys are hashed
//!   instead.

use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};

use super::Key;
use crate::error::{Error, Result};
use crate::threads::{self, split_into};

/// Sparse keys as dense ids.
#[derive(Debug, PartialEq)]
pub(crate) struct Dictionary<K> {
    /// Each row's id: the index of its key in `distinct`.
    pub ids: Vec<u32>,
    /// The distinct keys, ascending.
    pub distinct: Vec<K>,
}

/// How [`dictionary`] names the keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Way {
    /// A hash table a thread, merged.
    Hash,
    /// A sample sort of (key, row) pairs.
    Sort,
}

/// Rows a sort bucket holds on average: 128-256 KiB of pairs, sorted in
/// a core's cache, and few enough buckets that the scatter writes to few
/// places at once.
const BUCKET_ROWS: usize = 1 << 14;
/// At most this many buckets (their splitters are searched for each row).
const MAX_BUCKETS: usize = 1 << 16;
/// Sampled keys per bucket, so that splitters fall near the quantiles.
const OVERSAMPLE: usize = 16;
/// The sample holds at least this many keys (all of them, for fewer).
const MIN_SAMPLE: usize = 4096;
/// Keys are hashed where there are estimated to be at most this many
/// distinct ones (a thread's table then stays within the caches of a
/// server CPU) ...
pub(crate) const HASHED_KEYS: usize = 1 << 19;
/// ... and each comes this many times or more on average (a table costs
/// more a new key than a repeated one) ...
pub(crate) const HASHED_REPEATS: usize = 8;
/// ... and the threads' tables hold at most about this many keys in all
/// (they are sorted into one list on one thread, and every thread looks
/// its keys up in it: past a few million keys that costs more than the
/// sample sort on as many threads).
pub(crate) const MERGED_KEYS: usize = 1 << 21;
/// A thread's hash table stops at this many keys, and the keys are sorted
/// instead.
pub(crate) const HASH_GIVE_UP: usize = 4 * HASHED_KEYS;
/// Rows per thread below which fewer threads name the keys.
const PARALLEL_ROWS: usize = 1 << 16;

/// A hash table of one thread's keys: their first ids.
type Table<K> = HashMap<K, u32, foldhash::fast::RandomState>;

/// Keys as u64 in the same order, counted from the smallest key (so keys
/// spanning less than 2^32 values map below 2^32).
#[derive(Clone, Copy)]
pub(crate) struct Order {
    min: i128,
}

impl Order {
    /// The order of keys whose smallest is `min`.
    pub(crate) fn from_min<K: Key>(min: K) -> Self {
        Order { min: min.to_i128() }
    }

    /// `key` (at least the smallest) as u64.
    fn of<K: Key>(self, key: K) -> u64 {
        (key.to_i128() - self.min) as u64
    }

    /// The key [`Order::of`] mapped to `o`.
    fn key<K: Key>(self, o: u64) -> K {
        K::from_i128(o as i128 + self.min)
    }
}

/// The keys (whose smallest is `min` and largest `max`) as dense ids in
/// key order; the way is chosen from a sample (see the module
/// documentation).
pub(crate) fn dictionary<K: Key>(keys: &[K], min: K, max: K) -> Result<Dictionary<K>> {
    let order = Order::from_min(min);
    let sample = sorted_sample(keys, order);
    named(
        keys,
        order,
        order.of(max),
        &sample,
        way_for(
            &sample,
            keys.len(),
            threads::threads_for(keys.len(), PARALLEL_ROWS),
        ),
    )
}

/// The way to name `rows` keys of which `sample` is [`sorted_sample`], on
/// `threads` threads.
fn way_for(sample: &[u64], rows: usize, threads: usize) -> Way {
    let distinct = estimated_distinct(sample, rows);
    if distinct <= HASHED_KEYS as f64
        && distinct * threads as f64 <= MERGED_KEYS as f64
        && distinct * HASHED_REPEATS as f64 <= rows as f64
    {
        Way::Hash
    } else {
        Way::Sort
    }
}

/// [`dictionary`] the given way first (`top` is the largest key in
/// `order`, `sample` [`sorted_sample`] of `keys`).
pub(crate) fn named<K: Key>(
    keys: &[K],
    order: Order,
    top: u64,
    sample: &[u64],
    way: Way,
) -> Result<Dictionary<K>> {
    let started = std::time::Instant::now();
    let sorted = || match top <= u32::MAX as u64 && keys.len() <= 1 << 32 {
        true => by_sorting::<K, u64>(keys, order, sample),
        false => by_sorting::<K, u128>(keys, order, sample),
    };
    let first = match way {
        Way::Hash => by_hashing(keys, Some(HASH_GIVE_UP))?.map(|d| (d, Way::Hash)),
        Way::Sort => None,
    };
    let (dictionary, way) = match first {
        Some(done) => done,
        None => match sorted()? {
            Some(d) => (d, Way::Sort),
            None => (
                by_hashing(keys, None)?.ok_or_else(|| {
                    Error::Internal("a hash table without a limit stopped".into())
                })?,
                Way::Hash,
            ),
        },
    };
    log::debug!(
        "groups: {} sparse keys named ({way:?}, {} distinct) in {:?}",
        keys.len(),
        dictionary.distinct.len(),
        started.elapsed()
    );
    Ok(dictionary)
}

/// Sort buckets for `n` rows.
fn bucket_count(n: usize) -> usize {
    n.div_ceil(BUCKET_ROWS).clamp(1, MAX_BUCKETS)
}

/// A well-mixed 64-bit value of `x` (splitmix64's finaliser).
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// One key from each of evenly spaced strides of `keys`, at a seeded
/// random place in it (every key where there are few), in `order`, sorted.
pub(crate) fn sorted_sample<K: Key>(keys: &[K], order: Order) -> Vec<u64> {
    let n = keys.len();
    let len = n.min((bucket_count(n) * OVERSAMPLE).max(MIN_SAMPLE));
    let at = |i: usize| (i as u128 * n as u128 / len as u128) as usize;
    let mut sample: Vec<u64> = (0..len)
        .map(|i| {
            let (start, end) = (at(i), at(i + 1));
            let pick = start + (mix(i as u64) % (end - start) as u64) as usize;
            order.of(keys[pick])
        })
        .collect();
    sample.sort_unstable();
    sample
}

/// The number of distinct keys among `rows` keys estimated from a sorted
/// sample of them: the sample's own where it holds every key, else the
/// Chao1 estimate (the sample's distinct keys plus f1^2 / 2 f2, f1 and f2
/// the keys seen once and twice), which stays high where a few frequent
/// keys sit beside many rare ones.
pub(crate) fn estimated_distinct(sample: &[u64], rows: usize) -> f64 {
    let (mut seen, mut once, mut twice) = (0f64, 0f64, 0f64);
    for run in sample.chunk_by(|a, b| a == b) {
        seen += 1.0;
        match run.len() {
            1 => once += 1.0,
            2 => twice += 1.0,
            _ => {}
        }
    }
    if sample.len() == rows {
        return seen;
    }
    let unseen = if twice > 0.0 {
        once * once / (2.0 * twice)
    } else {
        once * (once - 1.0).max(0.0) / 2.0
    };
    (seen + unseen).min(rows as f64)
}

/// The error for more distinct keys than 32-bit ids name.
fn too_many() -> Error {
    Error::InvalidInput("more than 2^32 distinct keys (groups are named by 32-bit ids)".into())
}

/// The error for a naming thread that was lost.
fn lost() -> Error {
    Error::Internal("a thread naming the group keys panicked".into())
}

/// What a thread's hash table ended with.
enum Hashed<K> {
    /// Its range's distinct keys, in the order first seen: its ids.
    Keys(Vec<K>),
    /// More keys than the limit.
    Stopped,
    /// More than 2^32 keys.
    TooMany,
}

/// The keys named through one hash table a thread; `None` where a table
/// passed `limit` keys.
fn by_hashing<K: Key>(keys: &[K], limit: Option<usize>) -> Result<Option<Dictionary<K>>> {
    let n = keys.len();
    let limit = limit.unwrap_or(usize::MAX);
    let ranges = threads::ranges(n, threads::threads_for(n, PARALLEL_ROWS));
    let mut ids = vec![0u32; n];
    let parts: Vec<_> = ranges
        .iter()
        .cloned()
        .zip(split_into(&mut ids, ranges.iter().map(Range::len)))
        .collect();
    let hashed = threads::on_threads(parts, |(rows, ids)| {
        let mut table = Table::<K>::default();
        let mut distinct = Vec::new();
        for (id, &key) in ids.iter_mut().zip(&keys[rows]) {
            let next = match u32::try_from(distinct.len()) {
                Ok(_) if distinct.len() > limit => return Hashed::Stopped,
                Ok(next) => next,
                Err(_) => return Hashed::TooMany,
            };
            *id = *table.entry(key).or_insert_with(|| {
                distinct.push(key);
                next
            });
        }
        Hashed::Keys(distinct)
    });
    let mut local = Vec::with_capacity(hashed.len());
    for h in hashed {
        match h.ok_or_else(lost)? {
            Hashed::Keys(keys) => local.push(keys),
            Hashed::Stopped => return Ok(None),
            Hashed::TooMany => return Err(too_many()),
        }
    }
    let mut distinct: Vec<K> = local.concat();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() as u64 > 1 << 32 {
        return Err(too_many());
    }
    let distinct_ref = &distinct;
    let renames = split_into(&mut ids, ranges.iter().map(Range::len))
        .into_iter()
        .zip(local);
    let renamed = threads::on_threads(renames.collect(), |(ids, local)| {
        let rename: Vec<u32> = local
            .iter()
            .map(|k| distinct_ref.partition_point(|d| d < k) as u32)
            .collect();
        for id in ids {
            *id = rename[*id as usize];
        }
    });
    if renamed.iter().any(Option::is_none) {
        return Err(lost());
    }
    Ok(Some(Dictionary { ids, distinct }))
}

/// A (key, row) pair in one integer: the key (in [`Order`]) above the
/// row, so that pairs sort by key in their top half.
trait Pair: Copy + Send + Sync + Default {
    fn pack(key: u64, row: usize) -> Self;
    fn key(self) -> u64;
    fn row(self) -> usize;
}

/// Keys below 2^32 and rows below 2^32.
impl Pair for u64 {
    fn pack(key: u64, row: usize) -> Self {
        key << 32 | row as u64
    }
    fn key(self) -> u64 {
        self >> 32
    }
    fn row(self) -> usize {
        self as u32 as usize
    }
}

/// Any key and row.
impl Pair for u128 {
    fn pack(key: u64, row: usize) -> Self {
        (key as u128) << 64 | row as u128
    }
    fn key(self) -> u64 {
        (self >> 64) as u64
    }
    fn row(self) -> usize {
        self as u64 as usize
    }
}

/// The keys named by a sample sort of pairs `P` (which must hold every
/// key in `order` and every row); `None` where the pairs cannot be
/// allocated.
fn by_sorting<K: Key, P: Pair>(
    keys: &[K],
    order: Order,
    sample: &[u64],
) -> Result<Option<Dictionary<K>>> {
    let n = keys.len();
    let splitters = splitters(sample, bucket_count(n));
    let buckets = splitters.len() + 1;
    // Bucket b holds the keys from splitters[b - 1] up to splitters[b];
    // at most MAX_BUCKETS of them, so a row's bucket fits a u16.
    let bucket_of = |o: u64| splitters.partition_point(|&s| s <= o) as u16;
    // Every slot is written by the scatter, so the pairs start
    // uninitialised (their pages are first touched there, on the
    // scattering threads).
    let mut pairs: Vec<P> = Vec::new();
    if pairs.try_reserve_exact(n).is_err() {
        return Ok(None);
    }

    // Each range of rows counts its rows in each bucket and keeps each
    // row's bucket for the scatter.
    let parallel = threads::threads_for(n, PARALLEL_ROWS);
    let ranges = threads::ranges(n, parallel);
    let (counts, row_buckets): (Vec<Vec<usize>>, Vec<Vec<u16>>) =
        threads::on_threads(ranges.clone(), |rows| {
            let mut count = vec![0usize; buckets];
            let of_rows: Vec<u16> = keys[rows]
                .iter()
                .map(|&key| {
                    let b = bucket_of(order.of(key));
                    count[b as usize] += 1;
                    b
                })
                .collect();
            (count, of_rows)
        })
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(lost)?
        .into_iter()
        .unzip();

    // Bucket-major: bucket 0's slots of every range in range order, then
    // bucket 1's, and so on; each range gets its own slots of each bucket.
    let lens = (0..buckets).flat_map(|b| counts.iter().map(move |c| c[b]));
    let mut slots: Vec<Vec<&mut [MaybeUninit<P>]>> = ranges.iter().map(|_| Vec::new()).collect();
    for (i, piece) in split_into(&mut pairs.spare_capacity_mut()[..n], lens)
        .into_iter()
        .enumerate()
    {
        slots[i % ranges.len()].push(piece);
    }
    let parts: Vec<_> = ranges
        .into_iter()
        .zip(slots)
        .zip(row_buckets)
        .zip(&counts)
        .collect();
    let filled = threads::on_threads(parts, |(((rows, mut slots), row_buckets), count)| {
        let mut filled = vec![0usize; buckets];
        for (row, b) in rows.zip(row_buckets) {
            let b = b as usize;
            slots[b][filled[b]].write(P::pack(order.of(keys[row]), row));
            filled[b] += 1;
        }
        filled == *count
    });
    if !filled.into_iter().all(|f| f == Some(true)) {
        return Err(lost());
    }
    // SAFETY: every range wrote each of its slots (indices 0..count in
    // each of its pieces, checked just above), and the pieces cover the
    // first n slots of the capacity.
    unsafe { pairs.set_len(n) };

    // Each part, a run of buckets of about equal rows, sorts its buckets
    // by key and counts their distinct keys.
    let sizes: Vec<usize> = (0..buckets)
        .map(|b| counts.iter().map(|c| c[b]).sum())
        .collect();
    let parts = balanced(&sizes, parallel);
    let part_rows: Vec<usize> = parts
        .iter()
        .map(|p| sizes[p.clone()].iter().sum())
        .collect();
    let sorting: Vec<_> = split_into(&mut pairs, part_rows.iter().copied())
        .into_iter()
        .zip(parts)
        .collect();
    let sizes = &sizes;
    let distinct_counts: Vec<u64> = threads::on_threads(sorting, |(mut pairs, part)| {
        let mut distinct = 0u64;
        for b in part {
            let (bucket, rest) = std::mem::take(&mut pairs).split_at_mut(sizes[b]);
            pairs = rest;
            bucket.sort_unstable_by_key(|p| p.key());
            distinct += bucket.chunk_by(|a, b| a.key() == b.key()).count() as u64;
        }
        distinct
    })
    .into_iter()
    .collect::<Option<_>>()
    .ok_or_else(lost)?;
    let total: u64 = distinct_counts.iter().sum();
    if total > 1 << 32 {
        return Err(too_many());
    }

    // Keys never span buckets, so each part names its keys on from the
    // distinct keys of the parts before it.
    let mut distinct = vec![K::from_i128(0); total as usize];
    let ids: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
    let ids_ref = &ids;
    let mut naming = Vec::with_capacity(part_rows.len());
    let (mut pairs_left, mut first): (&[P], u64) = (&pairs, 0);
    let distinct_parts = split_into(&mut distinct, distinct_counts.iter().map(|&c| c as usize));
    for ((distinct_part, &rows), &count) in distinct_parts
        .into_iter()
        .zip(&part_rows)
        .zip(&distinct_counts)
    {
        let (part_pairs, rest) = pairs_left.split_at(rows);
        pairs_left = rest;
        naming.push((part_pairs, distinct_part, first));
        first += count;
    }
    let named = threads::on_threads(naming, |(pairs, distinct, first)| {
        for (next, run) in pairs.chunk_by(|a, b| a.key() == b.key()).enumerate() {
            distinct[next] = order.key(run[0].key());
            // At most 2^32 ids in all (checked above).
            let id = (first + next as u64) as u32;
            for &p in run {
                ids_ref[p.row()].store(id, Ordering::Relaxed);
            }
        }
    });
    if named.iter().any(Option::is_none) {
        return Err(lost());
    }
    let ids = ids.into_iter().map(AtomicU32::into_inner).collect();
    Ok(Some(Dictionary { ids, distinct }))
}

/// Up to `buckets - 1` distinct splitters at the sample's quantiles,
/// ascending. A key chosen at two quantiles or more (a frequent key) is
/// followed by the next key, so that it has a bucket of its own, which
/// needs no sorting.
fn splitters(sample: &[u64], buckets: usize) -> Vec<u64> {
    let chosen: Vec<u64> = (1..buckets)
        .map(|j| sample[j * sample.len() / buckets])
        .collect();
    let mut splitters = Vec::with_capacity(chosen.len() + 8);
    for run in chosen.chunk_by(|a, b| a == b) {
        splitters.push(run[0]);
        if let (2.., Some(next)) = (run.len(), run[0].checked_add(1)) {
            splitters.push(next);
        }
    }
    splitters.dedup();
    splitters.truncate(MAX_BUCKETS - 1);
    splitters
}

/// Consecutive ranges of buckets of `sizes`, up to `parts` of them, of
/// about equal rows (a bucket larger than a part's share makes a part of
/// its own).
fn balanced(sizes: &[usize], parts: usize) -> Vec<Range<usize>> {
    let total: usize = sizes.iter().sum();
    let share = total.div_ceil(parts.max(1)).max(1);
    let mut ranges: Vec<Range<usize>> = Vec::new();
    let (mut start, mut rows) = (0, 0);
    for (b, &size) in sizes.iter().enumerate() {
        rows += size;
        if rows >= share && b + 1 < sizes.len() {
            ranges.push(start..b + 1);
            start = b + 1;
            rows = 0;
        }
    }
    // Trailing buckets without rows join the range before them.
    match ranges.last_mut() {
        Some(last) if rows == 0 => last.end = sizes.len(),
        _ => ranges.push(start..sizes.len()),
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::xorshift;
    use std::collections::BTreeMap;

    /// The dictionary from a sorted map: the reference.
    fn reference<K: Key>(keys: &[K]) -> Dictionary<K> {
        let mut ids: BTreeMap<K, u32> = keys.iter().map(|&k| (k, 0)).collect();
        for (i, id) in ids.values_mut().enumerate() {
            *id = i as u32;
        }
        Dictionary {
            ids: keys.iter().map(|k| ids[k]).collect(),
            distinct: ids.into_keys().collect(),
        }
    }

    /// Both ways, each with both pair sizes where the keys allow the
    /// small one, a hash table that gives up at once, and the chosen way
    /// give the reference.
    fn check<K: Key + std::fmt::Debug>(keys: &[K], what: &str) {
        let want = reference(keys);
        let (Some(&min), Some(&max)) = (keys.iter().min(), keys.iter().max()) else {
            assert!(want.ids.is_empty());
            return;
        };
        let order = Order::from_min(min);
        let top = order.of(max);
        let sample = sorted_sample(keys, order);
        for way in [Way::Hash, Way::Sort] {
            let got = named(keys, order, top, &sample, way).unwrap();
            assert!(got == want, "{what}, {way:?}: {} keys", keys.len());
        }
        let wide = by_sorting::<K, u128>(keys, order, &sample)
            .unwrap()
            .unwrap();
        assert!(wide == want, "{what}: 16-byte pairs");
        if top <= u32::MAX as u64 {
            let narrow = by_sorting::<K, u64>(keys, order, &sample).unwrap().unwrap();
            assert!(narrow == want, "{what}: 8-byte pairs");
        }
        let stopped = by_hashing(keys, Some(0)).unwrap();
        assert!(
            stopped.is_none() || want.distinct.len() <= 1,
            "{what}: a table past its limit stops"
        );
        assert!(
            dictionary(keys, min, max).unwrap() == want,
            "{what}: chosen way"
        );
    }

    #[test]
    fn random_keys_of_every_type_and_cardinality() {
        let mut rng = xorshift(0x9e37_79b9_7f4a_7c15);
        for n in [0, 1, 2, 3, 100, 4095, 4096, 4097, 16_385, 70_000, 300_001] {
            for distinct in [1u64, 2, 16, 1000, n as u64 / 2 + 1, 1 << 40] {
                let pick: Vec<u64> = (0..n).map(|_| rng() % distinct).collect();
                let spread = |p: u64| p.wrapping_mul(0x5851_f42d_4c95_7f2d);
                let i64s: Vec<i64> = pick.iter().map(|&p| spread(p) as i64).collect();
                check(&i64s, &format!("int64, {distinct} of {n}"));
                let i32s: Vec<i32> = pick.iter().map(|&p| (spread(p) >> 32) as i32).collect();
                check(&i32s, &format!("int32, {distinct} of {n}"));
                let u32s: Vec<u32> = pick.iter().map(|&p| spread(p) as u32).collect();
                check(&u32s, &format!("uint32, {distinct} of {n}"));
            }
        }
    }

    #[test]
    fn skewed_clustered_and_extreme_keys() {
        let mut rng = xorshift(0x2545_f491_4f6c_dd1d);
        let n = 200_000;
        // Most rows in a narrow cluster, a few sentinels at the ends of
        // the type (one bucket of the key range would take nearly all).
        let mut keys: Vec<i64> = (0..n).map(|_| (rng() % 150_000) as i64).collect();
        for i in (0..n).step_by(9973) {
            keys[i] = if i % 2 == 0 { i64::MAX } else { i64::MIN };
        }
        check(&keys, "cluster and sentinels");
        // One key on half the rows, the rest distinct.
        let keys: Vec<i64> = (0..n as i64)
            .map(|i| if i % 2 == 0 { 42 } else { i << 20 })
            .collect();
        check(&keys, "one heavy key");
        // Sorted, reversed and in runs.
        let sorted: Vec<i64> = (0..n as i64).map(|i| i * 1_000_003).collect();
        check(&sorted, "sorted");
        let reversed: Vec<i64> = sorted.iter().rev().copied().collect();
        check(&reversed, "reversed");
        let runs: Vec<i64> = (0..n as i64).map(|i| (i / 64) << 35).collect();
        check(&runs, "runs");
        // The extremes of every type.
        check(&[i32::MIN, i32::MAX, 0, -1, i32::MIN], "int32 extremes");
        check(&[u32::MAX, 0, u32::MAX, 1], "uint32 extremes");
        check(&[i64::MAX, i64::MIN, 0, -1, i64::MAX], "int64 extremes");
    }

    #[test]
    fn distinct_keys_are_estimated_and_the_way_follows() {
        let mut rng = xorshift(0x0123_4567_89ab_cdef);
        // A sample of every key counts them.
        let keys: Vec<i64> = (0..3000).map(|i| i % 700).collect();
        let order = Order::from_min(0i64);
        assert_eq!(
            estimated_distinct(&sorted_sample(&keys, order), keys.len()),
            700.0
        );
        let n = 1 << 22;
        for distinct in [16u64, 10_000, 200_000, 1 << 20, 1 << 40] {
            let keys: Vec<i64> = (0..n).map(|_| (rng() % distinct) as i64 * 3).collect();
            let sample = sorted_sample(&keys, order);
            let est = estimated_distinct(&sample, n);
            let truth = distinct.min(n as u64) as f64;
            assert!(
                est > truth / 2.0 && est < truth * 2.0 || est == n as f64 && truth > n as f64 / 2.0,
                "{distinct} keys estimated as {est}"
            );
            let want = if distinct <= 200_000 {
                Way::Hash
            } else {
                Way::Sort
            };
            assert_eq!(way_for(&sample, n, 2), want, "{distinct} keys");
            // More threads: more tables to merge, so fewer keys hashed.
            let want = if distinct <= 10_000 {
                Way::Hash
            } else {
                Way::Sort
            };
            assert_eq!(way_for(&sample, n, 16), want, "{distinct} keys, 16 threads");
        }
        // A few frequent keys beside many rare ones: the rare ones count.
        let keys: Vec<i64> = (0..n as i64)
            .map(|i| {
                if rng().is_multiple_of(4) {
                    i
                } else {
                    -((rng() % 8) as i64)
                }
            })
            .collect();
        let sample = sorted_sample(&keys, Order::from_min(-7i64));
        assert!(estimated_distinct(&sample, n) > (n / 8) as f64);
        assert_eq!(way_for(&sample, n, 2), Way::Sort);
        // A key on every 256th row (the sample's stride here), every other
        // row distinct: the sample's places are not periodic.
        let keys: Vec<i64> = (0..n as i64)
            .map(|i| if i % 256 == 0 { -1 } else { i })
            .collect();
        let sample = sorted_sample(&keys, Order::from_min(-1i64));
        assert!(estimated_distinct(&sample, n) > (n / 2) as f64);
        assert_eq!(way_for(&sample, n, 2), Way::Sort);
        check(&keys, "a key on every 256th row");
    }

    #[test]
    fn buckets_split_into_balanced_parts() {
        assert_eq!(balanced(&[], 2), vec![0..0]);
        assert_eq!(balanced(&[5], 4), vec![0..1]);
        assert_eq!(balanced(&[1, 1, 1, 1], 2), vec![0..2, 2..4]);
        assert_eq!(balanced(&[100, 1, 1, 1], 2), vec![0..1, 1..4]);
        assert_eq!(balanced(&[0, 0, 0], 3), vec![0..3]);
        assert_eq!(balanced(&[5, 5, 0, 0], 2), vec![0..1, 1..4]);
        for parts in balanced(&[3, 9, 2, 7, 1, 1, 8], 3).windows(2) {
            assert_eq!(parts[0].end, parts[1].start);
        }
    }

    #[test]
    fn splitters_are_distinct_and_ascending() {
        let sample: Vec<u64> = (0..100).map(|i| i / 10).collect();
        assert_eq!(splitters(&sample, 5), vec![2, 4, 6, 8]);
        // A key chosen at several quantiles gets a bucket of its own.
        assert_eq!(splitters(&[7; 64], 8), vec![7, 8]);
        let sample: Vec<u64> = (0..100).map(|i| if i < 60 { 5 } else { i }).collect();
        assert_eq!(splitters(&sample, 5), vec![5, 6, 60, 80]);
        assert_eq!(splitters(&[u64::MAX; 8], 4), vec![u64::MAX]);
        assert!(splitters(&[1, 2, 3], 1).is_empty());
    }
}
