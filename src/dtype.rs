//! The element types the engine reduces, and the Rust types that carry them.
//!
//! | dtype     | NumPy  | sum        | mean  | max/min   | grid of the exact sum |
//! |-----------|--------|------------|-------|-----------|-----------------------|
//! | `F32`     | `<f4`  | float32    | float32 | float32 | 2^-149                |
//! | `F64`     | `<f8`  | float64    | float64 | float64 | 2^-1074               |
//! | `I32`     | `<i4`  | int64      | float64 | int32   | 1                     |
//! | `U32`     | `<u4`  | int64      | float64 | uint32  | 1                     |
//! | `I64`     | `<i8`  | int64      | float64 | int64   | 1                     |
//!
//! Result types follow NumPy: float sums keep the input's type, integer
//! sums are int64 (a sum outside int64 is [`crate::Error::Overflow`]),
//! means of integers are float64.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// An element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    F32,
    F64,
    I32,
    U32,
    I64,
}

impl Dtype {
    /// Every dtype, in CLI order.
    pub const ALL: [Dtype; 5] = [Dtype::F32, Dtype::F64, Dtype::I32, Dtype::U32, Dtype::I64];

    /// The short name (`float32`, `float64`, `int32`, `uint32`, `int64`).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
            Dtype::I32 => "int32",
            Dtype::U32 => "uint32",
            Dtype::I64 => "int64",
        }
    }

    /// NumPy's little-endian type string (`<f4`, ...).
    pub fn numpy_descr(self) -> &'static str {
        match self {
            Dtype::F32 => "<f4",
            Dtype::F64 => "<f8",
            Dtype::I32 => "<i4",
            Dtype::U32 => "<u4",
            Dtype::I64 => "<i8",
        }
    }

    /// A stable number per dtype (0 float32, 1 float64, 2 int32, 3 uint32,
    /// 4 int64): the dtype code of serialised states, and an index.
    pub fn code(self) -> u8 {
        match self {
            Dtype::F32 => 0,
            Dtype::F64 => 1,
            Dtype::I32 => 2,
            Dtype::U32 => 3,
            Dtype::I64 => 4,
        }
    }

    /// The dtype of a serialised code ([`Dtype::code`]), `None` for none.
    pub(crate) fn from_code(code: u8) -> Option<Dtype> {
        Dtype::ALL.into_iter().find(|d| d.code() == code)
    }

    /// Bytes per value.
    pub fn size(self) -> u64 {
        4 * self.words()
    }

    /// 32-bit words per value (the unit the kernels and plans count in).
    pub(crate) fn words(self) -> u64 {
        match self {
            Dtype::F64 | Dtype::I64 => 2,
            _ => 1,
        }
    }

    /// True for float32 and float64.
    pub fn is_float(self) -> bool {
        matches!(self, Dtype::F32 | Dtype::F64)
    }

    /// 32-bit limbs of the exact accumulator: the widest exact sum plus 64
    /// bits of headroom for the count and a sign bit.
    pub(crate) fn limbs(self) -> usize {
        match self {
            // 277 bits of float32 range on the 2^-149 grid.
            Dtype::F32 => 11,
            // 2098 bits of float64 range on the 2^-1074 grid.
            Dtype::F64 => 68,
            Dtype::I32 | Dtype::U32 | Dtype::I64 => 4,
        }
    }

    /// Binary exponent of the accumulator's lowest bit.
    pub(crate) fn grid_exponent(self) -> i32 {
        match self {
            Dtype::F32 => -149,
            Dtype::F64 => -1074,
            _ => 0,
        }
    }

    /// 32-bit words of one GPU partial (limbs, count, flags, key; padded to
    /// a size that divides or is divided by the binding alignment).
    pub(crate) fn partial_words(self) -> usize {
        match self {
            Dtype::F64 => 80,
            _ => 16,
        }
    }

    /// Bytes of one GPU partial.
    pub(crate) fn partial_bytes(self) -> u64 {
        self.partial_words() as u64 * 4
    }

    /// The dtype of a NumPy type string, if it is one the engine takes.
    pub fn from_numpy_descr(descr: &str) -> Option<Dtype> {
        Dtype::ALL.into_iter().find(|d| d.numpy_descr() == descr)
    }

    /// The dtype of a `.npy` header's `descr`. Only the little-endian
    /// descriptors NumPy writes are accepted: other byte orders, other
    /// types and other spellings (`'float32'`, `'=f4'`) are an error naming
    /// the descriptor.
    pub fn from_descr(descr: &str) -> Result<Dtype, String> {
        Dtype::from_numpy_descr(descr).ok_or_else(|| {
            format!("unsupported dtype {descr:?} (supported: '<f4', '<f8', '<i4', '<i8', '<u4')")
        })
    }

    /// NumPy's descriptor, e.g. `"<f4"` (as [`Dtype::numpy_descr`]).
    pub fn descr(self) -> &'static str {
        self.numpy_descr()
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Dtype {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let t = s.trim().to_ascii_lowercase();
        let alias = match t.as_str() {
            "f4" | "f32" => Some(Dtype::F32),
            "f8" | "f64" => Some(Dtype::F64),
            "i4" | "i32" => Some(Dtype::I32),
            "u4" | "u32" => Some(Dtype::U32),
            "i8" | "i64" => Some(Dtype::I64),
            _ => None,
        };
        alias
            .or_else(|| Dtype::ALL.into_iter().find(|d| d.name() == t))
            .or_else(|| Dtype::from_numpy_descr(&t))
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "unknown dtype {s:?}: expected float32, float64, int32, uint32 or int64"
                ))
            })
    }
}

/// A Rust type the engine reduces: `f32`, `f64`, `i32`, `u32`, `i64`.
pub trait Element:
    bytemuck::Pod + Send + Sync + 'static + sealed::Sealed + crate::npy::LeValue
{
    /// Its dtype.
    const DTYPE: Dtype;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
    impl Sealed for i32 {}
    impl Sealed for u32 {}
    impl Sealed for i64 {}
}

impl Element for f32 {
    const DTYPE: Dtype = Dtype::F32;
}
impl Element for f64 {
    const DTYPE: Dtype = Dtype::F64;
}
impl Element for i32 {
    const DTYPE: Dtype = Dtype::I32;
}
impl Element for u32 {
    const DTYPE: Dtype = Dtype::U32;
}
impl Element for i64 {
    const DTYPE: Dtype = Dtype::I64;
}

/// One result value, in the result type of its op and input dtype (see the
/// module table).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    F32(f32),
    F64(f64),
    I32(i32),
    U32(u32),
    I64(i64),
}

impl Scalar {
    /// The value as an f64 (exact for every type but int64 beyond 2^53).
    pub fn as_f64(self) -> f64 {
        match self {
            Scalar::F32(v) => v as f64,
            Scalar::F64(v) => v,
            Scalar::I32(v) => v as f64,
            Scalar::U32(v) => v as f64,
            Scalar::I64(v) => v as f64,
        }
    }

    /// The value as an f32 where it is one.
    pub fn as_f32(self) -> Option<f32> {
        match self {
            Scalar::F32(v) => Some(v),
            _ => None,
        }
    }

    /// True for a float NaN.
    pub fn is_nan(self) -> bool {
        match self {
            Scalar::F32(v) => v.is_nan(),
            Scalar::F64(v) => v.is_nan(),
            _ => false,
        }
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::F32(v) => write!(f, "{v}"),
            Scalar::F64(v) => write!(f, "{v}"),
            Scalar::I32(v) => write!(f, "{v}"),
            Scalar::U32(v) => write!(f, "{v}"),
            Scalar::I64(v) => write!(f, "{v}"),
        }
    }
}
