//! Keyed reductions (group-by) from Python: `keys=` of `Engine.reduce` and
//! `Engine.partial`, on the engine's `reduce_by_key` / `states_by_key`.
//! Keys are int32, uint32 or int64 (NumPy or Arrow, without nulls), one
//! per value; the distinct keys come back ascending, as a NumPy array.
//! Several key columns are combined into one int64 key a row
//! ([`CompositeKeys`]) and the distinct keys come back as a tuple of
//! arrays, one a column, in the tuples' lexicographic order.
//!
//! Values may have nulls (Arrow nulls, masked entries): they are skipped
//! and not counted, and a key whose values are all null is a group with
//! count 0 and no other value, as SQL's `GROUP BY` gives
//! (`reduce_by_key_with_nulls`); its state is empty.

use std::sync::Arc;

use gpulanes::{
    CompositeKeys, Dtype, Element, Grouped, Key, KeyColumn, KeyValues, Lane, NanPolicy, Op,
    Partitions, Request, Scalar, State, StateKind, Validity,
};
use numpy::PyArray1;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::input::{self, Prepared};
use crate::{Pair, to_numpy};

/// The keys of a keyed call: one column, or several combined.
pub enum Keys {
    One(Prepared),
    Combined(Arc<CompositeKeys>),
}

impl Keys {
    /// The type of the keys the engine reads.
    pub fn dtype(&self) -> Dtype {
        match self {
            Keys::One(p) => p.dtype,
            Keys::Combined(_) => Dtype::I64,
        }
    }

    /// The keys the engine reads, as `K` (of [`Keys::dtype`]).
    pub fn slice<K: Key + Element>(&self) -> &[K] {
        match self {
            Keys::One(p) => p.slice::<K>(),
            Keys::Combined(c) => {
                assert_eq!(K::DTYPE, Dtype::I64, "dispatch on the keys' dtype");
                bytemuck::cast_slice(c.keys())
            }
        }
    }

    /// The combination of several key columns, if any.
    pub fn composite(&self) -> Option<Arc<CompositeKeys>> {
        match self {
            Keys::One(_) => None,
            Keys::Combined(c) => Some(c.clone()),
        }
    }
}

/// The distinct keys the engine returned, as the caller's keys: combined
/// keys decoded into their columns.
pub fn decoded(keys: KeyArray, composite: Option<&CompositeKeys>) -> gpulanes::Result<KeyArray> {
    match (keys, composite) {
        (KeyArray::I64(k), Some(c)) => Ok(KeyArray::Columns(c.columns_of(&k)?)),
        (keys, _) => Ok(keys),
    }
}

/// The keys and values of a keyed call, read and checked.
pub struct KeyedInput {
    pub keys: Keys,
    /// Every row's value, null slots included.
    pub values: Prepared,
    /// Bit `i` set where row `i` holds a value; `None` without nulls.
    pub valid: Option<Vec<u8>>,
}

impl KeyedInput {
    /// Which rows hold a value, where some do not.
    fn validity(&self) -> gpulanes::Result<Option<Validity<'_>>> {
        self.valid
            .as_deref()
            .map(|bits| Validity::new(bits, 0, self.values.len))
            .transpose()
    }
}

/// A keyed call's input together with the columns its keys and values may
/// point into (NumPy's copies of strided, reordered or converted inputs,
/// Arrow exports): use the input through this, so the columns outlive
/// every use of it.
pub struct Extracted<'py> {
    pub input: KeyedInput,
    _columns: Vec<input::Column<'py>>,
}

/// Reads one column of keys, checked against `rows` values where given.
fn key_column<'py>(keys: &Bound<'py, PyAny>, rows: Option<usize>) -> PyResult<input::Column<'py>> {
    let py = keys.py();
    let kc = input::extract(keys, true).map_err(|e| {
        if e.is_instance_of::<PyValueError>(py) {
            PyValueError::new_err(format!(
                "keys: {} (keys are int32, uint32 or int64; the package widens other \
                 integer, bool and categorical keys of NumPy, pandas and PyArrow)",
                e.value(py)
            ))
        } else {
            e
        }
    })?;
    if !matches!(kc.dtype, Dtype::I32 | Dtype::U32 | Dtype::I64) {
        return Err(PyValueError::new_err(format!(
            "keys must be int32, uint32 or int64, got {}",
            kc.dtype
        )));
    }
    if kc.has_nulls() {
        return Err(PyValueError::new_err(
            "keys must not be null: drop the rows whose key is null, or fill their keys",
        ));
    }
    match rows {
        Some(rows) if kc.len() != rows => Err(PyValueError::new_err(format!(
            "{} keys for {rows} values: give one key per value",
            kc.len()
        ))),
        _ => Ok(kc),
    }
}

/// Reads `keys` (with `composite`, a sequence of key columns, combined on
/// the host's threads without the GIL) and `x` for a keyed reduction. All
/// are read in C order, so the n-th key goes with the n-th value whatever
/// the arrays' layouts.
pub fn extract<'py>(
    keys: &Bound<'py, PyAny>,
    x: &Bound<'py, PyAny>,
    composite: bool,
) -> PyResult<Extracted<'py>> {
    let mut vc = input::extract(x, true)?;
    let (keys, mut columns) = extract_keys(keys, Some(vc.len()), composite)?;
    let (values, valid) = vc.prepare_rows()?;
    columns.push(vc);
    Ok(Extracted {
        input: KeyedInput {
            keys,
            values,
            valid,
        },
        _columns: columns,
    })
}

/// Reads `keys` as [`extract`] does, checked against `rows` values where
/// given (else the key columns must agree with each other); returns them
/// with the columns they may point into.
pub fn extract_keys<'py>(
    keys: &Bound<'py, PyAny>,
    rows: Option<usize>,
    composite: bool,
) -> PyResult<(Keys, Vec<input::Column<'py>>)> {
    let mut columns = Vec::new();
    let keys = if composite {
        let mut prepared = Vec::new();
        let mut first_len: Option<usize> = None;
        for k in keys.try_iter()? {
            let mut kc = key_column(&k?, rows)?;
            match first_len {
                Some(n) if n != kc.len() => {
                    return Err(PyValueError::new_err(format!(
                        "key columns of {n} and {} keys: give columns of one length",
                        kc.len()
                    )));
                }
                _ => first_len = Some(kc.len()),
            }
            prepared.push(kc.prepare(Partitions::Whole)?);
            columns.push(kc);
        }
        let cols: Vec<KeyColumn<'_>> = prepared
            .iter()
            .map(|p| match p.dtype {
                Dtype::I32 => KeyColumn::I32(p.slice()),
                Dtype::U32 => KeyColumn::U32(p.slice()),
                _ => KeyColumn::I64(p.slice()),
            })
            .collect();
        let combined = keys
            .py()
            .detach(|| CompositeKeys::new(&cols))
            .map_err(crate::engine_error)?;
        Keys::Combined(Arc::new(combined))
    } else {
        let mut kc = key_column(keys, rows)?;
        let k = kc.prepare(Partitions::Whole)?;
        columns.push(kc);
        Keys::One(k)
    };
    Ok((keys, columns))
}

/// One keyed result: the distinct keys and, per op, its values.
pub struct KeyedResult {
    keys: KeyArray,
    values: Vec<Vec<Option<Scalar>>>,
}

/// The distinct keys, in their own type.
pub enum KeyArray {
    I32(Vec<i32>),
    U32(Vec<u32>),
    I64(Vec<i64>),
    /// Distinct key tuples, one column of keys each.
    Columns(Vec<KeyValues>),
}

/// The distinct keys and per-key states.
pub struct KeyedStates {
    pub keys: KeyArray,
    pub states: Vec<State>,
}

impl KeyedResult {
    pub fn of<K: IntoKeys>(g: Grouped<K>) -> Self {
        KeyedResult {
            keys: K::wrap(g.keys),
            values: g.reductions.into_iter().map(|r| r.values).collect(),
        }
    }

    /// The result with its keys decoded where they were combined.
    pub fn decoded(self, composite: Option<&CompositeKeys>) -> gpulanes::Result<Self> {
        Ok(KeyedResult {
            keys: decoded(self.keys, composite)?,
            values: self.values,
        })
    }
}

pub(crate) trait IntoKeys: Key + Element {
    fn wrap(v: Vec<Self>) -> KeyArray;
}
impl IntoKeys for i32 {
    fn wrap(v: Vec<i32>) -> KeyArray {
        KeyArray::I32(v)
    }
}
impl IntoKeys for u32 {
    fn wrap(v: Vec<u32>) -> KeyArray {
        KeyArray::U32(v)
    }
}
impl IntoKeys for i64 {
    fn wrap(v: Vec<i64>) -> KeyArray {
        KeyArray::I64(v)
    }
}

fn by_key<K: IntoKeys>(
    engine: &gpulanes::Engine,
    input: &KeyedInput,
    ops: &[Op],
    nan: NanPolicy,
) -> gpulanes::Result<KeyedResult> {
    let keys = input.keys.slice::<K>();
    let v = &input.values;
    let g = match input.validity()? {
        None => input::with_values!(v, |values| engine.reduce_by_key(keys, values, ops, nan)?),
        Some(valid) => input::with_values!(v, |values| engine
            .reduce_by_key_with_nulls(keys, values, valid, ops, nan)?),
    };
    KeyedResult::of(g).decoded(input.keys.composite().as_deref())
}

/// Copies the keys and values of `input` into a keyed lane request and
/// submits it to `lane`; `wait` gets the handle's result as a
/// [`KeyedResult`] (on the thread it runs on) and hands it on.
pub fn submit_lane(
    lanes: &gpulanes::Lanes,
    lane: Lane,
    input: &KeyedInput,
    ops: &[Op],
    nan: NanPolicy,
    timeout: Option<std::time::Duration>,
) -> gpulanes::Result<Box<dyn LaneWait>> {
    match input.keys.dtype() {
        Dtype::I32 => submit_keys::<i32>(lanes, lane, input, ops, nan, timeout),
        Dtype::U32 => submit_keys::<u32>(lanes, lane, input, ops, nan, timeout),
        _ => submit_keys::<i64>(lanes, lane, input, ops, nan, timeout),
    }
}

/// A submitted keyed request: wait for it (in steps, so a waiter can
/// check for cancellation) or cancel it.
pub trait LaneWait: Send {
    /// The result, or `None` if it is not in after `step`.
    fn wait_step(&mut self, step: std::time::Duration) -> Option<gpulanes::Result<KeyedResult>>;
    fn cancel(&self);
}

struct KeyedHandle<K: IntoKeys> {
    handle: Option<gpulanes::Handle<Grouped<K>>>,
    /// How the request's keys were combined, to decode its result's.
    composite: Option<Arc<CompositeKeys>>,
}

impl<K: IntoKeys> LaneWait for KeyedHandle<K> {
    fn wait_step(&mut self, step: std::time::Duration) -> Option<gpulanes::Result<KeyedResult>> {
        let h = self.handle.take()?;
        match h.wait_timeout(step) {
            Ok(r) => Some(r.and_then(|g| KeyedResult::of(g).decoded(self.composite.as_deref()))),
            Err(back) => {
                self.handle = Some(back);
                None
            }
        }
    }

    fn cancel(&self) {
        if let Some(h) = &self.handle {
            h.cancel();
        }
    }
}

fn submit_keys<K: IntoKeys>(
    lanes: &gpulanes::Lanes,
    lane: Lane,
    input: &KeyedInput,
    ops: &[Op],
    nan: NanPolicy,
    timeout: Option<std::time::Duration>,
) -> gpulanes::Result<Box<dyn LaneWait>> {
    let v = &input.values;
    let request = match input.validity()? {
        None => {
            let keys: std::sync::Arc<[K]> = input.keys.slice::<K>().into();
            input::with_values!(v, |values| Request::keyed(keys, values, ops, nan))
        }
        Some(valid) => {
            let keys = input.keys.slice::<K>();
            input::with_values!(v, |values| Request::keyed_with_nulls(
                keys, values, valid, ops, nan
            ))
        }
    };
    let request = match timeout {
        Some(t) => request.timeout(t),
        None => request,
    };
    Ok(lane_wait(
        lanes.submit(lane, request)?,
        input.keys.composite(),
    ))
}

/// A submitted keyed request's handle as a [`LaneWait`], its keys decoded
/// by `composite` where several columns were combined.
pub fn lane_wait<K: IntoKeys>(
    handle: gpulanes::Handle<Grouped<K>>,
    composite: Option<Arc<CompositeKeys>>,
) -> Box<dyn LaneWait> {
    Box::new(KeyedHandle {
        handle: Some(handle),
        composite,
    })
}

fn states_by_key<K: IntoKeys>(
    engine: &gpulanes::Engine,
    input: &KeyedInput,
    kind: StateKind,
) -> gpulanes::Result<KeyedStates> {
    let keys = input.keys.slice::<K>();
    let v = &input.values;
    let g = match input.validity()? {
        None => input::with_values!(v, |values| engine.states_by_key(keys, values, kind)?),
        Some(valid) => input::with_values!(v, |values| engine
            .states_by_key_with_nulls(keys, values, valid, kind)?),
    };
    Ok(KeyedStates {
        keys: decoded(K::wrap(g.keys), input.keys.composite().as_deref())?,
        states: g.states,
    })
}

/// `ops` per distinct key.
pub fn reduce(
    engine: &gpulanes::Engine,
    input: &KeyedInput,
    ops: &[Op],
    nan: NanPolicy,
) -> gpulanes::Result<KeyedResult> {
    match input.keys.dtype() {
        Dtype::I32 => by_key::<i32>(engine, input, ops, nan),
        Dtype::U32 => by_key::<u32>(engine, input, ops, nan),
        _ => by_key::<i64>(engine, input, ops, nan),
    }
}

/// The per-key states of `kind`.
pub fn states(
    engine: &gpulanes::Engine,
    input: &KeyedInput,
    kind: StateKind,
) -> gpulanes::Result<KeyedStates> {
    match input.keys.dtype() {
        Dtype::I32 => states_by_key::<i32>(engine, input, kind),
        Dtype::U32 => states_by_key::<u32>(engine, input, kind),
        _ => states_by_key::<i64>(engine, input, kind),
    }
}

pub fn key_array(py: Python<'_>, keys: KeyArray) -> PyResult<Py<PyAny>> {
    Ok(match keys {
        KeyArray::I32(v) => PyArray1::from_vec(py, v).into_any().unbind(),
        KeyArray::U32(v) => PyArray1::from_vec(py, v).into_any().unbind(),
        KeyArray::I64(v) => PyArray1::from_vec(py, v).into_any().unbind(),
        KeyArray::Columns(columns) => {
            let arrays = columns.into_iter().map(|c| match c {
                KeyValues::I32(v) => PyArray1::from_vec(py, v).into_any(),
                KeyValues::U32(v) => PyArray1::from_vec(py, v).into_any(),
                KeyValues::I64(v) => PyArray1::from_vec(py, v).into_any(),
            });
            pyo3::types::PyTuple::new(py, arrays)?.into_any().unbind()
        }
    })
}

/// The keys array and one (values, valid) pair per op.
pub fn to_python(
    py: Python<'_>,
    r: KeyedResult,
    ops: &[Op],
    dtype: Dtype,
) -> PyResult<(Py<PyAny>, Vec<Pair>)> {
    let pairs = ops
        .iter()
        .zip(&r.values)
        .map(|(&op, v)| to_numpy(py, op, dtype, v))
        .collect::<PyResult<Vec<_>>>()?;
    Ok((key_array(py, r.keys)?, pairs))
}

/// The keys array and the states as a list of bytes.
pub fn states_to_python(py: Python<'_>, s: KeyedStates) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
    let bytes: Vec<Vec<u8>> = s.states.iter().map(State::to_bytes).collect();
    let list =
        pyo3::types::PyList::new(py, bytes.iter().map(|b| pyo3::types::PyBytes::new(py, b)))?;
    Ok((key_array(py, s.keys)?, list.into_any().unbind()))
}
