//! Group-by over an Arrow [`RecordBatch`]: key columns and aggregates named
//! by column, the result a record batch of the distinct keys and one column
//! an aggregate, as SQL's `SELECT k, SUM(a), MAX(b) FROM t GROUP BY k`
//! gives it.
//!
//! The key columns are read once ([`Engine::group_index`]; several key
//! columns combined by [`CompositeKeys`]) and every value column is then
//! reduced by that index in one pass for all its ops. Key columns of
//! integer, boolean, temporal, float, string and binary types, and
//! dictionaries of them, are grouped by value and come back in their own
//! type (`keys` module); value columns of float, integer and boolean types
//! are reduced exactly (`values` module), with nulls as the module's rules
//! say (skipped and not counted; a key whose values are all null has
//! `count` 0 and null for every other op).

use arrow_array::{ArrayRef, ArrowPrimitiveType, PrimitiveArray, RecordBatch};

use super::keys::{KeyInput, Keys};
use super::values::{ValueColumn, Values};
use crate::Engine;
use crate::dtype::{Element, Scalar};
use crate::error::{Error, Result};
use crate::keyed::composite::{CompositeKeys, KeyColumn};
use crate::keyed::index::GroupIndex;
use crate::keyed::{Grouped, Key};
use crate::op::{NanPolicy, Op, Reduction};

/// Each value column's reductions, one an op.
type ColumnResults = Vec<Vec<Reduction<Scalar>>>;

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
    /// column with nulls or NaN, of a type no key is read from, or with
    /// uint64 keys past int64, a value column of another type or with
    /// uint64 values past int64; otherwise as [`Engine::reduce_by_key`].
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
            .map(|(name, _)| ValueColumn::read(name, column(batch, name)?))
            .collect::<Result<Vec<_>>>()?;
        let key_inputs = keys
            .iter()
            .zip(&key_arrays)
            .map(|(&name, array)| KeyInput::read(name, array))
            .collect::<Result<Vec<_>>>()?;
        let (out_keys, reduced) = match &key_inputs[..] {
            [one] => match &one.keys {
                Keys::I32(k) => self.grouped_batch(one, k, &by_column, &values, nan)?,
                Keys::U32(k) => self.grouped_batch(one, k, &by_column, &values, nan)?,
                Keys::I64(k) => self.grouped_batch(one, k, &by_column, &values, nan)?,
            },
            several => {
                let columns: Vec<KeyColumn<'_>> = several.iter().map(|k| k.keys.column()).collect();
                let composite = CompositeKeys::new(&columns)?;
                let index = self.group_index(composite.keys())?;
                let reduced = self.reduce_columns(&index, &by_column, &values, nan)?;
                let decoded = composite.columns_of(index.keys())?;
                let out_keys = several
                    .iter()
                    .zip(&decoded)
                    .map(|(input, k)| input.decode(k.len(), |i| k.key(i)))
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
            let r = reduced[c]
                .iter()
                .find(|r| r.op == a.op)
                .expect("every aggregate's op was computed");
            columns.push((a.name(), values[c].result_array(a.op, &r.values)?, true));
        }
        RecordBatch::try_from_iter_with_nullable(columns)
            .map_err(|e| Error::Internal(format!("building the result batch: {e}")))
    }

    /// The group-by of [`Engine::group_record_batch`] by one key column
    /// (`input`, whose keys are `keys`): its distinct keys as an array of
    /// the column's type, and each value column's reductions.
    fn grouped_batch<K: Key>(
        &self,
        input: &KeyInput<'_>,
        keys: &[K],
        by_column: &[(&str, Vec<Op>)],
        values: &[ValueColumn],
        nan: NanPolicy,
    ) -> Result<(Vec<ArrayRef>, ColumnResults)> {
        let index = self.group_index(keys)?;
        let reduced = self.reduce_columns(&index, by_column, values, nan)?;
        let distinct = index.keys();
        let out = input.decode(distinct.len(), |i| distinct[i].to_i128())?;
        Ok((vec![out], reduced))
    }

    /// Each value column's ops by `index`, one reduction an op.
    fn reduce_columns<K: Key>(
        &self,
        index: &GroupIndex<'_, K>,
        by_column: &[(&str, Vec<Op>)],
        values: &[ValueColumn],
        nan: NanPolicy,
    ) -> Result<ColumnResults> {
        by_column
            .iter()
            .zip(values)
            .map(|((_, ops), column)| {
                let g = match &column.values {
                    Values::F32(a) => self.by_index_with_nulls(index, a, ops, nan)?,
                    Values::F64(a) => self.by_index_with_nulls(index, a, ops, nan)?,
                    Values::I32(a) => self.by_index_with_nulls(index, a, ops, nan)?,
                    Values::U32(a) => self.by_index_with_nulls(index, a, ops, nan)?,
                    Values::I64(a) => self.by_index_with_nulls(index, a, ops, nan)?,
                };
                Ok(g.reductions)
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
