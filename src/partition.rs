//! How an input is cut into partitions, and the validation that turns a
//! user's description into checked offsets.

use crate::error::{Error, Result};

/// How to partition the input of a reduction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Partitions {
    /// One partition: the whole input (empty input gives one empty partition).
    Whole,
    /// Consecutive partitions of this many elements; the last may be short.
    /// An empty input has no partitions.
    EqualSize(u64),
    /// Arrow-style offsets: k+1 non-decreasing values, the first 0 and the
    /// last equal to the input length; partition i is `offsets[i]..offsets[i+1]`.
    Offsets(Vec<u64>),
}

impl Partitions {
    /// Offsets from signed integers (as read from an int32/int64 `.npy`),
    /// rejecting negative values.
    pub fn from_signed_offsets(offsets: &[i64]) -> Result<Self> {
        let mut out = Vec::with_capacity(offsets.len());
        for (i, &o) in offsets.iter().enumerate() {
            if o < 0 {
                return Err(Error::InvalidPartitions(format!(
                    "offset {i} is negative ({o})"
                )));
            }
            out.push(o as u64);
        }
        Ok(Partitions::Offsets(out))
    }

    /// Checks the partitions against an input of `len` elements and returns
    /// the k+1 offsets that describe them.
    pub fn offsets(&self, len: u64) -> Result<Vec<u64>> {
        match self {
            Partitions::Whole => Ok(vec![0, len]),
            Partitions::EqualSize(0) => Err(Error::InvalidPartitions(
                "partition size must be at least 1".into(),
            )),
            Partitions::EqualSize(size) => {
                let k = len.div_ceil(*size);
                let mut out: Vec<u64> = (0..k).map(|i| i * size).collect();
                out.push(len);
                Ok(out)
            }
            Partitions::Offsets(offsets) => {
                validate_offsets(offsets, len)?;
                Ok(offsets.clone())
            }
        }
    }
}

fn validate_offsets(offsets: &[u64], len: u64) -> Result<()> {
    let bad = |msg: String| Err(Error::InvalidPartitions(msg));
    let (Some(&first), Some(&last)) = (offsets.first(), offsets.last()) else {
        return bad("offsets are empty: need at least one value (0)".into());
    };
    if first != 0 {
        return bad(format!("first offset must be 0, found {first}"));
    }
    if let Some(i) = offsets.windows(2).position(|w| w[1] < w[0]) {
        return bad(format!(
            "offsets decrease at index {}: {} then {}",
            i + 1,
            offsets[i],
            offsets[i + 1]
        ));
    }
    if last != len {
        return bad(format!(
            "last offset must equal the input length {len}, found {last}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_size_last_is_short() {
        assert_eq!(
            Partitions::EqualSize(4).offsets(10).unwrap(),
            vec![0, 4, 8, 10]
        );
        assert_eq!(
            Partitions::EqualSize(5).offsets(10).unwrap(),
            vec![0, 5, 10]
        );
        assert_eq!(Partitions::EqualSize(5).offsets(0).unwrap(), vec![0]);
        assert!(Partitions::EqualSize(0).offsets(3).is_err());
    }

    #[test]
    fn offsets_are_checked() {
        let ok = Partitions::Offsets(vec![0, 0, 3, 3, 5]);
        assert_eq!(ok.offsets(5).unwrap(), vec![0, 0, 3, 3, 5]);
        for (offs, needle) in [
            (vec![], "empty"),
            (vec![1, 5], "first offset"),
            (vec![0, 4, 3, 5], "decrease at index 2"),
            (vec![0, 6], "last offset"),
        ] {
            let err = Partitions::Offsets(offs)
                .offsets(5)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{err}");
        }
        let err = Partitions::from_signed_offsets(&[0, -1])
            .unwrap_err()
            .to_string();
        assert!(err.contains("negative"), "{err}");
    }
}
