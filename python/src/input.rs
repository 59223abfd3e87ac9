//! Inputs from Python: NumPy arrays (borrowed without a copy when their
//! memory is contiguous and aligned), objects with the Arrow PyCapsule
//! interface (borrowed without a copy when they are one chunk without
//! nulls), and anything `numpy.asarray` accepts (a copy).
//!
//! Copies, each documented in the package: a NumPy array that is not
//! contiguous in the order the reduction reads (C order for partitioned
//! reductions, either order for whole ones) or not aligned; an Arrow column
//! with nulls (the non-null values are compacted on the host, since the
//! kernels read no validity bitmap), or of several chunks, unless a whole
//! reduction reads large chunks in place one by one and merges their
//! states.

use std::ptr;

use gpulanes::{Dtype, Element, Partitions};
use numpy::{PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::arrow::{self, ArrowChunk};
use crate::engine_error;

/// Average bytes per chunk from which the chunks of a whole reduction are
/// read in place rather than gathered into one buffer.
pub const IN_PLACE_CHUNK_BYTES: usize = 1 << 20;

/// Where the values of one chunk are.
enum Buf {
    /// Memory owned by a Python object (or an Arrow producer) held alive
    /// by the [`Column`].
    Borrowed(*const u8),
    /// A copy, in 8-byte words so every dtype is aligned.
    Owned(Vec<u64>),
}

struct Chunk {
    buf: Buf,
    len: usize,
    validity: Option<(*const u8, usize)>,
}

impl Chunk {
    fn ptr(&self) -> *const u8 {
        match &self.buf {
            Buf::Borrowed(p) => *p,
            Buf::Owned(v) => v.as_ptr() as *const u8,
        }
    }

    /// The chunk's values where they are (a copy is taken over, leaving
    /// the chunk empty of it), as `dtype` values over `partitions`.
    fn take(&mut self, dtype: Dtype, partitions: Partitions) -> Prepared {
        let owned = match &mut self.buf {
            Buf::Owned(v) => Some(std::mem::take(v)),
            Buf::Borrowed(_) => None,
        };
        let ptr = owned
            .as_ref()
            .map_or_else(|| self.ptr(), |v| v.as_ptr() as *const u8);
        Prepared {
            dtype,
            ptr,
            len: self.len,
            _owned: owned,
            partitions,
            all_null: Vec::new(),
        }
    }
}

/// A column of values read from a Python object.
pub struct Column<'py> {
    pub dtype: Dtype,
    chunks: Vec<Chunk>,
    /// True when the values were copied on the way in.
    pub copied: bool,
    _array: Option<Bound<'py, PyAny>>,
    _arrow: Vec<arrow::OwnedArray>,
}

/// The values a reduction reads, with the partitions remapped to them.
pub struct Prepared {
    pub dtype: Dtype,
    ptr: *const u8,
    pub len: usize,
    _owned: Option<Vec<u64>>,
    /// The partitions over the values handed to the engine.
    pub partitions: Partitions,
    /// Partitions that had values, all of them null (an SQL NULL result).
    pub all_null: Vec<bool>,
}

// The pointer is into memory the caller keeps alive (the Column, or
// `_owned`) and no one writes it during the reduction.
unsafe impl Send for Prepared {}
unsafe impl Sync for Prepared {}

impl Prepared {
    /// The values as a slice of `E` (`E::DTYPE` must be `self.dtype`).
    pub fn slice<E: Element>(&self) -> &[E] {
        assert_eq!(E::DTYPE, self.dtype, "dispatch on the column's dtype");
        let p = if self.len == 0 {
            ptr::NonNull::<E>::dangling().as_ptr() as *const E
        } else {
            self.ptr as *const E
        };
        // SAFETY: `ptr` holds `len` aligned values of the dtype (checked or
        // copied in `extract`), alive as long as `self` and its Column.
        unsafe { std::slice::from_raw_parts(p, self.len) }
    }

    /// The start address of the values the engine reads.
    pub fn address(&self) -> usize {
        self.ptr as usize
    }
}

/// `$body` with `$s` bound to the values of `$p` (a [`Prepared`]) as a
/// slice of its dtype's element type: one arm per dtype, so code generic
/// over [`Element`] is written once.
macro_rules! with_values {
    ($p:expr, |$s:ident| $body:expr) => {
        match $p.dtype {
            gpulanes::Dtype::F32 => {
                let $s = $p.slice::<f32>();
                $body
            }
            gpulanes::Dtype::F64 => {
                let $s = $p.slice::<f64>();
                $body
            }
            gpulanes::Dtype::I32 => {
                let $s = $p.slice::<i32>();
                $body
            }
            gpulanes::Dtype::U32 => {
                let $s = $p.slice::<u32>();
                $body
            }
            gpulanes::Dtype::I64 => {
                let $s = $p.slice::<i64>();
                $body
            }
        }
    };
}
pub(crate) use with_values;

fn bad(msg: impl Into<String>) -> PyErr {
    PyValueError::new_err(msg.into())
}

fn dtype_of(array: &Bound<'_, PyUntypedArray>) -> PyResult<Dtype> {
    let py = array.py();
    let d = array.dtype();
    let candidates = [
        (numpy::dtype::<f32>(py), Dtype::F32),
        (numpy::dtype::<f64>(py), Dtype::F64),
        (numpy::dtype::<i32>(py), Dtype::I32),
        (numpy::dtype::<u32>(py), Dtype::U32),
        (numpy::dtype::<i64>(py), Dtype::I64),
    ];
    for (c, dtype) in candidates {
        if d.is_equiv_to(&c) {
            return Ok(dtype);
        }
    }
    Err(bad(format!(
        "unsupported dtype {}: expected integers, bools or floats of up to 64 bits \
         (float32, float64, int32, uint32 and int64 are reduced as they are; narrower \
         ones are widened, uint64 where every value fits int64)",
        d.str()?
    )))
}

fn copy_words(src: *const u8, bytes: usize) -> Vec<u64> {
    let mut v = vec![0u64; bytes.div_ceil(8)];
    // SAFETY: `src` holds `bytes` readable bytes; `v` has room for them.
    unsafe { ptr::copy_nonoverlapping(src, v.as_mut_ptr() as *mut u8, bytes) };
    v
}

/// Reads `obj` as a column. `c_order` asks for the values in C (row-major)
/// order, which partitioned reductions need; whole reductions take either
/// contiguous order.
pub fn extract<'py>(obj: &Bound<'py, PyAny>, c_order: bool) -> PyResult<Column<'py>> {
    let py = obj.py();
    // A plain ndarray has no `mask`; a NumPy masked array does.
    if obj.hasattr("mask")? && is_masked_array(obj)? {
        return from_masked(obj, c_order);
    }
    if let Ok(array) = obj.cast::<PyUntypedArray>() {
        return from_numpy(array, c_order, false);
    }
    if obj.hasattr("__arrow_c_array__")? {
        return Ok(from_arrow(arrow::from_c_array(obj)?));
    }
    if obj.hasattr("__arrow_c_stream__")? {
        return Ok(from_arrow(arrow::from_c_stream(obj)?));
    }
    let array = py.import("numpy")?.call_method1("asarray", (obj,))?;
    let array = array
        .cast::<PyUntypedArray>()
        .map_err(|_| bad("numpy.asarray did not return an array"))?;
    from_numpy(array, c_order, true)
}

fn is_masked_array(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    let ma = obj.py().import("numpy")?.getattr("ma")?;
    ma.call_method1("isMaskedArray", (obj,))?.is_truthy()
}

/// A NumPy masked array. Its masked entries are nulls, as an Arrow array's
/// are (never the values under the mask), so it is read through pyarrow
/// (`pyarrow.array(data, mask=mask)`, 1-D); without a masked entry it is
/// its data.
fn from_masked<'py>(obj: &Bound<'py, PyAny>, c_order: bool) -> PyResult<Column<'py>> {
    let py = obj.py();
    let ma = py.import("numpy")?.getattr("ma")?;
    let mask = ma.call_method1("getmaskarray", (obj,))?;
    let data = ma.call_method1("getdata", (obj,))?;
    if !mask.call_method0("any")?.is_truthy()? {
        return extract(&data, c_order);
    }
    if data.getattr("ndim")?.extract::<usize>()? != 1 {
        return Err(bad(
            "masked entries of a masked array are nulls, supported in 1-D arrays only: \
             pass a 1-D array, or .filled(...) / .compressed()",
        ));
    }
    let pa = py.import("pyarrow").map_err(|_| {
        bad(
            "masked entries of a masked array are nulls, which need pyarrow installed: \
             install it, or pass .filled(...) / .compressed()",
        )
    })?;
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("mask", mask)?;
    let nulls = pa.call_method("array", (data,), Some(&kwargs))?;
    extract(&nulls, c_order)
}

fn from_numpy<'py>(
    array: &Bound<'py, PyUntypedArray>,
    c_order: bool,
    converted: bool,
) -> PyResult<Column<'py>> {
    let dtype = dtype_of(array)?;
    let contiguous = if c_order {
        array.is_c_contiguous()
    } else {
        array.is_contiguous()
    };
    if !contiguous {
        // A strided view: NumPy copies it into C order.
        let py = array.py();
        let copy = py
            .import("numpy")?
            .call_method1("ascontiguousarray", (array,))?;
        let copy = copy
            .cast::<PyUntypedArray>()
            .map_err(|_| bad("numpy.ascontiguousarray did not return an array"))?;
        let mut col = from_numpy(copy, true, true)?;
        col.copied = true;
        return Ok(col);
    }
    let len = array.len();
    // SAFETY: a live NumPy array object; `data` is its first byte.
    let data = unsafe { (*array.as_array_ptr()).fields.data } as *const u8;
    let size = dtype.size() as usize;
    let (buf, copied) = if len == 0 {
        (Buf::Owned(Vec::new()), converted)
    } else if (data as usize).is_multiple_of(size) {
        (Buf::Borrowed(data), converted)
    } else {
        (Buf::Owned(copy_words(data, len * size)), true)
    };
    Ok(Column {
        dtype,
        chunks: vec![Chunk {
            buf,
            len,
            validity: None,
        }],
        copied,
        _array: Some(array.clone().into_any()),
        _arrow: Vec::new(),
    })
}

fn from_arrow<'py>(col: arrow::ArrowColumn) -> Column<'py> {
    let size = col.dtype.size() as usize;
    let mut chunks = Vec::with_capacity(col.chunks.len());
    let mut owners = Vec::with_capacity(col.chunks.len());
    let mut copied = false;
    for ArrowChunk {
        values,
        len,
        validity,
        _owner,
    } in col.chunks
    {
        let buf = if len > 0 && !(values as usize).is_multiple_of(size) {
            copied = true;
            Buf::Owned(copy_words(values, len * size))
        } else {
            Buf::Borrowed(values)
        };
        chunks.push(Chunk { buf, len, validity });
        owners.push(_owner);
    }
    Column {
        dtype: col.dtype,
        chunks,
        copied,
        _array: None,
        _arrow: owners,
    }
}

impl Column<'_> {
    /// Number of values, nulls included.
    pub fn len(&self) -> usize {
        self.chunks.iter().map(|c| c.len).sum()
    }

    /// True when some value is null.
    pub fn has_nulls(&self) -> bool {
        self.chunks.iter().any(|c| c.validity.is_some())
    }

    /// True when a whole reduction reads the chunks where they are, one
    /// pass each, and merges their states: several chunks without nulls,
    /// of [`IN_PLACE_CHUNK_BYTES`] or more on average (below that, one
    /// copy costs less than a round trip to the device per chunk).
    fn chunks_in_place(&self) -> bool {
        let bytes = self.len() * self.dtype.size() as usize;
        self.chunks.len() > 1
            && !self.has_nulls()
            && bytes >= IN_PLACE_CHUNK_BYTES * self.chunks.len()
    }

    /// True when the values of a whole reduction will be copied before it
    /// reads them.
    pub fn will_copy(&self) -> bool {
        self.copied || self.has_nulls() || (self.chunks.len() > 1 && !self.chunks_in_place())
    }

    /// The pieces a whole reduction reads: one per chunk where the chunks
    /// are read in place (see [`Column::chunks_in_place`]), else one.
    pub fn prepare_whole(&mut self) -> PyResult<Vec<Prepared>> {
        if !self.chunks_in_place() {
            return Ok(vec![self.prepare(Partitions::Whole)?]);
        }
        let dtype = self.dtype;
        Ok(self
            .chunks
            .iter_mut()
            .map(|c| c.take(dtype, Partitions::Whole))
            .collect())
    }

    /// The values for a reduction over `partitions` (of the column's
    /// values, nulls included). One chunk without nulls is read in place;
    /// otherwise the non-null values are gathered into one buffer and the
    /// partitions remapped to it.
    pub fn prepare(&mut self, partitions: Partitions) -> PyResult<Prepared> {
        let n = self.len();
        if self.chunks.len() == 1 && self.chunks[0].validity.is_none() {
            return Ok(self.first_chunk(partitions));
        }
        let whole = partitions == Partitions::Whole;
        let offsets = partitions.offsets(n as u64).map_err(engine_error)?;
        let size = self.dtype.size() as usize;
        let (valid_at, out) = gather(&self.chunks, &offsets, size);
        let all_null = offsets
            .windows(2)
            .zip(valid_at.windows(2))
            .map(|(o, v)| o[1] > o[0] && v[1] == v[0])
            .collect();
        let len = (out.len() * 8) / size.max(1);
        let len = len.min(*valid_at.last().unwrap_or(&0) as usize);
        let ptr = out.as_ptr() as *const u8;
        Ok(Prepared {
            dtype: self.dtype,
            ptr,
            len,
            _owned: Some(out),
            partitions: if whole {
                Partitions::Whole
            } else {
                Partitions::Offsets(valid_at)
            },
            all_null,
        })
    }
}

impl Column<'_> {
    /// The first chunk's values where they are (or its copy, taken over),
    /// over `partitions`.
    fn first_chunk(&mut self, partitions: Partitions) -> Prepared {
        let dtype = self.dtype;
        self.chunks[0].take(dtype, partitions)
    }

    /// Every row's value, null slots included (the engine never reads
    /// them), for a keyed reduction, which keeps the rows of null values
    /// for their keys; with a validity bitmap over the rows (bit `i` set
    /// where row `i` holds a value, offset 0) where some value is null.
    /// One chunk is read in place; several are copied into one buffer.
    pub fn prepare_rows(&mut self) -> PyResult<(Prepared, Option<Vec<u8>>)> {
        if !self.has_nulls() {
            return Ok((self.prepare(Partitions::Whole)?, None));
        }
        let n = self.len();
        let size = self.dtype.size() as usize;
        let mut bits = vec![0u8; n.div_ceil(8)];
        let mut row = 0;
        for c in &self.chunks {
            for i in 0..c.len {
                let ok = c.validity.is_none_or(|(b, bit0)| is_valid(b, bit0 + i));
                bits[(row + i) / 8] |= u8::from(ok) << ((row + i) % 8);
            }
            row += c.len;
        }
        if self.chunks.len() == 1 {
            return Ok((self.first_chunk(Partitions::Whole), Some(bits)));
        }
        let mut out = vec![0u64; (n * size).div_ceil(8)];
        let dst = out.as_mut_ptr() as *mut u8;
        let mut at = 0;
        for c in &self.chunks {
            // SAFETY: each chunk holds `c.len` values of `size` bytes, and
            // `out` has room for all of them.
            unsafe { ptr::copy_nonoverlapping(c.ptr(), dst.add(at * size), c.len * size) };
            at += c.len;
        }
        let prepared = Prepared {
            dtype: self.dtype,
            ptr: out.as_ptr() as *const u8,
            len: n,
            _owned: Some(out),
            partitions: Partitions::Whole,
            all_null: Vec::new(),
        };
        Ok((prepared, Some(bits)))
    }
}

/// Gathers the non-null values of `chunks` (values of `size` bytes) into
/// one buffer, and maps each of the sorted `offsets` (positions among all
/// values) to its position among the non-null ones.
fn gather(chunks: &[Chunk], offsets: &[u64], size: usize) -> (Vec<u64>, Vec<u64>) {
    let valid: usize = chunks
        .iter()
        .map(|c| match c.validity {
            None => c.len,
            Some((bits, bit0)) => (0..c.len).filter(|&i| is_valid(bits, bit0 + i)).count(),
        })
        .sum();
    let mut out = vec![0u64; (valid * size).div_ceil(8)];
    let dst = out.as_mut_ptr() as *mut u8;
    let mut valid_at = vec![0u64; offsets.len()];
    let (mut g, mut v, mut j) = (0u64, 0u64, 0usize);
    for c in chunks {
        let src = c.ptr();
        match c.validity {
            None => {
                while j < offsets.len() && offsets[j] < g + c.len as u64 {
                    valid_at[j] = v + (offsets[j] - g);
                    j += 1;
                }
                // SAFETY: `src` holds `c.len` values; `out` has room for
                // every valid value.
                unsafe { ptr::copy_nonoverlapping(src, dst.add(v as usize * size), c.len * size) };
                v += c.len as u64;
            }
            Some((bits, bit0)) => {
                for i in 0..c.len {
                    while j < offsets.len() && offsets[j] == g + i as u64 {
                        valid_at[j] = v;
                        j += 1;
                    }
                    if is_valid(bits, bit0 + i) {
                        // SAFETY: as above, one value.
                        unsafe {
                            ptr::copy_nonoverlapping(
                                src.add(i * size),
                                dst.add(v as usize * size),
                                size,
                            )
                        };
                        v += 1;
                    }
                }
            }
        }
        g += c.len as u64;
    }
    while j < offsets.len() {
        valid_at[j] = v;
        j += 1;
    }
    (valid_at, out)
}

fn is_valid(bits: *const u8, i: usize) -> bool {
    // SAFETY: the validity bitmap covers offset + length bits.
    unsafe { *bits.add(i / 8) >> (i % 8) & 1 == 1 }
}
