//! Group indexes from Python: `Engine.group_index(keys)` finds the groups
//! of a key column (or of several combined, [`CompositeKeys`]) once, and
//! `Engine.reduce` / `Engine.partial` with `keys=index` reduce any number
//! of value columns of the same rows by them (the engine's
//! `reduce_by_index` and `states_by_index`, nulls as with keys). The
//! index owns a copy of the keys it reads, so the caller's arrays may go.

use std::sync::Arc;

use gpulanes::{CompositeKeys, Dtype, Engine, NanPolicy, Op, StateColumns, StateKind, Validity};
use pyo3::prelude::*;

use crate::input::{self, Prepared};
use crate::keyed::{
    IntoKeys, KeyArray, KeyedResult, KeyedStates, Keys, LaneWait, decoded, key_array, lane_wait,
};

/// An index over keys of one of the engine's key types.
enum IndexOf {
    I32(Arc<gpulanes::GroupIndex<'static, i32>>),
    U32(Arc<gpulanes::GroupIndex<'static, u32>>),
    I64(Arc<gpulanes::GroupIndex<'static, i64>>),
}

/// Calls `$body` with `$ix` bound to the index, whatever its key type.
macro_rules! with_index {
    ($index:expr, |$ix:ident| $body:expr) => {
        match $index {
            IndexOf::I32($ix) => $body,
            IndexOf::U32($ix) => $body,
            IndexOf::I64($ix) => $body,
        }
    };
}

/// The groups of a key column, found once (native side of
/// `gpulanes.GroupIndex`).
#[pyclass(frozen, module = "gpulanes._gpulanes")]
pub struct GroupIndex {
    index: IndexOf,
    /// How several key columns were combined, to decode the keys.
    composite: Option<Arc<CompositeKeys>>,
}

#[pymethods]
impl GroupIndex {
    /// The distinct keys, ascending (a tuple of arrays for several key
    /// columns, in the tuples' lexicographic order).
    fn keys(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let keys = with_index!(&self.index, |ix| IntoKeys::wrap(ix.keys().to_vec()));
        key_array(py, self.decode(keys)?)
    }

    /// Rows of the key column: every value column has this many values.
    #[getter]
    fn rows(&self) -> usize {
        with_index!(&self.index, |ix| ix.rows())
    }

    fn __len__(&self) -> usize {
        with_index!(&self.index, |ix| ix.len())
    }
}

impl GroupIndex {
    fn decode(&self, keys: KeyArray) -> PyResult<KeyArray> {
        decoded(keys, self.composite.as_deref()).map_err(crate::engine_error)
    }
}

/// The index of `keys` (read by `keyed::extract_keys`): the keys the
/// engine reads copied into the index.
pub fn build(engine: &Engine, keys: &Keys) -> gpulanes::Result<GroupIndex> {
    let index = match keys.dtype() {
        Dtype::I32 => IndexOf::I32(Arc::new(engine.group_index(keys.slice::<i32>().to_vec())?)),
        Dtype::U32 => IndexOf::U32(Arc::new(engine.group_index(keys.slice::<u32>().to_vec())?)),
        _ => IndexOf::I64(Arc::new(engine.group_index(keys.slice::<i64>().to_vec())?)),
    };
    Ok(GroupIndex {
        index,
        composite: keys.composite(),
    })
}

/// Which rows of `values` hold a value, where some do not.
fn validity<'a>(
    values: &Prepared,
    bits: Option<&'a [u8]>,
) -> gpulanes::Result<Option<Validity<'a>>> {
    bits.map(|b| Validity::new(b, 0, values.len)).transpose()
}

/// `ops` per key of `index` over `values` (nulls where `bits` has them).
pub fn reduce(
    engine: &Engine,
    index: &GroupIndex,
    values: &Prepared,
    bits: Option<&[u8]>,
    ops: &[Op],
    nan: NanPolicy,
) -> gpulanes::Result<KeyedResult> {
    let valid = validity(values, bits)?;
    let r = with_index!(&index.index, |ix| {
        let g = match valid {
            None => input::with_values!(values, |v| engine.reduce_by_index(ix, v, ops, nan)?),
            Some(valid) => input::with_values!(values, |v| engine
                .reduce_by_index_with_nulls(ix, v, valid, ops, nan)?),
        };
        KeyedResult::of(g)
    });
    r.decoded(index.composite.as_deref())
}

/// The state columns of `kinds` per key of `index` over `values`, from
/// one pass.
pub fn state_columns(
    engine: &Engine,
    index: &GroupIndex,
    values: &Prepared,
    bits: Option<&[u8]>,
    kinds: &[StateKind],
) -> gpulanes::Result<(KeyArray, StateColumns)> {
    let valid = validity(values, bits)?;
    let (keys, states) = with_index!(&index.index, |ix| {
        let g = match valid {
            None => input::with_values!(values, |v| engine.state_columns_by_index(ix, v, kinds)?),
            Some(valid) => input::with_values!(values, |v| engine
                .state_columns_by_index_with_nulls(ix, v, valid, kinds)?),
        };
        (IntoKeys::wrap(g.keys), g.states)
    });
    Ok((decoded(keys, index.composite.as_deref())?, states))
}

/// The states of `kind` per key of `index` over `values`.
pub fn states(
    engine: &Engine,
    index: &GroupIndex,
    values: &Prepared,
    bits: Option<&[u8]>,
    kind: StateKind,
) -> gpulanes::Result<KeyedStates> {
    let valid = validity(values, bits)?;
    let (keys, states) = with_index!(&index.index, |ix| {
        let g = match valid {
            None => input::with_values!(values, |v| engine.states_by_index(ix, v, kind)?),
            Some(valid) => input::with_values!(values, |v| engine
                .states_by_index_with_nulls(ix, v, valid, kind)?),
        };
        (IntoKeys::wrap(g.keys), g.states)
    });
    Ok(KeyedStates {
        keys: decoded(keys, index.composite.as_deref())?,
        states,
    })
}

/// Submits `ops` over `values` by `index` to `lane` (nulls where `bits`
/// has them): a keyed request whose keys are not read again.
#[allow(clippy::too_many_arguments)]
pub fn submit_lane(
    lanes: &gpulanes::Lanes,
    lane: gpulanes::Lane,
    index: &GroupIndex,
    values: &Prepared,
    bits: Option<&[u8]>,
    ops: &[Op],
    nan: NanPolicy,
    timeout: Option<std::time::Duration>,
) -> gpulanes::Result<Box<dyn LaneWait>> {
    let valid = validity(values, bits)?;
    let composite = index.composite.clone();
    with_index!(&index.index, |ix| {
        let request = match valid {
            None => input::with_values!(values, |v| gpulanes::Request::keyed_by_index(
                ix.clone(),
                v,
                ops,
                nan
            )),
            Some(valid) => input::with_values!(values, |v| {
                gpulanes::Request::keyed_by_index_with_nulls(ix.clone(), v, valid, ops, nan)
            }),
        };
        let request = match timeout {
            Some(t) => request.timeout(t),
            None => request,
        };
        Ok(lane_wait(lanes.submit(lane, request)?, composite))
    })
}
