//! Keyed reductions of inputs larger than memory: keys and values are read
//! together in chunks within a memory budget, each chunk is reduced to one
//! [`State`] per key and kind on the GPU, and the states are merged per
//! key. States are exact and merge in any order, so the result is the bits
//! of one in-memory [`Engine::reduce_by_key`](crate::Engine::reduce_by_key).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use crate::dtype::Element;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::npy;
use crate::op::{NanPolicy, Op};
use crate::state::{State, StateKind};
use crate::stream::StreamOptions;

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
        let mut merged: BTreeMap<K, Vec<State>> = BTreeMap::new();
        let mut key_buf: Vec<K> = Vec::new();
        let mut value_buf: Vec<E> = Vec::new();
        let mut start = 0u64;
        while start < len {
            let n = chunk_rows.min(len - start);
            key_buf.resize(n as usize, K::zeroed());
            value_buf.resize(n as usize, E::zeroed());
            fill_column(&mut keys, &mut key_buf, start, len)?;
            fill_column(&mut values, &mut value_buf, start, len)?;
            let state_ops: Vec<Op> = kinds.iter().map(|k| k.op()).collect();
            keyed_groups(
                self.context(),
                &key_buf,
                &value_buf,
                &state_ops,
                super::finish::Finish::OnHost,
                |acc, names| {
                    for (key, g) in names.groups(acc) {
                        let states: Vec<State> = kinds.iter().map(|&k| acc.state(g, k)).collect();
                        match merged.get_mut(&key) {
                            Some(held) => {
                                for (h, s) in held.iter_mut().zip(&states) {
                                    h.merge(s)?;
                                }
                            }
                            None => {
                                merged.insert(key, states);
                            }
                        }
                    }
                    Ok(())
                },
            )?;
            start += n;
        }
        let mut out = Grouped::empty(ops);
        for (key, states) in merged {
            out.keys.push(key);
            for r in &mut out.reductions {
                let at = kinds
                    .iter()
                    .position(|&k| k == StateKind::for_op(r.op))
                    .expect("every op's kind was reduced");
                r.values.push(states[at].finalize(r.op, nan)?);
                r.counts.push(states[at].count(nan));
            }
        }
        Ok(out)
    }
}
