//! Keyed reductions of inputs larger than memory: keys and values are read
//! together in chunks within a memory budget, each chunk is reduced on the
//! GPU to its keys' [`StateColumns`] (every kind the ops need, from one
//! pass), and each chunk's keys and states are merged into those of the
//! chunks before it (both ascending by key: one linear merge). States are
//! exact and merge in any order, so the result is the bits of one
//! in-memory [`Engine::reduce_by_key`](crate::Engine::reduce_by_key).

use std::io::Read;
use std::path::Path;

use crate::dtype::Element;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::npy;
use crate::op::{NanPolicy, Op};
use crate::state::StateKind;
use crate::state_columns::StateColumns;
use crate::stream::StreamOptions;

use super::columns::GroupedStateColumns;
use super::{Grouped, Key, keyed_groups};

/// One column being read: its reader, file name (for errors) and where its
/// data starts in the file.
pub struct Column<'a, R> {
    pub reader: R,
    pub name: &'a Path,
    pub data_offset: u64,
}

/// The kinds of state `ops` need, each once.
fn kinds_of(ops: &[Op]) -> Vec<StateKind> {
    let mut kinds: Vec<StateKind> = Vec::new();
    for &op in ops {
        let k = StateKind::for_op(op);
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    kinds
}

/// `a` and `b` (distinct keys ascending, with their states) merged into
/// one such pair: one linear pass over both key lists, then
/// [`StateColumns::merge_runs`] for the states.
fn merge_sorted<K: Key>(
    a: GroupedStateColumns<K>,
    b: GroupedStateColumns<K>,
) -> Result<GroupedStateColumns<K>> {
    if a.keys.is_empty() {
        return Ok(b);
    }
    if b.keys.is_empty() {
        return Ok(a);
    }
    let (na, nb) = (a.keys.len(), b.keys.len());
    let mut keys = Vec::with_capacity(na.max(nb));
    let mut entries = Vec::with_capacity(na + nb);
    let mut run_ends = Vec::with_capacity(na.max(nb));
    let (mut i, mut j) = (0, 0);
    while i < na || j < nb {
        let next = match (a.keys.get(i), b.keys.get(j)) {
            (Some(x), Some(y)) => *x.min(y),
            (Some(x), None) => *x,
            (None, Some(y)) => *y,
            (None, None) => unreachable!("the loop runs while a key is left"),
        };
        if a.keys.get(i) == Some(&next) {
            entries.push((0, i));
            i += 1;
        }
        if b.keys.get(j) == Some(&next) {
            entries.push((1, j));
            j += 1;
        }
        keys.push(next);
        run_ends.push(entries.len());
    }
    let states = StateColumns::merge_runs(&[&a.states, &b.states], &entries, &run_ends)?;
    Ok(GroupedStateColumns { keys, states })
}

fn fill_column<T: bytemuck::Pod, R: Read>(
    col: &mut Column<'_, R>,
    buf: &mut [T],
    first: u64,
    len: u64,
) -> Result<()> {
    let size = std::mem::size_of::<T>() as u64;
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(buf);
    let at = col.data_offset + first * size;
    let file_error = |message: String| Error::File {
        path: col.name.to_path_buf(),
        message,
    };
    let filled = npy::fill(&mut col.reader, bytes)
        .map_err(|(k, e)| file_error(format!("read error at byte {}: {e}", at + k as u64)))?;
    if filled < bytes.len() {
        return Err(file_error(npy::truncated_message(
            at + filled as u64,
            col.data_offset + len * size,
        )));
    }
    Ok(())
}

impl Engine {
    /// [`Engine::reduce_by_key`] of `len` keys and `len` values read from
    /// two readers (little-endian, as they lie in memory), holding about a
    /// quarter of `options.budget_bytes` of rows at a time. Fewer bytes than
    /// announced is a truncation error naming the file; bytes after them are
    /// left to the caller to check.
    ///
    /// Empty input gives no keys; NaN as for
    /// [`Engine::reduce_by_key`] (a key whose
    /// rows are all NaN has, under `Ignore`, count 0, sum 0.0 and no mean,
    /// max or min; under `Propagate` NaN for each).
    ///
    /// # Errors
    /// [`Error::File`] for a short or unreadable input, and as
    /// [`Engine::reduce_by_key`].
    pub fn reduce_by_key_readers<K: Key, E: Element, RK: Read, RV: Read>(
        &self,
        mut keys: Column<'_, RK>,
        mut values: Column<'_, RV>,
        len: u64,
        ops: &[Op],
        nan: NanPolicy,
        options: &StreamOptions,
    ) -> Result<Grouped<K>> {
        crate::stream::check_budget(options.budget_bytes)?;
        // Both columns hold `len` values by construction.
        super::check_request(len, len, ops)?;
        let kinds = kinds_of(ops);
        let row_bytes = (K::WORDS * 4) as u64 + E::DTYPE.size();
        // A chunk's rows take a quarter of the budget: they are held on
        // the host, on the device, and (CPU adapters) as a copy in group
        // order, three quarters in all, the rest for the merged states.
        // Sparse keys are first named by the host's dictionary
        // (dictionary.rs), before the copies are made: sorting, it holds
        // up to 28 bytes a row (16-byte pairs, ids and distinct int64
        // keys; 18 for 32-bit keys), at most about 0.6 of the budget
        // beside the chunk; hashing, a table of up to 2^21 keys a thread.
        let chunk_rows = (options.budget_bytes / 4 / row_bytes).max(4096);
        let mut merged = GroupedStateColumns::<K>::empty::<E>(&kinds, 0)?;
        let state_ops = merged.ops();
        let mut key_buf: Vec<K> = Vec::new();
        let mut value_buf: Vec<E> = Vec::new();
        let mut start = 0u64;
        while start < len {
            let n = chunk_rows.min(len - start);
            key_buf.resize(n as usize, K::zeroed());
            value_buf.resize(n as usize, E::zeroed());
            fill_column(&mut keys, &mut key_buf, start, len)?;
            fill_column(&mut values, &mut value_buf, start, len)?;
            let mut chunk = GroupedStateColumns::<K>::empty::<E>(&kinds, 0)?;
            keyed_groups(
                self.context(),
                &key_buf,
                &value_buf,
                &state_ops,
                super::finish::Finish::OnHost,
                chunk.collect(),
            )?;
            merged = merge_sorted(merged, chunk)?;
            start += n;
        }
        let mut out = Grouped::empty(ops);
        out.keys = merged.keys;
        for r in &mut out.reductions {
            r.values = merged.states.finalize(r.op, nan)?;
            r.counts = merged.states.counts(nan);
        }
        Ok(out)
    }
}
