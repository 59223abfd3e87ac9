//! Streaming reductions: inputs of any size (files larger than GPU memory or
//! host RAM, pipes, sockets, generators) reduced chunk by chunk within a
//! memory budget, with results bitwise equal to
//! [`Engine::reduce_partitions`] on the same data.
//!
//! # Why the bits are the same
//! The reduction tree depends only on the partition lengths (see `plan.rs`):
//! level 0 cuts each partition into units of `BLOCK` (8192) items counted
//! from the partition start, and each later level reduces a partition's
//! partials from the level below in groups of `GROUP` (2048), again counted
//! from the partition start, until one partial is left. A unit's partial
//! depends only on the items (or partials) of that unit. So the stream:
//!
//! 1. cuts the input into chunks on unit boundaries and runs the element
//!    pass over each chunk, one segment per unit, reading back one partial
//!    ([`crate::kernels::PARTIAL_BYTES`]) per unit;
//! 2. keeps, per open partition, the partials of each level not yet reduced,
//!    and as soon as a partition has a full group of `GROUP` partials at some
//!    level, reduces that group on the GPU (it is exactly one unit of the next
//!    level);
//! 3. when a partition is complete, reduces the short last group of each
//!    level in turn, and passes a single partial through the levels that the
//!    deepest partition needs (as the in-memory plan does), then finalizes it.
//!
//! # Memory
//! Bounded by [`StreamOptions::budget_bytes`], independent of the input
//! size: the budget is split into chunks (`budget / 16`, between 32 KiB and
//! 64 MiB), and the stream holds at most a ring of 3 staging buffers and 3
//! device input buffers of one chunk each, 3 host chunks (reader thread), one
//! chunk of not-yet-uploaded items, per-submission tables and partials, and
//! per open partition fewer than `GROUP` pending partials per level (32 KiB
//! per level; two levels serve partitions of up to 2^35 items). Partitions
//! are open only while their units are in flight or their last groups are
//! being reduced, so few are open at once. The result itself (one value and
//! one count per partition) is not counted. [`StreamStats::peak_bytes`]
//! reports what the stream held; with a 1 MiB budget, streaming a 1 GiB file
//! leaves the process's peak resident memory where it was.
//!
//! # Pipeline
//! A reader thread fills host chunks and hands them over through a bounded
//! channel; the calling thread copies each chunk into the next staging buffer
//! of the ring, encodes the copy into that slot's device input buffer and the
//! element pass over it, submits, and moves on without waiting, so disk
//! reads, uploads and GPU work overlap. It waits only when all ring slots are
//! in flight, for the oldest one, whose partials it then reads back.

mod level_work;
mod reader;
mod reducer;
mod ring;
mod throughput;
mod typed;

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::Instant;

use serde::Serialize;

use crate::dtype::{Dtype, Element, Scalar};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::npy;
use crate::op::{NanPolicy, Op, Reduction};
use crate::partition::Partitions;
use reader::{Msg, Source, read_loop};
pub use reducer::StreamReducer;
pub use throughput::{StreamThroughput, measure_stream_throughput};

/// Default memory budget of a stream: 512 MiB.
pub const DEFAULT_BUDGET_BYTES: u64 = 512 << 20;
/// Smallest budget a stream accepts: 512 KiB.
pub const MIN_BUDGET_BYTES: u64 = 512 << 10;
/// Ring slots (staging + device input buffer pairs) in flight.
const RING: usize = 3;
/// Host chunks the reader thread may hold (filling, queued, being uploaded).
const HOST_CHUNKS: usize = 3;
/// The budget is split into this many chunks (ring, host chunks, the
/// not-yet-uploaded chunk, tables and partials (a full group of 64-byte
/// partials is two chunks at the smallest budgets), with room to spare).
const BUDGET_SHARES: u64 = 20;
/// Largest chunk: bigger ones do not make streaming faster.
const MAX_CHUNK_BYTES: u64 = 64 << 20;

/// Fails with a message naming the smallest budget a stream accepts.
pub(super) fn check_budget(budget_bytes: u64) -> Result<()> {
    if budget_bytes < MIN_BUDGET_BYTES {
        return Err(Error::InvalidInput(format!(
            "memory budget of {budget_bytes} bytes is too small: at least {MIN_BUDGET_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Called from the reader thread with the bytes read so far.
pub type ProgressFn = Arc<dyn Fn(u64) + Send + Sync>;

/// How a stream uses memory, and who hears about its progress.
#[derive(Clone)]
pub struct StreamOptions {
    /// Bytes of host and device memory the stream may hold (at least
    /// [`MIN_BUDGET_BYTES`]); the input size does not matter.
    pub budget_bytes: u64,
    /// Chunk size in bytes instead of the one derived from the budget (a
    /// multiple of 256, at least 32 KiB); for tests and tuning.
    pub chunk_bytes: Option<u64>,
    /// Progress callback (bytes read so far), for readers and files.
    pub progress: Option<ProgressFn>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            budget_bytes: DEFAULT_BUDGET_BYTES,
            chunk_bytes: None,
            progress: None,
        }
    }
}

impl StreamOptions {
    /// Default options with this budget.
    pub fn with_budget(budget_bytes: u64) -> Self {
        StreamOptions {
            budget_bytes,
            ..Default::default()
        }
    }
}

impl fmt::Debug for StreamOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamOptions")
            .field("budget_bytes", &self.budget_bytes)
            .field("chunk_bytes", &self.chunk_bytes)
            .field("progress", &self.progress.as_ref().map(|_| "Fn(u64)"))
            .finish()
    }
}

/// What a finished stream did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StreamStats {
    /// Items reduced.
    pub items: u64,
    /// GPU submissions (chunks and partial-pass rounds).
    pub submissions: u64,
    /// Chunk size used, in bytes.
    pub chunk_bytes: u64,
    /// The budget it ran under, in bytes.
    pub budget_bytes: u64,
    /// Peak bytes held by the stream (buffers, pending partials, host chunks;
    /// the result not counted).
    pub peak_bytes: u64,
    /// Wall time from the first byte to the result.
    pub seconds: f64,
    /// Time the uploading thread waited for input (reader thread behind).
    pub input_wait_seconds: f64,
    /// Time it waited for the GPU (GPU behind).
    pub gpu_wait_seconds: f64,
}

/// Encoding of a streamed file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    /// A float32 `.npy` (`'<f4'`, 1-D or 2-D, C or Fortran order; reduced flat).
    Npy,
    /// Raw little-endian float32 values, nothing else.
    RawF32,
}

/// A float32 input file opened for streaming, positioned at its first data
/// byte, its size checked against its header (or, for raw files, against
/// the float size) where the file system knows it.
#[derive(Debug)]
pub struct InputFile {
    pub path: PathBuf,
    pub format: FileFormat,
    pub file: File,
    /// The array shape (from the `.npy` header; `[len]` for a raw regular
    /// file; `None` for a raw pipe).
    pub shape: Option<Vec<u64>>,
    /// Byte offset of the first data byte (the `.npy` header length; 0 raw).
    pub data_offset: u64,
    /// The element type (float32 for [`InputFile::open`]).
    pub dtype: Dtype,
    /// True for a 2-D `.npy` stored in Fortran (column-major) order: its
    /// data is then the C-order array of `shape`, which is the stored
    /// array's shape reversed (the file's rows are `shape`'s columns), so
    /// a reduction along the file's axis `a` is one along `shape`'s axis
    /// `1 - a`.
    pub transposed: bool,
}

impl InputFile {
    /// Opens a float32 input `path` (`-`: standard input); errors name the
    /// file and the byte offset (a `.npy` of another dtype is one).
    pub fn open(path: &Path, format: FileFormat) -> Result<Self> {
        let input = InputFile::open_typed(path, format, Dtype::F32)?;
        if input.dtype != Dtype::F32 {
            return Err(Error::File {
                path: input.path,
                message: format!(
                    "wrong dtype {:?}: expected float32 ('<f4')",
                    input.dtype.descr()
                ),
            });
        }
        Ok(input)
    }

    /// Opens `path` holding values of any supported dtype: a `.npy` says
    /// its own (`raw_dtype` is then ignored); a raw file holds `raw_dtype`.
    pub fn open_typed(path: &Path, format: FileFormat, raw_dtype: Dtype) -> Result<Self> {
        match format {
            FileFormat::Npy => {
                let s = npy::open_stream(path)?;
                let transposed = s.header.fortran_order && s.header.shape.len() == 2;
                let mut shape = s.header.shape;
                if transposed {
                    shape.reverse();
                }
                Ok(InputFile {
                    path: npy::input_name(path),
                    format,
                    file: s.file,
                    data_offset: s.header.data_offset,
                    shape: Some(shape),
                    dtype: s.header.dtype,
                    transposed,
                })
            }
            FileFormat::RawF32 => {
                let (file, len) = npy::open_raw_stream(path, raw_dtype)?;
                Ok(InputFile {
                    path: npy::input_name(path),
                    format,
                    file,
                    shape: len.map(|l| vec![l]),
                    data_offset: 0,
                    dtype: raw_dtype,
                    transposed: false,
                })
            }
        }
    }

    /// Values the file holds, when known before reading it (0 when any
    /// dimension is 0; the header was checked, so the product fits).
    pub fn len(&self) -> Option<u64> {
        self.shape.as_ref().map(|s| {
            if s.contains(&0) {
                0
            } else {
                s.iter().product()
            }
        })
    }

    /// True when the file is known to hold no values.
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }

    /// Data bytes, when known before reading.
    pub fn data_bytes(&self) -> Option<u64> {
        self.len().map(|n| n * self.dtype.size())
    }

    /// Reads all the values into memory, checking truncation and trailing
    /// bytes as the stream does. The file's size was checked against the
    /// header when it was opened (where the file system knows it);
    /// otherwise (a pipe) memory grows with what arrives, never sized by
    /// the header alone.
    pub fn read_to_vec(self) -> Result<Vec<f32>> {
        self.read_to_vec_typed()
    }

    /// [`InputFile::read_to_vec`] for values of type `E` (which must be the
    /// file's dtype).
    pub fn read_to_vec_typed<E: Element>(mut self) -> Result<Vec<E>> {
        let file_error = |message: String| Error::File {
            path: self.path.clone(),
            message,
        };
        if E::DTYPE != self.dtype {
            return Err(file_error(format!(
                "holds {} values, not {}",
                self.dtype,
                E::DTYPE
            )));
        }
        let verified = npy::available_bytes(&mut self.file).is_some();
        let name = self.dtype.name();
        match self.len() {
            Some(n) => npy::read_values(&mut self.file, n, self.data_offset, verified, name),
            None => npy::read_all_values(&mut self.file, name),
        }
        .map_err(file_error)
    }
}

impl Engine {
    /// Starts a push-based stream: [`StreamReducer::push`] slices of any
    /// size, then [`StreamReducer::finish`]. Supports every kind of
    /// [`Partitions`]; the result is bitwise equal to
    /// [`Engine::reduce_partitions`] over the concatenated input.
    ///
    /// Empty partitions and NaN follow the table in [`crate::op`], as for
    /// [`Engine::reduce_partitions`]: an empty partition's `sum` and
    /// `count` are 0, its `mean`, `max` and `min` `None`; under
    /// [`NanPolicy::Propagate`] a NaN makes the value NaN, under
    /// [`NanPolicy::Ignore`] NaNs are skipped (an all-NaN `max`/`min` is
    /// `None`).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for options out of range (a budget or chunk
    /// size too small); [`Error::InvalidPartitions`] for partitions that
    /// cannot describe any input (a zero size, offsets not starting at 0 or
    /// decreasing); [`Error::DeviceLost`] once the device is lost. Later
    /// errors come from [`StreamReducer::push`] and
    /// [`StreamReducer::finish`].
    pub fn stream(
        &self,
        op: Op,
        partitions: &Partitions,
        nan: NanPolicy,
        options: &StreamOptions,
    ) -> Result<StreamReducer> {
        StreamReducer::new(self.clone(), op, partitions, nan, options)
    }

    /// Reduces chunks of any sizes (`Vec<f32>`, `&[f32]`, ...) as one input.
    /// No chunks at all is an empty input.
    ///
    /// Empty partitions and NaN follow the table in [`crate::op`], as for
    /// [`Engine::reduce_partitions`]: an empty partition's `sum` and
    /// `count` are 0, its `mean`, `max` and `min` `None`; under
    /// [`NanPolicy::Propagate`] a NaN makes the value NaN, under
    /// [`NanPolicy::Ignore`] NaNs are skipped (an all-NaN `max`/`min` is
    /// `None`).
    ///
    /// # Errors
    /// As [`Engine::stream`]; [`Error::InvalidPartitions`] when the
    /// partitions do not describe the whole input (offsets ending before or
    /// after it);
    /// [`Error::OutOfMemory`] when the device cannot hold the request;
    /// [`Error::DeviceLost`] once the device is lost; [`Error::Validation`],
    /// [`Error::Wait`], [`Error::Map`] or [`Error::Internal`] for other GPU
    /// failures (see [`Error`]).
    pub fn reduce_chunks<I>(
        &self,
        chunks: I,
        op: Op,
        partitions: &Partitions,
        nan: NanPolicy,
        options: &StreamOptions,
    ) -> Result<Reduction>
    where
        I: IntoIterator,
        I::Item: AsRef<[f32]>,
    {
        let mut stream = self.stream(op, partitions, nan, options)?;
        for chunk in chunks {
            stream.push(chunk.as_ref())?;
        }
        stream.finish()
    }

    /// Reduces little-endian float32 values read from `reader` until it ends,
    /// on a reader thread that runs ahead of the GPU within the budget. A
    /// reader that ends at once is an empty input.
    ///
    /// Empty partitions and NaN follow the table in [`crate::op`], as for
    /// [`Engine::reduce_partitions`]: an empty partition's `sum` and
    /// `count` are 0, its `mean`, `max` and `min` `None`; under
    /// [`NanPolicy::Propagate`] a NaN makes the value NaN, under
    /// [`NanPolicy::Ignore`] NaNs are skipped (an all-NaN `max`/`min` is
    /// `None`).
    ///
    /// # Errors
    /// As [`Engine::reduce_chunks`]; [`Error::File`] when reading fails or
    /// the input ends inside a value (the message gives the byte offset).
    pub fn reduce_reader<R: Read + Send>(
        &self,
        reader: R,
        op: Op,
        partitions: &Partitions,
        nan: NanPolicy,
        options: &StreamOptions,
    ) -> Result<Reduction> {
        let source = Source {
            name: PathBuf::from("<reader>"),
            data_offset: 0,
            expected_bytes: None,
        };
        self.reduce_source(reader, source, op, partitions, nan, options)
            .map(|(r, _)| r)
    }

    /// Reduces `len` values of any [`Element`] type read from `reader`
    /// (little-endian, as they lie in memory), one chunk of about a quarter
    /// of the budget at a time, each value in its op's result type. Fewer
    /// bytes than `len` values, or bytes after them, are errors.
    ///
    /// Empty partitions and NaN follow the table in [`crate::op`], as for
    /// [`Engine::reduce_slice`]: an empty partition's `sum` and
    /// `count` are 0, its `mean`, `max` and `min` `None`; under
    /// [`NanPolicy::Propagate`] a NaN makes the value NaN, under
    /// [`NanPolicy::Ignore`] NaNs are skipped (an all-NaN `max`/`min` is
    /// `None`).
    ///
    /// # Errors
    /// As [`Engine::reduce_chunks`]; [`Error::File`] when reading fails, the
    /// reader ends before `len` values or holds bytes after them;
    /// [`Error::Overflow`] for an integer sum outside int64.
    pub fn reduce_reader_typed<E: Element, R: Read>(
        &self,
        reader: R,
        len: u64,
        op: Op,
        partitions: &Partitions,
        nan: NanPolicy,
        options: &StreamOptions,
    ) -> Result<Reduction<Scalar>> {
        let name = Path::new("<reader>");
        typed::reduce_reader::<E>(self, reader, len, op, partitions, nan, options, name, 0)
    }

    /// Reduces a file of any dtype opened with [`InputFile::open_typed`]
    /// (its length known: a regular file, or a `.npy` whose header gives
    /// it), as [`Engine::reduce_reader_typed`] does; errors name the file
    /// and the byte offset.
    ///
    /// An empty file gives empty partitions; NaN and empty partitions
    /// follow [`Engine::reduce_reader_typed`].
    ///
    /// # Errors
    /// As [`Engine::reduce_reader_typed`]; [`Error::File`] as well when the
    /// file holds another dtype than `E` or its length is unknown (a raw
    /// pipe).
    pub fn reduce_input_file_typed<E: Element>(
        &self,
        input: InputFile,
        op: Op,
        partitions: &Partitions,
        nan: NanPolicy,
        options: &StreamOptions,
    ) -> Result<Reduction<Scalar>> {
        let file_error = |message: String| Error::File {
            path: input.path.clone(),
            message,
        };
        if input.dtype != E::DTYPE {
            return Err(file_error(format!(
                "holds {} values, not {}",
                input.dtype,
                E::DTYPE
            )));
        }
        let Some(len) = input.len() else {
            return Err(file_error(
                "its length is unknown (a raw pipe): read it into memory".into(),
            ));
        };
        typed::reduce_reader::<E>(
            self,
            &input.file,
            len,
            op,
            partitions,
            nan,
            options,
            &input.path,
            input.data_offset,
        )
    }

    /// Reduces a float32 file of any size (flat: a 2-D `.npy` is reduced in
    /// row-major order; use `Partitions::EqualSize(columns)` for per-row
    /// results). Errors name the file and the byte offset.
    ///
    /// An empty file gives empty partitions; NaN and empty partitions
    /// follow [`Engine::reduce_reader`].
    ///
    /// # Errors
    /// As [`Engine::reduce_reader`]; [`Error::File`] as well for a file
    /// that cannot be opened, a malformed or lying `.npy` header, a dtype
    /// other than float32, or a size that disagrees with the header.
    pub fn reduce_file(
        &self,
        path: &Path,
        format: FileFormat,
        op: Op,
        partitions: &Partitions,
        nan: NanPolicy,
        options: &StreamOptions,
    ) -> Result<Reduction> {
        let input = InputFile::open(path, format)?;
        self.reduce_input_file(input, op, partitions, nan, options)
            .map(|(r, _)| r)
    }

    /// Like [`Engine::reduce_file`] for a file already opened, with stats.
    /// Empty input and NaN as for [`Engine::reduce_file`].
    ///
    /// # Errors
    /// As [`Engine::reduce_file`].
    pub fn reduce_input_file(
        &self,
        input: InputFile,
        op: Op,
        partitions: &Partitions,
        nan: NanPolicy,
        options: &StreamOptions,
    ) -> Result<(Reduction, StreamStats)> {
        let source = Source {
            name: input.path.clone(),
            data_offset: input.data_offset,
            expected_bytes: input.data_bytes(),
        };
        self.reduce_source(input.file, source, op, partitions, nan, options)
    }

    fn reduce_source<R: Read + Send>(
        &self,
        reader: R,
        source: Source,
        op: Op,
        partitions: &Partitions,
        nan: NanPolicy,
        options: &StreamOptions,
    ) -> Result<(Reduction, StreamStats)> {
        let mut stream = self.stream(op, partitions, nan, options)?;
        let chunk_items = stream.layout.chunk_items as usize;
        stream.host_bytes = HOST_CHUNKS as u64 * chunk_items as u64 * 4;
        let progress = options.progress.clone();
        let expected = source.expected_bytes;
        std::thread::scope(|scope| {
            let (tx, rx) = mpsc::sync_channel::<Msg>(1);
            let (recycle_tx, recycle_rx) = mpsc::channel::<Vec<f32>>();
            scope.spawn(move || read_loop(reader, chunk_items, expected, tx, recycle_rx, progress));
            let result = (|| {
                loop {
                    let waited = Instant::now();
                    let msg = rx.recv();
                    stream.stats.input_wait_seconds += waited.elapsed().as_secs_f64();
                    match msg {
                        Ok(Msg::Data(buf, n)) => {
                            stream.push(&buf[..n])?;
                            let _ = recycle_tx.send(buf);
                        }
                        Ok(Msg::End) => break,
                        Ok(Msg::Failed(f)) => {
                            return Err(f.into_error(&source.name, source.data_offset));
                        }
                        Err(_) => {
                            return Err(Error::File {
                                path: source.name.clone(),
                                message: "the reader thread stopped unexpectedly".into(),
                            });
                        }
                    }
                }
                stream.finish_with_stats()
            })();
            // Dropping the channels lets the reader thread end.
            drop(rx);
            drop(recycle_tx);
            result
        })
    }
}
