//! Group indexes: the groups of one key column found once, then used to
//! reduce any number of value columns by them.
//!
//! A keyed reduction spends host time on its keys before the device sees a
//! value: their range, dense ids for sparse keys (a hash table or a sample
//! sort, [`dictionary`](super::dictionary)), and on CPU adapters a sort of
//! the rows by group ([`sort`](super::sort)). `GROUP BY k` with aggregates
//! over several columns (`SUM(a), MAX(b), AVG(c)`) needs the keys' range
//! and ids once, not once a column: a [`GroupIndex`] holds them.
//!
//! Every value column reduced by an index gives one result per distinct
//! key of the index, in the index's key order ([`GroupIndex::keys`]), so
//! the results of several columns line up row for row. With nulls
//! ([`Engine::reduce_by_index_with_nulls`](crate::Engine::reduce_by_index_with_nulls)),
//! a key whose values are all null keeps its row (count 0, no value), as
//! in [`nulls`](super::nulls). Results have the same bits as
//! [`Engine::reduce_by_key`](crate::Engine::reduce_by_key) over the same
//! keys and values.
//!
//! What an index holds besides its distinct keys: for dense keys, the keys
//! themselves (the kernel reads `key - min`); for sparse keys, each row's
//! dense id; on GPUs, a device copy of those (each value column then
//! uploads only its values: half the bytes for 4-byte values by 4-byte
//! keys). Where rows go in group order on the host (CPU adapters), each
//! column is still sorted by those groups: the counting sort reads its
//! rows in order and writes to few places at once, where gathering a
//! column by a stored row order reads it at random, which measured
//! slower.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::device_array::DeviceArray;
use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::op::{NanPolicy, Op};
use crate::state::StateKind;
use crate::threads;
use crate::validity::Validity;

use super::columns::GroupedStateColumns;
use super::finish::Finish;
use super::nulls::check_validity;
use super::run::{RowGroups, Words, reduce_groups};
use super::{
    Grouped, GroupedStates, Key, KeyPlan, WindowKeys, accumulators, collect_states,
    finish_on_device, finish_window, plan_keys, sort_rows, sorted_or, wanted,
};

/// Rows a thread reads at least when gathering.
const PARALLEL_ROWS: usize = 1 << 18;

/// The groups of a key column (int32, uint32 or int64), found once by
/// [`Engine::group_index`](crate::Engine::group_index) to reduce several
/// value columns of the same rows by them. It borrows the keys where it
/// is given a slice (`'k`) and owns them where it is given a `Vec`.
pub struct GroupIndex<'k, K: Key> {
    rows: usize,
    groups: IndexGroups<'k, K>,
    /// Every distinct key of the column once, ascending (shared with the
    /// lanes' requests that name their groups by it).
    distinct: Arc<[K]>,
    /// The words the kernel reads for each row's group (the keys, or the
    /// ids), kept in one engine's device memory ([`GroupIndex::upload`]).
    device: Option<DeviceArray>,
}

/// How a row's group is found.
enum IndexGroups<'k, K: Key> {
    /// group = key - min, over `groups` groups; the kernel reads the keys.
    Dense {
        keys: Cow<'k, [K]>,
        min: K,
        groups: u64,
    },
    /// group = ids[row], the index of the row's key in the distinct keys.
    Sparse { ids: Vec<u32> },
}

impl<K: Key> std::fmt::Debug for GroupIndex<'_, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupIndex")
            .field("rows", &self.rows)
            .field("keys", &self.distinct.len())
            .field("dense", &matches!(self.groups, IndexGroups::Dense { .. }))
            .field("on_device", &self.device.is_some())
            .finish()
    }
}

impl<K: Key> GroupIndex<'_, K> {
    /// The distinct keys, ascending: the keys of every result the index
    /// gives, in that order.
    pub fn keys(&self) -> &[K] {
        &self.distinct
    }

    /// Number of distinct keys.
    pub fn len(&self) -> usize {
        self.distinct.len()
    }

    /// True where the key column has no rows.
    pub fn is_empty(&self) -> bool {
        self.distinct.is_empty()
    }

    /// Rows of the key column: every value column reduced by the index has
    /// this many values.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The words the kernel reads for each row's group (the dense keys,
    /// or the sparse ids).
    pub(crate) fn group_words(&self) -> &[u32] {
        match &self.groups {
            IndexGroups::Dense { keys, .. } => bytemuck::cast_slice(keys),
            IndexGroups::Sparse { ids } => ids,
        }
    }

    /// The index's distinct keys, shared.
    pub(crate) fn shared_keys(&self) -> Arc<[K]> {
        self.distinct.clone()
    }

    /// The smallest key and the group count where the kernel reads the
    /// keys themselves (`key - min`); `None` where it reads ids.
    pub(crate) fn dense(&self) -> Option<(K, u64)> {
        match self.groups {
            IndexGroups::Dense { min, groups, .. } => Some((min, groups)),
            IndexGroups::Sparse { .. } => None,
        }
    }

    /// Keeps the words the kernel reads for each row's group (the keys
    /// themselves for dense keys, 4 or 8 bytes a row; the dense ids for
    /// sparse keys, 4 bytes a row) in `engine`'s device memory until the
    /// index is dropped, so each value column reduced on that engine
    /// uploads only its values. [`Engine::group_index`](crate::Engine::group_index)
    /// does this on GPUs; on CPU adapters, whose rows usually go in group
    /// order on the host first, it is not done (a column whose rows are put
    /// in group order reads its groups from the host either way). Reducing
    /// on another engine, or values with nulls (their rows are gathered on
    /// the host), reads the groups from the host as before: the same bits.
    ///
    /// # Errors
    /// As [`Engine::upload`](crate::Engine::upload) (device memory, a lost
    /// device); the index is unchanged then.
    pub fn upload(&mut self, engine: &crate::Engine) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let array = match &self.groups {
            IndexGroups::Dense { keys, .. } if K::WORDS == 2 => {
                engine.upload::<i64>(bytemuck::cast_slice(keys))?
            }
            IndexGroups::Dense { keys, .. } => engine.upload::<u32>(bytemuck::cast_slice(keys))?,
            IndexGroups::Sparse { ids } => engine.upload::<u32>(ids)?,
        };
        self.device = Some(array);
        Ok(())
    }

    /// True where the index keeps its rows' groups in device memory
    /// ([`GroupIndex::upload`]).
    pub fn on_device(&self) -> bool {
        self.device.is_some()
    }

    /// The index's rows grouped as the kernel reads them from its device
    /// copy, where it has one on the engine of `ctx`.
    fn device_row_groups(&self, ctx: &crate::context::Context) -> Option<RowGroups<'_>> {
        let array = self.device.as_ref()?;
        array.check_owner(ctx).ok()?;
        let keys = Words::Mirrored {
            host: self.group_words(),
            device: array,
        };
        Some(match &self.groups {
            IndexGroups::Dense { min, .. } if K::WORDS == 2 => RowGroups::Keys64 {
                keys,
                base: min.to_i128() as u64,
            },
            IndexGroups::Dense { min, .. } => RowGroups::Keys32 {
                keys,
                base: min.to_i128() as u32,
            },
            IndexGroups::Sparse { .. } => RowGroups::Keys32 { keys, base: 0 },
        })
    }

    /// Groups the kernel accumulates (for dense keys, the keys' range).
    fn group_count(&self) -> u64 {
        match self.groups {
            IndexGroups::Dense { groups, .. } => groups,
            IndexGroups::Sparse { .. } => self.distinct.len() as u64,
        }
    }

    /// The rows of `values` that `valid` marks as holding one: each one's
    /// group (dense: key - min; sparse: id) and value, in row order.
    pub(crate) fn present_groups<E: Element>(
        &self,
        values: &[E],
        valid: &Validity<'_>,
    ) -> Result<(Vec<u32>, Vec<E>)> {
        let g = present_rows(self, values, valid)?;
        Ok((g.groups, g.values))
    }

    /// The group of `row`.
    #[inline]
    fn group_of(&self, row: usize) -> u32 {
        match &self.groups {
            IndexGroups::Dense { keys, min, .. } => (keys[row].to_i128() - min.to_i128()) as u32,
            IndexGroups::Sparse { ids } => ids[row],
        }
    }

    /// How the window of groups from `g0` is named.
    fn names(&self, g0: u64) -> WindowKeys<'_, K> {
        match self.groups {
            IndexGroups::Dense { min, .. } => WindowKeys::Dense { min, g0 },
            IndexGroups::Sparse { .. } => WindowKeys::Sparse {
                distinct: &self.distinct,
                g0,
            },
        }
    }

    /// The index's rows grouped as the kernel reads them where no row is
    /// gathered: the keys or the ids.
    fn row_groups(&self) -> RowGroups<'_> {
        match &self.groups {
            IndexGroups::Dense { keys, min, .. } => {
                let keys = Words::Host(bytemuck::cast_slice(keys));
                if K::WORDS == 2 {
                    RowGroups::Keys64 {
                        keys,
                        base: min.to_i128() as u64,
                    }
                } else {
                    RowGroups::Keys32 {
                        keys,
                        base: min.to_i128() as u32,
                    }
                }
            }
            IndexGroups::Sparse { ids } => RowGroups::Keys32 {
                keys: Words::Host(ids),
                base: 0,
            },
        }
    }

    /// Checks that a request over `values` values fits the index.
    pub(crate) fn check(&self, values: usize, ops: &[Op]) -> Result<()> {
        if values != self.rows {
            return Err(Error::InvalidInput(format!(
                "the group index has {} rows, the values {values}",
                self.rows
            )));
        }
        if ops.is_empty() {
            return Err(Error::InvalidInput("no ops asked for".into()));
        }
        Ok(())
    }

    /// Runs the group kernel over `values` (the rows `valid` marks, where
    /// given) by the index's groups; hands each window to `each` as
    /// `keyed_groups` does.
    fn run<E: Element>(
        &self,
        ctx: &crate::context::Context,
        values: &[E],
        valid: Option<&Validity<'_>>,
        ops: &[Op],
        finish: Finish,
        mut each: impl FnMut(&accumulators::GroupAccumulators<'_>, WindowKeys<'_, K>) -> Result<()>,
    ) -> Result<()> {
        ctx.health.check()?;
        let gathered = valid.map(|v| present_rows(self, values, v)).transpose()?;
        let (words, by) = match &gathered {
            None => (Words::Host(bytemuck::cast_slice(values)), self.row_groups()),
            Some(g) => (
                Words::Host(bytemuck::cast_slice(&g.values)),
                RowGroups::Keys32 {
                    keys: Words::Host(&g.groups),
                    base: 0,
                },
            ),
        };
        let groups = self.group_count();
        let sorted = sort_rows(ctx, E::DTYPE, words, &by, groups);
        let (words, by) = sorted_or(&sorted, words, by);
        // Rows as given, groups as indexed: the device copy serves.
        let by = match (&gathered, &sorted) {
            (None, None) => self.device_row_groups(ctx).unwrap_or(by),
            _ => by,
        };
        reduce_groups(
            ctx,
            E::DTYPE,
            words,
            by,
            groups,
            wanted(ops),
            finish,
            |g0, acc| each(acc, self.names(g0)),
        )
    }
}

/// The rows with a value, gathered for a pass: their groups and values.
struct Gathered<E> {
    groups: Vec<u32>,
    values: Vec<E>,
}

/// The error of a gathering thread that panicked.
fn panicked() -> Error {
    Error::Internal("a thread gathering rows panicked".into())
}

/// Gathers, over the host's threads, the items `keep(i)` selects among
/// `0..n` in order, as `(group(i), value(i))`: a counting pass, then
/// each thread fills its share.
fn gather_kept<E: Element>(
    n: usize,
    keep: impl Fn(usize) -> bool + Sync,
    group: impl Fn(usize) -> u32 + Sync,
    value: impl Fn(usize) -> E + Sync,
) -> Result<Gathered<E>> {
    let ranges = threads::ranges(n, threads::threads_for(n, PARALLEL_ROWS));
    let counted = threads::on_threads(ranges.clone(), |r| r.filter(|&i| keep(i)).count());
    let kept: Vec<usize> = counted
        .into_iter()
        .map(|c| c.ok_or_else(panicked))
        .collect::<Result<_>>()?;
    let total = kept.iter().sum();
    let mut groups = vec![0u32; total];
    let mut values = vec![E::zeroed(); total];
    let parts: Vec<_> = ranges
        .into_iter()
        .zip(threads::split_into(&mut groups, kept.iter().copied()))
        .zip(threads::split_into(&mut values, kept.iter().copied()))
        .map(|((r, g), v)| (r, g, v))
        .collect();
    let done = threads::on_threads(parts, |(range, g, v)| {
        let mut at = 0;
        for i in range {
            if keep(i) {
                g[at] = group(i);
                v[at] = value(i);
                at += 1;
            }
        }
    });
    done.into_iter()
        .try_for_each(|d| d.map(|_| ()).ok_or_else(panicked))?;
    Ok(Gathered { groups, values })
}

/// The rows with a value, in row order, with their groups.
fn present_rows<K: Key, E: Element>(
    index: &GroupIndex<'_, K>,
    values: &[E],
    valid: &Validity<'_>,
) -> Result<Gathered<E>> {
    gather_kept(
        values.len(),
        |row| valid.is_valid(row),
        |row| index.group_of(row),
        |row| values[row],
    )
}

/// The keys of `keys` (dense from `min`, `groups` of them) that some row
/// has, ascending: one bitmap of the groups, set by the threads (a word is
/// read first, so a group costs an atomic or only the first times a thread
/// meets it), then read in order.
fn present_keys<K: Key>(keys: &[K], min: K, groups: u64) -> Result<Vec<K>> {
    let words = groups.div_ceil(64) as usize;
    let n = keys.len();
    let base = min.to_i128();
    let map: Vec<AtomicU64> = (0..words).map(|_| AtomicU64::new(0)).collect();
    let ranges = threads::ranges(n, threads::threads_for(n, PARALLEL_ROWS));
    let done = threads::on_threads(ranges, |range| {
        for &k in &keys[range] {
            let g = (k.to_i128() - base) as usize;
            let (word, bit) = (&map[g >> 6], 1u64 << (g & 63));
            if word.load(Ordering::Relaxed) & bit == 0 {
                word.fetch_or(bit, Ordering::Relaxed);
            }
        }
    });
    done.into_iter().try_for_each(|d| d.ok_or_else(panicked))?;
    let mut out = Vec::new();
    for (w, word) in map.iter().enumerate() {
        let mut bits = word.load(Ordering::Relaxed);
        while bits != 0 {
            let g = w * 64 + bits.trailing_zeros() as usize;
            out.push(K::from_i128(base + g as i128));
            bits &= bits - 1;
        }
    }
    Ok(out)
}

impl crate::Engine {
    /// The groups of `keys` (int32, uint32 or int64, unsorted), found once
    /// to reduce several value columns of the same rows by them with
    /// [`Engine::reduce_by_index`](crate::Engine::reduce_by_index) and its
    /// kin: the keys' range and which keys occur, and for sparse keys
    /// their dense ids (a hash table or a sort over the host's threads:
    /// the part of a keyed call an index saves). A slice is borrowed, a
    /// `Vec` moved in. On GPUs the index also keeps the words its kernel
    /// reads for each row's group in device memory
    /// ([`GroupIndex::upload`]), so each value column then uploads only
    /// its values.
    ///
    /// ```
    /// use gpulanes::{NanPolicy, Op, Scalar};
    /// let engine = gpulanes::Engine::new()?;
    /// let region = vec![7i64, 3, 7, 5];
    /// let amount = [1.5f64, 2.0, 2.5, 4.0];
    /// let units = [1i32, 2, 3, 4];
    /// let index = engine.group_index(&region)?;
    /// assert_eq!(index.keys(), &[3, 5, 7]);
    /// let sums = engine.reduce_by_index(&index, &amount, &[Op::Sum], NanPolicy::Propagate)?;
    /// let most = engine.reduce_by_index(&index, &units, &[Op::Max], NanPolicy::Propagate)?;
    /// assert_eq!(sums.reductions[0].values[2], Some(Scalar::F64(4.0)));
    /// assert_eq!(most.reductions[0].values[2], Some(Scalar::I32(3)));
    /// # Ok::<(), gpulanes::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for more than 2^32 distinct keys (groups
    /// are named by 32-bit ids), as for
    /// [`Engine::reduce_by_key`](crate::Engine::reduce_by_key).
    pub fn group_index<'k, K: Key>(
        &self,
        keys: impl Into<Cow<'k, [K]>>,
    ) -> Result<GroupIndex<'k, K>> {
        let keys = keys.into();
        let rows = keys.len();
        let mut index = match plan_keys(&keys)? {
            KeyPlan::Dense { min, groups } => GroupIndex {
                rows,
                distinct: present_keys(&keys, min, groups)?.into(),
                groups: IndexGroups::Dense { keys, min, groups },
                device: None,
            },
            KeyPlan::Sparse { ids, distinct } => GroupIndex {
                rows,
                distinct: distinct.into(),
                groups: IndexGroups::Sparse { ids },
                device: None,
            },
        };
        if !self.adapter().software {
            // Without the device copy the index still serves (from the
            // host), so a failed upload is not the caller's error.
            if let Err(e) = index.upload(self) {
                log::debug!("groups: the group index stays on the host: {e}");
            }
        }
        Ok(index)
    }

    /// `ops` over `values` (one per row of `index`) for each key of the
    /// index: [`Engine::reduce_by_key`](crate::Engine::reduce_by_key) over
    /// the index's keys, with the same bits, without finding the groups
    /// again. The result's keys are [`GroupIndex::keys`].
    ///
    /// # Errors
    /// [`Error::InvalidInput`] where `values` has not one value a row of
    /// the index, or no op is asked for; otherwise as
    /// [`Engine::reduce_by_key`](crate::Engine::reduce_by_key).
    pub fn reduce_by_index<K: Key, E: Element>(
        &self,
        index: &GroupIndex<'_, K>,
        values: &[E],
        ops: &[Op],
        nan: NanPolicy,
    ) -> Result<Grouped<K>> {
        index.check(values.len(), ops)?;
        let mut out = Grouped::empty(ops);
        index.run(
            self.context(),
            values,
            None,
            ops,
            finish_on_device(ops),
            |acc, names| finish_window(&mut out, acc, names, nan),
        )?;
        Ok(out)
    }

    /// Async [`Engine::reduce_by_index`](crate::Engine::reduce_by_index):
    /// the same result, bit for bit, from a future, computed on one of the
    /// engine's keyed threads as
    /// [`Engine::reduce_by_key_async`](crate::Engine::reduce_by_key_async)
    /// is. The index is shared (an `Arc`, so one index serves many
    /// requests at once) and the values moved in, so the future borrows
    /// nothing.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use gpulanes::{NanPolicy, Op, Scalar};
    /// let engine = gpulanes::Engine::new()?;
    /// let index = Arc::new(engine.group_index(vec![7i64, 2, 7])?);
    /// let sums = engine.reduce_by_index_async(index.clone(), vec![1.0f64, 2.0, 4.0], &[Op::Sum], NanPolicy::Propagate);
    /// let maxes = engine.reduce_by_index_async(index, vec![3i32, -1, 9], &[Op::Max], NanPolicy::Propagate);
    /// let (sums, maxes) = pollster::block_on(async { (sums.await, maxes.await) });
    /// assert_eq!(sums?.reductions[0].values, vec![Some(Scalar::F64(2.0)), Some(Scalar::F64(5.0))]);
    /// assert_eq!(maxes?.reductions[0].values, vec![Some(Scalar::I32(-1)), Some(Scalar::I32(9))]);
    /// # Ok::<(), gpulanes::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`Engine::reduce_by_index`](crate::Engine::reduce_by_index) (a
    /// length or op error settles the future at once), and
    /// [`Error::Thread`] when no keyed thread runs and none can be started.
    pub fn reduce_by_index_async<K: Key, E: Element>(
        &self,
        index: Arc<GroupIndex<'static, K>>,
        values: Vec<E>,
        ops: &[Op],
        nan: NanPolicy,
    ) -> crate::future::ReductionFuture<Grouped<K>> {
        if let Err(e) = index.check(values.len(), ops) {
            return crate::future::ReductionFuture::ready(Err(e));
        }
        let ops = ops.to_vec();
        self.on_keyed_thread(move |engine| engine.reduce_by_index(&index, &values, &ops, nan))
    }

    /// [`Engine::reduce_by_index`](crate::Engine::reduce_by_index) where
    /// `valid` marks which values hold one: the others are SQL NULL,
    /// skipped and not counted, and a key whose values are all null keeps
    /// its place with `count` 0 and no value for every other op, as in
    /// [`Engine::reduce_by_key_with_nulls`](crate::Engine::reduce_by_key_with_nulls).
    ///
    /// # Errors
    /// As [`Engine::reduce_by_index`](crate::Engine::reduce_by_index), and
    /// [`Error::InvalidInput`] where `valid` does not describe one value a
    /// row.
    pub fn reduce_by_index_with_nulls<K: Key, E: Element>(
        &self,
        index: &GroupIndex<'_, K>,
        values: &[E],
        valid: Validity<'_>,
        ops: &[Op],
        nan: NanPolicy,
    ) -> Result<Grouped<K>> {
        index.check(values.len(), ops)?;
        check_validity(values.len(), &valid)?;
        if valid.null_count() == 0 {
            return self.reduce_by_index(index, values, ops, nan);
        }
        let mut out = Grouped::empty(ops);
        index.run(
            self.context(),
            values,
            Some(&valid),
            ops,
            finish_on_device(ops),
            |acc, names| finish_window(&mut out, acc, names, nan),
        )?;
        Ok(out.with_null_groups(&index.distinct))
    }

    /// One partial state of `kind` per key of `index` over `values`:
    /// [`Engine::states_by_key`](crate::Engine::states_by_key) over the
    /// index's keys, without finding the groups again.
    ///
    /// # Errors
    /// As [`Engine::reduce_by_index`](crate::Engine::reduce_by_index).
    pub fn states_by_index<K: Key, E: Element>(
        &self,
        index: &GroupIndex<'_, K>,
        values: &[E],
        kind: StateKind,
    ) -> Result<GroupedStates<K>> {
        self.index_states(index, values, None, kind)
    }

    /// [`Engine::states_by_index`](crate::Engine::states_by_index) where
    /// `valid` marks which values hold one: a key whose values are all
    /// null gets an empty state, as in
    /// [`Engine::states_by_key_with_nulls`](crate::Engine::states_by_key_with_nulls).
    ///
    /// # Errors
    /// As [`Engine::reduce_by_index_with_nulls`](crate::Engine::reduce_by_index_with_nulls).
    pub fn states_by_index_with_nulls<K: Key, E: Element>(
        &self,
        index: &GroupIndex<'_, K>,
        values: &[E],
        valid: Validity<'_>,
        kind: StateKind,
    ) -> Result<GroupedStates<K>> {
        self.index_states(index, values, Some(&valid), kind)
    }

    /// The states of `kinds` of every key of `index` over `values`, from
    /// one pass over the rows:
    /// [`Engine::state_columns_by_key`](crate::Engine::state_columns_by_key)
    /// over the index's keys, without finding the groups again.
    ///
    /// # Errors
    /// As [`Engine::reduce_by_index`](crate::Engine::reduce_by_index), and
    /// for no kinds.
    pub fn state_columns_by_index<K: Key, E: Element>(
        &self,
        index: &GroupIndex<'_, K>,
        values: &[E],
        kinds: &[StateKind],
    ) -> Result<GroupedStateColumns<K>> {
        self.index_columns(index, values, None, kinds)
    }

    /// [`Engine::state_columns_by_index`](crate::Engine::state_columns_by_index)
    /// where `valid` marks which values hold one: every key of the index
    /// is in the result, a key whose values are all null with a group
    /// that has seen no value.
    ///
    /// # Errors
    /// As [`Engine::reduce_by_index_with_nulls`](crate::Engine::reduce_by_index_with_nulls),
    /// and for no kinds.
    pub fn state_columns_by_index_with_nulls<K: Key, E: Element>(
        &self,
        index: &GroupIndex<'_, K>,
        values: &[E],
        valid: Validity<'_>,
        kinds: &[StateKind],
    ) -> Result<GroupedStateColumns<K>> {
        self.index_columns(index, values, Some(&valid), kinds)
    }

    fn index_columns<K: Key, E: Element>(
        &self,
        index: &GroupIndex<'_, K>,
        values: &[E],
        valid: Option<&Validity<'_>>,
        kinds: &[StateKind],
    ) -> Result<GroupedStateColumns<K>> {
        let mut out = GroupedStateColumns::empty::<E>(kinds, index.len())?;
        let ops = out.ops();
        index.check(values.len(), &ops)?;
        if let Some(valid) = valid {
            check_validity(values.len(), valid)?;
        }
        let valid = valid.filter(|v| v.null_count() > 0);
        index.run(
            self.context(),
            values,
            valid,
            &ops,
            Finish::OnHost,
            out.collect(),
        )?;
        Ok(match valid {
            Some(_) => out.with_null_groups(&index.distinct),
            None => out,
        })
    }

    /// The states of [`Engine::states_by_index`](crate::Engine::states_by_index)
    /// and its form with nulls.
    fn index_states<K: Key, E: Element>(
        &self,
        index: &GroupIndex<'_, K>,
        values: &[E],
        valid: Option<&Validity<'_>>,
        kind: StateKind,
    ) -> Result<GroupedStates<K>> {
        index.check(values.len(), &[kind.op()])?;
        if let Some(valid) = valid {
            check_validity(values.len(), valid)?;
        }
        let valid = valid.filter(|v| v.null_count() > 0);
        let mut out = GroupedStates {
            keys: Vec::with_capacity(index.len()),
            states: Vec::with_capacity(index.len()),
        };
        index.run(
            self.context(),
            values,
            valid,
            &[kind.op()],
            Finish::OnHost,
            collect_states(&mut out, kind),
        )?;
        Ok(match valid {
            Some(_) => out.with_null_groups(&index.distinct, E::DTYPE, kind),
            None => out,
        })
    }
}
