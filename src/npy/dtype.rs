//! The element types a `.npy` header may announce: the crate's
//! [`Dtype`](crate::Dtype), read from NumPy's descriptors (`dtype.str`,
//! what NumPy writes on a little-endian machine) by
//! [`Dtype::from_descr`](crate::Dtype::from_descr).

pub use crate::dtype::Dtype;

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
