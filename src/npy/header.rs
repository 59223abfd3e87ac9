//! The `.npy` header (format versions 1.0, 2.0 and 3.0, as NumPy reads
//! them): magic, version, header length, and the header dict, whose
//! shape and dtype are checked against what can exist before anything is
//! sized by them.

use std::io::Read;

use super::dtype::Dtype;
use super::literal::parse_header_dict;

/// The magic string every `.npy` starts with.
pub(super) const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// NumPy refuses longer header dicts unless told the file is trusted
/// (`max_header_size`, 10000 bytes); they are not written by any saver.
pub const MAX_HEADER_LEN: usize = 10_000;

/// The header of a `.npy` file, read without touching its data. Its shape
/// was checked: the data it announces fits in a file (below 2^64 bytes
/// from the file start, each dimension below 2^63).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyHeader {
    /// The element type (`descr`).
    pub dtype: Dtype,
    /// True when the data is stored in Fortran (column-major) order.
    pub fortran_order: bool,
    /// The array shape (any number of dimensions).
    pub shape: Vec<u64>,
    /// Byte offset of the first data byte (magic, version, length and header dict).
    pub data_offset: u64,
}

impl NpyHeader {
    /// Number of values the header announces (0 when any dimension is 0,
    /// however large the others; saturates where the shape was not checked).
    pub fn len(&self) -> u64 {
        element_count(&self.shape).unwrap_or(u64::MAX)
    }

    /// True when the header announces no values.
    pub fn is_empty(&self) -> bool {
        self.shape.contains(&0)
    }

    /// Bytes of data the header announces: [`NpyHeader::len`] times the
    /// dtype's size (saturating; exact for any parsed header).
    pub fn data_bytes(&self) -> u64 {
        self.checked_data_bytes().unwrap_or(u64::MAX)
    }

    /// Bytes of data, or `None` where that does not fit in 64 bits.
    pub fn checked_data_bytes(&self) -> Option<u64> {
        element_count(&self.shape)?.checked_mul(self.dtype.size())
    }

    /// Byte offset just past the data the header announces (saturating;
    /// exact for any parsed header).
    pub fn data_end(&self) -> u64 {
        self.checked_data_bytes()
            .and_then(|b| b.checked_add(self.data_offset))
            .unwrap_or(u64::MAX)
    }
}

/// The product of the dimensions: 0 when any is 0 (an empty array may have
/// huge other dimensions), `None` when it does not fit in 64 bits.
fn element_count(shape: &[u64]) -> Option<u64> {
    if shape.contains(&0) {
        return Some(0);
    }
    shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))
}

/// A header error: the message, which names the byte offset it concerns.
pub(super) struct HeaderError {
    pub message: String,
}

impl HeaderError {
    fn bad(message: impl Into<String>) -> Self {
        HeaderError {
            message: message.into(),
        }
    }
}

/// Reads `buf.len()` bytes at byte `offset` of the header, or says where
/// the input ended.
fn read_part(
    reader: &mut impl Read,
    buf: &mut [u8],
    offset: u64,
    what: &str,
) -> Result<(), HeaderError> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => {
                let at = offset + filled as u64;
                let message = if at == 0 {
                    "empty: not a .npy file (no bytes at all)".to_string()
                } else {
                    format!(
                        "truncated: the file ends at byte {at} inside the .npy {what} \
                         (which needs bytes {offset}..{})",
                        offset + buf.len() as u64
                    )
                };
                return Err(HeaderError { message });
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(HeaderError::bad(format!(
                    "read error at byte {}: {e}",
                    offset + filled as u64
                )));
            }
        }
    }
    Ok(())
}

/// Reads and checks a header from `reader` (at byte 0), leaving it at the
/// first data byte. Only the header's own bytes are read, and the dict is
/// read into a buffer of at most [`MAX_HEADER_LEN`] bytes.
pub(super) fn read_header(reader: &mut impl Read) -> Result<NpyHeader, HeaderError> {
    let mut prefix = [0u8; 8];
    read_part(reader, &mut prefix, 0, "magic and version")?;
    if &prefix[..6] != MAGIC {
        return Err(HeaderError::bad(
            "not a .npy file: bad magic at byte 0 (expected \\x93NUMPY)",
        ));
    }
    // NumPy reads exactly these versions; 3.0 differs from 2.0 only in
    // the dict's encoding (UTF-8 instead of Latin-1).
    let (major, minor) = (prefix[6], prefix[7]);
    let len_bytes = match (major, minor) {
        (1, 0) => 2usize,
        (2, 0) | (3, 0) => 4,
        _ => {
            return Err(HeaderError::bad(format!(
                "unsupported .npy version {major}.{minor} at byte 6 (expected 1.0, 2.0 or 3.0)"
            )));
        }
    };
    let header_start = 8 + len_bytes as u64;
    let mut len_buf = [0u8; 4];
    read_part(reader, &mut len_buf[..len_bytes], 8, "header length")?;
    let header_len = u32::from_le_bytes(len_buf) as usize;
    if header_len > MAX_HEADER_LEN {
        return Err(HeaderError::bad(format!(
            "corrupt: header length {header_len} at byte 8 is over {MAX_HEADER_LEN} bytes \
             (NumPy refuses it too)"
        )));
    }
    let mut raw = vec![0u8; header_len];
    read_part(reader, &mut raw, header_start, "header")?;
    let text = if major == 3 {
        String::from_utf8(raw).map_err(|e| {
            HeaderError::bad(format!(
                "not a valid .npy header: bad UTF-8 at byte {}",
                header_start + e.utf8_error().valid_up_to() as u64
            ))
        })?
    } else {
        raw.iter().map(|&b| char::from(b)).collect()
    };
    let dict = parse_header_dict(&text, major).map_err(|m| {
        HeaderError::bad(format!(
            "not a valid .npy header (bytes {header_start}..{}): {m}",
            header_start + header_len as u64
        ))
    })?;
    let dtype = Dtype::from_descr(&dict.descr).map_err(HeaderError::bad)?;
    let header = NpyHeader {
        dtype,
        fortran_order: dict.fortran_order,
        shape: dict.shape,
        data_offset: header_start + header_len as u64,
    };
    // The data must be able to exist: its end is a 64-bit byte offset.
    let fits = header
        .checked_data_bytes()
        .and_then(|b| b.checked_add(header.data_offset))
        .is_some();
    if !fits {
        return Err(HeaderError::bad(format!(
            "corrupt: shape {:?} of {} is too large to exist",
            header.shape, header.dtype
        )));
    }
    Ok(header)
}
