//! Keyed state columns between processes: a chunk's distinct keys (one
//! array a key column) and its [`StateColumns`] as one uint8 array, their
//! versioned bytes. A cluster sends an array as one buffer, where a list
//! of per-key state objects costs a message frame (and a Python object) a
//! key, and the columns carry every kind a value column needs with one
//! count and one set of flags a key. The Dask integration makes, merges
//! and finalises its keyed states this way.

use gpulanes::StateColumns;
use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;

use crate::{Pair, append_key_columns, engine_error, parse_nan, parse_op, to_numpy, value_error};

/// One part of a keyed merge: its key columns (int64, one key a group)
/// and its state columns' bytes.
type ColumnsPart<'py> = (Vec<PyReadonlyArray1<'py, i64>>, PyReadonlyArray1<'py, u8>);

/// A merge's result: the distinct key columns and the merged columns' bytes.
type MergedColumns = (Vec<Py<PyAny>>, Py<PyAny>);

fn bytes_of<'a>(a: &'a PyReadonlyArray1<'_, u8>) -> PyResult<&'a [u8]> {
    a.as_slice().map_err(|e| value_error(e.to_string()))
}

/// Merges keyed state columns (parts of `(key columns, bytes)`, the key
/// columns int64): the distinct key tuples ascending, one int64 array a
/// column, and their merged state columns' bytes. The same bits in any
/// order or split of the parts.
#[pyfunction]
pub fn merge_keyed_columns(py: Python<'_>, parts: Vec<ColumnsPart<'_>>) -> PyResult<MergedColumns> {
    let columns = parts.first().map_or(1, |(k, _)| k.len());
    if columns == 0 {
        return Err(value_error(
            "keyed state columns need at least one key column",
        ));
    }
    if parts.is_empty() {
        return Err(value_error("no keyed state columns to merge"));
    }
    let blobs = parts
        .iter()
        .map(|(_, b)| bytes_of(b))
        .collect::<PyResult<Vec<_>>>()?;
    let states = py
        .detach(|| {
            blobs
                .iter()
                .map(|b| StateColumns::from_bytes(b))
                .collect::<gpulanes::Result<Vec<_>>>()
        })
        .map_err(engine_error)?;
    let mut keys: Vec<Vec<i64>> = vec![Vec::new(); columns];
    for ((cols, _), s) in parts.iter().zip(&states) {
        append_key_columns(&mut keys, cols, s.len())?;
    }
    let (out_keys, merged) = py
        .detach(|| merge_sorted(&keys, &states))
        .map_err(engine_error)?;
    let bytes = py.detach(|| merged.to_bytes());
    let arrays = out_keys
        .into_iter()
        .map(|k| PyArray1::from_vec(py, k).into_any().unbind())
        .collect();
    Ok((arrays, PyArray1::from_vec(py, bytes).into_any().unbind()))
}

/// The groups of `states` (their keys one after another in `keys`, a
/// column each) sorted by key tuple and merged run by run.
fn merge_sorted(
    keys: &[Vec<i64>],
    states: &[StateColumns],
) -> gpulanes::Result<(Vec<Vec<i64>>, StateColumns)> {
    // Ties in any order: merges commute.
    let order: Vec<usize> = if let [one] = keys {
        // One key column: (key, entry) pairs sort in place, no indirection.
        let mut pairs: Vec<(i64, usize)> = one.iter().copied().zip(0..).collect();
        pairs.sort_unstable();
        pairs.into_iter().map(|(_, i)| i).collect()
    } else {
        let mut order: Vec<usize> = (0..keys[0].len()).collect();
        order.sort_unstable_by(|&a, &b| {
            keys.iter()
                .map(|c| c[a].cmp(&c[b]))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        order
    };
    // Entry i of the concatenation is group i - start[p] of part p.
    let mut part_of = Vec::with_capacity(order.len());
    for (p, s) in states.iter().enumerate() {
        part_of.extend((0..s.len()).map(|g| (p, g)));
    }
    let entries: Vec<(usize, usize)> = order.iter().map(|&i| part_of[i]).collect();
    let same = |a: usize, b: usize| keys.iter().all(|c| c[a] == c[b]);
    let mut out_keys: Vec<Vec<i64>> = vec![Vec::new(); keys.len()];
    let mut run_ends = Vec::new();
    for (i, &e) in order.iter().enumerate() {
        if order.get(i + 1).is_none_or(|&n| !same(n, e)) {
            for (out, c) in out_keys.iter_mut().zip(keys) {
                out.push(c[e]);
            }
            run_ends.push(i + 1);
        }
    }
    let refs: Vec<&StateColumns> = states.iter().collect();
    Ok((
        out_keys,
        StateColumns::merge_runs(&refs, &entries, &run_ends)?,
    ))
}

/// The value of `op` under `nan` for every group of keyed state columns'
/// bytes, as one `(values, valid)` pair: a group whose values were all
/// null has none but a `count` of 0.
#[pyfunction]
#[pyo3(signature = (bytes, op, nan = "propagate"))]
pub fn finalize_keyed_columns(
    py: Python<'_>,
    bytes: PyReadonlyArray1<'_, u8>,
    op: &str,
    nan: &str,
) -> PyResult<Pair> {
    let (op, nan) = (parse_op(op)?, parse_nan(nan)?);
    let blob = bytes_of(&bytes)?;
    let (dtype, values) = py
        .detach(|| {
            let states = StateColumns::from_bytes(blob)?;
            Ok((states.dtype(), states.finalize(op, nan)?))
        })
        .map_err(engine_error)?;
    to_numpy(py, op, dtype, &values)
}
