//! The Arrow C data interface, read directly: the `ArrowSchema`,
//! `ArrowArray` and `ArrowArrayStream` structs of the specification
//! (<https://arrow.apache.org/docs/format/CDataInterface.html>) and the
//! PyCapsule protocol that hands them over (`__arrow_c_array__`,
//! `__arrow_c_stream__`). Only primitive columns of the engine's dtypes
//! are read: formats `f` (float32), `g` (float64), `i` (int32), `I`
//! (uint32) and `l` (int64), with or without a validity bitmap.
//!
//! Ownership follows the protocol: an array or stream taken from its
//! capsule is moved out (the capsule's copy is marked released) and
//! released by the [`OwnedArray`] / [`OwnedStream`] guard when dropped;
//! a schema is only read while its capsule is alive.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr;

use gpulanes::Dtype;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyCapsuleMethods, PyTuple};

/// `struct ArrowSchema`.
#[repr(C)]
pub struct FfiSchema {
    format: *const c_char,
    name: *const c_char,
    metadata: *const c_char,
    flags: i64,
    n_children: i64,
    children: *mut *mut FfiSchema,
    dictionary: *mut FfiSchema,
    release: Option<unsafe extern "C" fn(*mut FfiSchema)>,
    private_data: *mut c_void,
}

/// `struct ArrowArray`.
#[repr(C)]
pub struct FfiArray {
    length: i64,
    null_count: i64,
    offset: i64,
    n_buffers: i64,
    n_children: i64,
    buffers: *mut *const c_void,
    children: *mut *mut FfiArray,
    dictionary: *mut FfiArray,
    release: Option<unsafe extern "C" fn(*mut FfiArray)>,
    private_data: *mut c_void,
}

/// `struct ArrowArrayStream`.
#[repr(C)]
pub struct FfiStream {
    get_schema: Option<unsafe extern "C" fn(*mut FfiStream, *mut FfiSchema) -> c_int>,
    get_next: Option<unsafe extern "C" fn(*mut FfiStream, *mut FfiArray) -> c_int>,
    get_last_error: Option<unsafe extern "C" fn(*mut FfiStream) -> *const c_char>,
    release: Option<unsafe extern "C" fn(*mut FfiStream)>,
    private_data: *mut c_void,
}

impl FfiSchema {
    fn empty() -> Self {
        FfiSchema {
            format: ptr::null(),
            name: ptr::null(),
            metadata: ptr::null(),
            flags: 0,
            n_children: 0,
            children: ptr::null_mut(),
            dictionary: ptr::null_mut(),
            release: None,
            private_data: ptr::null_mut(),
        }
    }
}

impl FfiArray {
    fn empty() -> Self {
        FfiArray {
            length: 0,
            null_count: 0,
            offset: 0,
            n_buffers: 0,
            n_children: 0,
            buffers: ptr::null_mut(),
            children: ptr::null_mut(),
            dictionary: ptr::null_mut(),
            release: None,
            private_data: ptr::null_mut(),
        }
    }
}

/// An `ArrowArray` this side owns: released when dropped.
pub struct OwnedArray(Box<FfiArray>);

// The producer's buffers are immutable while the array is held, and its
// release callback may run on any thread (the specification's rule).
unsafe impl Send for OwnedArray {}
unsafe impl Sync for OwnedArray {}

impl Drop for OwnedArray {
    fn drop(&mut self) {
        if let Some(release) = self.0.release {
            // SAFETY: the struct was moved out of its producer's capsule (or
            // filled by a stream's get_next) and is released exactly once.
            unsafe { release(&mut *self.0) };
        }
    }
}

/// An owned schema (from a stream's get_schema): released when dropped.
struct OwnedSchema(FfiSchema);

impl Drop for OwnedSchema {
    fn drop(&mut self) {
        if let Some(release) = self.0.release {
            // SAFETY: filled by get_schema, released once.
            unsafe { release(&mut self.0) };
        }
    }
}

/// An `ArrowArrayStream` this side owns: released when dropped.
struct OwnedStream(Box<FfiStream>);

impl Drop for OwnedStream {
    fn drop(&mut self) {
        if let Some(release) = self.0.release {
            // SAFETY: moved out of its capsule, released once.
            unsafe { release(&mut *self.0) };
        }
    }
}

/// One chunk of a primitive column, as the engine reads it.
pub struct ArrowChunk {
    /// The first value (the array's offset applied).
    pub values: *const u8,
    /// Number of values.
    pub len: usize,
    /// The validity bitmap and the bit of the first value, where the chunk
    /// has nulls.
    pub validity: Option<(*const u8, usize)>,
    /// Keeps the buffers alive.
    pub _owner: OwnedArray,
}

/// A primitive column from an object with the Arrow PyCapsule interface.
pub struct ArrowColumn {
    pub dtype: Dtype,
    pub chunks: Vec<ArrowChunk>,
}

fn bad(msg: impl Into<String>) -> PyErr {
    PyValueError::new_err(msg.into())
}

/// The dtype of an Arrow format string.
fn dtype_of_format(schema: &FfiSchema) -> PyResult<Dtype> {
    if schema.format.is_null() {
        return Err(bad("Arrow schema without a format string"));
    }
    // SAFETY: the specification makes `format` a NUL-terminated string.
    let format = unsafe { CStr::from_ptr(schema.format) }.to_string_lossy();
    if !schema.dictionary.is_null() {
        return Err(bad(
            "dictionary-encoded Arrow columns are not supported (decode them first)",
        ));
    }
    match &*format {
        "f" => Ok(Dtype::F32),
        "g" => Ok(Dtype::F64),
        "i" => Ok(Dtype::I32),
        "I" => Ok(Dtype::U32),
        "l" => Ok(Dtype::I64),
        "+s" => Err(bad(
            "an Arrow struct (a table or record batch) was given: pass one column",
        )),
        other => Err(bad(format!(
            "unsupported Arrow type (format {other:?}): expected float32 ('f'), float64 ('g'), \
             int32 ('i'), uint32 ('I') or int64 ('l')"
        ))),
    }
}

/// Checks an owned array's layout against its dtype and makes its chunk.
fn chunk_of(array: OwnedArray, dtype: Dtype) -> PyResult<ArrowChunk> {
    let a = &*array.0;
    if a.length < 0 || a.offset < 0 || a.null_count < -1 {
        return Err(bad(format!(
            "Arrow array with length {}, offset {}, null count {}",
            a.length, a.offset, a.null_count
        )));
    }
    if a.n_buffers != 2 || a.buffers.is_null() {
        return Err(bad(format!(
            "a primitive Arrow array has 2 buffers, this one has {}",
            a.n_buffers
        )));
    }
    let len = usize::try_from(a.length).map_err(|_| bad("Arrow array too long"))?;
    let offset = usize::try_from(a.offset).map_err(|_| bad("Arrow offset too large"))?;
    // SAFETY: n_buffers == 2 pointers are readable by the specification.
    let (validity, values) = unsafe { (*a.buffers, *a.buffers.add(1)) };
    if values.is_null() && len > 0 {
        return Err(bad("Arrow array without a values buffer"));
    }
    let values = if len == 0 {
        ptr::NonNull::<u64>::dangling().as_ptr() as *const u8
    } else {
        // SAFETY: the values buffer holds offset + length values.
        unsafe { (values as *const u8).add(offset * dtype.size() as usize) }
    };
    let has_nulls = a.null_count != 0 && !validity.is_null();
    Ok(ArrowChunk {
        values,
        len,
        validity: has_nulls.then_some((validity as *const u8, offset)),
        _owner: array,
    })
}

/// Moves the struct out of a capsule named `name`, marking the capsule's
/// copy released so that its destructor leaves it alone.
fn take_array(capsule: &Bound<'_, PyAny>) -> PyResult<OwnedArray> {
    let capsule = capsule
        .cast::<PyCapsule>()
        .map_err(|_| bad("__arrow_c_array__ did not return a capsule"))?;
    let p = capsule.pointer_checked(Some(c"arrow_array"))?;
    let p = p.as_ptr() as *mut FfiArray;
    let mut out = Box::new(FfiArray::empty());
    // SAFETY: the capsule holds an ArrowArray; moving it out and clearing
    // `release` is the ownership transfer the protocol prescribes.
    unsafe {
        ptr::copy_nonoverlapping(p, &mut *out, 1);
        (*p).release = None;
    }
    if out.release.is_none() {
        return Err(bad("the Arrow array was already released"));
    }
    Ok(OwnedArray(out))
}

/// Reads an object with `__arrow_c_array__`.
pub fn from_c_array(obj: &Bound<'_, PyAny>) -> PyResult<ArrowColumn> {
    let pair = obj.call_method0("__arrow_c_array__")?;
    let pair = pair
        .cast::<PyTuple>()
        .map_err(|_| bad("__arrow_c_array__ did not return a tuple"))?;
    if pair.len() != 2 {
        return Err(bad("__arrow_c_array__ did not return (schema, array)"));
    }
    let schema_capsule = pair.get_item(0)?;
    let schema_capsule = schema_capsule
        .cast::<PyCapsule>()
        .map_err(|_| bad("__arrow_c_array__ did not return a schema capsule"))?;
    let schema = schema_capsule.pointer_checked(Some(c"arrow_schema"))?;
    // SAFETY: an ArrowSchema the capsule keeps alive while we read it.
    let dtype = dtype_of_format(unsafe { &*(schema.as_ptr() as *const FfiSchema) });
    // Take the array even when the type is refused, so it is released.
    let array = take_array(&pair.get_item(1)?)?;
    let dtype = dtype?;
    Ok(ArrowColumn {
        dtype,
        chunks: vec![chunk_of(array, dtype)?],
    })
}

fn stream_error(stream: &mut FfiStream, what: &str, code: c_int) -> PyErr {
    let msg = stream
        .get_last_error
        // SAFETY: get_last_error returns NULL or a NUL-terminated string
        // valid until the next call on the stream.
        .map(|f| unsafe { f(stream) })
        .filter(|p| !p.is_null())
        .map(|p| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("error code {code}"));
    bad(format!("Arrow stream {what} failed: {msg}"))
}

/// Reads every chunk of an object with `__arrow_c_stream__`.
pub fn from_c_stream(obj: &Bound<'_, PyAny>) -> PyResult<ArrowColumn> {
    let capsule = obj.call_method0("__arrow_c_stream__")?;
    let capsule = capsule
        .cast::<PyCapsule>()
        .map_err(|_| bad("__arrow_c_stream__ did not return a capsule"))?;
    let p = capsule
        .pointer_checked(Some(c"arrow_array_stream"))?
        .as_ptr() as *mut FfiStream;
    let mut stream = Box::new(FfiStream {
        get_schema: None,
        get_next: None,
        get_last_error: None,
        release: None,
        private_data: ptr::null_mut(),
    });
    // SAFETY: as in take_array, for a stream.
    unsafe {
        ptr::copy_nonoverlapping(p, &mut *stream, 1);
        (*p).release = None;
    }
    let mut stream = OwnedStream(stream);
    let s = &mut *stream.0;
    let (Some(get_schema), Some(get_next)) = (s.get_schema, s.get_next) else {
        return Err(bad("the Arrow stream was already released"));
    };
    let mut schema = OwnedSchema(FfiSchema::empty());
    // SAFETY: callbacks of a live stream, called on it as specified.
    let rc = unsafe { get_schema(s, &mut schema.0) };
    if rc != 0 {
        return Err(stream_error(s, "get_schema", rc));
    }
    let dtype = dtype_of_format(&schema.0)?;
    let mut chunks = Vec::new();
    loop {
        let mut next = Box::new(FfiArray::empty());
        // SAFETY: as above; a released array (release NULL) ends the stream.
        let rc = unsafe { get_next(s, &mut *next) };
        if rc != 0 {
            return Err(stream_error(s, "get_next", rc));
        }
        if next.release.is_none() {
            break;
        }
        chunks.push(chunk_of(OwnedArray(next), dtype)?);
    }
    Ok(ArrowColumn { dtype, chunks })
}
