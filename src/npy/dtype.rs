//! The element types a `.npy` header may announce, by their NumPy
//! descriptors (`dtype.str`): what NumPy writes on a little-endian machine.

use std::fmt;

/// A `.npy` element type the crate can read, named as NumPy's `descr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// `'<f4'`: little-endian float32.
    F32,
    /// `'<f8'`: little-endian float64.
    F64,
    /// `'<i4'`: little-endian int32.
    I32,
    /// `'<i8'`: little-endian int64.
    I64,
    /// `'<u4'`: little-endian uint32.
    U32,
}

impl Dtype {
    /// Every supported dtype.
    pub const ALL: [Dtype; 5] = [Dtype::F32, Dtype::F64, Dtype::I32, Dtype::I64, Dtype::U32];

    /// The dtype of a `descr` string. Only the little-endian descriptors
    /// NumPy writes are accepted: other byte orders, other types and other
    /// spellings (`'float32'`, `'=f4'`) are an error naming the descriptor.
    pub fn from_descr(descr: &str) -> Result<Dtype, String> {
        Dtype::ALL
            .into_iter()
            .find(|d| d.descr() == descr)
            .ok_or_else(|| {
                format!(
                    "unsupported dtype {descr:?} (supported: '<f4', '<f8', '<i4', '<i8', '<u4')"
                )
            })
    }

    /// NumPy's descriptor, e.g. `"<f4"`.
    pub fn descr(self) -> &'static str {
        match self {
            Dtype::F32 => "<f4",
            Dtype::F64 => "<f8",
            Dtype::I32 => "<i4",
            Dtype::I64 => "<i8",
            Dtype::U32 => "<u4",
        }
    }

    /// NumPy's name, e.g. `"float32"`.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
            Dtype::I32 => "int32",
            Dtype::I64 => "int64",
            Dtype::U32 => "uint32",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            Dtype::F32 | Dtype::I32 | Dtype::U32 => 4,
            Dtype::F64 | Dtype::I64 => 8,
        }
    }
}

impl fmt::Display for Dtype {
    /// `float32 ('<f4')`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ('{}')", self.name(), self.descr())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_round_trip_and_others_are_named() {
        for d in Dtype::ALL {
            assert_eq!(Dtype::from_descr(d.descr()), Ok(d));
        }
        for bad in [">f8", "|u1", "<f2", "float32", "=f4", "f4", "<U4", ""] {
            let err = Dtype::from_descr(bad).unwrap_err();
            assert!(err.contains(&format!("unsupported dtype {bad:?}")), "{err}");
        }
    }
}
