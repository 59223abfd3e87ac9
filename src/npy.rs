//! Reading `.npy` files with errors that name the file and the problem:
//! float32 data (1-D or 2-D, C order) and int32/int64 partition offsets.

use std::fs::File;
use std::io::BufReader;
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
