//! `gpulanes._gpulanes`, the native module of the `gpulanes` Python
//! package: the engine's reductions over NumPy and Arrow inputs, partial
//! states as bytes, and the two lanes. The package's `__init__.py` wraps it
//! with the documented API; names here are private to the package.
//!
//! Rules: nothing a caller passes in panics (every failure is a Python
//! exception, see [`engine_error`]); the GIL is released while the GPU
//! works; results are NumPy arrays of the op's result type with a mask of
//! the partitions that have a value.

mod arrow;
mod columns;
mod index;
mod input;
mod keyed;
mod lanes;

use std::sync::Arc;

use gpulanes::{Dtype, Element, Error, NanPolicy, Op, Partitions, Scalar, State, StateKind};
use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::exceptions::{PyOverflowError, PyRuntimeError, PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::input::Prepared;

/// One op's result: values, and the mask of partitions with a value
/// (`None` when all have one).
pub(crate) type Pair = (Py<PyAny>, Option<Py<PyAny>>);

pyo3::create_exception!(
    _gpulanes,
    GpuError,
    PyRuntimeError,
    "A problem with the GPU device or driver (the base of the device errors)."
);
pyo3::create_exception!(
    _gpulanes,
    NoAdapterError,
    GpuError,
    "No GPU adapter (or none matching WGPU_ADAPTER_NAME / WGPU_BACKEND) could be opened."
);
pyo3::create_exception!(
    _gpulanes,
    DeviceLostError,
    GpuError,
    "The device was lost; create a new Engine to go on."
);
pyo3::create_exception!(
    _gpulanes,
    GpuOutOfMemoryError,
    GpuError,
    "The device could not hold what this request needs; smaller requests go on."
);
pyo3::create_exception!(
    _gpulanes,
    QueueFullError,
    PyRuntimeError,
    "A lane's queue is full and the lanes are configured to reject."
);

/// The Python exception for an engine error: bad input and bad state bytes
/// are `ValueError`, device problems the `GpuError` family, a missed
/// deadline `TimeoutError`, an integer sum outside int64 `OverflowError`.
pub(crate) fn engine_error(e: Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::InvalidPartitions(_)
        | Error::InvalidInput(_)
        | Error::InvalidState(_)
        | Error::InvalidEnv { .. }
        | Error::File { .. } => PyValueError::new_err(msg),
        Error::NoAdapter { .. } | Error::AdapterNotFound { .. } | Error::RequestDevice { .. } => {
            NoAdapterError::new_err(msg)
        }
        Error::DeviceLost { .. } => DeviceLostError::new_err(msg),
        Error::OutOfMemory { .. } => GpuOutOfMemoryError::new_err(msg),
        Error::Validation { .. }
        | Error::Wait { .. }
        | Error::Map { .. }
        | Error::Thread { .. }
        | Error::Internal(_) => GpuError::new_err(msg),
        Error::Overflow(_) => PyOverflowError::new_err(msg),
        Error::DeadlineExceeded { .. } => PyTimeoutError::new_err(msg),
        Error::Cancelled => Python::attach(|py| {
            match py
                .import("concurrent.futures")
                .and_then(|m| m.getattr("CancelledError"))
            {
                Ok(t) => PyErr::from_type(t.cast_into().expect("an exception type"), msg),
                Err(e) => e,
            }
        }),
        Error::QueueFull { .. } => QueueFullError::new_err(msg),
        Error::Shutdown => PyRuntimeError::new_err(msg),
        // `Error` is non-exhaustive: a variant added later is a GPU error
        // until it gets its own exception.
        _ => GpuError::new_err(msg),
    }
}

pub(crate) fn value_error(msg: impl Into<String>) -> PyErr {
    PyValueError::new_err(msg.into())
}

pub(crate) fn parse_op(op: &str) -> PyResult<Op> {
    op.parse().map_err(engine_error)
}

/// The ops of a call, at least one.
pub(crate) fn parse_ops(ops: &[String]) -> PyResult<Vec<Op>> {
    if ops.is_empty() {
        return Err(value_error("no ops given"));
    }
    ops.iter().map(|o| parse_op(o)).collect()
}

pub(crate) fn parse_nan(nan: &str) -> PyResult<NanPolicy> {
    nan.parse().map_err(engine_error)
}

/// The partitions of a call: none given is the whole input.
fn partitions(
    partition_size: Option<u64>,
    offsets: Option<PyReadonlyArray1<'_, i64>>,
) -> PyResult<Partitions> {
    match (partition_size, offsets) {
        (Some(_), Some(_)) => Err(value_error("give partition_size or offsets, not both")),
        (Some(k), None) => Ok(Partitions::EqualSize(k)),
        (None, Some(o)) => {
            let o = o.as_slice().map_err(|e| value_error(e.to_string()))?;
            Partitions::from_signed_offsets(o).map_err(engine_error)
        }
        (None, None) => Ok(Partitions::Whole),
    }
}

/// The NumPy result type of `op` over `dtype` (see the crate's dtype table).
fn result_type(op: Op, dtype: Dtype) -> Dtype {
    match op {
        Op::Count => Dtype::I64,
        Op::Max | Op::Min => dtype,
        Op::Sum if !dtype.is_float() => Dtype::I64,
        Op::Mean if dtype != Dtype::F32 => Dtype::F64,
        _ => dtype,
    }
}

fn typed<T: numpy::Element + Copy + Default>(
    py: Python<'_>,
    values: &[Option<Scalar>],
    get: impl Fn(Scalar) -> Option<T>,
) -> PyResult<Py<PyAny>> {
    let mut out = Vec::with_capacity(values.len());
    for v in values {
        out.push(match v {
            None => T::default(),
            Some(s) => get(*s).ok_or_else(|| {
                PyRuntimeError::new_err(format!("result {s:?} of an unexpected type"))
            })?,
        });
    }
    Ok(PyArray1::from_vec(py, out).into_any().unbind())
}

/// One op's results as (values, valid) NumPy arrays; `valid` is `None`
/// when every partition has a value.
pub(crate) fn to_numpy(
    py: Python<'_>,
    op: Op,
    dtype: Dtype,
    values: &[Option<Scalar>],
) -> PyResult<Pair> {
    let arr = match result_type(op, dtype) {
        Dtype::F32 => typed(py, values, |s| match s {
            Scalar::F32(v) => Some(v),
            _ => None,
        })?,
        Dtype::F64 => typed(py, values, |s| match s {
            Scalar::F64(v) => Some(v),
            _ => None,
        })?,
        Dtype::I32 => typed(py, values, |s| match s {
            Scalar::I32(v) => Some(v),
            _ => None,
        })?,
        Dtype::U32 => typed(py, values, |s| match s {
            Scalar::U32(v) => Some(v),
            _ => None,
        })?,
        Dtype::I64 => typed(py, values, |s| match s {
            Scalar::I64(v) => Some(v),
            _ => None,
        })?,
    };
    let valid = values.iter().any(|v| v.is_none()).then(|| {
        let mask: Vec<bool> = values.iter().map(|v| v.is_some()).collect();
        PyArray1::from_vec(py, mask).into_any().unbind()
    });
    Ok((arr, valid))
}

/// `ops` over `data`: ops of one state kind share one pass over the data.
fn run_ops<E: Element>(
    engine: &gpulanes::Engine,
    data: &[E],
    ops: &[Op],
    parts: &Partitions,
    nan: NanPolicy,
) -> gpulanes::Result<Vec<Vec<Option<Scalar>>>> {
    let mut out: Vec<Vec<Option<Scalar>>> = vec![Vec::new(); ops.len()];
    for kind in [StateKind::Sum, StateKind::Max, StateKind::Min] {
        let idx: Vec<usize> = (0..ops.len())
            .filter(|&i| StateKind::for_op(ops[i]) == kind)
            .collect();
        match idx.as_slice() {
            [] => {}
            [i] => out[*i] = engine.reduce_slice(data, ops[*i], parts, nan)?.values,
            _ => {
                let states = engine.states(data, kind, parts)?;
                for &i in &idx {
                    out[i] = states
                        .iter()
                        .map(|s| s.finalize(ops[i], nan))
                        .collect::<gpulanes::Result<_>>()?;
                }
            }
        }
    }
    Ok(out)
}

fn dispatch_ops(
    engine: &gpulanes::Engine,
    p: &Prepared,
    ops: &[Op],
    nan: NanPolicy,
) -> gpulanes::Result<Vec<Vec<Option<Scalar>>>> {
    let parts = &p.partitions;
    input::with_values!(p, |data| run_ops(engine, data, ops, parts, nan))
}

/// `ops` over the pieces of one whole input: one piece is reduced as it
/// is; several (chunks read in place) each give a state per kind, merged
/// before finalising, with the bits of one reduction over all of them.
fn dispatch_pieces(
    engine: &gpulanes::Engine,
    pieces: &[Prepared],
    ops: &[Op],
    nan: NanPolicy,
) -> gpulanes::Result<Vec<Vec<Option<Scalar>>>> {
    if let [one] = pieces {
        return dispatch_ops(engine, one, ops, nan);
    }
    let mut out: Vec<Vec<Option<Scalar>>> = vec![Vec::new(); ops.len()];
    for kind in [StateKind::Sum, StateKind::Max, StateKind::Min] {
        let idx: Vec<usize> = (0..ops.len())
            .filter(|&i| StateKind::for_op(ops[i]) == kind)
            .collect();
        if idx.is_empty() {
            continue;
        }
        let state = merged_state(engine, pieces, kind)?;
        for &i in &idx {
            out[i] = vec![state.finalize(ops[i], nan)?];
        }
    }
    Ok(out)
}

/// The state of `kind` over all pieces of one whole input.
fn merged_state(
    engine: &gpulanes::Engine,
    pieces: &[Prepared],
    kind: StateKind,
) -> gpulanes::Result<State> {
    let mut acc: Option<State> = None;
    for p in pieces {
        for s in dispatch_states(engine, p, kind)? {
            match &mut acc {
                None => acc = Some(s),
                Some(a) => a.merge(&s)?,
            }
        }
    }
    acc.ok_or_else(|| Error::InvalidInput("a whole reduction of no pieces".into()))
}

fn dispatch_states(
    engine: &gpulanes::Engine,
    p: &Prepared,
    kind: StateKind,
) -> gpulanes::Result<Vec<State>> {
    let parts = &p.partitions;
    input::with_values!(p, |data| engine.states(data, kind, parts))
}

/// The GPU reduction engine (native side of `gpulanes.Engine`).
#[pyclass(frozen, module = "gpulanes._gpulanes")]
struct Engine {
    inner: Arc<gpulanes::Engine>,
}

impl Engine {
    /// The states of `op` per key of `index` over `x` (nulls as keyed
    /// calls read them), for `partial_by_index`.
    fn index_states(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        index: &index::GroupIndex,
        op: &str,
    ) -> PyResult<keyed::KeyedStates> {
        let kind = StateKind::for_op(parse_op(op)?);
        let mut col = input::extract(x, true)?;
        let (values, bits) = col.prepare_rows()?;
        let engine = &*self.inner;
        py.detach(|| index::states(engine, index, &values, bits.as_deref(), kind))
            .map_err(engine_error)
    }
}

#[pymethods]
impl Engine {
    #[new]
    fn new(py: Python<'_>) -> PyResult<Self> {
        let inner = py.detach(gpulanes::Engine::new).map_err(engine_error)?;
        Ok(Engine {
            inner: Arc::new(inner),
        })
    }

    /// The adapter and its limits, as a dict.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let a = self.inner.adapter();
        let d = PyDict::new(py);
        d.set_item("name", &a.name)?;
        d.set_item("backend", &a.backend)?;
        d.set_item("device_type", &a.device_type)?;
        d.set_item("driver", &a.driver)?;
        d.set_item("driver_info", &a.driver_info)?;
        d.set_item("software", a.software)?;
        d.set_item("subgroups", a.subgroups)?;
        d.set_item("timestamps", a.timestamps)?;
        d.set_item("flushes_subnormals", a.flushes_subnormals)?;
        d.set_item("max_storage_binding_bytes", a.max_storage_binding_bytes)?;
        d.set_item("max_buffer_bytes", a.max_buffer_bytes)?;
        d.set_item("max_partitions", self.inner.max_partitions())?;
        d.set_item("device_lost", self.inner.is_device_lost())?;
        Ok(d)
    }

    /// `ops` over `x`; one `(values, valid)` pair per op.
    #[pyo3(signature = (x, ops, nan = "propagate", partition_size = None, offsets = None))]
    fn reduce(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        ops: Vec<String>,
        nan: &str,
        partition_size: Option<u64>,
        offsets: Option<PyReadonlyArray1<'_, i64>>,
    ) -> PyResult<Vec<Pair>> {
        let ops = parse_ops(&ops)?;
        let nan = parse_nan(nan)?;
        let parts = partitions(partition_size, offsets)?;
        let whole = parts == Partitions::Whole;
        let mut col = input::extract(x, !whole)?;
        let dtype = col.dtype;
        let pieces = if whole {
            col.prepare_whole()?
        } else {
            vec![col.prepare(parts)?]
        };
        let engine = &*self.inner;
        let mut results = py
            .detach(|| dispatch_pieces(engine, &pieces, &ops, nan))
            .map_err(engine_error)?;
        if let [one] = pieces.as_slice() {
            for (op, values) in ops.iter().zip(results.iter_mut()) {
                if *op != Op::Count {
                    for (v, &null) in values.iter_mut().zip(&one.all_null) {
                        if null {
                            *v = None;
                        }
                    }
                }
            }
        }
        ops.iter()
            .zip(&results)
            .map(|(&op, values)| to_numpy(py, op, dtype, values))
            .collect()
    }

    /// `ops` over the values of each distinct key: the keys (ascending)
    /// and one `(values, valid)` pair per op. With `composite`, `keys` is a
    /// sequence of key columns and the keys come back as a tuple of arrays.
    #[pyo3(signature = (x, keys, ops, nan = "propagate", composite = false))]
    fn reduce_by_key(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        keys: &Bound<'_, PyAny>,
        ops: Vec<String>,
        nan: &str,
        composite: bool,
    ) -> PyResult<(Py<PyAny>, Vec<Pair>)> {
        let ops = parse_ops(&ops)?;
        let nan = parse_nan(nan)?;
        let read = keyed::extract(keys, x, composite)?;
        let input = &read.input;
        let dtype = input.values.dtype;
        let engine = &*self.inner;
        let r = py
            .detach(|| keyed::reduce(engine, input, &ops, nan))
            .map_err(engine_error)?;
        keyed::to_python(py, r, &ops, dtype)
    }

    /// The distinct keys (ascending) and the state (bytes) of `op` of
    /// each; `composite` as for `reduce_by_key`.
    #[pyo3(signature = (x, keys, op, composite = false))]
    fn partial_by_key(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        keys: &Bound<'_, PyAny>,
        op: &str,
        composite: bool,
    ) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
        let kind = StateKind::for_op(parse_op(op)?);
        let read = keyed::extract(keys, x, composite)?;
        let input = &read.input;
        let engine = &*self.inner;
        let s = py
            .detach(|| keyed::states(engine, input, kind))
            .map_err(engine_error)?;
        keyed::states_to_python(py, s)
    }

    /// The groups of `keys` (with `composite`, a sequence of key columns),
    /// found once for `reduce_by_index` and `partial_by_index`.
    #[pyo3(signature = (keys, composite = false))]
    fn group_index(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        composite: bool,
    ) -> PyResult<index::GroupIndex> {
        let (keys, _columns) = keyed::extract_keys(keys, None, composite)?;
        let engine = &*self.inner;
        py.detach(|| index::build(engine, &keys))
            .map_err(engine_error)
    }

    /// `ops` over the values of each key of `index`: the keys and one
    /// `(values, valid)` pair per op, as `reduce_by_key` gives them.
    #[pyo3(signature = (x, index, ops, nan = "propagate"))]
    fn reduce_by_index(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        index: &index::GroupIndex,
        ops: Vec<String>,
        nan: &str,
    ) -> PyResult<(Py<PyAny>, Vec<Pair>)> {
        let ops = parse_ops(&ops)?;
        let nan = parse_nan(nan)?;
        let mut col = input::extract(x, true)?;
        let (values, bits) = col.prepare_rows()?;
        let engine = &*self.inner;
        let r = py
            .detach(|| index::reduce(engine, index, &values, bits.as_deref(), &ops, nan))
            .map_err(engine_error)?;
        keyed::to_python(py, r, &ops, values.dtype)
    }

    /// The keys of `index` and, from one pass, the state columns of the
    /// kinds `ops` need ([`columns`]): `(keys, bytes)`.
    #[pyo3(signature = (x, index, ops))]
    fn partial_by_index_columns(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        index: &index::GroupIndex,
        ops: Vec<String>,
    ) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
        let kinds: Vec<StateKind> = parse_ops(&ops)?
            .into_iter()
            .map(StateKind::for_op)
            .collect();
        let mut col = input::extract(x, true)?;
        let (values, bits) = col.prepare_rows()?;
        let engine = &*self.inner;
        let (keys, states) = py
            .detach(|| index::state_columns(engine, index, &values, bits.as_deref(), &kinds))
            .map_err(engine_error)?;
        let bytes = py.detach(|| states.to_bytes());
        Ok((
            keyed::key_array(py, keys)?,
            PyArray1::from_vec(py, bytes).into_any().unbind(),
        ))
    }

    /// The keys of `index` and the state (bytes) of `op` of each.
    #[pyo3(signature = (x, index, op))]
    fn partial_by_index(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        index: &index::GroupIndex,
        op: &str,
    ) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
        let s = self.index_states(py, x, index, op)?;
        keyed::states_to_python(py, s)
    }

    /// The partial state (bytes) of `op` over `x`, or one per partition.
    #[pyo3(signature = (x, op, partition_size = None, offsets = None))]
    fn partial(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        op: &str,
        partition_size: Option<u64>,
        offsets: Option<PyReadonlyArray1<'_, i64>>,
    ) -> PyResult<Py<PyAny>> {
        let kind = StateKind::for_op(parse_op(op)?);
        let parts = partitions(partition_size, offsets)?;
        let whole = parts == Partitions::Whole;
        let mut col = input::extract(x, !whole)?;
        let engine = &*self.inner;
        if whole {
            let pieces = col.prepare_whole()?;
            let state = py
                .detach(|| merged_state(engine, &pieces, kind))
                .map_err(engine_error)?;
            return Ok(PyBytes::new(py, &state.to_bytes()).into_any().unbind());
        }
        let prepared = col.prepare(parts)?;
        let states = py
            .detach(|| dispatch_states(engine, &prepared, kind))
            .map_err(engine_error)?;
        let bytes: Vec<Bound<'_, PyBytes>> = states
            .iter()
            .map(|s| PyBytes::new(py, &s.to_bytes()))
            .collect();
        Ok(pyo3::types::PyList::new(py, bytes)?.into_any().unbind())
    }

    /// Seconds each of `runs` calls of the engine's own `sum` over `x` took,
    /// timed in Rust without the Python layer (the baseline of the
    /// per-call overhead benchmark).
    fn time_sum(&self, py: Python<'_>, x: &Bound<'_, PyAny>, runs: usize) -> PyResult<Vec<f64>> {
        let mut col = input::extract(x, false)?;
        let pieces = col.prepare_whole()?;
        let engine = &*self.inner;
        py.detach(|| {
            (0..runs)
                .map(|_| {
                    let t = std::time::Instant::now();
                    dispatch_pieces(engine, &pieces, &[Op::Sum], NanPolicy::Propagate)?;
                    Ok(t.elapsed().as_secs_f64())
                })
                .collect::<gpulanes::Result<Vec<f64>>>()
        })
        .map_err(engine_error)
    }

    /// The address of the first value the engine would read from `x`, and
    /// whether `x` would be copied first (a check of the zero-copy paths).
    #[pyo3(signature = (x, partitioned = false))]
    fn input_address(&self, x: &Bound<'_, PyAny>, partitioned: bool) -> PyResult<(usize, bool)> {
        let mut col = input::extract(x, partitioned)?;
        let copied = col.will_copy();
        let pieces = col.prepare_whole()?;
        Ok((pieces.first().map_or(0, |p| p.address()), copied))
    }
}

/// The op a state of `kind` gives by default.
fn own_op(kind: StateKind) -> Op {
    match kind {
        StateKind::Sum => Op::Sum,
        StateKind::Max => Op::Max,
        StateKind::Min => Op::Min,
    }
}

pub(crate) fn state_of(b: &[u8]) -> PyResult<State> {
    State::from_bytes(b).map_err(engine_error)
}

/// The merge of serialised states (of one dtype and kind), as bytes.
fn merged<'a, 'py>(
    py: Python<'py>,
    states: impl IntoIterator<Item = &'a [u8]>,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut it = states.into_iter();
    let first = it
        .next()
        .ok_or_else(|| value_error("merge needs at least one state"))?;
    let mut acc = state_of(first)?;
    for b in it {
        acc.merge(&state_of(b)?).map_err(engine_error)?;
    }
    Ok(PyBytes::new(py, &acc.to_bytes()))
}

/// Merges serialised states (of one dtype and kind) into one.
#[pyfunction]
fn merge<'py>(py: Python<'py>, states: Vec<Vec<u8>>) -> PyResult<Bound<'py, PyBytes>> {
    merged(py, states.iter().map(Vec::as_slice))
}

/// One part of a keyed merge: its key columns (int64) and its states.
type KeyedPart<'py> = (Vec<PyReadonlyArray1<'py, i64>>, Vec<Bound<'py, PyBytes>>);

/// A keyed merge's result: the distinct key columns and their states.
type MergedKeyed<'py> = (
    Vec<Bound<'py, PyArray1<i64>>>,
    Bound<'py, pyo3::types::PyList>,
);

/// Appends one part's key columns (int64, `states` keys each) to `keys`,
/// one vector a column, checking the part has as many columns and one key
/// a state.
pub(crate) fn append_key_columns(
    keys: &mut [Vec<i64>],
    cols: &[PyReadonlyArray1<'_, i64>],
    states: usize,
) -> PyResult<()> {
    if cols.len() != keys.len() {
        return Err(value_error(format!(
            "parts with {} and {} key columns cannot be merged",
            cols.len(),
            keys.len()
        )));
    }
    for (out, col) in keys.iter_mut().zip(cols) {
        let col = col.as_slice().map_err(|e| value_error(e.to_string()))?;
        if col.len() != states {
            return Err(value_error(format!(
                "{} keys for {states} states",
                col.len()
            )));
        }
        out.extend_from_slice(col);
    }
    Ok(())
}

/// Merges keyed states (parts of `(key columns, states)`, the columns
/// int64, one key a state each): the distinct key tuples ascending, as one
/// int64 array a column, and each tuple's merged state. A key with one
/// state keeps its bytes object; states of one key merge in any order to
/// the same bits.
#[pyfunction]
fn merge_keyed_states<'py>(
    py: Python<'py>,
    parts: Vec<KeyedPart<'py>>,
) -> PyResult<MergedKeyed<'py>> {
    let columns = parts.first().map_or(1, |(k, _)| k.len());
    if columns == 0 {
        return Err(value_error("keyed states need at least one key column"));
    }
    let mut keys: Vec<Vec<i64>> = vec![Vec::new(); columns];
    let mut states: Vec<&Bound<'py, PyBytes>> = Vec::new();
    for (cols, part_states) in &parts {
        append_key_columns(&mut keys, cols, part_states.len())?;
        states.extend(part_states);
    }
    // Entries in key-tuple order (ties in any order: merges commute).
    let mut order: Vec<usize> = (0..states.len()).collect();
    let key_cols = &keys;
    py.detach(|| {
        order.sort_unstable_by(|&a, &b| {
            key_cols
                .iter()
                .map(|c| c[a].cmp(&c[b]))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        })
    });
    let same = |a: usize, b: usize| keys.iter().all(|c| c[a] == c[b]);
    let mut out_keys: Vec<Vec<i64>> = vec![Vec::new(); columns];
    let out_states = pyo3::types::PyList::empty(py);
    for run in order.chunk_by(|&a, &b| same(a, b)) {
        for (c, out) in out_keys.iter_mut().enumerate() {
            out.push(keys[c][run[0]]);
        }
        if let [one] = run {
            out_states.append(states[*one])?;
            continue;
        }
        out_states.append(merged(py, run.iter().map(|&i| states[i].as_bytes()))?)?;
    }
    let arrays = out_keys
        .into_iter()
        .map(|k| PyArray1::from_vec(py, k))
        .collect();
    Ok((arrays, out_states))
}

/// The value of `op` from a serialised state, as (values, valid) arrays of
/// one element; `op` `None` is the state's own op (sum, max or min).
#[pyfunction]
#[pyo3(signature = (state, op = None, nan = "propagate"))]
fn finalize(py: Python<'_>, state: &[u8], op: Option<&str>, nan: &str) -> PyResult<Pair> {
    let s = state_of(state)?;
    let op = match op {
        Some(o) => parse_op(o)?,
        None => own_op(s.kind()),
    };
    let v = s.finalize(op, parse_nan(nan)?).map_err(engine_error)?;
    to_numpy(py, op, s.dtype(), &[v])
}

/// The value of `op` from each of a list of keyed states, as one (values,
/// valid) pair; the states must share a dtype. An empty keyed state is a
/// key whose values were all null: count 0 and no other value (SQL's
/// `GROUP BY`).
#[pyfunction]
#[pyo3(signature = (states, op = None, nan = "propagate"))]
fn finalize_keyed_states(
    py: Python<'_>,
    states: Vec<Bound<'_, PyBytes>>,
    op: Option<&str>,
    nan: &str,
) -> PyResult<Pair> {
    let parsed = states
        .iter()
        .map(|b| state_of(b.as_bytes()))
        .collect::<PyResult<Vec<_>>>()?;
    finalize_states(py, &parsed, op, nan)
}

/// [`finalize_keyed_states`] of states already parsed.
pub(crate) fn finalize_states(
    py: Python<'_>,
    parsed: &[State],
    op: Option<&str>,
    nan: &str,
) -> PyResult<Pair> {
    let nan = parse_nan(nan)?;
    let Some(first) = parsed.first() else {
        return Err(value_error("no keyed states to finalise"));
    };
    let dtype = first.dtype();
    let op = match op {
        Some(o) => parse_op(o)?,
        None => own_op(first.kind()),
    };
    let values = py.detach(|| {
        parsed
            .iter()
            .map(|s| {
                if s.dtype() != dtype {
                    return Err(Error::InvalidState(format!(
                        "keyed states of {} and {dtype} cannot be finalised together",
                        s.dtype()
                    )));
                }
                if s.is_empty() && op != Op::Count {
                    Ok(None)
                } else {
                    s.finalize(op, nan)
                }
            })
            .collect::<gpulanes::Result<Vec<_>>>()
    });
    to_numpy(py, op, dtype, &values.map_err(engine_error)?)
}

/// What a serialised state holds: dtype, kind and number of values.
#[pyfunction]
fn state_info<'py>(py: Python<'py>, state: &[u8]) -> PyResult<Bound<'py, PyDict>> {
    let s = state_of(state)?;
    let d = PyDict::new(py);
    d.set_item("dtype", s.dtype().name())?;
    d.set_item(
        "kind",
        match s.kind() {
            StateKind::Sum => "sum",
            StateKind::Max => "max",
            StateKind::Min => "min",
        },
    )?;
    d.set_item("len", s.len())?;
    d.set_item("count", s.count(NanPolicy::Ignore))?;
    Ok(d)
}

#[pymodule]
fn _gpulanes(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Engine>()?;
    m.add_class::<lanes::Lanes>()?;
    m.add_class::<index::GroupIndex>()?;
    m.add_class::<lanes::CancelToken>()?;
    m.add_function(wrap_pyfunction!(merge, m)?)?;
    m.add_function(wrap_pyfunction!(finalize, m)?)?;
    m.add_function(wrap_pyfunction!(finalize_keyed_states, m)?)?;
    m.add_function(wrap_pyfunction!(merge_keyed_states, m)?)?;
    m.add_function(wrap_pyfunction!(columns::merge_keyed_columns, m)?)?;
    m.add_function(wrap_pyfunction!(columns::finalize_keyed_columns, m)?)?;
    m.add_function(wrap_pyfunction!(state_info, m)?)?;
    m.add("GpuError", py.get_type::<GpuError>())?;
    m.add("NoAdapterError", py.get_type::<NoAdapterError>())?;
    m.add("DeviceLostError", py.get_type::<DeviceLostError>())?;
    m.add("GpuOutOfMemoryError", py.get_type::<GpuOutOfMemoryError>())?;
    m.add("QueueFullError", py.get_type::<QueueFullError>())?;
    Ok(())
}
