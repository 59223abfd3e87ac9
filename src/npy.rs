//! Reading `.npy` files with errors that name the file and the problem:
//! float32 data (1-D or 2-D, C order) and int32/int64 partition offsets.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use ndarray::{ArrayD, Ix1};
use ndarray_npy::{ReadNpyError, ReadNpyExt};

use crate::error::{Error, Result};

fn file_error(path: &Path, message: impl Into<String>) -> Error {
    Error::File {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn open(path: &Path) -> Result<BufReader<File>> {
    if path.as_os_str().is_empty() {
        return Err(Error::InvalidInput("empty path".into()));
    }
    if path.is_dir() {
        return Err(file_error(path, "is a directory, not a .npy file"));
    }
    File::open(path)
        .map(BufReader::new)
        .map_err(|e| file_error(path, format!("cannot open: {e}")))
}

fn describe(e: ReadNpyError, wanted: &str) -> String {
    match e {
        ReadNpyError::WrongDescriptor(d) => format!("wrong dtype {d}: expected {wanted}"),
        ReadNpyError::MissingData => {
            "truncated: the file ends before the data the header announces".into()
        }
        ReadNpyError::ExtraBytes(n) => {
            format!("corrupt: {n} bytes after the data the header announces")
        }
        ReadNpyError::ParseHeader(h) => format!("not a valid .npy file (bad header: {h})"),
        ReadNpyError::Io(io) => format!("read error: {io}"),
        other => format!("not a valid {wanted} .npy file: {other}"),
    }
}

/// Reads a little-endian float32 `.npy` of any dimension (C order).
pub fn read_f32(path: &Path) -> Result<ArrayD<f32>> {
    let reader = open(path)?;
    let array = ArrayD::<f32>::read_npy(reader)
        .map_err(|e| file_error(path, describe(e, "float32 ('<f4')")))?;
    if !array.is_standard_layout() {
        return Err(file_error(
            path,
            "Fortran-order arrays are not supported: save it in C order",
        ));
    }
    Ok(array)
}

/// Reads partition offsets from an int64 or int32 `.npy` (1-D).
pub fn read_offsets(path: &Path) -> Result<Vec<i64>> {
    let as_i64 = ndarray::Array::<i64, Ix1>::read_npy(open(path)?);
    match as_i64 {
        Ok(a) => Ok(a.to_vec()),
        Err(ReadNpyError::WrongDescriptor(_)) => ndarray::Array::<i32, Ix1>::read_npy(open(path)?)
            .map(|a| a.iter().map(|&v| v as i64).collect())
            .map_err(|e| file_error(path, format!("offsets: {}", describe(e, "int32 or int64")))),
        Err(e) => Err(file_error(
            path,
            format!("offsets: {}", describe(e, "int32 or int64 (1-D)")),
        )),
    }
}

/// The header of a float32 `.npy` file, read without touching its data, so
/// files of any size can be streamed (see [`open_f32_stream`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyHeader {
    /// The array shape: one or two dimensions.
    pub shape: Vec<u64>,
    /// Byte offset of the first data byte (magic, version, length and header dict).
    pub data_offset: u64,
}

impl NpyHeader {
    /// Number of float32 values the header announces.
    pub fn len(&self) -> u64 {
        self.shape.iter().product()
    }

    /// True when the header announces no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of data the header announces.
    pub fn data_bytes(&self) -> u64 {
        self.len() * 4
    }

    /// Byte offset just past the data the header announces.
    pub fn data_end(&self) -> u64 {
        self.data_offset + self.data_bytes()
    }
}

/// A float32 `.npy` file opened for streaming: its header, and the file
/// positioned at the first data byte.
#[derive(Debug)]
pub struct NpyStream {
    pub header: NpyHeader,
    pub file: File,
}

/// Opens a float32 `.npy` for streaming: parses and checks the header
/// (dtype `'<f4'`, C order, 1-D or 2-D) and, for a regular file, checks
/// that the file holds exactly the data the header announces. Every error
/// names the file and, where it applies, the byte offset.
pub fn open_f32_stream(path: &Path) -> Result<NpyStream> {
    // Unbuffered: the header is read with exact reads, so the file is left
    // at the first data byte, pipes included.
    let mut file = open(path)?.into_inner();
    let header = parse_f32_header(&mut file, path)?;
    let meta = file
        .metadata()
        .map_err(|e| file_error(path, format!("cannot read file metadata: {e}")))?;
    if meta.is_file() {
        check_size(path, &header, meta.len())?;
    }
    Ok(NpyStream { header, file })
}

/// Opens a raw little-endian float32 file for streaming. For a regular
/// file, returns the number of values and checks that the size is a whole
/// number of values; for a pipe the length is unknown (`None`).
pub fn open_raw_f32_stream(path: &Path) -> Result<(File, Option<u64>)> {
    let file = open(path)?.into_inner();
    let meta = file
        .metadata()
        .map_err(|e| file_error(path, format!("cannot read file metadata: {e}")))?;
    if !meta.is_file() {
        return Ok((file, None));
    }
    let len = meta.len();
    if !len.is_multiple_of(4) {
        return Err(file_error(
            path,
            format!(
                "raw float32 data must be a whole number of 4-byte values: the file has {len} bytes, \
                 so the value at byte {} is cut short",
                len - len % 4
            ),
        ));
    }
    Ok((file, Some(len / 4)))
}

fn check_size(path: &Path, header: &NpyHeader, file_len: u64) -> Result<()> {
    let end = header.data_end();
    if file_len < end {
        return Err(file_error(
            path,
            format!(
                "truncated: the header announces {} float32 values (shape {:?}) ending at byte {end}, \
                 but the file ends at byte {file_len}",
                header.len(),
                header.shape
            ),
        ));
    }
    if file_len > end {
        return Err(file_error(
            path,
            format!(
                "corrupt: {} bytes after the data the header announces (the data ends at byte {end}, \
                 the file at byte {file_len})",
                file_len - end
            ),
        ));
    }
    Ok(())
}

/// Reads `buf.len()` bytes at byte `offset` of the header, or says where the
/// file ended.
fn read_header_bytes(
    reader: &mut impl Read,
    buf: &mut [u8],
    offset: u64,
    what: &str,
    path: &Path,
) -> Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => {
                return Err(file_error(
                    path,
                    format!(
                        "truncated: the file ends at byte {} inside the .npy {what} \
                         (which needs bytes {offset}..{})",
                        offset + filled as u64,
                        offset + buf.len() as u64
                    ),
                ));
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(file_error(
                    path,
                    format!("read error at byte {}: {e}", offset + filled as u64),
                ));
            }
        }
    }
    Ok(())
}

/// Parses a float32 `.npy` header from `reader` (positioned at byte 0),
/// leaving it at the first data byte. `path` names the file in errors.
pub fn parse_f32_header(reader: &mut impl Read, path: &Path) -> Result<NpyHeader> {
    let mut prefix = [0u8; 8];
    read_header_bytes(reader, &mut prefix, 0, "magic and version", path)?;
    if &prefix[..6] != b"\x93NUMPY" {
        return Err(file_error(
            path,
            "not a .npy file: bad magic at byte 0 (expected \\x93NUMPY)",
        ));
    }
    let (major, minor) = (prefix[6], prefix[7]);
    let (len_bytes, header_start) = match major {
        1 => (2usize, 10u64),
        2 | 3 => (4, 12),
        _ => {
            return Err(file_error(
                path,
                format!(
                    "unsupported .npy version {major}.{minor} at byte 6 (expected 1.x, 2.x or 3.x)"
                ),
            ));
        }
    };
    let mut len_buf = [0u8; 4];
    read_header_bytes(reader, &mut len_buf[..len_bytes], 8, "header length", path)?;
    let header_len = u32::from_le_bytes(len_buf) as usize;
    if header_len > 1 << 20 {
        return Err(file_error(
            path,
            format!("corrupt: header length {header_len} at byte 8 is implausibly large"),
        ));
    }
    let mut text = vec![0u8; header_len];
    read_header_bytes(reader, &mut text, header_start, "header", path)?;
    let text = String::from_utf8_lossy(&text);
    let dict = parse_dict(&text).map_err(|(at, msg)| {
        file_error(
            path,
            format!(
                "not a valid .npy header: {msg} at byte {}",
                header_start + at as u64
            ),
        )
    })?;
    let bad = |msg: String| Err(file_error(path, msg));
    let (Some(descr), Some(fortran), Some(shape)) = (dict.descr, dict.fortran_order, dict.shape)
    else {
        return bad(format!(
            "not a valid .npy header at byte {header_start}: it needs 'descr', 'fortran_order' and 'shape'"
        ));
    };
    if descr != "<f4" {
        return bad(format!("wrong dtype {descr:?}: expected float32 ('<f4')"));
    }
    if !(1..=2).contains(&shape.len()) {
        return bad(format!(
            "expected a 1-D or 2-D array, found {}-D with shape {shape:?}",
            shape.len()
        ));
    }
    if fortran && shape.iter().filter(|&&d| d > 1).count() > 1 {
        return bad("Fortran-order arrays are not supported: save it in C order".into());
    }
    let data_offset = header_start + header_len as u64;
    let too_large = || {
        file_error(
            path,
            format!("corrupt: shape {shape:?} is too large to exist"),
        )
    };
    shape
        .iter()
        .try_fold(4u64, |acc, &d| acc.checked_mul(d))
        .and_then(|bytes| bytes.checked_add(data_offset))
        .ok_or_else(too_large)?;
    Ok(NpyHeader { shape, data_offset })
}

#[derive(Default)]
struct Dict {
    descr: Option<String>,
    fortran_order: Option<bool>,
    shape: Option<Vec<u64>>,
}

/// A parse error: (byte offset inside the header text, message).
type DictError = (usize, String);

/// Parses the Python dict literal of a `.npy` header: string keys, and
/// string, `True`/`False` or tuple-of-integer values.
fn parse_dict(text: &str) -> std::result::Result<Dict, DictError> {
    let b = text.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    let expect = |i: &mut usize, c: u8| -> std::result::Result<(), DictError> {
        skip_ws(i);
        if *i < b.len() && b[*i] == c {
            *i += 1;
            Ok(())
        } else {
            Err((*i, format!("expected '{}'", c as char)))
        }
    };
    let string = |i: &mut usize| -> std::result::Result<String, DictError> {
        skip_ws(i);
        let q = *b.get(*i).ok_or((*i, "expected a string".to_string()))?;
        if q != b'\'' && q != b'"' {
            return Err((*i, "expected a quoted string".into()));
        }
        let start = *i + 1;
        let end = b[start..]
            .iter()
            .position(|&c| c == q)
            .ok_or((*i, "unterminated string".to_string()))?;
        *i = start + end + 1;
        Ok(text[start..start + end].to_string())
    };
    let mut dict = Dict::default();
    expect(&mut i, b'{')?;
    loop {
        skip_ws(&mut i);
        if i < b.len() && b[i] == b'}' {
            i += 1;
            break;
        }
        let key_at = i;
        let key = string(&mut i)?;
        expect(&mut i, b':')?;
        skip_ws(&mut i);
        match key.as_str() {
            "descr" => dict.descr = Some(string(&mut i)?),
            "fortran_order" => {
                let v = if text[i..].starts_with("True") {
                    true
                } else if text[i..].starts_with("False") {
                    false
                } else {
                    return Err((i, "expected True or False".into()));
                };
                i += if v { 4 } else { 5 };
                dict.fortran_order = Some(v);
            }
            "shape" => {
                expect(&mut i, b'(')?;
                let mut dims = Vec::new();
                loop {
                    skip_ws(&mut i);
                    if i < b.len() && b[i] == b')' {
                        i += 1;
                        break;
                    }
                    let start = i;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                    let dim: u64 = text[start..i].parse().map_err(|_| {
                        (
                            start,
                            "expected a non-negative integer dimension".to_string(),
                        )
                    })?;
                    if i < b.len() && b[i] == b'L' {
                        i += 1; // Python 2 long suffix
                    }
                    dims.push(dim);
                    skip_ws(&mut i);
                    if i < b.len() && b[i] == b',' {
                        i += 1;
                    } else if !(i < b.len() && b[i] == b')') {
                        return Err((i, "expected ',' or ')' in the shape".into()));
                    }
                }
                dict.shape = Some(dims);
            }
            other => return Err((key_at, format!("unexpected key {other:?}"))),
        }
        skip_ws(&mut i);
        if i < b.len() && b[i] == b',' {
            i += 1;
        } else if !(i < b.len() && b[i] == b'}') {
            return Err((i, "expected ',' or '}'".into()));
        }
    }
    skip_ws(&mut i);
    if i != b.len() {
        return Err((i, "unexpected text after the header dict".into()));
    }
    Ok(dict)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(dict: &str) -> Vec<u8> {
        let mut h = dict.to_string();
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        out.extend_from_slice(h.as_bytes());
        out
    }

    fn parse(bytes: &[u8]) -> Result<NpyHeader> {
        parse_f32_header(&mut &bytes[..], Path::new("x.npy"))
    }

    #[test]
    fn parses_what_numpy_writes() {
        let bytes = header("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }");
        let h = parse(&bytes).unwrap();
        assert_eq!(h.shape, vec![3, 4]);
        assert_eq!(h.data_offset, bytes.len() as u64);
        assert_eq!(h.data_offset % 64, 0);
        assert_eq!(h.len(), 12);
        let h = parse(&header(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }",
        ))
        .unwrap();
        assert_eq!(h.shape, vec![5]);
        let h = parse(&header(
            "{\"shape\": (7L,), \"fortran_order\": True, \"descr\": \"<f4\"}",
        ))
        .unwrap();
        assert_eq!(h.shape, vec![7]);
    }

    #[test]
    fn rejects_bad_headers_naming_the_offset() {
        for (bytes, needle) in [
            (b"\x93NUMPZ\x01\x00".to_vec(), "bad magic at byte 0"),
            (b"\x93NUMPY\x01".to_vec(), "ends at byte 7"),
            (
                header("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }"),
                "wrong dtype",
            ),
            (
                header("{'descr': '<f4', 'fortran_order': True, 'shape': (3, 2), }"),
                "Fortran",
            ),
            (
                header("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 3), }"),
                "3-D",
            ),
            (
                header("{'descr': '<f4', 'fortran_order': False, 'shape': (), }"),
                "0-D",
            ),
            (
                header("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (3,), }"),
                "True or False at byte",
            ),
            (header("{'descr': '<f4', 'shape': (3,), }"), "needs 'descr'"),
            (
                header(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }",
                ),
                "integer dimension at byte",
            ),
            (
                header(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 8), }",
                ),
                "too large",
            ),
        ] {
            let err = parse(&bytes).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
            assert!(err.starts_with("x.npy: "), "{err}");
        }
        let mut cut = header("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }");
        cut.truncate(30);
        let err = parse(&cut).unwrap_err().to_string();
        assert!(
            err.contains("ends at byte 30 inside the .npy header"),
            "{err}"
        );
    }
}
