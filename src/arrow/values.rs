//! Value columns of [`Engine::group_record_batch`](crate::Engine::group_record_batch):
//! an Arrow column read as one of the engine's dtypes, and each op's
//! results as an Arrow array of the type SQL and NumPy give.
//!
//! Float32, Float64, Int32, UInt32 and Int64 columns are reduced as they
//! are. Narrower integers are widened exactly first (Int8 and Int16 to
//! Int32, UInt8 and UInt16 to UInt32, Boolean to UInt32 0/1), and UInt64
//! to Int64 where every value fits (a larger one is refused by name).
//! Results follow the engine's types (sums of integers are Int64, means
//! Float64, counts Int64), except that `max` and `min` come back in the
//! column's own type (Int8's max is an Int8, Boolean's max is `true` where
//! some value is, SQL's `bool_or`). Nulls keep their slots: a widened
//! column has the same null buffer.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float32Array, Float64Array, Int8Array, Int16Array, Int32Array,
    Int64Array, UInt8Array, UInt16Array, UInt32Array, UInt64Array,
};
use arrow_schema::DataType;

use super::{natives, result_dtype, to_array};
use crate::dtype::{Dtype, Scalar};
use crate::error::{Error, Result};
use crate::op::Op;

/// A value column as the engine reduces it.
pub(super) enum Values {
    F32(Float32Array),
    F64(Float64Array),
    I32(Int32Array),
    U32(UInt32Array),
    I64(Int64Array),
}

/// A value column read for the engine, and the type it came in.
pub(super) struct ValueColumn {
    pub(super) values: Values,
    own_type: DataType,
}

impl ValueColumn {
    /// Value column `name` (`array`), widened where its type is narrower
    /// than the engine's.
    pub(super) fn read(name: &str, array: &ArrayRef) -> Result<Self> {
        let own_type = array.data_type().clone();
        let values = if let Some(a) = array.as_primitive_opt::<Float32Type>() {
            Values::F32(a.clone())
        } else if let Some(a) = array.as_primitive_opt::<Float64Type>() {
            Values::F64(a.clone())
        } else if let Some(a) = array.as_primitive_opt::<Int32Type>() {
            Values::I32(a.clone())
        } else if let Some(a) = array.as_primitive_opt::<UInt32Type>() {
            Values::U32(a.clone())
        } else if let Some(a) = array.as_primitive_opt::<Int64Type>() {
            Values::I64(a.clone())
        } else if let Some(a) = array.as_primitive_opt::<Int8Type>() {
            Values::I32(a.unary(i32::from))
        } else if let Some(a) = array.as_primitive_opt::<Int16Type>() {
            Values::I32(a.unary(i32::from))
        } else if let Some(a) = array.as_primitive_opt::<UInt8Type>() {
            Values::U32(a.unary(u32::from))
        } else if let Some(a) = array.as_primitive_opt::<UInt16Type>() {
            Values::U32(a.unary(u32::from))
        } else if let Some(a) = array.as_primitive_opt::<UInt64Type>() {
            let big = (0..a.len()).find(|&i| a.is_valid(i) && a.value(i) > i64::MAX as u64);
            if let Some(i) = big {
                return Err(Error::InvalidInput(format!(
                    "value column {name:?} holds {} at row {i}, past the int64 values the engine sums",
                    a.value(i)
                )));
            }
            Values::I64(a.unary(|v| v as i64))
        } else if let Some(a) = array.as_boolean_opt() {
            Values::U32(UInt32Array::new(
                a.values().iter().map(u32::from).collect(),
                a.nulls().cloned(),
            ))
        } else {
            return Err(Error::InvalidInput(format!(
                "value column {name:?} has Arrow type {own_type}: expected a float (Float32, \
                 Float64), integer (Int8 to Int64, UInt8 to UInt64) or Boolean type"
            )));
        };
        Ok(ValueColumn { values, own_type })
    }

    /// The engine dtype the column is reduced as.
    pub(super) fn dtype(&self) -> Dtype {
        match self.values {
            Values::F32(_) => Dtype::F32,
            Values::F64(_) => Dtype::F64,
            Values::I32(_) => Dtype::I32,
            Values::U32(_) => Dtype::U32,
            Values::I64(_) => Dtype::I64,
        }
    }

    /// `op`'s results over this column (one a group; `None` a null slot)
    /// as an Arrow array: the op's result type, `max` and `min` in the
    /// column's own type.
    pub(super) fn result_array(&self, op: Op, values: &[Option<Scalar>]) -> Result<ArrayRef> {
        let t = result_dtype(self.dtype(), op);
        if !matches!(op, Op::Max | Op::Min) || to_array_type(t) == self.own_type {
            return to_array(t, values);
        }
        narrowed(&self.own_type, values)
    }
}

/// The Arrow type [`to_array`] makes for dtype `t`.
fn to_array_type(t: Dtype) -> DataType {
    match t {
        Dtype::F32 => DataType::Float32,
        Dtype::F64 => DataType::Float64,
        Dtype::I32 => DataType::Int32,
        Dtype::U32 => DataType::UInt32,
        Dtype::I64 => DataType::Int64,
    }
}

/// Max or min results of a widened column, back in its type `t`.
fn narrowed(t: &DataType, values: &[Option<Scalar>]) -> Result<ArrayRef> {
    let what = format!("a max or min column of type {t}");
    let int = |s: Scalar| match s {
        Scalar::I32(v) => Some(i64::from(v)),
        Scalar::U32(v) => Some(i64::from(v)),
        Scalar::I64(v) => Some(v),
        _ => None,
    };
    Ok(match t {
        DataType::Int8 => Arc::new(Int8Array::from(natives(&what, values, |s| {
            int(s)?.try_into().ok()
        })?)),
        DataType::Int16 => Arc::new(Int16Array::from(natives(&what, values, |s| {
            int(s)?.try_into().ok()
        })?)),
        DataType::UInt8 => Arc::new(UInt8Array::from(natives(&what, values, |s| {
            int(s)?.try_into().ok()
        })?)),
        DataType::UInt16 => Arc::new(UInt16Array::from(natives(&what, values, |s| {
            int(s)?.try_into().ok()
        })?)),
        DataType::UInt64 => Arc::new(UInt64Array::from(natives(&what, values, |s| {
            int(s)?.try_into().ok()
        })?)),
        DataType::Boolean => Arc::new(BooleanArray::from(natives(
            &what,
            values,
            |s| match int(s)? {
                0 => Some(false),
                1 => Some(true),
                _ => None,
            },
        )?)),
        other => {
            return Err(Error::Internal(format!(
                "no narrow result array of type {other}"
            )));
        }
    })
}
