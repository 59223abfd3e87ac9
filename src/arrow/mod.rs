//! Arrow input and output (the `arrow` feature): arrow-rs
//! [`PrimitiveArray`]s of float32, float64, int32, uint32 and int64,
//! [`GenericListArray`] offsets as partitions, integer columns and
//! [`DictionaryArray`] codes as group keys, and results as Arrow arrays
//! with validity.
//!
//! ```
//! use arrow_array::Float64Array;
//! use gpulanes::{Engine, NanPolicy, Op, Scalar};
//! let engine = Engine::new()?;
//! let column = Float64Array::from(vec![Some(1.0), None, Some(3.0), None]);
//! let mean = engine.reduce_arrow(&column, Op::Mean, NanPolicy::Propagate)?;
//! assert_eq!(mean, Some(Scalar::F64(2.0))); // nulls skipped, not counted
//! let count = engine.reduce_arrow(&column, Op::Count, NanPolicy::Propagate)?;
//! assert_eq!(count, Some(Scalar::I64(2)));
//! # Ok::<(), gpulanes::Error>(())
//! ```
//!
//! # NULL is not NaN
//! - A slot the validity bitmap marks null is SQL NULL: skipped and not
//!   counted. `count` counts the non-null values (under
//!   [`NanPolicy::Ignore`] the non-null, non-NaN values).
//! - NaN is a value: it follows the [`NanPolicy`] (propagates by default).
//! - No values at all (an empty array, an empty list): `sum` is 0, `count`
//!   0, `mean`, `max` and `min` have no value (`None`, or a null slot in an
//!   Arrow result). Values that are all null (an all-null array, column or
//!   list, a dictionary code whose values are all null): `count` 0 and no
//!   value for every other op, as SQL's `SUM` of only NULLs is NULL. A null
//!   list gives a null result for every op.
//! - A partial [`State`] holds no count of nulls: an all-null chunk's
//!   state is empty, and finalised alone it gives `sum` 0.
//!
//! # Copies
//! - Without nulls the values buffer is reduced in place (the array's
//!   offset and length respected: a slice reduces only its own values).
//! - With nulls the non-null values are gathered on the host into one new
//!   buffer first (one pass; the GPU kernels read dense values only).
//! - List offsets are rebased to the first list's offset and widened to
//!   u64 (k+1 values), as [`Partitions::Offsets`] holds them.
//! - Dictionary codes of type int32, uint32 or int64 are read in place when
//!   they have no nulls (with null values, the rows with a value are
//!   gathered); other code types (int8, int16, uint8, uint16, uint64), and
//!   codes with nulls, are widened to int64 on the host.
//!
//! # Chunked columns
//! [`Engine::reduce_arrow_chunks`] reduces several arrays as one column:
//! each chunk gives a partial [`State`] and the merged state is finalised,
//! so the result is the same bits as one array holding all the values.
//!
//! Polars exports its columns as Arrow (`Series::to_arrow`, one array per
//! chunk, in polars-arrow's types; the Arrow C Data Interface hands them to
//! arrow-rs without a copy), so Polars data goes through these functions;
//! there is no separate Polars path.

use std::any::Any;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    ArrowDictionaryKeyType, Float32Type, Float64Type, Int32Type, Int64Type, UInt32Type,
};
use arrow_array::{
    Array, ArrayRef, ArrowPrimitiveType, DictionaryArray, Float32Array, Float64Array,
    GenericListArray, Int32Array, Int64Array, OffsetSizeTrait, PrimitiveArray, UInt32Array,
};
use arrow_buffer::ArrowNativeType;

use crate::Engine;
use crate::dtype::{Dtype, Element, Scalar};
use crate::error::{Error, Result};
use crate::keyed::Key;
use crate::op::{NanPolicy, Op};
use crate::partition::Partitions;
use crate::state::{State, StateKind};
use crate::validity::Validity;

mod batch;
mod keys;
mod values;

pub use batch::Aggregate;

/// The values of `array` the engine reduces: the values buffer itself
/// when nothing is null, else the non-null values gathered on the host.
fn dense<T>(array: &PrimitiveArray<T>) -> std::borrow::Cow<'_, [T::Native]>
where
    T: ArrowPrimitiveType,
{
    match array.nulls().filter(|n| n.null_count() > 0) {
        None => std::borrow::Cow::Borrowed(array.values()),
        Some(nulls) => std::borrow::Cow::Owned(
            array
                .values()
                .iter()
                .enumerate()
                .filter(|(i, _)| nulls.is_valid(*i))
                .map(|(_, v)| *v)
                .collect(),
        ),
    }
}

/// The result type of `op` over `dtype` (see [`crate::dtype`]).
pub(crate) fn result_dtype(dtype: Dtype, op: Op) -> Dtype {
    match op {
        Op::Count => Dtype::I64,
        Op::Sum if dtype.is_float() => dtype,
        Op::Sum => Dtype::I64,
        Op::Mean if dtype == Dtype::F32 => Dtype::F32,
        Op::Mean => Dtype::F64,
        Op::Max | Op::Min => dtype,
    }
}

/// Result values as the natives of an Arrow array (`None` a null slot):
/// `f` takes each value's native, `None` where it has none, an internal
/// error naming `what` (the column being made).
pub(crate) fn natives<N>(
    what: &str,
    values: &[Option<Scalar>],
    f: impl Fn(Scalar) -> Option<N>,
) -> Result<Vec<Option<N>>> {
    values
        .iter()
        .map(|v| match v {
            None => Ok(None),
            Some(s) => f(*s)
                .map(Some)
                .ok_or_else(|| Error::Internal(format!("{what} got the value {s:?}"))),
        })
        .collect()
}

/// An Arrow array of type `t` from result values (`None` is a null slot).
pub(crate) fn to_array(t: Dtype, values: &[Option<Scalar>]) -> Result<ArrayRef> {
    let what = format!("a {t} result column");
    Ok(match t {
        Dtype::F32 => Arc::new(Float32Array::from(natives(&what, values, |s| match s {
            Scalar::F32(v) => Some(v),
            _ => None,
        })?)),
        Dtype::F64 => Arc::new(Float64Array::from(natives(&what, values, |s| match s {
            Scalar::F64(v) => Some(v),
            _ => None,
        })?)),
        Dtype::I32 => Arc::new(Int32Array::from(natives(&what, values, |s| match s {
            Scalar::I32(v) => Some(v),
            _ => None,
        })?)),
        Dtype::U32 => Arc::new(UInt32Array::from(natives(&what, values, |s| match s {
            Scalar::U32(v) => Some(v),
            _ => None,
        })?)),
        Dtype::I64 => Arc::new(Int64Array::from(natives(&what, values, |s| match s {
            Scalar::I64(v) => Some(v),
            _ => None,
        })?)),
    })
}

/// The engine dtype of an Arrow array, or an error naming its type.
pub(crate) fn child_dtype(array: &dyn Array, what: &str) -> Result<Dtype> {
    let t = array.data_type();
    [
        (Float32Type::DATA_TYPE, Dtype::F32),
        (Float64Type::DATA_TYPE, Dtype::F64),
        (Int32Type::DATA_TYPE, Dtype::I32),
        (UInt32Type::DATA_TYPE, Dtype::U32),
        (Int64Type::DATA_TYPE, Dtype::I64),
    ]
    .into_iter()
    .find(|(dt, _)| dt == t)
    .map(|(_, d)| d)
    .ok_or_else(|| {
        Error::InvalidInput(format!(
            "{what} has Arrow type {t}: expected Float32, Float64, Int32, UInt32 or Int64"
        ))
    })
}

impl Engine {
    /// `op` over the non-null values of an Arrow array (see the module
    /// docs: nulls skipped and not counted, NaN by `nan`). An empty array
    /// gives `Some(0)` for `sum` and `count` and `None` for `mean`, `max`
    /// and `min`; an array of only nulls `Some(0)` for `count` and `None`
    /// for every other op (SQL). Without nulls the values are reduced in
    /// place; with nulls the non-null values are gathered first.
    ///
    /// # Errors
    /// [`Error::Overflow`] for an integer sum outside int64;
    /// [`Error::OutOfMemory`] when the device cannot hold the request (other
    /// requests go on); [`Error::DeviceLost`] once the device is lost;
    /// [`Error::Validation`], [`Error::Wait`] or [`Error::Internal`] for
    /// other GPU failures (see [`Error`]).
    pub fn reduce_arrow<T>(
        &self,
        array: &PrimitiveArray<T>,
        op: Op,
        nan: NanPolicy,
    ) -> Result<Option<Scalar>>
    where
        T: ArrowPrimitiveType,
        T::Native: Element,
    {
        self.reduce_arrow_chunks(&[array], op, nan)
    }

    /// [`Engine::reduce_arrow`] of an array known only at run time (a
    /// `RecordBatch` column, an `ArrayRef`): Float32, Float64, Int32,
    /// UInt32 and Int64 arrays are reduced, any other type is refused.
    /// Empty, all-null and NaN results as for [`Engine::reduce_arrow`].
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the array's type when it is not one
    /// of those; otherwise as [`Engine::reduce_arrow`].
    pub fn reduce_arrow_dyn(
        &self,
        array: &dyn Array,
        op: Op,
        nan: NanPolicy,
    ) -> Result<Option<Scalar>> {
        match child_dtype(array, "the array")? {
            Dtype::F32 => self.reduce_arrow(array.as_primitive::<Float32Type>(), op, nan),
            Dtype::F64 => self.reduce_arrow(array.as_primitive::<Float64Type>(), op, nan),
            Dtype::I32 => self.reduce_arrow(array.as_primitive::<Int32Type>(), op, nan),
            Dtype::U32 => self.reduce_arrow(array.as_primitive::<UInt32Type>(), op, nan),
            Dtype::I64 => self.reduce_arrow(array.as_primitive::<Int64Type>(), op, nan),
        }
    }

    /// The partial [`State`] of `kind` over the non-null values of an Arrow
    /// array (merge it with states of other chunks or machines). An empty
    /// or all-null array gives an empty state (count 0); NaNs are kept in
    /// the state and handled by the policy given when it is finalised.
    ///
    /// # Errors
    /// GPU errors as for [`Engine::states`].
    pub fn arrow_state<T>(&self, array: &PrimitiveArray<T>, kind: StateKind) -> Result<State>
    where
        T: ArrowPrimitiveType,
        T::Native: Element,
    {
        let values = dense(array);
        let mut states = self.states(&values, kind, &Partitions::Whole)?;
        states
            .pop()
            .ok_or_else(|| Error::Internal("a whole-buffer reduction gave no state".into()))
    }

    /// `op` over several Arrow arrays as one column (a chunked array):
    /// the chunks' states are merged, so the result is the same bits as
    /// one array of all the values. No chunks is an empty column; empty,
    /// all-null and NaN results as for [`Engine::reduce_arrow`].
    ///
    /// # Errors
    /// As [`Engine::reduce_arrow`].
    pub fn reduce_arrow_chunks<T>(
        &self,
        chunks: &[&PrimitiveArray<T>],
        op: Op,
        nan: NanPolicy,
    ) -> Result<Option<Scalar>>
    where
        T: ArrowPrimitiveType,
        T::Native: Element,
    {
        let kind = StateKind::for_op(op);
        let mut total = State::empty(<T::Native as Element>::DTYPE, kind);
        for chunk in chunks {
            total.merge(&self.arrow_state(chunk, kind)?)?;
        }
        let all_null = total.is_empty() && chunks.iter().any(|c| !c.is_empty());
        if all_null && op != Op::Count {
            return Ok(None);
        }
        total.finalize(op, nan)
    }

    /// `op` over each list of a `ListArray` or `LargeListArray` whose child
    /// is a float32, float64, int32, uint32 or int64 array: one result per
    /// list, as an Arrow array of the op's result type (see
    /// [`crate::dtype`]). A null list, every op but `count` of an all-null
    /// list, and the `mean`, `max` or `min` of an empty list, is a null
    /// slot; null child values are skipped and not counted; NaN follows
    /// `nan`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a child of another type;
    /// [`Error::InvalidPartitions`] for offsets outside the child;
    /// [`Error::Overflow`] for an integer sum outside int64; GPU errors as
    /// for [`Engine::reduce_slice`].
    pub fn reduce_arrow_lists<O: OffsetSizeTrait>(
        &self,
        lists: &GenericListArray<O>,
        op: Op,
        nan: NanPolicy,
    ) -> Result<ArrayRef> {
        let child = lists.values();
        let dtype = child_dtype(child.as_ref(), "the list's child")?;
        let values = match dtype {
            Dtype::F32 => self.list_values(lists, child.as_primitive::<Float32Type>(), op, nan)?,
            Dtype::F64 => self.list_values(lists, child.as_primitive::<Float64Type>(), op, nan)?,
            Dtype::I32 => self.list_values(lists, child.as_primitive::<Int32Type>(), op, nan)?,
            Dtype::U32 => self.list_values(lists, child.as_primitive::<UInt32Type>(), op, nan)?,
            Dtype::I64 => self.list_values(lists, child.as_primitive::<Int64Type>(), op, nan)?,
        };
        to_array(result_dtype(dtype, op), &values)
    }

    fn list_values<O: OffsetSizeTrait, T>(
        &self,
        lists: &GenericListArray<O>,
        child: &PrimitiveArray<T>,
        op: Op,
        nan: NanPolicy,
    ) -> Result<Vec<Option<Scalar>>>
    where
        T: ArrowPrimitiveType,
        T::Native: Element,
    {
        let raw = lists.value_offsets();
        let mut offsets = Vec::with_capacity(raw.len());
        for (i, o) in raw.iter().enumerate() {
            let o = o.as_usize();
            if o > child.len() || offsets.last().is_some_and(|&p| o < p) {
                return Err(Error::InvalidPartitions(format!(
                    "list offset {i} ({o}) is decreasing or past the child's {} values",
                    child.len()
                )));
            }
            offsets.push(o);
        }
        let (first, last) = match (offsets.first(), offsets.last()) {
            (Some(&f), Some(&l)) => (f, l),
            _ => return Ok(Vec::new()),
        };
        // The lists' values: rebased to the first list's start.
        let window = child.slice(first, last - first);
        let (data, parts): (_, Vec<u64>) = match window.nulls().filter(|n| n.null_count() > 0) {
            None => (
                dense(&window),
                offsets.iter().map(|&o| (o - first) as u64).collect(),
            ),
            Some(nulls) => {
                // Offsets over the gathered non-null values.
                let mut valid_before = Vec::with_capacity(window.len() + 1);
                let mut n = 0u64;
                valid_before.push(0);
                for i in 0..window.len() {
                    n += nulls.is_valid(i) as u64;
                    valid_before.push(n);
                }
                let parts = offsets.iter().map(|&o| valid_before[o - first]).collect();
                (dense(&window), parts)
            }
        };
        // Lists with values, all of them null: no value but a count of 0.
        let all_null: Vec<bool> = offsets
            .windows(2)
            .zip(parts.windows(2))
            .map(|(o, p)| o[1] > o[0] && p[1] == p[0])
            .collect();
        let r = self.reduce_slice(&data, op, &Partitions::Offsets(parts), nan)?;
        let mut values = r.values;
        if op != Op::Count {
            for (v, &null) in values.iter_mut().zip(&all_null) {
                if null {
                    *v = None;
                }
            }
        }
        if let Some(nulls) = lists.nulls() {
            for (i, v) in values.iter_mut().enumerate() {
                if nulls.is_null(i) {
                    *v = None;
                }
            }
        }
        Ok(values)
    }

    /// `ops` over `values` per distinct key of an Arrow integer column
    /// (Int32, UInt32 or Int64, unsorted), in one pass: as
    /// [`Engine::reduce_by_key`] over the arrays' values, with their
    /// offsets respected. Null values are skipped and not counted, but
    /// their key still names a group, so a key whose values are all null
    /// has `count` 0 and no value for every other op
    /// ([`Engine::reduce_by_key_with_nulls`]).
    ///
    /// ```
    /// use arrow_array::{Float64Array, Int64Array};
    /// use gpulanes::{Engine, NanPolicy, Op, Scalar};
    /// let engine = Engine::new()?;
    /// let customer = Int64Array::from(vec![7, 3, 7, 5]);
    /// let amount = Float64Array::from(vec![Some(1.5), Some(2.0), Some(2.0), None]);
    /// let g = engine.reduce_arrow_by_key(&customer, &amount, &[Op::Sum, Op::Count], NanPolicy::Propagate)?;
    /// assert_eq!(g.keys, vec![3, 5, 7]);
    /// assert_eq!(g.reductions[0].values[1], None); // customer 5: only a null
    /// assert_eq!(g.reductions[0].values[2], Some(Scalar::F64(3.5)));
    /// assert_eq!(g.reductions[1].counts, vec![1, 0, 2]);
    /// # Ok::<(), gpulanes::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `keys` and `values` differ in length or
    /// a key is null (drop or fill those rows first); otherwise as
    /// [`Engine::reduce_by_key`].
    pub fn reduce_arrow_by_key<K, T>(
        &self,
        keys: &PrimitiveArray<K>,
        values: &PrimitiveArray<T>,
        ops: &[Op],
        nan: NanPolicy,
    ) -> Result<crate::Grouped<K::Native>>
    where
        K: ArrowPrimitiveType,
        K::Native: Key,
        T: ArrowPrimitiveType,
        T::Native: Element,
    {
        if keys.len() != values.len() {
            return Err(Error::InvalidInput(format!(
                "the key column has {} rows and the values {}",
                keys.len(),
                values.len()
            )));
        }
        if keys.null_count() > 0 {
            return Err(Error::InvalidInput(format!(
                "{} of the {} keys are null: drop the rows whose key is null, or fill their keys",
                keys.null_count(),
                keys.len()
            )));
        }
        self.by_key_with_nulls(keys.values(), values, ops, nan)
    }

    /// `ops` over `values` grouped by a dictionary-encoded column's codes, in
    /// one pass ([`Engine::reduce_by_key`] over the codes). Rows whose code
    /// is null are skipped. Null values are skipped and not counted, but
    /// their code still names a group, so a code whose values are all null
    /// has a slot with `count` 0 and null for every other op, as SQL's
    /// `GROUP BY` gives ([`Engine::reduce_by_key_with_nulls`]); no rows at
    /// all give no groups. NaN values follow `nan` as in
    /// [`Engine::reduce_by_key`]. The result's `keys` is a `DictionaryArray`
    /// sharing the input's dictionary, one slot per group in ascending code
    /// order, so each group is named by its dictionary value; `results` holds
    /// one Arrow array per op in the order asked (null where the op has no
    /// value).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `keys` and `values` differ in length, a
    /// code does not fit int64, or `ops` is empty; otherwise as
    /// [`Engine::reduce_by_key`].
    pub fn reduce_arrow_dictionary<K, T>(
        &self,
        keys: &DictionaryArray<K>,
        values: &PrimitiveArray<T>,
        ops: &[Op],
        nan: NanPolicy,
    ) -> Result<ArrowGrouped<K>>
    where
        K: ArrowDictionaryKeyType,
        T: ArrowPrimitiveType,
        T::Native: Element,
    {
        if keys.len() != values.len() {
            return Err(Error::InvalidInput(format!(
                "the dictionary column has {} rows and the values {}",
                keys.len(),
                values.len()
            )));
        }
        let codes = keys.keys();
        let codes_any = codes as &dyn Any;
        let no_null_codes = codes.null_count() == 0;
        let grouped = if let (true, Some(c)) =
            (no_null_codes, codes_any.downcast_ref::<Int32Array>())
        {
            widen_keys(self.by_key_with_nulls(c.values(), values, ops, nan)?)
        } else if let (true, Some(c)) = (no_null_codes, codes_any.downcast_ref::<UInt32Array>()) {
            widen_keys(self.by_key_with_nulls(c.values(), values, ops, nan)?)
        } else if let (true, Some(c)) = (no_null_codes, codes_any.downcast_ref::<Int64Array>()) {
            self.by_key_with_nulls(c.values(), values, ops, nan)?
        } else {
            // Codes widened to int64, rows with a null code dropped.
            let mut k = Vec::with_capacity(values.len());
            let mut v = Vec::with_capacity(values.len());
            let mut valid = Vec::with_capacity(values.len());
            for i in 0..values.len() {
                if codes.is_null(i) {
                    continue;
                }
                let code = codes.value(i).to_i64().ok_or_else(|| {
                    Error::InvalidInput(format!("dictionary code at row {i} does not fit int64"))
                })?;
                k.push(code);
                v.push(values.value(i));
                valid.push(values.is_valid(i));
            }
            let bits = Validity::pack(valid);
            self.reduce_by_key_with_nulls(&k, &v, Validity::new(&bits, 0, k.len())?, ops, nan)?
        };
        let dtype = <T::Native as Element>::DTYPE;
        let group_codes = grouped
            .keys
            .iter()
            .map(|&c| {
                K::Native::from_usize(c as usize).ok_or_else(|| {
                    Error::Internal(format!("group code {c} does not fit the code type"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let group_keys = DictionaryArray::<K>::try_new(
            PrimitiveArray::<K>::from_iter_values(group_codes),
            keys.values().clone(),
        )
        .map_err(|e| Error::Internal(format!("building the group keys: {e}")))?;
        let results = grouped
            .reductions
            .iter()
            .map(|r| to_array(result_dtype(dtype, r.op), &r.values))
            .collect::<Result<Vec<_>>>()?;
        Ok(ArrowGrouped {
            keys: group_keys,
            ops: ops.to_vec(),
            results,
        })
    }
}

impl Engine {
    /// [`Engine::reduce_by_key_with_nulls`] of `keys` and an Arrow array's
    /// values and null buffer.
    fn by_key_with_nulls<K: Key, T>(
        &self,
        keys: &[K],
        values: &PrimitiveArray<T>,
        ops: &[Op],
        nan: NanPolicy,
    ) -> Result<crate::Grouped<K>>
    where
        T: ArrowPrimitiveType,
        T::Native: Element,
    {
        match validity_of(values)? {
            None => self.reduce_by_key(keys, values.values(), ops, nan),
            Some(valid) => self.reduce_by_key_with_nulls(keys, values.values(), valid, ops, nan),
        }
    }
}

/// An Arrow array's null buffer as a [`Validity`], where some slot is null.
pub(crate) fn validity_of<T: ArrowPrimitiveType>(
    values: &PrimitiveArray<T>,
) -> Result<Option<Validity<'_>>> {
    values
        .nulls()
        .filter(|n| n.null_count() > 0)
        .map(|nulls| {
            let bits = nulls.inner();
            Validity::new(bits.values(), bits.offset(), bits.len())
        })
        .transpose()
}

/// Group keys of a keyed reduction widened to int64.
fn widen_keys<K: Key>(g: crate::Grouped<K>) -> crate::Grouped<i64> {
    crate::Grouped {
        keys: g.keys.into_iter().map(|k| k.to_i128() as i64).collect(),
        reductions: g.reductions,
    }
}

/// The result of [`Engine::reduce_arrow_dictionary`].
#[derive(Clone, Debug)]
pub struct ArrowGrouped<K: ArrowDictionaryKeyType> {
    /// One slot per group, ascending by code, sharing the input's
    /// dictionary: `keys.keys()` are the codes, each slot's value the
    /// group's dictionary value.
    pub keys: DictionaryArray<K>,
    /// The ops asked for, in order.
    pub ops: Vec<Op>,
    /// One array per op (`results[i]` for `ops[i]`), one slot per group;
    /// null where the op has no value.
    pub results: Vec<ArrayRef>,
}
