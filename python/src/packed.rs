//! Keyed states packed into arrays, for moving them between processes:
//! `(keys, bytes, offsets)`, every state's serialised bytes in one uint8
//! array and state i at `bytes[offsets[i]..offsets[i + 1]]`. A cluster
//! sends an array as one buffer, where a list of bytes objects costs
//! one message frame (and one Python object) a key; at hundreds of
//! thousands of keys a chunk that dominated a group-by. The Dask
//! integration makes, merges and finalises its keyed states this way.

use gpulanes::State;
use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;

use crate::keyed::{KeyedStates, key_array};
use crate::{Pair, append_key_columns, engine_error, finalize_states, value_error};

/// Serialised states one after another, and where each starts and ends.
struct Packed {
    bytes: Vec<u8>,
    offsets: Vec<i64>,
}

impl Packed {
    fn with_capacity(states: usize) -> Self {
        let mut offsets = Vec::with_capacity(states + 1);
        offsets.push(0);
        Packed {
            bytes: Vec::new(),
            offsets,
        }
    }

    fn push(&mut self, state: &[u8]) {
        self.bytes.extend_from_slice(state);
        self.offsets.push(self.bytes.len() as i64);
    }

    /// Appends `other`'s states after this one's.
    fn append(&mut self, other: Packed) {
        let base = self.bytes.len() as i64;
        self.bytes.extend_from_slice(&other.bytes);
        self.offsets
            .extend(other.offsets[1..].iter().map(|o| o + base));
    }

    fn into_python(self, py: Python<'_>) -> (Py<PyAny>, Py<PyAny>) {
        (
            PyArray1::from_vec(py, self.bytes).into_any().unbind(),
            PyArray1::from_vec(py, self.offsets).into_any().unbind(),
        )
    }
}

/// Keyed states as `(keys, bytes, offsets)`.
pub fn states_to_python(
    py: Python<'_>,
    s: KeyedStates,
) -> PyResult<(Py<PyAny>, Py<PyAny>, Py<PyAny>)> {
    let mut packed = Packed::with_capacity(s.states.len());
    for state in &s.states {
        packed.push(&state.to_bytes());
    }
    let (bytes, offsets) = packed.into_python(py);
    Ok((key_array(py, s.keys)?, bytes, offsets))
}

/// The states of one packed part, as slices, checked against its offsets.
fn slices<'a>(bytes: &'a [u8], offsets: &[i64]) -> PyResult<Vec<&'a [u8]>> {
    if offsets.first() != Some(&0) || offsets.last().copied() != Some(bytes.len() as i64) {
        return Err(value_error(
            "packed states: the offsets must start at 0 and end at the bytes' length",
        ));
    }
    if offsets.windows(2).any(|w| w[0] > w[1]) {
        return Err(value_error("packed states: the offsets must not decrease"));
    }
    // From 0 to the length without decreasing: every range is in bounds.
    Ok(offsets
        .windows(2)
        .map(|w| &bytes[w[0] as usize..w[1] as usize])
        .collect())
}

/// One packed part of a keyed merge: its key columns (int64), its states'
/// bytes and their offsets.
type PackedPart<'py> = (
    Vec<PyReadonlyArray1<'py, i64>>,
    PyReadonlyArray1<'py, u8>,
    PyReadonlyArray1<'py, i64>,
);

/// A packed merge's result: the distinct key columns, bytes and offsets.
type MergedPacked = (Vec<Py<PyAny>>, Py<PyAny>, Py<PyAny>);

/// Merges packed keyed states (parts of `(key columns, bytes, offsets)`,
/// the columns int64, one key a state each): the distinct key tuples
/// ascending, one int64 array a column, and their merged states packed.
/// States of one key merge in any order to the same bits.
#[pyfunction]
pub fn merge_keyed_packed(py: Python<'_>, parts: Vec<PackedPart<'_>>) -> PyResult<MergedPacked> {
    let columns = parts.first().map_or(1, |(k, _, _)| k.len());
    if columns == 0 {
        return Err(value_error(
            "packed keyed states need at least one key column",
        ));
    }
    let mut keys: Vec<Vec<i64>> = vec![Vec::new(); columns];
    let mut states: Vec<&[u8]> = Vec::new();
    for (cols, bytes, offsets) in &parts {
        let part = slices(
            bytes.as_slice().map_err(|e| value_error(e.to_string()))?,
            offsets.as_slice().map_err(|e| value_error(e.to_string()))?,
        )?;
        append_key_columns(&mut keys, cols, part.len())?;
        states.extend(part);
    }
    let (out_keys, packed) = py
        .detach(|| merge_runs(&keys, &states))
        .map_err(engine_error)?;
    let (bytes, offsets) = packed.into_python(py);
    let arrays = out_keys
        .into_iter()
        .map(|k| PyArray1::from_vec(py, k).into_any().unbind())
        .collect();
    Ok((arrays, bytes, offsets))
}

/// Entries a thread merges at least.
const PARALLEL_ENTRIES: usize = 1 << 16;

/// The states of each distinct key tuple of `keys` (columns, one row a
/// state) merged, in key-tuple order: the distinct tuples' columns and
/// their states packed. A key with one state keeps its bytes. The sorted
/// entries are cut at key boundaries into one range a thread.
fn merge_runs(keys: &[Vec<i64>], states: &[&[u8]]) -> gpulanes::Result<(Vec<Vec<i64>>, Packed)> {
    // Ties in any order: merges commute.
    let order: Vec<usize> = if let [one] = keys {
        // One key column: (key, entry) pairs sort in place, no indirection.
        let mut pairs: Vec<(i64, usize)> = one.iter().copied().zip(0..).collect();
        pairs.sort_unstable();
        pairs.into_iter().map(|(_, i)| i).collect()
    } else {
        let mut order: Vec<usize> = (0..states.len()).collect();
        order.sort_unstable_by(|&a, &b| {
            keys.iter()
                .map(|c| c[a].cmp(&c[b]))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        order
    };
    let same = |a: usize, b: usize| keys.iter().all(|c| c[a] == c[b]);
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .min(order.len() / PARALLEL_ENTRIES)
        .max(1);
    let mut cuts = vec![0];
    for t in 1..threads {
        let mut at = (order.len() * t / threads).max(*cuts.last().unwrap_or(&0));
        while at > 0 && at < order.len() && same(order[at - 1], order[at]) {
            at += 1;
        }
        cuts.push(at);
    }
    cuts.push(order.len());
    let ranges: Vec<&[usize]> = cuts.windows(2).map(|w| &order[w[0]..w[1]]).collect();
    let merged: Vec<gpulanes::Result<(Vec<Vec<i64>>, Packed)>> = if ranges.len() == 1 {
        vec![merge_range(keys, states, ranges[0])]
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = ranges
                .iter()
                .map(|r| scope.spawn(move || merge_range(keys, states, r)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(gpulanes::Error::Internal(
                            "a thread merging keyed states panicked".into(),
                        ))
                    })
                })
                .collect()
        })
    };
    let mut out_keys: Vec<Vec<i64>> = vec![Vec::new(); keys.len()];
    let mut packed = Packed::with_capacity(states.len());
    for part in merged {
        let (part_keys, part_packed) = part?;
        for (out, k) in out_keys.iter_mut().zip(part_keys) {
            out.extend(k);
        }
        packed.append(part_packed);
    }
    Ok((out_keys, packed))
}

/// [`merge_runs`] of one range of the sorted entries, whose key runs do
/// not continue outside it.
fn merge_range(
    keys: &[Vec<i64>],
    states: &[&[u8]],
    order: &[usize],
) -> gpulanes::Result<(Vec<Vec<i64>>, Packed)> {
    let same = |a: usize, b: usize| keys.iter().all(|c| c[a] == c[b]);
    let mut out_keys: Vec<Vec<i64>> = vec![Vec::new(); keys.len()];
    let mut packed = Packed::with_capacity(order.len());
    for run in order.chunk_by(|&a, &b| same(a, b)) {
        for (c, out) in out_keys.iter_mut().enumerate() {
            out.push(keys[c][run[0]]);
        }
        if let [one] = run {
            // Copied unparsed, as `merge_keyed_states` keeps its bytes
            // object: finalising parses every state.
            packed.push(states[*one]);
            continue;
        }
        let mut acc = State::from_bytes(states[run[0]])?;
        for &i in &run[1..] {
            acc.merge(&State::from_bytes(states[i])?)?;
        }
        packed.push(&acc.to_bytes());
    }
    Ok((out_keys, packed))
}

/// The value of `op` from each packed keyed state, as one (values, valid)
/// pair, as `finalize_keyed_states` gives it.
#[pyfunction]
#[pyo3(signature = (bytes, offsets, op = None, nan = "propagate"))]
pub fn finalize_keyed_packed(
    py: Python<'_>,
    bytes: PyReadonlyArray1<'_, u8>,
    offsets: PyReadonlyArray1<'_, i64>,
    op: Option<&str>,
    nan: &str,
) -> PyResult<Pair> {
    let states = slices(
        bytes.as_slice().map_err(|e| value_error(e.to_string()))?,
        offsets.as_slice().map_err(|e| value_error(e.to_string()))?,
    )?;
    let parsed = py
        .detach(|| {
            states
                .iter()
                .map(|b| State::from_bytes(b))
                .collect::<gpulanes::Result<Vec<_>>>()
        })
        .map_err(engine_error)?;
    finalize_states(py, &parsed, op, nan)
}
