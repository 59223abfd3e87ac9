//! Validity bitmaps: which values of a column hold a value and which are
//! SQL NULL, in Arrow's layout (one bit a value, least significant bit
//! first, a set bit marks a value), so an Arrow array's null buffer, a
//! Python producer's bitmap or a packed `bool` mask all read the same way.

use crate::error::{Error, Result};

/// Which of `len` values are present: bit `offset + i` of `bits` (least
/// significant bit first) is set where value `i` holds a value and clear
/// where it is NULL. Borrowed, like the values it describes.
///
/// ```
/// use gpulanes::Validity;
/// let bits = Validity::pack([true, false, true, true]);
/// let valid = Validity::new(&bits, 0, 4)?;
/// assert!(valid.is_valid(0) && !valid.is_valid(1));
/// assert_eq!(valid.null_count(), 1);
/// # Ok::<(), gpulanes::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Validity<'a> {
    bits: &'a [u8],
    offset: usize,
    len: usize,
}

impl<'a> Validity<'a> {
    /// The validity of `len` values whose bits start at bit `offset` of
    /// `bits`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `bits` holds fewer than `offset + len`
    /// bits.
    pub fn new(bits: &'a [u8], offset: usize, len: usize) -> Result<Self> {
        let needed = offset
            .checked_add(len)
            .map(|end| end.div_ceil(8))
            .filter(|&bytes| bytes <= bits.len());
        match needed {
            Some(_) => Ok(Validity { bits, offset, len }),
            None => Err(Error::InvalidInput(format!(
                "a validity bitmap of {} bytes has no bits {offset}..{offset}+{len}",
                bits.len()
            ))),
        }
    }

    /// `valid` packed into a bitmap for [`Validity::new`] (offset 0).
    pub fn pack(valid: impl IntoIterator<Item = bool>) -> Vec<u8> {
        let mut bits = Vec::new();
        for (i, v) in valid.into_iter().enumerate() {
            if i % 8 == 0 {
                bits.push(0u8);
            }
            if let Some(last) = bits.last_mut() {
                *last |= u8::from(v) << (i % 8);
            }
        }
        bits
    }

    /// Number of values described.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no value is described.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether value `i` (below [`Validity::len`]) holds a value.
    #[inline]
    pub fn is_valid(&self, i: usize) -> bool {
        debug_assert!(i < self.len);
        let bit = self.offset + i;
        self.bits[bit / 8] >> (bit % 8) & 1 == 1
    }

    /// Values that are NULL.
    pub fn null_count(&self) -> usize {
        self.len - self.valid_in(0..self.len)
    }

    /// Values in `range` (within [`Validity::len`]) that hold a value,
    /// counted a byte at a time where the range covers whole bytes.
    pub(crate) fn valid_in(&self, range: std::ops::Range<usize>) -> usize {
        let (mut bit, end) = (self.offset + range.start, self.offset + range.end);
        let mut valid = 0;
        while bit < end && bit % 8 != 0 {
            valid += usize::from(self.bits[bit / 8] >> (bit % 8) & 1 == 1);
            bit += 1;
        }
        let whole = (end - bit) / 8;
        valid += self.bits[bit / 8..bit / 8 + whole]
            .iter()
            .map(|b| b.count_ones() as usize)
            .sum::<usize>();
        bit += whole * 8;
        while bit < end {
            valid += usize::from(self.bits[bit / 8] >> (bit % 8) & 1 == 1);
            bit += 1;
        }
        valid
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::xorshift;

    #[test]
    fn counts_agree_with_bit_by_bit_reads_at_every_offset() {
        let mut next = xorshift(7);
        let bools: Vec<bool> = (0..300).map(|_| !next().is_multiple_of(3)).collect();
        let bits = Validity::pack(bools.iter().copied());
        assert_eq!(bits.len(), 38);
        for offset in [0, 1, 7, 8, 9, 63] {
            for len in [0, 1, 7, 8, 9, 64, 100, 300 - offset] {
                let v = Validity::new(&bits, offset, len).unwrap();
                for i in 0..len {
                    assert_eq!(v.is_valid(i), bools[offset + i], "bit {i} at {offset}");
                }
                let nulls = bools[offset..offset + len].iter().filter(|b| !**b).count();
                assert_eq!(v.null_count(), nulls, "{len} bits at {offset}");
                for (a, b) in [(0, len), (len / 3, len / 2), (1.min(len), len)] {
                    let want = bools[offset + a..offset + b].iter().filter(|b| **b).count();
                    assert_eq!(v.valid_in(a..b), want);
                }
            }
        }
    }

    #[test]
    fn a_bitmap_too_short_is_refused() {
        let bits = [0xffu8; 2];
        assert!(Validity::new(&bits, 0, 16).is_ok());
        assert!(Validity::new(&bits, 1, 15).is_ok());
        assert!(Validity::new(&bits, 0, 17).is_err());
        assert!(Validity::new(&bits, 9, 8).is_err());
        assert!(Validity::new(&bits, usize::MAX, 2).is_err());
        assert!(Validity::new(&[], 0, 0).is_ok());
    }
}
