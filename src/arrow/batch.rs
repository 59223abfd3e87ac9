//! Group-by over an Arrow [`RecordBatch`]: key columns and aggregates named
//! by column, the result a record batch of the distinct keys and one column
//! an aggregate, as SQL's `SELECT k, SUM(a), MAX(b) FROM t GROUP BY k`
//! gives it.
//!
//! The key columns are read once ([`Engine::group_index`]; several key
//! columns combined by [`CompositeKeys`]) and every value column is then
//! reduced by that index in one pass for all its ops. Integer key columns
//! of any width are grouped by value (int8/int16 widened to int32,
//! uint8/uint16 to uint32, uint64 read as int64 where it fits) and come
//! back in their own type; value columns are Float32, Float64, Int32,
//! UInt32 or Int64, with nulls as the module's rules say (skipped and not
//! counted; a key whose values are all null has `count` 0 and null for
//! every other op).

use std::borrow::Cow;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, ArrowPrimitiveType, PrimitiveArray, RecordBatch};

use super::{result_dtype, to_array};
use crate::Engine;
use crate::dtype::{Dtype, Element, Scalar};
use crate::error::{Error, Result};
use crate::keyed::composite::{CompositeKeys, KeyColumn};
use crate::keyed::index::GroupIndex;
use crate::keyed::{Grouped, Key};
use crate::op::{NanPolicy, Op, Reduction};

/// One aggregate of [`Engine::group_record_batch`]: `op` over the column
/// named `column`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Aggregate<'a> {
    /// The value column's name.
    pub column: &'a str,
    /// The op.
    pub op: Op,
}

impl<'a> Aggregate<'a> {
    /// `op` over the column named `column`.
    pub fn new(column: &'a str, op: Op) -> Self {
        Aggregate { column, op }
    }

    /// The result column's name: `op(column)`, as `sum(amount)`.
    pub fn name(&self) -> String {
        format!("{}({})", self.op, self.column)
    }
}

/// A value column's dtype and its reductions, one an op.
type ColumnResults = (Dtype, Vec<Reduction<Scalar>>);

/// A key column as the engine groups it: borrowed where its type is one
/// the engine takes, else widened.
enum Keys<'a> {
    I32(Cow<'a, [i32]>),
    U32(Cow<'a, [u32]>),
    I64(Cow<'a, [i64]>),
}

impl Keys<'_> {
    fn column(&self) -> KeyColumn<'_> {
        match self {
            Keys::I32(k) => KeyColumn::I32(k),
            Keys::U32(k) => KeyColumn::U32(k),
            Keys::I64(k) => KeyColumn::I64(k),
        }
    }
}

fn widened<T: ArrowPrimitiveType, K>(
    a: &PrimitiveArray<T>,
    f: impl Fn(T::Native) -> K,
) -> Cow<'static, [K]>
where
    K: Clone,
{
    Cow::Owned(a.values().iter().map(|&v| f(v)).collect())
}

/// The column named `name`, or an error naming the batch's columns.
fn column<'b>(batch: &'b RecordBatch, name: &str) -> Result<&'b ArrayRef> {
    batch.column_by_name(name).ok_or_else(|| {
        let names: Vec<String> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        Error::InvalidInput(format!("no column named {name:?}: the batch has {names:?}"))
    })
}

/// Key column `name` as the engine groups it.
fn key_column<'a>(name: &str, array: &'a ArrayRef) -> Result<Keys<'a>> {
    if array.null_count() > 0 {
        return Err(Error::InvalidInput(format!(
            "{} of the {} keys of column {name:?} are null: drop the rows whose key is null, or fill their keys",
            array.null_count(),
            array.len()
        )));
    }
    if let Some(a) = array.as_primitive_opt::<Int32Type>() {
        return Ok(Keys::I32(Cow::Borrowed(&a.values()[..])));
    }
    if let Some(a) = array.as_primitive_opt::<UInt32Type>() {
        return Ok(Keys::U32(Cow::Borrowed(&a.values()[..])));
    }
    if let Some(a) = array.as_primitive_opt::<Int64Type>() {
        return Ok(Keys::I64(Cow::Borrowed(&a.values()[..])));
    }
    if let Some(a) = array.as_primitive_opt::<Int8Type>() {
        return Ok(Keys::I32(widened(a, i32::from)));
    }
    if let Some(a) = array.as_primitive_opt::<Int16Type>() {
        return Ok(Keys::I32(widened(a, i32::from)));
    }
    if let Some(a) = array.as_primitive_opt::<UInt8Type>() {
        return Ok(Keys::U32(widened(a, u32::from)));
    }
    if let Some(a) = array.as_primitive_opt::<UInt16Type>() {
        return Ok(Keys::U32(widened(a, u32::from)));
    }
    if let Some(a) = array.as_primitive_opt::<UInt64Type>() {
        if let Some(&big) = a.values().iter().find(|&&v| v > i64::MAX as u64) {
            return Err(Error::InvalidInput(format!(
                "key column {name:?} holds {big}, past the int64 keys the engine groups by"
            )));
        }
        return Ok(Keys::I64(widened(a, |v| v as i64)));
    }
    Err(Error::InvalidInput(format!(
        "key column {name:?} has Arrow type {}: expected an integer type (Int8 to Int64, UInt8 to UInt64)",
        array.data_type()
    )))
}

/// The distinct keys (`key(i)` for `i` below `len`, each a value of
/// `like`'s type) as an array of `like`'s type.
fn keys_like(like: &dyn Array, len: usize, key: impl Fn(usize) -> i128) -> Result<ArrayRef> {
    macro_rules! as_type {
        ($t:ty, $n:ty) => {
            if like.data_type() == &<$t>::DATA_TYPE {
                return Ok(std::sync::Arc::new(PrimitiveArray::<$t>::from_iter_values(
                    (0..len).map(|i| key(i) as $n),
                )));
            }
        };
    }
    as_type!(Int8Type, i8);
    as_type!(Int16Type, i16);
    as_type!(Int32Type, i32);
    as_type!(Int64Type, i64);
    as_type!(UInt8Type, u8);
    as_type!(UInt16Type, u16);
    as_type!(UInt32Type, u32);
    as_type!(UInt64Type, u64);
    Err(Error::Internal(format!(
        "no key array of type {}",
        like.data_type()
    )))
}

/// The value columns the aggregates read, each once, with its ops (each
/// once), in order of first mention.
fn ops_by_column<'a>(aggregates: &[Aggregate<'a>]) -> Vec<(&'a str, Vec<Op>)> {
    let mut out: Vec<(&str, Vec<Op>)> = Vec::new();
    for a in aggregates {
        match out.iter_mut().find(|(c, _)| *c == a.column) {
            Some((_, ops)) if !ops.contains(&a.op) => ops.push(a.op),
            Some(_) => {}
            None => out.push((a.column, vec![a.op])),
        }
    }
    out
}

impl Engine {
    /// Groups `batch` by its columns named `keys` and computes each of
    /// `aggregates` per distinct key (tuple): a record batch of the key
    /// columns (distinct keys ascending, tuples in lexicographic order, each
    /// column in its own type) followed by one column an aggregate, named
    /// as [`Aggregate::name`] gives (`sum(amount)`; an aggregate asked for
    /// twice gives two columns of that name), typed as the op's
    /// result (see [`crate::dtype`]) and null where a key has no value. The
    /// keys are read once and each value column is reduced once for all its
    /// ops; the bits are those of [`Engine::reduce_by_key`] over the same
    /// rows (module docs: types and nulls).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use arrow_array::{Array, Float64Array, Int64Array, RecordBatch, UInt8Array};
    /// use gpulanes::{Aggregate, Engine, NanPolicy, Op};
    /// let engine = Engine::new()?;
    /// let batch = RecordBatch::try_from_iter([
    ///     ("store", Arc::new(UInt8Array::from(vec![2, 1, 2, 1])) as Arc<dyn Array>),
    ///     ("amount", Arc::new(Float64Array::from(vec![Some(1.5), None, Some(2.0), Some(4.0)]))),
    /// ]).unwrap();
    /// let out = engine.group_record_batch(
    ///     &batch,
    ///     &["store"],
    ///     &[Aggregate::new("amount", Op::Sum), Aggregate::new("amount", Op::Count)],
    ///     NanPolicy::Propagate,
    /// )?;
    /// assert_eq!(out.schema().field(1).name(), "sum(amount)");
    /// assert_eq!(out.column(0).as_ref(), &UInt8Array::from(vec![1, 2]) as &dyn Array);
    /// assert_eq!(out.column(1).as_ref(), &Float64Array::from(vec![4.0, 3.5]) as &dyn Array);
    /// assert_eq!(out.column(2).as_ref(), &Int64Array::from(vec![1, 2]) as &dyn Array);
    /// # Ok::<(), gpulanes::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for no key columns or no aggregates, a
    /// column the batch lacks (the error names the batch's columns), a key
    /// column that is not of an integer type or has nulls, uint64 keys past
    /// int64, or a value column of another type; otherwise as
    /// [`Engine::reduce_by_key`].
    pub fn group_record_batch(
        &self,
        batch: &RecordBatch,
        keys: &[&str],
        aggregates: &[Aggregate<'_>],
        nan: NanPolicy,
    ) -> Result<RecordBatch> {
        if keys.is_empty() {
            return Err(Error::InvalidInput("no key columns given".into()));
        }
        if aggregates.is_empty() {
            return Err(Error::InvalidInput("no aggregates given".into()));
        }
        let key_arrays = keys
            .iter()
            .map(|&name| column(batch, name))
            .collect::<Result<Vec<_>>>()?;
        let by_column = ops_by_column(aggregates);
        let values = by_column
            .iter()
            .map(|(name, _)| column(batch, name))
            .collect::<Result<Vec<_>>>()?;
        for (array, (name, _)) in values.iter().zip(&by_column) {
            super::child_dtype(array.as_ref(), &format!("value column {name:?}"))?;
        }
        let key_columns = keys
            .iter()
            .zip(&key_arrays)
            .map(|(&name, array)| key_column(name, array))
            .collect::<Result<Vec<_>>>()?;
        let (out_keys, reduced) = match &key_columns[..] {
            [Keys::I32(k)] => self.grouped_batch(&key_arrays, k, &by_column, &values, nan)?,
            [Keys::U32(k)] => self.grouped_batch(&key_arrays, k, &by_column, &values, nan)?,
            [Keys::I64(k)] => self.grouped_batch(&key_arrays, k, &by_column, &values, nan)?,
            several => {
                let columns: Vec<KeyColumn<'_>> = several.iter().map(Keys::column).collect();
                let composite = CompositeKeys::new(&columns)?;
                let index = self.group_index(composite.keys())?;
                let reduced = self.reduce_columns(&index, &by_column, &values, nan)?;
                let decoded = composite.columns_of(index.keys())?;
                let out_keys = key_arrays
                    .iter()
                    .zip(&decoded)
                    .map(|(like, k)| keys_like(like.as_ref(), k.len(), |i| k.key(i)))
                    .collect::<Result<Vec<_>>>()?;
                (out_keys, reduced)
            }
        };
        let mut columns: Vec<(String, ArrayRef, bool)> = keys
            .iter()
            .zip(out_keys)
            .map(|(&name, k)| (name.to_string(), k, false))
            .collect();
        for a in aggregates {
            let c = by_column
                .iter()
                .position(|(name, _)| *name == a.column)
                .expect("every aggregate's column was reduced");
            let (dtype, reductions) = &reduced[c];
            let r = reductions
                .iter()
                .find(|r| r.op == a.op)
                .expect("every aggregate's op was computed");
            columns.push((
                a.name(),
                to_array(result_dtype(*dtype, a.op), &r.values)?,
                true,
            ));
        }
        RecordBatch::try_from_iter_with_nullable(columns)
            .map_err(|e| Error::Internal(format!("building the result batch: {e}")))
    }

    /// The group-by of [`Engine::group_record_batch`] by one key column
    /// of type `K`: its distinct keys as an array of the input's type, and
    /// each value column's dtype and reductions.
    fn grouped_batch<K: Key>(
        &self,
        key_arrays: &[&ArrayRef],
        keys: &[K],
        by_column: &[(&str, Vec<Op>)],
        values: &[&ArrayRef],
        nan: NanPolicy,
    ) -> Result<(Vec<ArrayRef>, Vec<ColumnResults>)> {
        let index = self.group_index(keys)?;
        let reduced = self.reduce_columns(&index, by_column, values, nan)?;
        let distinct = index.keys();
        let out = keys_like(key_arrays[0].as_ref(), distinct.len(), |i| {
            distinct[i].to_i128()
        })?;
        Ok((vec![out], reduced))
    }

    /// Each value column's ops by `index`: its dtype and reductions.
    fn reduce_columns<K: Key>(
        &self,
        index: &GroupIndex<'_, K>,
        by_column: &[(&str, Vec<Op>)],
        values: &[&ArrayRef],
        nan: NanPolicy,
    ) -> Result<Vec<ColumnResults>> {
        by_column
            .iter()
            .zip(values)
            .map(|((name, ops), array)| {
                macro_rules! by {
                    ($t:ty) => {
                        if let Some(a) = array.as_primitive_opt::<$t>() {
                            let g = self.by_index_with_nulls(index, a, ops, nan)?;
                            return Ok((<<$t as ArrowPrimitiveType>::Native as Element>::DTYPE, g.reductions));
                        }
                    };
                }
                by!(Float32Type);
                by!(Float64Type);
                by!(Int32Type);
                by!(UInt32Type);
                by!(Int64Type);
                Err(Error::InvalidInput(format!(
                    "value column {name:?} has Arrow type {}: expected Float32, Float64, Int32, UInt32 or Int64",
                    array.data_type()
                )))
            })
            .collect()
    }

    /// [`Engine::reduce_by_index_with_nulls`] of an Arrow array's values
    /// and null buffer.
    fn by_index_with_nulls<K: Key, T>(
        &self,
        index: &GroupIndex<'_, K>,
        values: &PrimitiveArray<T>,
        ops: &[Op],
        nan: NanPolicy,
    ) -> Result<Grouped<K>>
    where
        T: ArrowPrimitiveType,
        T::Native: Element,
    {
        match super::validity_of(values)? {
            None => self.reduce_by_index(index, values.values(), ops, nan),
            Some(valid) => self.reduce_by_index_with_nulls(index, values.values(), valid, ops, nan),
        }
    }
}
