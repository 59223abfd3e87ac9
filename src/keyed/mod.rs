//! Keyed reductions (group-by) and reductions over small partitions, exact
//! and independent of row order.
//!
//! [`Engine::reduce_by_key`](crate::Engine::reduce_by_key) takes unsorted
//! keys (int32, uint32 or int64) and values of any [`Element`] type and
//! returns the distinct keys in ascending order with one result and one
//! count per key for each requested op, computed in one pass over the rows.
//! Every group's sum is an exact integer accumulated with integer atomics
//! (shaders/group.wgsl), so a permutation of the rows gives the same bits.
//!
//! # Strategies
//!
//! Chosen per call from the keys; all give the same bits.
//! - **Dense keys**: when the keys' range (max - min + 1) is at most
//!   [`DENSE_SLACK`] times the row count plus [`DENSE_FLOOR`] (dictionary
//!   codes, small integer ids, most real group columns), the kernel reads
//!   the keys themselves and uses `key - min` as the group: no hashing, no
//!   copy. Groups no row has are dropped from the result.
//! - **Sparse keys**: otherwise the keys are mapped to dense ids in key
//!   order on the host's threads ([`dictionary`]: a hash table a thread
//!   for few, often repeated keys, else a sample sort), and the kernel
//!   reads the ids.
//! - **Many groups**: groups are processed in windows whose accumulators fit
//!   one storage binding ([`window_groups`](run::window_groups)); each
//!   window reads the rows again and skips rows of other windows (rows
//!   put in group order on the host: only the window's own rows).
//!
//! Inside the kernel rows go to their group's accumulator one of two ways,
//! chosen from a sample of the keys (evenly spaced adjacent pairs of
//! host-held keys; four blocks of device-resident keys, read back with one
//! small copy and a wait):
//! - **Run by run** (sorted or clustered keys): each invocation folds a run
//!   of consecutive rows of one group in registers and flushes it with a few
//!   atomics when the group changes.
//! - **Row by row** (keys that change on most adjacent rows, as random keys
//!   do): each row is added straight to its group, with no per-run
//!   bookkeeping.
//!
//! and accumulate first in one of three places:
//! - **Compact** (32-bit values added row by row, up to 1024 groups in
//!   32 KiB of workgroup memory): each workgroup keeps 8 words a group, a
//!   64-bit sum anchored at the group's first value and 32-bit counts and
//!   keys; values outside that window go straight to the global
//!   accumulators.
//! - **Private** (up to a few hundred groups otherwise): each workgroup
//!   keeps its groups in the global layout in workgroup memory.
//! - **Global**: straight into the global accumulators, for more groups.
//!
//! The private kinds add their workgroup's accumulators to the global ones
//! once per workgroup, and a workgroup of them takes several units of rows.
//!
//! On CPU adapters (the narrow kernel shape) host-held rows whose keys
//! change on most rows (every form but lanes requests, which keep the
//! rows as given) are first put in group order on the host ([`sort`]:
//! group ids and values, a two-level counting sort over the host's
//! threads, up to [`MAX_SORTED_ROWS`] rows), so the pass goes run by run:
//! a CPU driver runs each atomic lane after lane, and a row-by-row pass
//! pays several of them a row where a run pays a few in all.
//!
//! A group's accumulators hold only the limbs of the exact sum its column
//! can reach ([`limbs`]): host-held values are scanned for their exponent
//! range once, and uniform float32 values in [-1, 1) take 16 words (one
//! 64-byte line) a group instead of 31, float64 32 instead of 145.
//! Device-resident floats get their range from one more pass on the device
//! ([`spread`]) where there are more groups than workgroup memory holds in
//! the full layout, and keep the full layout otherwise.
//!
//! Results are finished on the device ([`finish`]): after a window's
//! passes one invocation per group rounds its exact sum and mean once and
//! writes a record of 14 words, which is read back instead of the
//! accumulators, and the host only applies the NaN policy and infinities
//! to it. Per-key
//! states ([`Engine::states_by_key`](crate::Engine::states_by_key), streamed
//! keyed reductions) read the accumulators back, since states merge.
//!
//! Values with nulls ([`nulls`]) keep the keys of their null rows as
//! groups, as SQL's `GROUP BY` does; the rows with a value are gathered on
//! the host and reduced as above.
//!
//! The same kernel reduces small partitions ([`crate::Partitions`] whose
//! average size is under [`SMALL_PARTITION`] values), where a workgroup per
//! partition would leave most of it idle.

pub(crate) mod accumulators;
pub mod columns;
pub mod composite;
pub(crate) mod dictionary;
pub(crate) mod finish;
pub mod index;
pub(crate) mod kernels;
pub(crate) mod limbs;
pub(crate) mod nulls;
pub(crate) mod run;
pub(crate) mod sort;
pub(crate) mod spread;
pub mod stream;

use std::mem::MaybeUninit;

use crate::context::Context;
use crate::device_array::DeviceArray;
use crate::dtype::{Dtype, Element, Scalar};
use crate::error::{Error, Result};
use crate::future::{Promise, ReductionFuture};
use crate::op::{NanPolicy, Op, Reduction};
use crate::state::{State, StateKind};
use crate::threads;

use finish::Finish;
pub(crate) use run::Words;
use run::{RowGroups, Wanted, reduce_groups};
pub use sort::MAX_SORTED_ROWS;

/// Dense keys: the range may be up to this many times the row count ...
pub const DENSE_SLACK: u64 = 2;
/// ... plus this many groups.
pub const DENSE_FLOOR: u64 = 1 << 16;
/// Partitions averaging fewer values than this go through the group kernel.
pub const SMALL_PARTITION: u64 = 1024;

/// A group key type: int32, uint32 or int64.
pub trait Key:
    bytemuck::Pod + Ord + std::hash::Hash + Send + Sync + 'static + sealed::Sealed
{
    /// The key's NumPy name (`int32`, `uint32`, `int64`).
    const NAME: &'static str;
    /// 32-bit words per key.
    #[doc(hidden)]
    const WORDS: usize;
    #[doc(hidden)]
    fn to_i128(self) -> i128;
    #[doc(hidden)]
    fn from_i128(v: i128) -> Self;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for i32 {}
    impl Sealed for u32 {}
    impl Sealed for i64 {}
}

macro_rules! key {
    ($t:ty, $name:literal, $words:literal) => {
        impl Key for $t {
            const NAME: &'static str = $name;
            const WORDS: usize = $words;
            fn to_i128(self) -> i128 {
                self as i128
            }
            fn from_i128(v: i128) -> Self {
                v as $t
            }
        }
    };
}
key!(i32, "int32", 1);
key!(u32, "uint32", 1);
key!(i64, "int64", 2);

/// The result of a keyed reduction: the distinct keys in ascending order
/// and, for each requested op, one value and one count per key.
#[derive(Clone, Debug, PartialEq)]
pub struct Grouped<K> {
    /// Distinct keys, ascending.
    pub keys: Vec<K>,
    /// One reduction per requested op, in the order asked; `values[i]` and
    /// `counts[i]` belong to `keys[i]`.
    pub reductions: Vec<Reduction<Scalar>>,
}

impl<K> Grouped<K> {
    /// No keys yet, and one empty reduction per op.
    pub(crate) fn empty(ops: &[Op]) -> Self {
        Grouped {
            keys: Vec::new(),
            reductions: ops.iter().map(|&op| Reduction::empty(op)).collect(),
        }
    }

    /// The reduction of `op` (the first one, if it was asked for twice).
    pub fn get(&self, op: Op) -> Option<&Reduction<Scalar>> {
        self.reductions.iter().find(|r| r.op == op)
    }

    /// Number of distinct keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when there were no rows.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The per-key states of a keyed reduction (for merging across machines).
#[derive(Clone, Debug, PartialEq)]
pub struct GroupedStates<K> {
    /// Distinct keys, ascending.
    pub keys: Vec<K>,
    /// One state per key, of the kind asked for.
    pub states: Vec<State>,
}

/// How a window's groups are named in the result.
#[derive(Clone, Copy, Debug)]
pub(crate) enum WindowKeys<'a, K> {
    /// Dense keys from `min`: group g of the window (from group `g0`) is
    /// key `min + g0 + g`; groups no row has are left out.
    Dense { min: K, g0: u64 },
    /// Sparse keys: group g is `distinct[g0 + g]`; groups no row has (a
    /// group index's keys whose values are all null) are left out.
    Sparse { distinct: &'a [K], g0: u64 },
    /// Partitions: every group, empty or not; they have no keys (their
    /// results are finished with none).
    Every,
}

impl<K: Key> WindowKeys<'_, K> {
    /// The key of the window's group `g`.
    fn key(&self, g: usize) -> K {
        match *self {
            WindowKeys::Dense { min, g0 } => {
                K::from_i128(min.to_i128() + (g0 as usize + g) as i128)
            }
            WindowKeys::Sparse { distinct, g0 } => distinct[g0 as usize + g],
            // Never asked for: partitions are finished without keys.
            WindowKeys::Every => K::zeroed(),
        }
    }

    /// True where group `g` of `acc` belongs in the result.
    fn present(&self, acc: &accumulators::GroupAccumulators<'_>, g: usize) -> bool {
        matches!(self, WindowKeys::Every) || acc.rows(g) > 0
    }

    /// The window's groups that belong in the result, as (key, index in
    /// the window), in key order.
    pub(crate) fn groups<'s>(
        &'s self,
        acc: &'s accumulators::GroupAccumulators<'_>,
    ) -> impl Iterator<Item = (K, usize)> + 's {
        (0..acc.len())
            .filter(|&g| self.present(acc, g))
            .map(|g| (self.key(g), g))
    }
}

/// Where one thread writes the results of its range of a window's groups:
/// the keys (where they are wanted), and each op's values and counts,
/// `len` slots each: the range's groups in the result.
struct Share<'a, K> {
    groups: std::ops::Range<usize>,
    len: usize,
    keys: Option<&'a mut [MaybeUninit<K>]>,
    ops: Vec<OpSlots<'a>>,
}

/// One op's output slots: values and counts.
type OpSlots<'a> = (
    Op,
    &'a mut [MaybeUninit<Option<Scalar>>],
    &'a mut [MaybeUninit<u64>],
);

/// Writes the key, and each op's value and count, of every group of
/// `share.groups` that `names` puts in the result into `share`'s slots, in
/// order, making each kind of state once per group in storage reused from
/// group to group. Returns the slots written (every one of them unless
/// `share` is longer than the range's groups).
fn finish_groups<K: Key>(
    share: &mut Share<'_, K>,
    acc: &accumulators::GroupAccumulators<'_>,
    names: WindowKeys<'_, K>,
    nan: NanPolicy,
) -> Result<usize> {
    // Ops of one kind (sum, mean and count) share a group's state.
    let slot_of = |kind: StateKind| match kind {
        StateKind::Sum => 0,
        StateKind::Max => 1,
        StateKind::Min => 2,
    };
    if acc.is_finished() {
        // Sums and means rounded on the device: no exact arithmetic here.
        return fill_groups(share, acc, names, |g, i, ops| {
            let sum = acc.finished_sum(g);
            let mut settled = [None; 3];
            for (op, values, counts) in ops.iter_mut() {
                let kind = StateKind::for_op(*op);
                let s = settled[slot_of(kind)].get_or_insert_with(|| acc.settled(g, kind));
                values[i].write(s.finalize(*op, nan, &sum)?);
                counts[i].write(s.count(nan));
            }
            Ok(())
        });
    }
    let dtype = acc.dtype();
    let mut states =
        [StateKind::Sum, StateKind::Max, StateKind::Min].map(|k| State::empty(dtype, k));
    fill_groups(share, acc, names, |g, i, ops| {
        let mut made = [false; 3];
        for (op, values, counts) in ops.iter_mut() {
            let kind = StateKind::for_op(*op);
            let slot = slot_of(kind);
            if !made[slot] {
                acc.state_into(g, kind, &mut states[slot]);
                made[slot] = true;
            }
            values[i].write(states[slot].finalize(*op, nan)?);
            counts[i].write(states[slot].count(nan));
        }
        Ok(())
    })
}

/// Calls `fill(g, i, ops)` for every group g of `share.groups` that `names`
/// puts in the result, the i-th of them, to write its ops' slots i, then
/// writes its key into slot i (where keys are wanted). Returns the slots
/// written.
fn fill_groups<K: Key>(
    share: &mut Share<'_, K>,
    acc: &accumulators::GroupAccumulators<'_>,
    names: WindowKeys<'_, K>,
    mut fill: impl FnMut(usize, usize, &mut [OpSlots<'_>]) -> Result<()>,
) -> Result<usize> {
    let present = share
        .groups
        .clone()
        .filter(|&g| names.present(acc, g))
        .zip(0..share.len);
    let mut written = 0;
    for (g, i) in present {
        fill(g, i, &mut share.ops)?;
        if let Some(keys) = share.keys.as_deref_mut() {
            keys[i].write(names.key(g));
        }
        written = i + 1;
    }
    Ok(written)
}

/// Groups a thread finishes at least: smaller windows take fewer threads.
const PARALLEL_GROUPS: usize = 1 << 14;

/// Appends the keys, values and counts of the groups of a window (named
/// by `names`) to `out`, in order.
pub(crate) fn finish_window<K: Key>(
    out: &mut Grouped<K>,
    acc: &accumulators::GroupAccumulators<'_>,
    names: WindowKeys<'_, K>,
    nan: NanPolicy,
) -> Result<()> {
    finish_into(&mut out.reductions, Some(&mut out.keys), acc, names, nan)
}

/// Appends each op's value and count of the groups of a window that
/// `names` puts in the result to `reductions` (and their keys to `keys`,
/// where given), in order. Large windows are cut into one range of groups
/// a thread. Where keys can leave groups out (all but partitions: groups
/// without rows), the groups each range puts in the result are counted
/// first (one pass on the threads); then each
/// thread writes its range's results straight into its share of the
/// outputs' spare capacity, so no slot is written twice and a million
/// groups cost no single-threaded pass over hundreds of megabytes.
fn finish_into<K: Key>(
    reductions: &mut [Reduction<Scalar>],
    mut keys: Option<&mut Vec<K>>,
    acc: &accumulators::GroupAccumulators<'_>,
    names: WindowKeys<'_, K>,
    nan: NanPolicy,
) -> Result<()> {
    let n = acc.len();
    let ranges = threads::ranges(n, threads::threads_for(n, PARALLEL_GROUPS));
    let lost = || Error::Internal("a thread finishing groups panicked".into());
    let lens: Vec<usize> = match names {
        WindowKeys::Every => ranges.iter().map(|r| r.len()).collect(),
        _ => threads::on_threads(ranges.clone(), |r| {
            r.filter(|&g| names.present(acc, g)).count()
        })
        .into_iter()
        .map(|c| c.ok_or_else(lost))
        .collect::<Result<_>>()?,
    };
    let total: usize = lens.iter().sum();
    // Each output's new slots, cut into one share per range.
    let mut shares: Vec<Share<'_, K>> = ranges
        .iter()
        .zip(&lens)
        .map(|(r, &len)| Share {
            groups: r.clone(),
            len,
            keys: None,
            ops: Vec::with_capacity(reductions.len()),
        })
        .collect();
    if let Some(keys) = keys.as_deref_mut() {
        keys.reserve(total);
        let pieces = threads::split_into(
            &mut keys.spare_capacity_mut()[..total],
            lens.iter().copied(),
        );
        for (share, piece) in shares.iter_mut().zip(pieces) {
            share.keys = Some(piece);
        }
    }
    for r in reductions.iter_mut() {
        r.values.reserve(total);
        r.counts.reserve(total);
        let values = threads::split_into(
            &mut r.values.spare_capacity_mut()[..total],
            lens.iter().copied(),
        );
        let counts = threads::split_into(
            &mut r.counts.spare_capacity_mut()[..total],
            lens.iter().copied(),
        );
        for ((share, v), c) in shares.iter_mut().zip(values).zip(counts) {
            share.ops.push((r.op, v, c));
        }
    }
    let finished = threads::on_threads(shares, |mut share| {
        let want = share.len;
        match finish_groups(&mut share, acc, names, nan)? {
            w if w == want => Ok(()),
            w => Err(Error::Internal(format!(
                "{w} of {want} groups of a window were finished"
            ))),
        }
    });
    for f in finished {
        f.ok_or_else(lost)??;
    }
    // SAFETY: the shares cut `total` slots past the length of the keys and
    // of each op's values and counts, and every share wrote every one of
    // its slots (finish_groups writes a share's slots in order, and
    // returned its length); the elements have no drop glue. On an error
    // above the lengths stay as they were.
    unsafe {
        if let Some(keys) = keys {
            keys.set_len(keys.len() + total);
        }
        for r in reductions.iter_mut() {
            r.values.set_len(r.values.len() + total);
            r.counts.set_len(r.counts.len() + total);
        }
    }
    Ok(())
}

/// Results of `ops` are finished on the device (means rounded there too
/// where `ops` has one).
pub(crate) fn finish_on_device(ops: &[Op]) -> Finish {
    Finish::OnDevice {
        mean: ops.contains(&Op::Mean),
    }
}

/// The accumulators the ops need.
pub(crate) fn wanted(ops: &[Op]) -> Wanted {
    Wanted {
        sum: ops.iter().any(|o| matches!(o, Op::Sum | Op::Mean)),
        max: ops.contains(&Op::Max),
        min: ops.contains(&Op::Min),
    }
}

/// A window handler that appends each group's key and state of `kind`
/// to `out`, in order.
pub(crate) fn collect_states<K: Key>(
    out: &mut GroupedStates<K>,
    kind: StateKind,
) -> impl FnMut(&accumulators::GroupAccumulators<'_>, WindowKeys<'_, K>) -> Result<()> + '_ {
    move |acc, names| {
        for (key, g) in names.groups(acc) {
            out.keys.push(key);
            out.states.push(acc.state(g, kind));
        }
        Ok(())
    }
}

/// How the keys become groups.
pub(crate) enum KeyPlan<K> {
    /// group = key - min.
    Dense { min: K, groups: u64 },
    /// group = ids[row]; distinct[g] is group g's key (ascending).
    Sparse { ids: Vec<u32>, distinct: Vec<K> },
}

/// Keys and values must pair up, and some op must be asked for.
pub(crate) fn check_request(keys: u64, values: u64, ops: &[Op]) -> Result<()> {
    if keys != values {
        return Err(Error::InvalidInput(format!(
            "keys and values differ in length: {keys} keys, {values} values"
        )));
    }
    if ops.is_empty() {
        return Err(Error::InvalidInput("no ops asked for".into()));
    }
    Ok(())
}

/// The number of groups when `rows` keys from `min` to `max` are dense
/// enough to be used as they are (`key - min`), else `None`.
fn dense_groups(min: i128, max: i128, rows: u64) -> Option<u64> {
    let range = (max - min + 1) as u128;
    let bound = rows as u128 * DENSE_SLACK as u128 + DENSE_FLOOR as u128;
    (range <= bound && range <= u32::MAX as u128).then_some(range as u64)
}

/// Keys per thread below which [`key_range`] reads them on one thread.
const PARALLEL_KEYS: usize = 1 << 20;

/// The smallest and the largest of `keys` (`None` for none): one pass,
/// split over threads for many keys, in a loop that vectorises.
fn key_range<K: Key>(keys: &[K]) -> Option<(K, K)> {
    let &first = keys.first()?;
    let range_of = |part: &[K]| {
        part.iter()
            .fold((first, first), |(lo, hi), &k| (lo.min(k), hi.max(k)))
    };
    let parts: Vec<&[K]> =
        threads::ranges(keys.len(), threads::threads_for(keys.len(), PARALLEL_KEYS))
            .into_iter()
            .map(|r| &keys[r])
            .collect();
    threads::on_threads(parts.clone(), range_of)
        .into_iter()
        .zip(parts)
        // A fold cannot panic; were its thread lost anyway, its part is read
        // again here.
        .map(|(done, part)| done.unwrap_or_else(|| range_of(part)))
        .reduce(|(lo, hi), (l, h)| (lo.min(l), hi.max(h)))
}

/// Plans how `keys` become groups: dense keys as they are, sparse ones
/// through ids (see the module documentation). Logs the plan and its time
/// at debug level.
pub(crate) fn plan_keys<K: Key>(keys: &[K]) -> Result<KeyPlan<K>> {
    let started = std::time::Instant::now();
    let plan = make_plan(keys)?;
    log::debug!(
        "groups: {} keys planned in {:?} ({})",
        keys.len(),
        started.elapsed(),
        match &plan {
            KeyPlan::Dense { groups, .. } => format!("dense, {groups} groups"),
            KeyPlan::Sparse { distinct, .. } => format!("sparse, {} distinct", distinct.len()),
        }
    );
    Ok(plan)
}

/// [`plan_keys`]' plan.
fn make_plan<K: Key>(keys: &[K]) -> Result<KeyPlan<K>> {
    let Some((min, max)) = key_range(keys) else {
        return Ok(KeyPlan::Dense {
            min: K::from_i128(0),
            groups: 0,
        });
    };
    if let Some(groups) = dense_groups(min.to_i128(), max.to_i128(), keys.len() as u64) {
        return Ok(KeyPlan::Dense { min, groups });
    }
    let dictionary::Dictionary { ids, distinct } = dictionary::dictionary(keys, min, max)?;
    Ok(KeyPlan::Sparse { ids, distinct })
}

/// Calls `each(accumulators, names)` for every window of groups, in
/// ascending key order, with how the window's groups are named.
fn keyed_groups<K: Key, E: Element>(
    ctx: &Context,
    keys: &[K],
    values: &[E],
    ops: &[Op],
    finish: Finish,
    each: impl FnMut(&accumulators::GroupAccumulators<'_>, WindowKeys<'_, K>) -> Result<()>,
) -> Result<()> {
    check_request(keys.len() as u64, values.len() as u64, ops)?;
    ctx.health.check()?;
    let plan = plan_keys(keys)?;
    reduce_planned(
        ctx,
        E::DTYPE,
        Words::Host(bytemuck::cast_slice(values)),
        Words::Host(bytemuck::cast_slice(keys)),
        K::WORDS == 2,
        plan,
        wanted(ops),
        finish,
        each,
    )
}

/// Runs the group kernel over `values` by `plan`: dense keys read from
/// `keys` (two words a key when `wide`), sparse ones through the plan's
/// ids; hands each window to `each` as [`keyed_groups`] does.
#[allow(clippy::too_many_arguments)]
fn reduce_planned<K: Key>(
    ctx: &Context,
    dtype: Dtype,
    values: Words<'_>,
    keys: Words<'_>,
    wide: bool,
    plan: KeyPlan<K>,
    wanted: Wanted,
    finish: Finish,
    mut each: impl FnMut(&accumulators::GroupAccumulators<'_>, WindowKeys<'_, K>) -> Result<()>,
) -> Result<()> {
    match plan {
        KeyPlan::Dense { min, groups } => {
            let base = min.to_i128() as u64;
            let by = if wide {
                RowGroups::Keys64 { keys, base }
            } else {
                RowGroups::Keys32 {
                    keys,
                    base: base as u32,
                }
            };
            let sorted = sort_rows(ctx, dtype, values, &by, groups);
            let (values, by) = sorted_or(&sorted, values, by);
            reduce_groups(ctx, dtype, values, by, groups, wanted, finish, |g0, acc| {
                each(acc, WindowKeys::Dense { min, g0 })
            })
        }
        KeyPlan::Sparse { ids, distinct } => {
            let by = RowGroups::Keys32 {
                keys: Words::Host(&ids),
                base: 0,
            };
            let groups = distinct.len() as u64;
            let sorted = sort_rows(ctx, dtype, values, &by, groups);
            let (values, by) = sorted_or(&sorted, values, by);
            reduce_groups(ctx, dtype, values, by, groups, wanted, finish, |g0, acc| {
                each(
                    acc,
                    WindowKeys::Sparse {
                        distinct: &distinct,
                        g0,
                    },
                )
            })
        }
    }
}

/// Host-held rows put in group order ([`sort`]) where the engine's
/// strategy says so: by default on CPU adapters, for keys that change on
/// most adjacent rows (there the pass would add rows one by one, each with
/// atomics the driver runs lane after lane); `None` where the rows stay as
/// they are.
pub(crate) fn sort_rows(
    ctx: &Context,
    dtype: Dtype,
    values: Words<'_>,
    by: &RowGroups<'_>,
    groups: u64,
) -> Option<sort::SortedRows> {
    let Words::Host(words) = values else {
        return None;
    };
    if !sort_wanted(ctx, by, groups) {
        return None;
    }
    let started = std::time::Instant::now();
    let sorted = match *by {
        RowGroups::Keys32 {
            keys: Words::Host(keys),
            base,
        } => sort::sort_by_group(
            |row| keys[row].wrapping_sub(base),
            groups,
            words,
            dtype.words() as usize,
        ),
        RowGroups::Keys64 {
            keys: Words::Host(keys),
            base,
        } => sort::sort_by_group(
            |row| {
                let key = keys[2 * row] as u64 | (keys[2 * row + 1] as u64) << 32;
                key.wrapping_sub(base) as u32
            },
            groups,
            words,
            dtype.words() as usize,
        ),
        _ => None,
    };
    log::debug!(
        "groups: {} rows {} on the host in {:?}",
        words.len() as u64 / dtype.words(),
        if sorted.is_some() {
            "sorted by group"
        } else {
            "left unsorted"
        },
        started.elapsed()
    );
    sorted
}

/// Whether host-held rows grouped `by` go in group order first: what the
/// engine's strategy says, by default on CPU adapters where there are
/// several groups and the keys change on most adjacent rows.
fn sort_wanted(ctx: &Context, by: &RowGroups<'_>, groups: u64) -> bool {
    let kernels = &ctx.group_kernels;
    let strategy = kernels.strategy;
    strategy.sort.unwrap_or_else(|| {
        strategy == kernels::GroupStrategy::default()
            && kernels.shape() == crate::kernels::KernelShape::Narrow
            && groups > 1
            && run::keys_change_often(ctx, by)
    })
}

/// The values and groups of `sorted` rows where there are any, else
/// `values` and `by` as they are.
pub(crate) fn sorted_or<'a>(
    sorted: &'a Option<sort::SortedRows>,
    values: Words<'a>,
    by: RowGroups<'a>,
) -> (Words<'a>, RowGroups<'a>) {
    match sorted {
        Some(s) => (
            Words::Host(&s.values),
            RowGroups::SortedIds { ids: &s.groups },
        ),
        None => (values, by),
    }
}

impl crate::Engine {
    /// `ops` over the values of each distinct key, in one pass: the keys in
    /// ascending order with, per op, one value and one count per key
    /// ([`NanPolicy`] as for whole buffers: under `Propagate` a NaN makes a
    /// float sum, mean, max or min NaN; under `Ignore` NaN values are
    /// skipped and not counted). Keys need not be sorted; row order does not
    /// change a bit of the result. Sums are exact (integer sums exact int64).
    ///
    /// Keys and values over 16 MiB go to the device through the engine's
    /// reused staging buffers; before refilling one the first time, the call
    /// waits for the work already submitted on the device (requests of the
    /// engine's lanes included), which its own result would follow anyway.
    ///
    /// Empty input gives no keys. Every key listed has at least one row; a
    /// key whose rows are all NaN has, under `Ignore`, count 0, sum 0.0 and
    /// no mean, max or min (`None`), and under `Propagate` NaN for each.
    /// Values with nulls (SQL NULL) go through
    /// [`Engine::reduce_by_key_with_nulls`](crate::Engine::reduce_by_key_with_nulls).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `keys` and `values` differ in length or
    /// `ops` is empty; [`Error::Overflow`] for an integer sum outside int64;
    /// [`Error::OutOfMemory`] when the device cannot hold the request (other
    /// requests go on); [`Error::DeviceLost`] once the device is lost;
    /// [`Error::Validation`], [`Error::Wait`] or [`Error::Internal`] for
    /// other GPU failures (see [`Error`]).
    pub fn reduce_by_key<K: Key, E: Element>(
        &self,
        keys: &[K],
        values: &[E],
        ops: &[Op],
        nan: NanPolicy,
    ) -> Result<Grouped<K>> {
        let mut out = Grouped::empty(ops);
        keyed_groups(
            self.context(),
            keys,
            values,
            ops,
            finish_on_device(ops),
            |acc, names| finish_window(&mut out, acc, names, nan),
        )?;
        Ok(out)
    }

    /// Async [`Engine::reduce_by_key`](crate::Engine::reduce_by_key): the
    /// same result, bit for bit, from a future. The keys and values are
    /// moved in, so the future borrows nothing; one of the engine's keyed
    /// threads plans the keys, uploads the rows, waits for the GPU between
    /// windows of groups and finishes the groups, so the calling thread
    /// (an async executor's) never waits for any of it. The engine runs
    /// these requests on two threads at most, started on demand; more
    /// requests in flight wait their turn in order, so a burst of them
    /// costs neither a thread nor device memory each; a request whose
    /// future is dropped before its turn is not run. For deadlines and
    /// priorities between keyed requests, the scheduler's lanes
    /// ([`Request::keyed`](crate::Request::keyed)) suit better.
    ///
    /// ```
    /// use gpulanes::{NanPolicy, Op, Scalar};
    /// let engine = gpulanes::Engine::new()?;
    /// let future = engine.reduce_by_key_async(vec![3i32, 1, 3], vec![0.5f32, 2.0, 0.25], &[Op::Sum], NanPolicy::Propagate);
    /// let g = pollster::block_on(future)?;
    /// assert_eq!(g.keys, vec![1, 3]);
    /// assert_eq!(g.reductions[0].values, vec![Some(Scalar::F32(2.0)), Some(Scalar::F32(0.75))]);
    /// # Ok::<(), gpulanes::Error>(())
    /// ```
    ///
    /// Empty input gives no keys; NaN as for
    /// [`Engine::reduce_by_key`](crate::Engine::reduce_by_key).
    ///
    /// # Errors
    /// From the future: as
    /// [`Engine::reduce_by_key`](crate::Engine::reduce_by_key), and
    /// [`Error::Thread`] when no keyed thread runs and none can be started.
    pub fn reduce_by_key_async<K: Key, E: Element>(
        &self,
        keys: Vec<K>,
        values: Vec<E>,
        ops: &[Op],
        nan: NanPolicy,
    ) -> ReductionFuture<Grouped<K>> {
        if let Err(e) = check_request(keys.len() as u64, values.len() as u64, ops) {
            return ReductionFuture::ready(Err(e));
        }
        let ops = ops.to_vec();
        self.on_keyed_thread(move |engine| engine.reduce_by_key(&keys, &values, &ops, nan))
    }

    /// Async
    /// [`Engine::reduce_by_key_device`](crate::Engine::reduce_by_key_device):
    /// the same result, bit for bit, from a future, computed on one of the
    /// engine's keyed threads as
    /// [`Engine::reduce_by_key_async`](crate::Engine::reduce_by_key_async)
    /// is. The future holds the arrays' GPU buffers until it settles.
    ///
    /// Empty input gives no keys; NaN as for
    /// [`Engine::reduce_by_key`](crate::Engine::reduce_by_key).
    ///
    /// # Errors
    /// From the future: as
    /// [`Engine::reduce_by_key_device`](crate::Engine::reduce_by_key_device),
    /// and [`Error::Thread`] when no keyed thread runs and none can be
    /// started.
    pub fn reduce_by_key_device_async(
        &self,
        keys: &DeviceArray,
        values: &DeviceArray,
        ops: &[Op],
        nan: NanPolicy,
    ) -> ReductionFuture<Grouped<i64>> {
        let (keys, values, ops) = (keys.share(), values.share(), ops.to_vec());
        self.on_keyed_thread(move |engine| engine.reduce_by_key_device(&keys, &values, &ops, nan))
    }

    /// Runs `work` on one of the engine's keyed threads (see `workers`)
    /// with an engine on this one's device, and returns the future its
    /// result settles.
    fn on_keyed_thread<T: Send + 'static>(
        &self,
        work: impl FnOnce(&crate::Engine) -> Result<T> + Send + 'static,
    ) -> ReductionFuture<T> {
        let (future, slot) = ReductionFuture::pending();
        let engine = crate::Engine::sharing(self.context());
        let on_thread = slot.clone();
        let queued = self.context().run_keyed(Box::new(move || {
            // A request whose future was dropped while it waited in the
            // queue is not run: nothing would read its result, and the
            // requests queued after it would wait for it.
            if std::sync::Arc::strong_count(&on_thread) == 1 {
                return;
            }
            // Made on the thread: if `work` panics, the promise dropped on
            // the way out settles the future with Error::Internal.
            let promise = Promise::new(&on_thread);
            promise.keep(work(&engine));
        }));
        if let Err(e) = queued {
            slot.settle(Err(e));
        }
        future
    }

    /// [`Engine::reduce_by_key`](crate::Engine::reduce_by_key) of 1-D
    /// `ndarray` views (non-contiguous views are copied first).
    ///
    /// Empty input gives no keys; NaN as for
    /// [`Engine::reduce_by_key`](crate::Engine::reduce_by_key) (a key whose
    /// rows are all NaN has, under `Ignore`, count 0, sum 0.0 and no mean,
    /// max or min; under `Propagate` NaN for each).
    ///
    /// # Errors
    /// As [`Engine::reduce_by_key`](crate::Engine::reduce_by_key).
    pub fn reduce_by_key_view<K: Key, E: Element>(
        &self,
        keys: ndarray::ArrayView1<K>,
        values: ndarray::ArrayView1<E>,
        ops: &[Op],
        nan: NanPolicy,
    ) -> Result<Grouped<K>> {
        let (k, v) = (keys.as_slice(), values.as_slice());
        match (k, v) {
            (Some(k), Some(v)) => self.reduce_by_key(k, v, ops, nan),
            _ => self.reduce_by_key(&keys.to_vec(), &values.to_vec(), ops, nan),
        }
    }

    /// The per-key [`State`]s of `kind` (mergeable with states of other
    /// rows of the same keys, e.g. on other machines).
    ///
    /// Empty input gives no keys; NaNs are kept in the states and handled
    /// by the policy given when they are finalised.
    ///
    /// # Errors
    /// As [`Engine::reduce_by_key`](crate::Engine::reduce_by_key).
    pub fn states_by_key<K: Key, E: Element>(
        &self,
        keys: &[K],
        values: &[E],
        kind: StateKind,
    ) -> Result<GroupedStates<K>> {
        let op = kind.op();
        let mut out = GroupedStates {
            keys: Vec::new(),
            states: Vec::new(),
        };
        keyed_groups(
            self.context(),
            keys,
            values,
            &[op],
            Finish::OnHost,
            collect_states(&mut out, kind),
        )?;
        Ok(out)
    }
}

/// Runs the group kernel for `op` over each partition of `partitions`
/// (whose checked `offsets` are given), finishing as `finish` says, and
/// hands each window of partitions to `each`, in order.
#[allow(clippy::too_many_arguments)]
fn reduce_partitions(
    ctx: &Context,
    dtype: Dtype,
    values: Words<'_>,
    offsets: &[u64],
    partitions: &crate::Partitions,
    op: Op,
    finish: Finish,
    mut each: impl FnMut(&accumulators::GroupAccumulators<'_>) -> Result<()>,
) -> Result<()> {
    let by = match partitions {
        crate::Partitions::EqualSize(size) => RowGroups::EqualSize { size: *size },
        _ => RowGroups::Offsets { offsets },
    };
    let parts = offsets.len() as u64 - 1;
    reduce_groups(
        ctx,
        dtype,
        values,
        by,
        parts,
        wanted(&[op]),
        finish,
        |_, acc| each(acc),
    )
}

/// The states of `kind` of each partition of `partitions` (whose checked
/// `offsets` are given) through the group kernel, in order.
pub(crate) fn partition_states(
    ctx: &Context,
    dtype: Dtype,
    values: Words<'_>,
    offsets: &[u64],
    partitions: &crate::Partitions,
    kind: StateKind,
    mut each: impl FnMut(State) -> Result<()>,
) -> Result<()> {
    let op = kind.op();
    reduce_partitions(
        ctx,
        dtype,
        values,
        offsets,
        partitions,
        op,
        Finish::OnHost,
        |acc| (0..acc.len()).try_for_each(|g| each(acc.state(g, kind))),
    )
}

/// The value and count of `op` for each partition of `partitions` (whose
/// checked `offsets` are given) through the group kernel, finished on the
/// device, appended to `out` in order.
#[allow(clippy::too_many_arguments)]
pub(crate) fn partition_results(
    ctx: &Context,
    dtype: Dtype,
    values: Words<'_>,
    offsets: &[u64],
    partitions: &crate::Partitions,
    op: Op,
    nan: NanPolicy,
    out: &mut Reduction<Scalar>,
) -> Result<()> {
    let finish = finish_on_device(&[op]);
    reduce_partitions(ctx, dtype, values, offsets, partitions, op, finish, |acc| {
        finish_into::<i32>(std::slice::from_mut(out), None, acc, WindowKeys::Every, nan)
    })
}

/// The words of `array`, read back to the host (for keys the GPU cannot map
/// to groups by themselves).
fn read_device_words(ctx: &Context, array: &DeviceArray) -> Result<Vec<u32>> {
    let total = array.len() * array.dtype().words();
    run::read_device_ranges(
        ctx,
        array,
        std::slice::from_ref(&(0..total)),
        "sparse group keys",
    )
}

impl crate::Engine {
    /// [`Engine::reduce_by_key`](crate::Engine::reduce_by_key) of
    /// device-resident keys (int32, uint32 or int64; returned as int64) and
    /// values of any dtype. Dense keys are read where they lie; sparse keys
    /// are read back once to be mapped to ids on the host.
    ///
    /// Empty input gives no keys; NaN as for
    /// [`Engine::reduce_by_key`](crate::Engine::reduce_by_key) (a key whose
    /// rows are all NaN has, under `Ignore`, count 0, sum 0.0 and no mean,
    /// max or min; under `Propagate` NaN for each).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for keys of another dtype, arrays of another
    /// engine or of different lengths, and as
    /// [`Engine::reduce_by_key`](crate::Engine::reduce_by_key).
    pub fn reduce_by_key_device(
        &self,
        keys: &DeviceArray,
        values: &DeviceArray,
        ops: &[Op],
        nan: NanPolicy,
    ) -> Result<Grouped<i64>> {
        let ctx = self.context();
        keys.check_owner(ctx)?;
        values.check_owner(ctx)?;
        if !matches!(keys.dtype(), Dtype::I32 | Dtype::U32 | Dtype::I64) {
            return Err(Error::InvalidInput(format!(
                "keys must be int32, uint32 or int64, not {}",
                keys.dtype()
            )));
        }
        check_request(keys.len(), values.len(), ops)?;
        let mut out = Grouped::empty(ops);
        if keys.is_empty() {
            return Ok(out);
        }
        let extreme = |op| -> Result<i128> {
            let r = self.reduce_device_typed(
                keys,
                op,
                &crate::Partitions::Whole,
                NanPolicy::Propagate,
            )?;
            match r.value() {
                Some(Scalar::I32(x)) => Ok(x as i128),
                Some(Scalar::U32(x)) => Ok(x as i128),
                Some(Scalar::I64(x)) => Ok(x as i128),
                other => Err(Error::Internal(format!(
                    "the {op} of integer keys came back as {other:?}"
                ))),
            }
        };
        let (min, max) = (extreme(Op::Min)?, extreme(Op::Max)?);
        let plan = match dense_groups(min, max, keys.len()) {
            Some(groups) => KeyPlan::Dense {
                min: min as i64,
                groups,
            },
            // Sparse keys: ids made on the host from the keys read back.
            None => {
                let words = read_device_words(ctx, keys)?;
                let host_keys: Vec<i64> = match keys.dtype() {
                    Dtype::I32 => words.iter().map(|&w| w as i32 as i64).collect(),
                    Dtype::U32 => words.iter().map(|&w| w as i64).collect(),
                    _ => words
                        .chunks_exact(2)
                        .map(|w| (w[0] as u64 | (w[1] as u64) << 32) as i64)
                        .collect(),
                };
                plan_keys(&host_keys)?
            }
        };
        reduce_planned(
            ctx,
            values.dtype(),
            Words::Device(values),
            Words::Device(keys),
            keys.dtype() == Dtype::I64,
            plan,
            wanted(ops),
            finish_on_device(ops),
            |acc, names| finish_window(&mut out, acc, names, nan),
        )?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_range_finds_the_extremes_wherever_they_lie() {
        assert_eq!(key_range::<i32>(&[]), None);
        assert_eq!(key_range(&[7i64]), Some((7, 7)));
        // More keys than one thread reads, the extremes at each end, in the
        // middle and at the split between threads' parts.
        let n = 3 * PARALLEL_KEYS + 5;
        for at in [0, 1, n / 2, n / 3, PARALLEL_KEYS, n - 1] {
            let mut keys = vec![5i32; n];
            keys[at] = i32::MIN;
            keys[(at + n / 2 + 1) % n] = i32::MAX;
            assert_eq!(key_range(&keys), Some((i32::MIN, i32::MAX)), "at {at}");
            let mut keys = vec![1u32 << 20; n];
            keys[at] = 3;
            assert_eq!(key_range(&keys), Some((3, 1 << 20)), "at {at}");
            let mut keys: Vec<i64> = (0..n as i64).map(|i| i % 1000 - 500).collect();
            keys[at] = i64::MAX;
            assert_eq!(key_range(&keys), Some((-500, i64::MAX)), "at {at}");
        }
    }
}
