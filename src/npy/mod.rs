//! Reading `.npy` and raw inputs with errors that name the file and the
//! problem: the header of any supported dtype ([`Dtype`]), float32 data
//! (1-D or 2-D, C or Fortran order), int32/int64 partition offsets, raw float32.
//!
//! No allocation is sized by what a header claims before the input was
//! checked to hold it: a regular file's size is compared with the header
//! first, and an input of unknown length (a pipe) is read into memory that
//! grows with what arrives. Every path checks truncation and trailing bytes
//! the same way. The path `-` means standard input, as for Unix tools.

mod dtype;
mod header;
mod literal;
mod values;

use std::fs::File;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn, ShapeBuilder};

use crate::error::{Error, Result};
pub use dtype::Dtype;
pub use header::NpyHeader;
pub use values::{LeValue, check_end};
pub(crate) use values::{fill, read_all_values, read_values, trailing_message, truncated_message};

/// The name standard input goes by in messages.
pub(crate) const STDIN_NAME: &str = "<stdin>";

/// The name of an input in messages: `<stdin>` for `-`, else the path.
pub(crate) fn input_name(path: &Path) -> PathBuf {
    if is_stdin(path) {
        PathBuf::from(STDIN_NAME)
    } else {
        path.to_path_buf()
    }
}

/// True for the path `-`, which means standard input.
pub fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

fn file_error(path: &Path, message: impl Into<String>) -> Error {
    Error::File {
        path: input_name(path),
        message: message.into(),
    }
}

/// Opens `path` for reading (`-`: standard input, as a `File` sharing its
/// descriptor), unbuffered, so a header read with exact reads leaves it at
/// the first data byte, pipes included.
pub(crate) fn open_input(path: &Path) -> Result<File> {
    if path.as_os_str().is_empty() {
        return Err(Error::InvalidInput("empty path".into()));
    }
    if is_stdin(path) {
        return stdin_file().map_err(|e| file_error(path, format!("cannot read: {e}")));
    }
    if path.is_dir() {
        return Err(file_error(path, "is a directory, not a .npy file"));
    }
    File::open(path).map_err(|e| file_error(path, format!("cannot open: {e}")))
}

#[cfg(unix)]
fn stdin_file() -> std::io::Result<File> {
    use std::os::fd::AsFd;
    Ok(File::from(std::io::stdin().as_fd().try_clone_to_owned()?))
}

#[cfg(windows)]
fn stdin_file() -> std::io::Result<File> {
    use std::os::windows::io::AsHandle;
    Ok(File::from(
        std::io::stdin().as_handle().try_clone_to_owned()?,
    ))
}

/// Bytes left in `file` from where it stands, when the file system knows:
/// for a regular file that reports a size. Pipes, sockets, terminals and
/// files that report size 0 while holding data (under `/proc`, `/sys`) are
/// `None`: their length is found by reading them.
pub fn available_bytes(file: &mut File) -> Option<u64> {
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() == 0 {
        return None;
    }
    let pos = file.stream_position().ok()?;
    Some(meta.len().saturating_sub(pos))
}

/// Parses and checks a `.npy` header of any supported dtype from `reader`
/// (at byte 0), leaving it at the first data byte. `name` names the input
/// in errors.
pub(crate) fn read_header(reader: &mut impl Read, name: &Path) -> Result<NpyHeader> {
    header::read_header(reader).map_err(|e| file_error(name, e.message))
}

/// Parses the `.npy` header at the start of `bytes` (data may follow).
pub fn parse_header(bytes: &[u8], name: &Path) -> Result<NpyHeader> {
    read_header(&mut &bytes[..], name)
}

/// Parses a float32 `.npy` header from `reader` (positioned at byte 0),
/// leaving it at the first data byte: dtype `'<f4'` (any other is an error
/// naming it), 1-D or 2-D (C or Fortran order). `path` names the file in errors.
pub(crate) fn parse_f32_header(reader: &mut impl Read, path: &Path) -> Result<NpyHeader> {
    let header = read_header(reader, path)?;
    check_f32_header(&header, path)?;
    Ok(header)
}

fn check_f32_header(header: &NpyHeader, path: &Path) -> Result<()> {
    if header.dtype != Dtype::F32 {
        return Err(file_error(
            path,
            format!(
                "wrong dtype {:?}: expected float32 ('<f4')",
                header.dtype.descr()
            ),
        ));
    }
    check_array_header(header, path)
}

/// The shape rules of the data inputs, for any dtype: 1-D or 2-D (C or
/// Fortran order: readers of 2-D data take the order into account).
fn check_array_header(header: &NpyHeader, path: &Path) -> Result<()> {
    let shape = &header.shape;
    if !(1..=2).contains(&shape.len()) {
        return Err(file_error(
            path,
            format!(
                "expected a 1-D or 2-D array, found {}-D with shape {shape:?}",
                shape.len()
            ),
        ));
    }
    Ok(())
}

/// Checks the data bytes the input has left (`available`, from the first
/// data byte) against what the header announces.
fn check_size(path: &Path, header: &NpyHeader, available: u64) -> Result<()> {
    let end = header.data_end();
    let file_end = header.data_offset.saturating_add(available);
    if file_end < end {
        return Err(file_error(
            path,
            format!(
                "truncated: the header announces {} {} values (shape {:?}) ending at byte {end}, \
                 but the file ends at byte {file_end}",
                header.len(),
                header.dtype.name(),
                header.shape
            ),
        ));
    }
    if file_end > end {
        return Err(file_error(
            path,
            format!(
                "corrupt: {} bytes after the data the header announces (the data ends at byte {end}, \
                 the file at byte {file_end})",
                file_end - end
            ),
        ));
    }
    Ok(())
}

/// Reads the data `header` announces from `reader` (at the first data
/// byte) into memory and checks that nothing follows. `available` is the
/// input's length from there when known (a regular file): it is checked
/// against the header before any allocation; without it memory grows with
/// what arrives.
pub(crate) fn read_data<T: LeValue>(
    reader: &mut impl Read,
    header: &NpyHeader,
    name: &Path,
    available: Option<u64>,
) -> Result<Vec<T>> {
    if std::mem::size_of::<T>() as u64 != header.dtype.size() {
        return Err(file_error(
            name,
            format!(
                "cannot read {} data as {}-byte values",
                header.dtype,
                std::mem::size_of::<T>()
            ),
        ));
    }
    if let Some(a) = available {
        check_size(name, header, a)?;
    }
    read_values(
        reader,
        header.len(),
        header.data_offset,
        available.is_some(),
        header.dtype.name(),
    )
    .map_err(|m| file_error(name, m))
}

/// Reads a little-endian float32 `.npy` of one or two dimensions (C or
/// Fortran order, the array in its own layout) from any reader at byte 0
/// (`available`: its length, when known).
pub fn read_f32_from(
    reader: &mut impl Read,
    name: &Path,
    available: Option<u64>,
) -> Result<ArrayD<f32>> {
    let header = parse_f32_header(reader, name)?;
    let data_left = available.map(|a| a.saturating_sub(header.data_offset));
    let data = read_data::<f32>(reader, &header, name, data_left)?;
    let shape: Vec<usize> = header.shape.iter().map(|&d| d as usize).collect();
    ArrayD::from_shape_vec(IxDyn(&shape).set_f(header.fortran_order), data)
        .map_err(|e| file_error(name, format!("shape {:?}: {e}", header.shape)))
}

/// Reads partition offsets from an int64 or int32 `.npy` (1-D).
pub fn read_offsets(path: &Path) -> Result<Vec<i64>> {
    let mut file = open_input(path)?;
    let available = available_bytes(&mut file);
    read_offsets_from(&mut file, path, available)
}

/// [`read_offsets`] from any reader at byte 0 (`available`: its length,
/// when known).
pub fn read_offsets_from(
    reader: &mut impl Read,
    name: &Path,
    available: Option<u64>,
) -> Result<Vec<i64>> {
    let offsets_error = |e: Error| match e {
        Error::File { path, message } => Error::File {
            path,
            message: format!("offsets: {message}"),
        },
        other => other,
    };
    let header = read_header(reader, name).map_err(offsets_error)?;
    if header.shape.len() != 1 {
        return Err(offsets_error(file_error(
            name,
            format!(
                "expected a 1-D array, found {}-D with shape {:?}",
                header.shape.len(),
                header.shape
            ),
        )));
    }
    let data_left = available.map(|a| a.saturating_sub(header.data_offset));
    match header.dtype {
        Dtype::I64 => read_data::<i64>(reader, &header, name, data_left),
        Dtype::I32 => read_data::<i32>(reader, &header, name, data_left)
            .map(|v| v.into_iter().map(i64::from).collect()),
        other => Err(file_error(
            name,
            format!("wrong dtype {:?}: expected int32 or int64", other.descr()),
        )),
    }
    .map_err(offsets_error)
}

/// Reads raw little-endian float32 values from `reader` to its end
/// (`available`: its length, when known, checked to be whole values).
pub fn read_raw_f32_from(
    reader: &mut impl Read,
    name: &Path,
    available: Option<u64>,
) -> Result<Vec<f32>> {
    match available {
        Some(len) => {
            check_raw_len(name, len)?;
            read_values(reader, len / 4, 0, true, "float32")
        }
        None => read_all_values(reader, "float32"),
    }
    .map_err(|m| file_error(name, m))
}

fn check_raw_len(path: &Path, len: u64) -> Result<()> {
    check_raw_len_of(path, len, Dtype::F32)
}

fn check_raw_len_of(path: &Path, len: u64, dtype: Dtype) -> Result<()> {
    let size = dtype.size();
    if !len.is_multiple_of(size) {
        return Err(file_error(
            path,
            format!(
                "raw {dtype} data must be a whole number of {size}-byte values: the file has {len} bytes, \
                 so the value at byte {} is cut short",
                len - len % size
            ),
        ));
    }
    Ok(())
}

/// A `.npy` file opened for streaming: its header, and the file positioned
/// at the first data byte.
#[derive(Debug)]
pub(crate) struct NpyStream {
    pub header: NpyHeader,
    pub file: File,
}

/// Opens a `.npy` of any supported dtype for streaming: parses and checks
/// the header (1-D or 2-D) and, for a regular file, that the file
/// holds exactly the data the header announces.
pub(crate) fn open_stream(path: &Path) -> Result<NpyStream> {
    let mut file = open_input(path)?;
    let header = read_header(&mut file, path)?;
    check_array_header(&header, path)?;
    if let Some(available) = available_bytes(&mut file) {
        check_size(path, &header, available)?;
    }
    Ok(NpyStream { header, file })
}

/// Opens a raw file of little-endian `dtype` values for streaming: the
/// number of values where the file system knows the size (checked to be a
/// whole number of values), `None` for a pipe.
pub(crate) fn open_raw_stream(path: &Path, dtype: Dtype) -> Result<(File, Option<u64>)> {
    let mut file = open_input(path)?;
    let Some(len) = available_bytes(&mut file) else {
        return Ok((file, None));
    };
    check_raw_len_of(path, len, dtype)?;
    Ok((file, Some(len / dtype.size())))
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
    fn fortran_order_arrays_are_read_in_their_own_layout() {
        // Column-major data of [[1, 2, 3], [4, 5, 6]]: 1, 4, 2, 5, 3, 6.
        let mut bytes = header("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }");
        for v in [1.0f32, 4.0, 2.0, 5.0, 3.0, 6.0] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let a = read_f32_from(
            &mut &bytes[..],
            Path::new("f.npy"),
            Some(bytes.len() as u64),
        )
        .unwrap();
        assert_eq!(a.shape(), &[2, 3]);
        let rows: Vec<f32> = a.iter().copied().collect();
        assert_eq!(rows, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
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
                header("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 3), }"),
                "3-D",
            ),
            (
                header("{'descr': '<f4', 'fortran_order': False, 'shape': (), }"),
                "0-D",
            ),
            (
                header("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (3,), }"),
                "not a Python literal",
            ),
            (
                header("{'descr': '<f4', 'shape': (3,), }"),
                "needs the keys 'descr', 'fortran_order' and 'shape'",
            ),
            (
                header("{'descr': '|u1', 'fortran_order': False, 'shape': (3,), }"),
                "unsupported dtype \"|u1\"",
            ),
            (
                header("{'descr': '<f4', 'fortran_order': False, 'shape': (00003,), }"),
                "leading zeros",
            ),
            (
                header(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }",
                ),
                "too large to exist",
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

    fn with_data(dict: &str, data: &[u8]) -> Vec<u8> {
        let mut out = header(dict);
        out.extend_from_slice(data);
        out
    }

    /// Reads `bytes` as a regular file (length known) and as a pipe.
    fn both<T: std::fmt::Debug>(
        bytes: &[u8],
        read: impl Fn(&mut &[u8], Option<u64>) -> Result<T>,
    ) -> [Result<T>; 2] {
        [
            read(&mut &bytes[..], Some(bytes.len() as u64)),
            read(&mut &bytes[..], None),
        ]
    }

    #[test]
    fn offsets_checked_against_the_length_before_any_allocation() {
        let name = Path::new("o.npy");
        let read = |r: &mut &[u8], a: Option<u64>| read_offsets_from(r, name, a);
        let good: Vec<u8> = [0i64, 2, 5].iter().flat_map(|v| v.to_le_bytes()).collect();
        let dict = "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }";
        for got in both(&with_data(dict, &good), read) {
            assert_eq!(got.unwrap(), vec![0, 2, 5]);
        }
        let i32s: Vec<u8> = [0i32, 7].iter().flat_map(|v| v.to_le_bytes()).collect();
        let dict = "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }";
        for got in both(&with_data(dict, &i32s), read) {
            assert_eq!(got.unwrap(), vec![0, 7]);
        }
        // Headers that announce 2^31..2^40 values over 16 bytes of data.
        for (descr, n) in [("<i4", 1u64 << 31), ("<i8", 1 << 40), ("<i4", 1 << 40)] {
            let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({n},), }}");
            for got in both(&with_data(&dict, &[0; 16]), read) {
                let err = got.unwrap_err().to_string();
                assert!(err.starts_with("o.npy: offsets: truncated"), "{err}");
            }
        }
        // Trailing bytes, a wrong dtype, two dimensions.
        let dict = "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }";
        let mut long = good.clone();
        long.push(1);
        for got in both(&with_data(dict, &long), read) {
            assert!(got.unwrap_err().to_string().contains("corrupt"));
        }
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
        for got in both(&with_data(dict, &[0; 8]), read) {
            let err = got.unwrap_err().to_string();
            assert!(
                err.contains("wrong dtype \"<f4\": expected int32 or int64"),
                "{err}"
            );
        }
        let dict = "{'descr': '<i8', 'fortran_order': False, 'shape': (1, 1), }";
        for got in both(&with_data(dict, &[0; 8]), read) {
            assert!(got.unwrap_err().to_string().contains("1-D"));
        }
        for got in both(b"", read) {
            assert!(got.unwrap_err().to_string().contains("empty"));
        }
    }

    #[test]
    fn float32_data_on_every_path() {
        let name = Path::new("d.npy");
        let read = |r: &mut &[u8], a: Option<u64>| read_f32_from(r, name, a);
        let data: Vec<u8> = [1.5f32, -2.0, 3.0, 4.0, 5.0, 6.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        for got in both(&with_data(dict, &data), read) {
            let a = got.unwrap();
            assert_eq!(a.shape(), &[2, 3]);
            assert_eq!(a[[1, 0]], 4.0);
        }
        for got in both(&with_data(dict, &data[..20]), read) {
            assert!(got.unwrap_err().to_string().contains("truncated"));
        }
        let mut long = data.clone();
        long.extend_from_slice(b"junk");
        for got in both(&with_data(dict, &long), read) {
            assert!(got.unwrap_err().to_string().contains("corrupt"));
        }
        // Non-float32 dtypes: the message names the dtype, as before.
        let dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }";
        for got in both(&with_data(dict, &data), read) {
            let err = got.unwrap_err().to_string();
            assert!(
                err.contains("wrong dtype \"<f8\": expected float32"),
                "{err}"
            );
        }
        // An empty array with a huge dimension holds nothing.
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 0), }";
        for got in both(&with_data(dict, &[]), read) {
            let err = got.map(|a| a.len());
            assert!(matches!(err, Ok(0)) || err.is_err(), "{err:?}");
        }
    }

    #[test]
    fn raw_float32_whole_values_only() {
        let name = Path::new("r.f32");
        let read = |r: &mut &[u8], a: Option<u64>| read_raw_f32_from(r, name, a);
        let data: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        for got in both(&data, read) {
            assert_eq!(got.unwrap(), vec![1.0, 2.0]);
        }
        for got in both(&data[..7], read) {
            let err = got.unwrap_err().to_string();
            assert!(
                err.starts_with("r.f32: ") && err.contains("at byte 4 is cut short"),
                "{err}"
            );
        }
    }
}
