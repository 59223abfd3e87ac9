//! Key columns of [`Engine::group_record_batch`](crate::Engine::group_record_batch):
//! an Arrow column of any key type read as the integer keys the engine
//! groups by, and the distinct keys turned back into an Arrow array of the
//! column's own type.
//!
//! - Integers of any width: the values themselves (int8/int16 widened to
//!   int32, uint8/uint16 to uint32, uint64 read as int64 where it fits).
//! - Boolean: 0 and 1.
//! - Dates, times, timestamps (any unit, any time zone) and durations: their
//!   integer ticks.
//! - Float32 and Float64: the value's bits with a negative value's
//!   magnitude bits inverted, an integer that orders as the float does and
//!   maps back to it exactly; -0.0 is read as 0.0 (they compare equal), NaN
//!   is refused.
//! - Strings and binaries (plain, large and view): each value's rank among
//!   the column's distinct values in byte order (for UTF-8, code point
//!   order), from one hash pass over the rows and one sort of the distinct
//!   values.
//! - Dictionaries of any of these: each row takes its dictionary value's
//!   key, so codes naming equal values are one group, and the keys come back
//!   as the values, not the codes.
//!
//! Null keys are refused by name, as are NaN float keys and other types.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    ByteArrayType, ByteViewType, Date32Type, Date64Type, DurationMicrosecondType,
    DurationMillisecondType, DurationNanosecondType, DurationSecondType, Float32Type, Float64Type,
    Int8Type, Int16Type, Int32Type, Int64Type, Time32MillisecondType, Time32SecondType,
    Time64MicrosecondType, Time64NanosecondType, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BinaryViewArray, BooleanArray, GenericByteArray,
    GenericByteViewArray, LargeBinaryArray, LargeStringArray, PrimitiveArray, StringArray,
    StringViewArray,
};
use arrow_schema::DataType;

use crate::error::{Error, Result};
use crate::keyed::composite::KeyColumn;

/// A key column's integer keys, one a row: borrowed where the column's
/// values are keys of a type the engine groups, else made.
pub(super) enum Keys<'a> {
    I32(Cow<'a, [i32]>),
    U32(Cow<'a, [u32]>),
    I64(Cow<'a, [i64]>),
}

impl Keys<'_> {
    /// The keys as one column of a [`crate::CompositeKeys`].
    pub(super) fn column(&self) -> KeyColumn<'_> {
        match self {
            Keys::I32(k) => KeyColumn::I32(k),
            Keys::U32(k) => KeyColumn::U32(k),
            Keys::I64(k) => KeyColumn::I64(k),
        }
    }

    /// The keys of the rows whose dictionary codes are `codes` (each
    /// below the keys' length, as arrow-rs's normalized keys are).
    fn gathered(&self, codes: &[usize]) -> Keys<'static> {
        fn by<K: Copy>(keys: &[K], codes: &[usize]) -> Cow<'static, [K]> {
            Cow::Owned(codes.iter().map(|&c| keys[c]).collect())
        }
        match self {
            Keys::I32(k) => Keys::I32(by(k, codes)),
            Keys::U32(k) => Keys::U32(by(k, codes)),
            Keys::I64(k) => Keys::I64(by(k, codes)),
        }
    }
}

/// How a column's keys turn back into its values.
enum Decode<'a> {
    /// Integer, boolean and temporal columns: the key is the value, of
    /// this type (time zone included).
    Value(DataType),
    /// Float columns: the key is the value's ordered bits.
    Float(DataType),
    /// String and binary columns of this type: the key is a rank into
    /// these values, ascending.
    Ranked(DataType, Vec<&'a [u8]>),
}

/// One key column of a group-by: the keys the engine groups by, and how
/// they turn back into the column's values.
pub(super) struct KeyInput<'a> {
    pub(super) keys: Keys<'a>,
    decode: Decode<'a>,
}

/// Whether any of `rows` of a float column holds NaN (false for columns of
/// other types).
fn any_nan(values: &dyn Array, mut rows: impl Iterator<Item = usize>) -> bool {
    match values.data_type() {
        DataType::Float64 => {
            let v = values.as_primitive::<Float64Type>();
            rows.any(|i| v.value(i).is_nan())
        }
        DataType::Float32 => {
            let v = values.as_primitive::<Float32Type>();
            rows.any(|i| v.value(i).is_nan())
        }
        _ => false,
    }
}

/// An integer that orders as float64 `v` does (-0.0 as 0.0), and back.
fn f64_order(v: f64) -> i64 {
    let bits = (v + 0.0).to_bits() as i64;
    if bits < 0 { bits ^ i64::MAX } else { bits }
}

fn f64_from_order(k: i64) -> f64 {
    f64::from_bits((if k < 0 { k ^ i64::MAX } else { k }) as u64)
}

/// An integer that orders as float32 `v` does (-0.0 as 0.0), and back.
fn f32_order(v: f32) -> i32 {
    let bits = (v + 0.0).to_bits() as i32;
    if bits < 0 { bits ^ i32::MAX } else { bits }
}

fn f32_from_order(k: i32) -> f32 {
    f32::from_bits((if k < 0 { k ^ i32::MAX } else { k }) as u32)
}

/// Each value's rank among the distinct values (byte order), and the
/// distinct values ascending.
fn ranked<'a>(values: impl Iterator<Item = &'a [u8]>, len: usize) -> (Vec<u32>, Vec<&'a [u8]>) {
    let mut ids: HashMap<&[u8], u32, foldhash::fast::RandomState> = HashMap::default();
    let mut first: Vec<&[u8]> = Vec::new();
    let mut row_ids = Vec::with_capacity(len);
    for v in values {
        let next = first.len() as u32;
        let id = *ids.entry(v).or_insert_with(|| {
            first.push(v);
            next
        });
        row_ids.push(id);
    }
    let mut order: Vec<u32> = (0..first.len() as u32).collect();
    order.sort_unstable_by_key(|&i| first[i as usize]);
    let mut rank = vec![0u32; first.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i as usize] = r as u32;
    }
    let distinct = order.iter().map(|&i| first[i as usize]).collect();
    (
        row_ids.into_iter().map(|id| rank[id as usize]).collect(),
        distinct,
    )
}

fn ranked_bytes<T: ByteArrayType>(a: &GenericByteArray<T>) -> (Vec<u32>, Vec<&[u8]>)
where
    T::Native: AsRef<[u8]>,
{
    ranked((0..a.len()).map(|i| a.value(i).as_ref()), a.len())
}

fn ranked_views<T: ByteViewType + ?Sized>(a: &GenericByteViewArray<T>) -> (Vec<u32>, Vec<&[u8]>)
where
    T::Native: AsRef<[u8]>,
{
    ranked((0..a.len()).map(|i| a.value(i).as_ref()), a.len())
}

fn widened<T: arrow_array::ArrowPrimitiveType, K>(
    a: &PrimitiveArray<T>,
    f: impl Fn(T::Native) -> K,
) -> Cow<'static, [K]>
where
    K: Clone,
{
    Cow::Owned(a.values().iter().map(|&v| f(v)).collect())
}

impl<'a> KeyInput<'a> {
    /// Key column `name` (`array`) as the engine groups it.
    pub(super) fn read(name: &str, array: &'a ArrayRef) -> Result<Self> {
        Self::read_entries(name, array, true)
    }

    /// `array`'s keys; `strict` refuses null and NaN ones, where a
    /// dictionary's values are read without it (an entry no row names may
    /// be null or NaN: the dictionary checks the entries its rows name).
    fn read_entries(name: &str, array: &'a ArrayRef, strict: bool) -> Result<Self> {
        let null_keys = |nulls: usize, len: usize| {
            Error::InvalidInput(format!(
                "{nulls} of the {len} keys of column {name:?} are null: drop the rows whose key is null, or fill their keys"
            ))
        };
        if strict && array.null_count() > 0 {
            return Err(null_keys(array.null_count(), array.len()));
        }
        let data_type = array.data_type().clone();
        let value = |keys| {
            Ok(KeyInput {
                keys,
                decode: Decode::Value(data_type.clone()),
            })
        };
        macro_rules! native {
            ($variant:ident: $($t:ty),+) => {
                $(if let Some(a) = array.as_primitive_opt::<$t>() {
                    return value(Keys::$variant(Cow::Borrowed(&a.values()[..])));
                })+
            };
        }
        native!(I32: Int32Type, Date32Type, Time32SecondType, Time32MillisecondType);
        native!(U32: UInt32Type);
        native!(I64: Int64Type, Date64Type, Time64MicrosecondType, Time64NanosecondType,
            TimestampSecondType, TimestampMillisecondType, TimestampMicrosecondType,
            TimestampNanosecondType, DurationSecondType, DurationMillisecondType,
            DurationMicrosecondType, DurationNanosecondType);
        if let Some(a) = array.as_primitive_opt::<Int8Type>() {
            return value(Keys::I32(widened(a, i32::from)));
        }
        if let Some(a) = array.as_primitive_opt::<Int16Type>() {
            return value(Keys::I32(widened(a, i32::from)));
        }
        if let Some(a) = array.as_primitive_opt::<UInt8Type>() {
            return value(Keys::U32(widened(a, u32::from)));
        }
        if let Some(a) = array.as_primitive_opt::<UInt16Type>() {
            return value(Keys::U32(widened(a, u32::from)));
        }
        if let Some(a) = array.as_primitive_opt::<UInt64Type>() {
            if let Some(&big) = a.values().iter().find(|&&v| v > i64::MAX as u64) {
                return Err(Error::InvalidInput(format!(
                    "key column {name:?} holds {big}, past the int64 keys the engine groups by"
                )));
            }
            return value(Keys::I64(widened(a, |v| v as i64)));
        }
        if let Some(a) = array.as_boolean_opt() {
            return value(Keys::U32(Cow::Owned(
                a.values().iter().map(u32::from).collect(),
            )));
        }
        let nan_keys = || {
            Error::InvalidInput(format!(
                "key column {name:?} holds NaN: NaN keys are not grouped; drop or fill them"
            ))
        };
        if strict && any_nan(array, 0..array.len()) {
            return Err(nan_keys());
        }
        if let Some(a) = array.as_primitive_opt::<Float64Type>() {
            return Ok(KeyInput {
                keys: Keys::I64(widened(a, f64_order)),
                decode: Decode::Float(data_type),
            });
        }
        if let Some(a) = array.as_primitive_opt::<Float32Type>() {
            return Ok(KeyInput {
                keys: Keys::I32(widened(a, f32_order)),
                decode: Decode::Float(data_type),
            });
        }
        let ranks = match &data_type {
            DataType::Utf8 => Some(ranked_bytes(array.as_string::<i32>())),
            DataType::LargeUtf8 => Some(ranked_bytes(array.as_string::<i64>())),
            DataType::Binary => Some(ranked_bytes(array.as_binary::<i32>())),
            DataType::LargeBinary => Some(ranked_bytes(array.as_binary::<i64>())),
            DataType::Utf8View => Some(ranked_views(array.as_string_view())),
            DataType::BinaryView => Some(ranked_views(array.as_binary_view())),
            _ => None,
        };
        if let Some((ids, distinct)) = ranks {
            return Ok(KeyInput {
                keys: Keys::U32(Cow::Owned(ids)),
                decode: Decode::Ranked(data_type, distinct),
            });
        }
        if let Some(dictionary) = array.as_any_dictionary_opt() {
            let values = dictionary.values();
            let codes = if values.is_empty() {
                Vec::new()
            } else {
                dictionary.normalized_keys()
            };
            if values.null_count() > 0 {
                let named = codes.iter().filter(|&&c| values.is_null(c)).count();
                if named > 0 {
                    return Err(null_keys(named, array.len()));
                }
            }
            if any_nan(values, codes.iter().copied()) {
                return Err(nan_keys());
            }
            let entries = KeyInput::read_entries(name, values, false)?;
            return Ok(KeyInput {
                keys: entries.keys.gathered(&codes),
                decode: entries.decode,
            });
        }
        Err(Error::InvalidInput(format!(
            "key column {name:?} has Arrow type {data_type}: expected an integer, Boolean, \
             date, time, timestamp, duration, Float32, Float64, string or binary type, \
             or a dictionary of one"
        )))
    }

    /// The values of the distinct keys `key(i)` (`i` below `len`, each a
    /// key this column gave), as an array of the column's type (a
    /// dictionary column's value type).
    pub(super) fn decode(&self, len: usize, key: impl Fn(usize) -> i128) -> Result<ArrayRef> {
        let keys = (0..len).map(&key);
        match &self.decode {
            Decode::Value(t) => values_of(t, len, key),
            Decode::Float(DataType::Float64) => {
                Ok(Arc::new(PrimitiveArray::<Float64Type>::from_iter_values(
                    keys.map(|k| f64_from_order(k as i64)),
                )))
            }
            Decode::Float(_) => Ok(Arc::new(PrimitiveArray::<Float32Type>::from_iter_values(
                keys.map(|k| f32_from_order(k as i32)),
            ))),
            Decode::Ranked(t, distinct) => {
                let bytes = keys
                    .map(|k| {
                        usize::try_from(k)
                            .ok()
                            .and_then(|r| distinct.get(r).copied())
                            .ok_or_else(|| Error::Internal(format!("no distinct key of rank {k}")))
                    })
                    .collect::<Result<Vec<&[u8]>>>()?;
                let text = || {
                    bytes
                        .iter()
                        .map(|b| {
                            std::str::from_utf8(b).map_err(|e| {
                                Error::Internal(format!("a string key is not UTF-8: {e}"))
                            })
                        })
                        .collect::<Result<Vec<&str>>>()
                };
                Ok(match t {
                    DataType::Utf8 => Arc::new(StringArray::from_iter_values(text()?)),
                    DataType::LargeUtf8 => Arc::new(LargeStringArray::from_iter_values(text()?)),
                    DataType::Utf8View => Arc::new(StringViewArray::from_iter_values(text()?)),
                    DataType::Binary => Arc::new(BinaryArray::from_iter_values(bytes)),
                    DataType::LargeBinary => Arc::new(LargeBinaryArray::from_iter_values(bytes)),
                    _ => Arc::new(BinaryViewArray::from_iter_values(bytes)),
                })
            }
        }
    }
}

/// An array of type `t` (an integer, boolean or temporal type) holding
/// `key(i)` for `i` below `len`.
fn values_of(t: &DataType, len: usize, key: impl Fn(usize) -> i128) -> Result<ArrayRef> {
    macro_rules! as_type {
        ($($t:ty),+) => {
            $(if std::mem::discriminant(t) == std::mem::discriminant(&<$t as arrow_array::ArrowPrimitiveType>::DATA_TYPE)
                && PrimitiveArray::<$t>::is_compatible(t)
            {
                return Ok(Arc::new(
                    PrimitiveArray::<$t>::from_iter_values(
                        (0..len).map(|i| key(i) as <$t as arrow_array::ArrowPrimitiveType>::Native),
                    )
                    .with_data_type(t.clone()),
                ));
            })+
        };
    }
    as_type!(
        Int8Type,
        Int16Type,
        Int32Type,
        Int64Type,
        UInt8Type,
        UInt16Type,
        UInt32Type,
        UInt64Type,
        Date32Type,
        Date64Type,
        Time32SecondType,
        Time32MillisecondType,
        Time64MicrosecondType,
        Time64NanosecondType,
        TimestampSecondType,
        TimestampMillisecondType,
        TimestampMicrosecondType,
        TimestampNanosecondType,
        DurationSecondType,
        DurationMillisecondType,
        DurationMicrosecondType,
        DurationNanosecondType
    );
    if t == &DataType::Boolean {
        return Ok(Arc::new(BooleanArray::from_iter(
            (0..len).map(|i| Some(key(i) != 0)),
        )));
    }
    Err(Error::Internal(format!("no key array of type {t}")))
}
