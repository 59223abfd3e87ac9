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

use std::io::{ErrorKind, Read};

use crate::dtype::{Element, Scalar};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::op::{NanPolicy, Op, Reduction};
use crate::partition::Partitions;
use crate::state::{State, StateKind};

use super::{MIN_BUDGET_BYTES, StreamOptions};

/// Reduces `len` values of type `E` read from `reader` (little-endian, as
/// they lie in memory), holding about a quarter of `options.budget_bytes`
/// of input at a time. Fewer bytes than announced is a truncation error;
/// bytes after them an error too (`what` names the input in messages).
#[allow(clippy::too_many_arguments)]
pub(crate) fn reduce_reader<E: Element>(
    engine: &Engine,
    mut reader: impl Read,
    len: u64,
    op: Op,
    partitions: &Partitions,
    nan: NanPolicy,
    options: &StreamOptions,
    what: &str,
) -> Result<Reduction<Scalar>> {
    if options.budget_bytes < MIN_BUDGET_BYTES {
        return Err(Error::InvalidInput(format!(
            "memory budget of {} bytes is too small: at least {MIN_BUDGET_BYTES} bytes",
            options.budget_bytes
        )));
    }
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
        read_exact_or_truncated(
            &mut reader,
            bytemuck::cast_slice_mut(&mut chunk),
            start,
            len,
            size,
            what,
        )?;
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
    let mut extra = [0u8; 1];
    loop {
        match reader.read(&mut extra) {
            Ok(0) => break,
            Ok(_) => {
                return Err(Error::InvalidInput(format!(
                    "{what}: corrupt: bytes after the {len} values announced"
                )));
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::InvalidInput(format!("{what}: read error: {e}"))),
        }
    }
    let mut values = Vec::with_capacity(states.len());
    let mut counts = Vec::with_capacity(states.len());
    for s in &states {
        values.push(s.finalize(op, nan)?);
        counts.push(s.count(nan));
    }
    Ok(Reduction { op, values, counts })
}

fn read_exact_or_truncated(
    reader: &mut impl Read,
    buf: &mut [u8],
    start: u64,
    len: u64,
    size: u64,
    what: &str,
) -> Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => {
                let got = start * size + filled as u64;
                return Err(Error::InvalidInput(format!(
                    "{what}: truncated: {got} bytes of data where {} were announced",
                    len * size
                )));
            }
            Ok(k) => filled += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::InvalidInput(format!("{what}: read error: {e}"))),
        }
    }
    Ok(())
}
