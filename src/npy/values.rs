//! Reading the data of an input into memory, with the same checks on every
//! path (regular file, pipe, bytes in memory): an input that ends before
//! the announced data is truncated, one with bytes after it is corrupt, and
//! the messages say so in the same words as the streaming reader.
//!
//! Memory follows what arrived, never what a header claims: where the
//! length was checked against the file's size the buffer is sized once;
//! otherwise it grows as data comes in (doubling from 64 KiB), so a pipe
//! whose header claims terabytes costs only what the pipe delivered.
//! Allocation failures are errors, not aborts.

use std::io::Read;

use bytemuck::Pod;

/// Bytes of the first buffer when the length is not known to be there.
const FIRST_GROWTH_BYTES: usize = 64 << 10;

/// A value stored little-endian in a file.
pub trait LeValue: Pod {
    /// The value whose little-endian bit pattern `self` holds (as read
    /// from the file into memory): unchanged on little-endian machines.
    fn le_to_native(self) -> Self;
}

macro_rules! le_int {
    ($($t:ty),*) => {$(
        impl LeValue for $t {
            fn le_to_native(self) -> Self {
                <$t>::from_le(self)
            }
        }
    )*};
}
le_int!(i32, i64, u32);

impl LeValue for f32 {
    fn le_to_native(self) -> Self {
        f32::from_bits(u32::from_le(self.to_bits()))
    }
}

impl LeValue for f64 {
    fn le_to_native(self) -> Self {
        f64::from_bits(u64::from_le(self.to_bits()))
    }
}

/// "truncated: ..." for data that ends at byte `at` of the file, short of
/// byte `end`.
pub fn truncated_message(at: u64, end: u64) -> String {
    format!("truncated: the file ends at byte {at}, but its data should end at byte {end}")
}

/// "corrupt: ..." for bytes after the announced data, which ends at `end`.
pub fn trailing_message(end: u64) -> String {
    format!("corrupt: more bytes after byte {end}, where the announced data ends")
}

/// "... do not fit in memory" for `count` values that could not be held.
pub fn too_large_message(count: u64, what: &str) -> String {
    format!("{count} {what} values do not fit in memory")
}

/// Reads `count` values of `T` (little-endian) from `reader`, which stands
/// at byte `start` of the file (for messages), then checks that nothing
/// follows. `verified` says that the input's length was checked to hold
/// the values, so the buffer may be sized at once. Errors are messages
/// (the caller names the file).
pub fn read_values<T: LeValue>(
    reader: &mut impl Read,
    count: u64,
    start: u64,
    verified: bool,
    what: &str,
) -> Result<Vec<T>, String> {
    let size = std::mem::size_of::<T>();
    let end = count
        .checked_mul(size as u64)
        .and_then(|b| b.checked_add(start))
        .ok_or_else(|| too_large_message(count, what))?;
    let total = usize::try_from(count).map_err(|_| too_large_message(count, what))?;
    let mut values: Vec<T> = Vec::new();
    while values.len() < total {
        let have = values.len();
        let next = if verified {
            total
        } else {
            total.min((have * 2).max(FIRST_GROWTH_BYTES / size))
        };
        values
            .try_reserve_exact(next - have)
            .map_err(|_| too_large_message(count, what))?;
        values.resize(next, T::zeroed());
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut values[have..]);
        let filled = fill(reader, bytes).map_err(|(n, e)| {
            format!(
                "read error at byte {}: {e}",
                start + (have * size + n) as u64
            )
        })?;
        if filled < bytes.len() {
            let at = start + (have * size + filled) as u64;
            return Err(truncated_message(at, end));
        }
    }
    check_end(reader, end)?;
    for v in &mut values {
        *v = v.le_to_native();
    }
    Ok(values)
}

/// Checks that `reader` has nothing left (the announced data ended at
/// byte `end`).
pub fn check_end(reader: &mut impl Read, end: u64) -> Result<(), String> {
    let mut probe = [0u8; 1];
    loop {
        match reader.read(&mut probe) {
            Ok(0) => return Ok(()),
            Ok(_) => return Err(trailing_message(end)),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read error at byte {end}: {e}")),
        }
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read, or
/// the bytes read before an error and the error.
pub fn fill(reader: &mut impl Read, buf: &mut [u8]) -> Result<usize, (usize, std::io::Error)> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err((filled, e)),
        }
    }
    Ok(filled)
}

/// Reads a raw little-endian input of unknown length to its end, in
/// memory that grows with what arrives. A length that is not a whole
/// number of values is an error naming where the last value is cut.
pub fn read_all_values<T: LeValue>(reader: &mut impl Read, what: &str) -> Result<Vec<T>, String> {
    let size = std::mem::size_of::<T>();
    let mut values: Vec<T> = Vec::new();
    let mut filled_total = 0usize;
    loop {
        let have = values.len();
        let next = (have * 2).max(FIRST_GROWTH_BYTES / size);
        values
            .try_reserve_exact(next - have)
            .map_err(|_| too_large_message(next as u64, what))?;
        values.resize(next, T::zeroed());
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut values[have..]);
        let filled = fill(reader, bytes)
            .map_err(|(n, e)| format!("read error at byte {}: {e}", (have * size + n) as u64))?;
        filled_total += filled;
        if filled < bytes.len() {
            break;
        }
    }
    if !filled_total.is_multiple_of(size) {
        return Err(format!(
            "raw {what} data must be a whole number of {size}-byte values: the data ends at \
             byte {filled_total}, so the value at byte {} is cut short",
            filled_total - filled_total % size
        ));
    }
    values.truncate(filled_total / size);
    for v in &mut values {
        *v = v.le_to_native();
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of(v: &[i64]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn reads_exactly_and_names_truncation_and_trailing_bytes() {
        let data = bytes_of(&[1, -2, 3]);
        for verified in [false, true] {
            let got: Vec<i64> = read_values(&mut &data[..], 3, 100, verified, "int64").unwrap();
            assert_eq!(got, [1, -2, 3]);
            let err = read_values::<i64>(&mut &data[..20], 3, 100, verified, "int64").unwrap_err();
            assert_eq!(err, truncated_message(120, 124));
            let mut long = data.clone();
            long.push(7);
            let err = read_values::<i64>(&mut &long[..], 3, 100, verified, "int64").unwrap_err();
            assert_eq!(err, trailing_message(124));
        }
    }

    #[test]
    fn a_huge_claim_costs_only_what_arrived() {
        // 2^40 values announced, 16 bytes there: an error, not an abort.
        let data = bytes_of(&[1, 2]);
        let err = read_values::<i64>(&mut &data[..], 1 << 40, 64, false, "int64").unwrap_err();
        assert!(
            err.starts_with("truncated: the file ends at byte 80"),
            "{err}"
        );
        let err = read_values::<i64>(&mut &data[..], u64::MAX, 64, false, "int64").unwrap_err();
        assert!(err.contains("do not fit in memory"), "{err}");
    }

    #[test]
    fn raw_values_to_the_end() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|x| (x as f32).to_le_bytes())
            .collect();
        let got: Vec<f32> = read_all_values(&mut &data[..], "float32").unwrap();
        assert_eq!(got.len(), 200_000);
        assert_eq!(got[199_999], 199_999.0);
        let err = read_all_values::<f32>(&mut &data[..7], "float32").unwrap_err();
        assert!(
            err.contains("ends at byte 7, so the value at byte 4 is cut short"),
            "{err}"
        );
        assert!(
            read_all_values::<f32>(&mut &[][..], "float32")
                .unwrap()
                .is_empty()
        );
    }
}
