//! Streaming reductions of any dtype: the input is read in chunks within a
//! memory budget, the partition pieces of each chunk are reduced to partial
//! [`State`]s on the GPU, and those are merged into one running state per
//! partition. Sums are exact integers, so the merge order and the chunk
//! boundaries do not matter: the bits are those of one in-memory reduction
//! of the whole input.
//!
//! Simpler than the float32 stream ([`crate::StreamReducer`], which overlaps
//! reading, uploading and GPU work and keeps unmerged partials on the
//! device): here one chunk is read, reduced and merged at a time.

use std::io::Read;
use std::path::Path;

use crate::dtype::{Element, Scalar};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::npy;
use crate::op::{NanPolicy, Op, Reduction};
use crate::partition::Partitions;
use crate::state::{State, StateKind};

use super::StreamOptions;

/// Reduces `len` values of type `E` read from `reader` (little-endian, as
/// they lie in memory), holding about a quarter of `options.budget_bytes`
/// of input at a time. Fewer bytes than announced is a truncation error,
/// bytes after them a corrupt input, in the words of the other readers;
/// errors name `name`, with byte offsets counted from `data_offset` (where
/// the reader stands in its file).
#[allow(clippy::too_many_arguments)]
pub(crate) fn reduce_reader<E: Element>(
    engine: &Engine,
    mut reader: impl Read,
    len: u64,
    op: Op,
    partitions: &Partitions,
    nan: NanPolicy,
    options: &StreamOptions,
    name: &Path,
    data_offset: u64,
) -> Result<Reduction<Scalar>> {
    super::check_budget(options.budget_bytes)?;
    let offsets = partitions.offsets(len)?;
    let kind = StateKind::for_op(op);
    let size = E::DTYPE.size();
    let chunk_values = (options.budget_bytes / 4 / size).max(4096);
    let mut states: Vec<State> = (1..offsets.len())
        .map(|_| State::empty(E::DTYPE, kind))
        .collect();
    let mut chunk: Vec<E> = Vec::new();
    let mut start = 0u64;
    // The partition holding the next value to read.
    let mut part = 0usize;
    while start < len {
        let n = chunk_values.min(len - start);
        chunk.resize(n as usize, E::zeroed());
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut chunk);
        let at = data_offset + start * size;
        let filled = npy::fill(&mut reader, bytes).map_err(|(k, e)| {
            file_error(name, format!("read error at byte {}: {e}", at + k as u64))
        })?;
        if filled < bytes.len() {
            let message = npy::truncated_message(at + filled as u64, data_offset + len * size);
            return Err(file_error(name, message));
        }
        let end = start + n;
        // The non-empty pieces of partitions overlapping [start, end): they
        // tile the chunk in order (partitions tile the input).
        let mut local = vec![0u64];
        let mut touched = Vec::new();
        let mut p = part;
        while p + 1 < offsets.len() && offsets[p] < end {
            let lo = offsets[p].max(start);
            let hi = offsets[p + 1].min(end);
            if hi > lo {
                touched.push(p);
                local.push(hi - start);
                part = p;
            }
            p += 1;
        }
        let pieces = engine.states(&chunk, kind, &Partitions::Offsets(local))?;
        for (p, s) in touched.into_iter().zip(&pieces) {
            states[p].merge(s)?;
        }
        start = end;
    }
    npy::check_end(&mut reader, data_offset + len * size).map_err(|m| file_error(name, m))?;
    let mut values = Vec::with_capacity(states.len());
    let mut counts = Vec::with_capacity(states.len());
    for s in &states {
        values.push(s.finalize(op, nan)?);
        counts.push(s.count(nan));
    }
    Ok(Reduction { op, values, counts })
}

fn file_error(name: &Path, message: String) -> Error {
    Error::File {
        path: name.to_path_buf(),
        message,
    }
}
