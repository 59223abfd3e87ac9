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
//!    pass over each chunk, one segment per unit, reading back one 16-byte
//!    partial per unit;
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

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::engine::{Context, Engine, ErrorScopes};
use crate::error::{Error, Result};
use crate::kernels::{BLOCK, GROUP, PARAMS_BYTES, PARTIAL_BYTES, Pass, SEGMENT_BYTES};
use crate::npy;
use crate::op::{KernelOp, NanPolicy, Op, Reduction};
use crate::partial::{Partial, finalize};
use crate::partition::Partitions;
use crate::plan::{Level, Span, depth_of, dispatches};
use crate::pool::PooledBuffer;

/// Default memory budget of a stream: 512 MiB.
pub const DEFAULT_BUDGET_BYTES: u64 = 512 << 20;
/// Smallest budget a stream accepts: 512 KiB.
pub const MIN_BUDGET_BYTES: u64 = 512 << 10;
/// Ring slots (staging + device input buffer pairs) in flight.
const RING: usize = 3;
/// Host chunks the reader thread may hold (filling, queued, being uploaded).
const HOST_CHUNKS: usize = 3;
/// The budget is split into this many chunks (ring, host chunks, the
/// not-yet-uploaded chunk, tables and partials, with room to spare).
const BUDGET_SHARES: u64 = 16;
/// Largest chunk: bigger ones do not make streaming faster.
const MAX_CHUNK_BYTES: u64 = 64 << 20;

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
    /// A float32 `.npy` (`'<f4'`, C order, 1-D or 2-D; reduced flat).
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
}

impl InputFile {
    /// Opens `path`; errors name the file and the byte offset.
    pub fn open(path: &Path, format: FileFormat) -> Result<Self> {
        match format {
            FileFormat::Npy => {
                let s = npy::open_f32_stream(path)?;
                Ok(InputFile {
                    path: path.to_path_buf(),
                    format,
                    file: s.file,
                    data_offset: s.header.data_offset,
                    shape: Some(s.header.shape),
                })
            }
            FileFormat::RawF32 => {
                let (file, len) = npy::open_raw_f32_stream(path)?;
                Ok(InputFile {
                    path: path.to_path_buf(),
                    format,
                    file,
                    shape: len.map(|l| vec![l]),
                    data_offset: 0,
                })
            }
        }
    }

    /// Values the file holds, when known before reading it.
    pub fn len(&self) -> Option<u64> {
        self.shape.as_ref().map(|s| s.iter().product())
    }

    /// True when the file is known to hold no values.
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }

    /// Data bytes, when known before reading.
    pub fn data_bytes(&self) -> Option<u64> {
        self.len().map(|n| n * 4)
    }
}

impl Engine {
    /// Starts a push-based stream: [`StreamReducer::push`] slices of any
    /// size, then [`StreamReducer::finish`]. Supports every kind of
    /// [`Partitions`]; the result is bitwise equal to
    /// [`Engine::reduce_partitions`] over the concatenated input.
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
    /// on a reader thread that runs ahead of the GPU within the budget.
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

    /// Reduces a float32 file of any size (flat: a 2-D `.npy` is reduced in
    /// row-major order; use `Partitions::EqualSize(columns)` for per-row
    /// results). Errors name the file and the byte offset.
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

/// Where a byte stream comes from (for error messages) and how long it is.
struct Source {
    name: PathBuf,
    /// Byte offset of the reader's first byte in the file (for messages).
    data_offset: u64,
    expected_bytes: Option<u64>,
}

enum Msg {
    Data(Vec<f32>, usize),
    End,
    Failed(ReadFailure),
}

enum ReadFailure {
    Io { offset: u64, error: std::io::Error },
    MidValue { offset: u64 },
    EndsEarly { offset: u64, expected: u64 },
    Extra { offset: u64 },
}

impl ReadFailure {
    /// The error, with offsets counted in the file (`base` is the byte
    /// offset of the reader's first byte).
    fn into_error(self, name: &Path, base: u64) -> Error {
        let message = match self {
            ReadFailure::Io { offset, error } => {
                format!("read error at byte {}: {error}", base + offset)
            }
            ReadFailure::MidValue { offset } => format!(
                "the data ends at byte {}, in the middle of a float32 value \
                 (the data must be a whole number of 4-byte values)",
                base + offset
            ),
            ReadFailure::EndsEarly { offset, expected } => format!(
                "truncated: the file ends at byte {}, but its data should end at byte {}",
                base + offset,
                base + expected
            ),
            ReadFailure::Extra { offset } => format!(
                "corrupt: more bytes after byte {}, where the announced data ends",
                base + offset
            ),
        };
        Error::File {
            path: name.to_path_buf(),
            message,
        }
    }
}

/// The reader thread: fills host chunks (at most [`HOST_CHUNKS`], recycled)
/// and sends them on. Offsets in errors count from the reader's start (for
/// a `.npy`, the first data byte; the caller adds the header length).
fn read_loop<R: Read>(
    mut reader: R,
    chunk_items: usize,
    expected: Option<u64>,
    tx: mpsc::SyncSender<Msg>,
    recycle: mpsc::Receiver<Vec<f32>>,
    progress: Option<ProgressFn>,
) {
    let chunk_bytes = chunk_items as u64 * 4;
    let mut offset = 0u64;
    let mut allocated = 0;
    loop {
        let mut buf = match recycle.try_recv() {
            Ok(b) => b,
            Err(_) if allocated < HOST_CHUNKS => {
                allocated += 1;
                vec![0f32; chunk_items]
            }
            Err(_) => match recycle.recv() {
                Ok(b) => b,
                Err(_) => return,
            },
        };
        let want = expected.map_or(chunk_bytes, |e| chunk_bytes.min(e - offset)) as usize;
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut buf[..]);
        let mut filled = 0;
        while filled < want {
            match reader.read(&mut bytes[filled..want]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => {
                    let offset = offset + filled as u64;
                    let _ = tx.send(Msg::Failed(ReadFailure::Io { offset, error }));
                    return;
                }
            }
        }
        offset += filled as u64;
        if let Some(p) = &progress {
            p(offset);
        }
        let at_end = filled < want || expected == Some(offset);
        let failure = match expected {
            Some(e) if at_end && offset < e => Some(ReadFailure::EndsEarly {
                offset,
                expected: e,
            }),
            None if !filled.is_multiple_of(4) => Some(ReadFailure::MidValue { offset }),
            Some(_) if at_end => {
                // The announced data is all there: anything more is corrupt.
                let mut probe = [0u8; 1];
                match reader.read(&mut probe) {
                    Ok(0) | Err(_) => None,
                    Ok(_) => Some(ReadFailure::Extra { offset }),
                }
            }
            _ => None,
        };
        if let Some(f) = failure {
            let _ = tx.send(Msg::Failed(f));
            return;
        }
        #[cfg(target_endian = "big")]
        for x in &mut buf[..filled / 4] {
            *x = f32::from_bits(u32::from_le(x.to_bits()));
        }
        if filled > 0 && tx.send(Msg::Data(buf, filled / 4)).is_err() {
            return;
        }
        if at_end {
            let _ = tx.send(Msg::End);
            return;
        }
    }
}

/// How the input is partitioned, as the stream discovers it.
enum Shape {
    Whole,
    Equal(u64),
    Offsets(Vec<u64>),
}

/// The partition that the next item belongs to.
#[derive(Clone, Copy)]
struct Current {
    index: u64,
    start: u64,
    /// Known end (exclusive); `None` for the whole input before it ends.
    end: Option<u64>,
}

/// A partition with units in flight or partials not yet reduced.
#[derive(Default)]
struct PartState {
    /// Its length, once it is complete.
    len: Option<u64>,
    /// Partials of each level not yet handed to a reduction.
    levels: Vec<Vec<Partial>>,
    /// GPU outputs still to come for it.
    in_flight: usize,
}

/// A group of one partition's partials at `level`: one unit of level + 1.
struct Task {
    part: u64,
    level: usize,
    partials: Vec<Partial>,
}

/// Where a submission's output partial goes.
enum Out {
    /// The only unit of a partition, and the plan has one level: final.
    Single { part: u64, len: u64 },
    /// A level-0 unit of a partition with state.
    Unit { part: u64 },
    /// The output of a [`Task`].
    Task { part: u64, level: usize },
}

/// Units cut from the input for one submission.
#[derive(Default)]
struct Cut {
    outs: Vec<Out>,
    starts: Vec<u64>,
    lens: Vec<u64>,
    items: u64,
}

const MAPPED: u8 = 1;
const MAPPING: u8 = 0;
const MAP_FAILED: u8 = 2;

/// One ring slot: a mappable staging buffer and the device buffer the
/// element pass reads.
struct Slot {
    staging: wgpu::Buffer,
    input: wgpu::Buffer,
    state: Arc<AtomicU8>,
}

struct InFlight {
    index: wgpu::SubmissionIndex,
    outs: Vec<Out>,
    result: mpsc::Receiver<Result<Vec<Partial>>>,
    bytes: u64,
    _keep: Vec<PooledBuffer>,
}

/// Sizes derived from the budget.
#[derive(Clone, Copy, Debug)]
struct Layout {
    chunk_items: u64,
    /// Units (segments) per submission: bounds tables and partial buffers.
    max_units: usize,
}

impl Layout {
    fn new(ctx: &Context, options: &StreamOptions) -> Result<Self> {
        if options.budget_bytes < MIN_BUDGET_BYTES {
            return Err(Error::InvalidInput(format!(
                "memory budget of {} bytes is too small: at least {MIN_BUDGET_BYTES} bytes",
                options.budget_bytes
            )));
        }
        let max_items = (ctx.limits.max_buffer_bytes.min(MAX_CHUNK_BYTES) / 4) & !63;
        let chunk_items = match options.chunk_bytes {
            Some(c) if c < BLOCK * 4 || !c.is_multiple_of(256) => {
                return Err(Error::InvalidInput(format!(
                    "chunk size {c} bytes: must be a multiple of 256 and at least {}",
                    BLOCK * 4
                )));
            }
            Some(c) => (c / 4).min(max_items),
            None => ((options.budget_bytes / BUDGET_SHARES / 4) & !63).clamp(BLOCK, max_items),
        };
        // A submission's segment table (one entry per unit, plus a
        // sentinel) must fit one binding, whatever the chunk size.
        let table_units = (ctx.limits.max_binding_bytes / SEGMENT_BYTES).saturating_sub(1);
        let max_units = (chunk_items * 4 / 64).max(64).min(table_units) as usize;
        Ok(Layout {
            chunk_items,
            max_units,
        })
    }
}

/// A push-based streaming reduction (see the module docs). Created by
/// [`Engine::stream`]. After an error every call fails; nothing partial is
/// ever returned as a result.
pub struct StreamReducer {
    engine: Engine,
    op: Op,
    nan: NanPolicy,
    shape: Shape,
    layout: Layout,
    ring: Vec<Slot>,
    data_submissions: u64,
    in_flight: VecDeque<InFlight>,
    /// Items received but not yet uploaded (fewer than one chunk).
    pending: Vec<f32>,
    /// Items uploaded so far.
    pos: u64,
    current: Option<Current>,
    next_partition: u64,
    /// Levels of the plan, once known (the deepest partition's).
    depth: Option<usize>,
    states: BTreeMap<u64, PartState>,
    tasks: Vec<Task>,
    values: Vec<Option<f32>>,
    counts: Vec<u64>,
    finalized: usize,
    failed: bool,
    started: Instant,
    /// Host chunks held by a reader thread (for the memory account).
    host_bytes: u64,
    stats: StreamStats,
}

impl StreamReducer {
    fn new(
        engine: Engine,
        op: Op,
        partitions: &Partitions,
        nan: NanPolicy,
        options: &StreamOptions,
    ) -> Result<Self> {
        let (shape, depth) = match partitions {
            Partitions::Whole => (Shape::Whole, None),
            Partitions::EqualSize(0) => {
                return Err(Error::InvalidPartitions(
                    "partition size must be at least 1".into(),
                ));
            }
            Partitions::EqualSize(n) => (Shape::Equal(*n), None),
            Partitions::Offsets(o) => {
                // Checks everything but the total, which comes at the end.
                partitions.offsets(o.last().copied().unwrap_or(0))?;
                let depth = o.windows(2).map(|w| depth_of(w[1] - w[0])).max();
                (Shape::Offsets(o.clone()), Some(depth.unwrap_or(0)))
            }
        };
        let ctx = engine.context();
        let layout = Layout::new(ctx, options)?;
        let bytes = layout.chunk_items * 4;
        let ring = (0..RING)
            .map(|_| Slot {
                staging: ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("gpulanes stream staging"),
                    size: bytes,
                    usage: wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: true,
                }),
                input: ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("gpulanes stream input"),
                    size: bytes,
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }),
                state: Arc::new(AtomicU8::new(MAPPED)),
            })
            .collect();
        let stats = StreamStats {
            chunk_bytes: bytes,
            budget_bytes: options.budget_bytes,
            ..Default::default()
        };
        Ok(StreamReducer {
            engine,
            op,
            nan,
            shape,
            layout,
            ring,
            data_submissions: 0,
            in_flight: VecDeque::new(),
            pending: Vec::with_capacity(layout.chunk_items as usize),
            pos: 0,
            current: None,
            next_partition: 0,
            depth,
            states: BTreeMap::new(),
            tasks: Vec::new(),
            values: Vec::new(),
            counts: Vec::new(),
            finalized: 0,
            failed: false,
            started: Instant::now(),
            host_bytes: 0,
            stats,
        })
    }

    /// The chunk size in bytes.
    pub fn chunk_bytes(&self) -> u64 {
        self.layout.chunk_items * 4
    }

    /// Items received so far.
    pub fn items(&self) -> u64 {
        self.pos + self.pending.len() as u64
    }

    /// Appends `data` to the input. Uploads and GPU work start as soon as a
    /// chunk is full; this returns without waiting for them, unless all
    /// ring slots are busy.
    pub fn push(&mut self, data: &[f32]) -> Result<()> {
        self.usable()?;
        let r = self.push_inner(data);
        self.failed = r.is_err();
        r
    }

    /// Ends the input and returns the result.
    pub fn finish(self) -> Result<Reduction> {
        self.finish_with_stats().map(|(r, _)| r)
    }

    /// Ends the input and returns the result and what the stream did.
    pub fn finish_with_stats(mut self) -> Result<(Reduction, StreamStats)> {
        self.usable()?;
        self.finish_inner()?;
        let mut stats = self.stats.clone();
        stats.items = self.pos;
        stats.seconds = self.started.elapsed().as_secs_f64();
        let reduction = Reduction {
            op: self.op,
            values: std::mem::take(&mut self.values),
            counts: std::mem::take(&mut self.counts),
        };
        Ok((reduction, stats))
    }

    fn usable(&self) -> Result<()> {
        if self.failed {
            return Err(Error::InvalidInput(
                "this stream failed earlier; start a new one".into(),
            ));
        }
        Ok(())
    }

    fn push_inner(&mut self, mut data: &[f32]) -> Result<()> {
        let chunk = self.layout.chunk_items as usize;
        while self.pending.len() + data.len() >= chunk {
            let taken = self.submit_data(data, false)?;
            data = &data[taken..];
        }
        self.pending.extend_from_slice(data);
        self.account();
        Ok(())
    }

    fn finish_inner(&mut self) -> Result<()> {
        let total = self.items();
        if let Shape::Offsets(o) = &self.shape {
            let last = o.last().copied().unwrap_or(0);
            if total != last {
                return Err(Error::InvalidPartitions(format!(
                    "last offset must equal the input length {total}, found {last}"
                )));
            }
        }
        while !self.pending.is_empty() {
            self.submit_data(&[], true)?;
        }
        // Close the partition the input ended in.
        if let Some(c) = self.current
            && c.end != Some(self.pos)
        {
            self.close_current(self.pos);
            if let Some(st) = self.states.get_mut(&c.index) {
                st.len = Some(self.pos - c.start);
            }
        }
        // Partitions after the end: empty ones (offsets), or the empty whole.
        let partitions = match &self.shape {
            Shape::Whole => 1,
            Shape::Offsets(o) => o.len() as u64 - 1,
            Shape::Equal(_) => 0,
        };
        while self.next_partition < partitions {
            self.start_empty();
        }
        self.advance()?;
        loop {
            while !self.in_flight.is_empty() {
                self.retire_oldest()?;
            }
            if self.tasks.is_empty() {
                break;
            }
            while !self.tasks.is_empty() {
                if self.in_flight.len() >= RING {
                    self.retire_oldest()?;
                }
                self.submit(None, Cut::default())?;
            }
        }
        if !self.states.is_empty() || self.finalized != self.values.len() {
            return Err(Error::Gpu(format!(
                "streaming left {} of {} partitions unfinished (a bug in gpulanes)",
                self.values.len() - self.finalized,
                self.values.len()
            )));
        }
        Ok(())
    }

    /// Starts the next partition as an empty one and finalizes it.
    fn start_empty(&mut self) {
        let index = self.next_partition as usize;
        self.next_partition += 1;
        self.values.push(None);
        self.counts.push(0);
        self.set_result(index as u64, 0, None);
    }

    fn set_result(&mut self, part: u64, len: u64, p: Option<&Partial>) {
        let (v, c) = finalize(self.op, self.nan, len, p);
        self.values[part as usize] = v;
        self.counts[part as usize] = c;
        self.finalized += 1;
    }

    /// The partition holding item `at`, starting the next one if needed.
    fn partition_at(&mut self, at: u64) -> Result<Current> {
        if let Some(c) = self.current
            && c.end.is_none_or(|e| at < e)
        {
            return Ok(c);
        }
        loop {
            let index = self.next_partition;
            let (start, end) = match &self.shape {
                Shape::Whole => (0, None),
                Shape::Equal(n) => (at, Some(at + n)),
                Shape::Offsets(o) => {
                    let i = index as usize;
                    if i + 1 >= o.len() {
                        return Err(Error::InvalidPartitions(format!(
                            "the input is longer than the last offset ({})",
                            o.last().copied().unwrap_or(0)
                        )));
                    }
                    (o[i], Some(o[i + 1]))
                }
            };
            if end == Some(start) {
                self.start_empty();
                continue;
            }
            self.next_partition += 1;
            self.values.push(None);
            self.counts.push(0);
            let c = Current { index, start, end };
            self.current = Some(c);
            return Ok(c);
        }
    }

    /// The current partition ends at `end`; the first one to end fixes the
    /// plan depth for whole and equal-size partitions (it is the longest).
    fn close_current(&mut self, end: u64) {
        if let Some(c) = self.current.as_mut() {
            c.end = Some(end);
            if self.depth.is_none() {
                self.depth = Some(depth_of(end - c.start));
            }
        }
    }

    /// Cuts up to `avail` items after `pos` into units; at the end of the
    /// input (`eof`) the last unit may be short.
    fn cut_units(&mut self, avail: u64, eof: bool) -> Result<Cut> {
        let base = self.pos;
        let end = base + avail;
        let mut cut = Cut::default();
        let mut at = base;
        while at < end && cut.outs.len() < self.layout.max_units {
            let cur = self.partition_at(at)?;
            let block_end = cur.start + ((at - cur.start) / BLOCK + 1) * BLOCK;
            let mut b = cur.end.map_or(block_end, |e| e.min(block_end));
            if b > end {
                if !eof {
                    break;
                }
                b = end;
            }
            let first = at == cur.start;
            let last = cur.end == Some(b) || (eof && b == end);
            if last {
                self.close_current(b);
            }
            let out = if first && last && self.depth == Some(1) {
                Out::Single {
                    part: cur.index,
                    len: b - cur.start,
                }
            } else {
                let st = self.states.entry(cur.index).or_default();
                st.in_flight += 1;
                if last {
                    st.len = Some(b - cur.start);
                }
                Out::Unit { part: cur.index }
            };
            cut.outs.push(out);
            cut.starts.push(at - base);
            cut.lens.push(b - at);
            at = b;
        }
        cut.items = at - base;
        Ok(cut)
    }

    /// Uploads and reduces the next chunk of `pending` followed by `data`;
    /// returns how many items of `data` it took.
    fn submit_data(&mut self, data: &[f32], eof: bool) -> Result<usize> {
        let chunk = self.layout.chunk_items as usize;
        let p = self.pending.len();
        let total = p + data.len();
        let cut = self.cut_units(total.min(chunk) as u64, eof && total <= chunk)?;
        let n = cut.items as usize;
        if n == 0 {
            return Err(Error::Gpu(
                "streaming found no whole unit in a full chunk (a bug in gpulanes)".into(),
            ));
        }
        let slot = self.acquire_slot()?;
        {
            let staging = &self.ring[slot].staging;
            let mut view = staging
                .get_mapped_range_mut(0..n as u64 * 4)
                .map_err(|e| Error::Gpu(format!("staging buffer not mapped: {e}")))?;
            let from_pending = n.min(p);
            view.slice(..from_pending * 4)
                .copy_from_slice(bytemuck::cast_slice(&self.pending[..from_pending]));
            view.slice(from_pending * 4..)
                .copy_from_slice(bytemuck::cast_slice(&data[..n - from_pending]));
            drop(view);
            staging.unmap();
        }
        self.submit(Some((slot, n as u64)), cut)?;
        self.pos += n as u64;
        if n <= p {
            self.pending.drain(..n);
            Ok(0)
        } else {
            self.pending.clear();
            Ok(n - p)
        }
    }

    /// The next ring slot, once its previous submission is done and its
    /// staging buffer is mapped again.
    fn acquire_slot(&mut self) -> Result<usize> {
        let slot = (self.data_submissions % RING as u64) as usize;
        while self.in_flight.len() >= RING {
            self.retire_oldest()?;
        }
        let state = self.ring[slot].state.clone();
        let waited = Instant::now();
        loop {
            match state.load(Ordering::Acquire) {
                MAPPED => break,
                MAP_FAILED => {
                    return Err(Error::Gpu("mapping a staging buffer failed".into()));
                }
                _ => {
                    self.engine
                        .device()
                        .poll(wgpu::PollType::Wait {
                            submission_index: None,
                            timeout: Some(Duration::from_millis(100)),
                        })
                        .map_err(|e| Error::Gpu(format!("waiting for the GPU failed: {e}")))?;
                }
            }
        }
        self.stats.gpu_wait_seconds += waited.elapsed().as_secs_f64();
        self.data_submissions += 1;
        Ok(slot)
    }

    /// Encodes and submits the element pass over a filled ring slot (if
    /// any) and the ready partial-pass tasks.
    fn submit(&mut self, upload: Option<(usize, u64)>, cut: Cut) -> Result<()> {
        let engine = self.engine.clone();
        let ctx = engine.context();
        let device = &ctx.device;
        let kernel = self.op.kernel();
        let scope = ErrorScopes::push(device);
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("gpulanes stream"),
        });
        let mut works = Vec::new();
        let mut keep = Vec::new();
        let mut outs = cut.outs;
        if let Some((slot, items)) = upload {
            let s = &self.ring[slot];
            encoder.copy_buffer_to_buffer(&s.staging, 0, &s.input, 0, items * 4);
            let level = Level::new(Pass::Elements, BLOCK, cut.starts, cut.lens)?;
            works.push(LevelWork::prepare(ctx, kernel, &level, &s.input, items)?);
        }
        // Ready tasks, as many as one chunk's worth of partials, and no more
        // than one segment table holds (one segment per task).
        let budget = (self.layout.chunk_items * 4 / PARTIAL_BYTES).max(GROUP);
        let mut take = 0;
        let mut partials = 0u64;
        for t in &self.tasks {
            if take > 0
                && (partials + t.partials.len() as u64 > budget || take >= self.layout.max_units)
            {
                break;
            }
            partials += t.partials.len() as u64;
            take += 1;
        }
        if take > 0 {
            let mut all: Vec<Partial> = Vec::with_capacity(partials as usize);
            let mut starts = Vec::with_capacity(take);
            let mut lens = Vec::with_capacity(take);
            for t in self.tasks.drain(..take) {
                starts.push(all.len() as u64);
                lens.push(t.partials.len() as u64);
                all.extend_from_slice(&t.partials);
                outs.push(Out::Task {
                    part: t.part,
                    level: t.level,
                });
            }
            let input = ctx.pool.take(
                device,
                partials * PARTIAL_BYTES,
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                "gpulanes stream partials",
            );
            ctx.queue
                .write_buffer(&input, 0, bytemuck::cast_slice(&all));
            let level = Level::new(Pass::Partials, GROUP, starts, lens)?;
            works.push(LevelWork::prepare(ctx, kernel, &level, &input, partials)?);
            keep.push(input);
        }
        if outs.is_empty() {
            return Ok(());
        }
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("gpulanes stream reduce"),
                timestamp_writes: None,
            });
            for w in &works {
                w.encode(ctx, &mut pass);
            }
        }
        let out_bytes = outs.len() as u64 * PARTIAL_BYTES;
        let readback = ctx.pool.take(
            device,
            out_bytes,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            "gpulanes stream readback",
        );
        let mut at = 0;
        for w in &works {
            let bytes = w.units * PARTIAL_BYTES;
            encoder.copy_buffer_to_buffer(&w.output, 0, &readback, at, bytes);
            at += bytes;
        }
        let index = ctx.queue.submit([encoder.finish()]);
        if let Some((slot, _)) = upload {
            let s = &self.ring[slot];
            s.state.store(MAPPING, Ordering::Release);
            let state = s.state.clone();
            s.staging.map_async(wgpu::MapMode::Write, .., move |r| {
                state.store(
                    if r.is_ok() { MAPPED } else { MAP_FAILED },
                    Ordering::Release,
                );
            });
        }
        let (tx, rx) = mpsc::channel();
        let mapped: wgpu::Buffer = (*readback).clone();
        readback.map_async(wgpu::MapMode::Read, 0..out_bytes, move |r| {
            let result = r
                .map_err(|e| Error::Gpu(format!("mapping the partials failed: {e}")))
                .and_then(|()| {
                    let view = mapped
                        .get_mapped_range(0..out_bytes)
                        .map_err(|e| Error::Gpu(format!("reading the partials failed: {e}")))?;
                    Ok(bytemuck::cast_slice::<u8, Partial>(&view).to_vec())
                });
            mapped.unmap();
            let _ = tx.send(result);
        });
        let mut bytes = readback.size();
        for w in works {
            bytes += w.bytes();
            keep.extend(w.into_buffers());
        }
        bytes += keep.iter().map(|b| b.size()).sum::<u64>();
        keep.push(readback);
        // In flight before the error check, so that on an error the buffers
        // still go back to the pool only once the GPU is done (see `Drop`).
        self.in_flight.push_back(InFlight {
            index,
            outs,
            result: rx,
            bytes,
            _keep: keep,
        });
        self.stats.submissions += 1;
        self.account();
        scope.check()
    }

    /// Waits for the oldest submission and files its partials.
    fn retire_oldest(&mut self) -> Result<()> {
        let Some(f) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let waited = Instant::now();
        let device = self.engine.device();
        device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(f.index),
                timeout: None,
            })
            .map_err(|e| Error::Gpu(format!("waiting for the GPU failed: {e}")))?;
        let result = loop {
            match f.result.try_recv() {
                Ok(r) => break r,
                Err(mpsc::TryRecvError::Empty) => {
                    device
                        .poll(wgpu::PollType::Poll)
                        .map_err(|e| Error::Gpu(format!("waiting for the GPU failed: {e}")))?;
                    std::thread::yield_now();
                }
                Err(mpsc::TryRecvError::Disconnected) => {
                    return Err(Error::Gpu("readback callback never ran".into()));
                }
            }
        };
        self.stats.gpu_wait_seconds += waited.elapsed().as_secs_f64();
        let partials = result?;
        for (out, p) in f.outs.iter().zip(&partials) {
            match *out {
                Out::Single { part, len } => self.set_result(part, len, Some(p)),
                Out::Unit { part } => {
                    let st = self.state(part)?;
                    if st.levels.is_empty() {
                        st.levels.push(Vec::new());
                    }
                    st.levels[0].push(*p);
                    st.in_flight -= 1;
                }
                Out::Task { part, level } => {
                    let st = self.state(part)?;
                    while st.levels.len() <= level + 1 {
                        st.levels.push(Vec::new());
                    }
                    st.levels[level + 1].push(*p);
                    st.in_flight -= 1;
                }
            }
        }
        self.account();
        self.advance()
    }

    fn state(&mut self, part: u64) -> Result<&mut PartState> {
        self.states.get_mut(&part).ok_or_else(|| {
            Error::Gpu(format!(
                "streaming lost partition {part} (a bug in gpulanes)"
            ))
        })
    }

    /// Turns full groups into tasks, reduces the short last groups of
    /// complete partitions level by level, and finalizes partitions that
    /// are down to their final partial.
    fn advance(&mut self) -> Result<()> {
        let group = GROUP as usize;
        let depth = self.depth;
        let mut done = Vec::new();
        for (&part, st) in self.states.iter_mut() {
            for (level, pending) in st.levels.iter_mut().enumerate() {
                while pending.len() >= group {
                    let partials: Vec<Partial> = pending.drain(..group).collect();
                    self.tasks.push(Task {
                        part,
                        level,
                        partials,
                    });
                    st.in_flight += 1;
                }
            }
            let (Some(len), Some(depth), 0) = (st.len, depth, st.in_flight) else {
                continue;
            };
            let lowest = st.levels.iter().position(|l| !l.is_empty());
            match lowest {
                Some(k) if k + 1 == depth && st.levels[k].len() == 1 => {
                    done.push((part, len, st.levels[k][0]));
                }
                Some(k) if k + 1 < depth => {
                    let partials = std::mem::take(&mut st.levels[k]);
                    self.tasks.push(Task {
                        part,
                        level: k,
                        partials,
                    });
                    st.in_flight += 1;
                }
                _ => {
                    return Err(Error::Gpu(format!(
                        "streaming partition {part} has no final partial at level {depth} \
                         (a bug in gpulanes)"
                    )));
                }
            }
        }
        for (part, len, p) in done {
            self.states.remove(&part);
            self.set_result(part, len, Some(&p));
        }
        Ok(())
    }

    /// Updates the peak of the memory account.
    fn account(&mut self) {
        let ring: u64 = self
            .ring
            .iter()
            .map(|s| s.staging.size() + s.input.size())
            .sum();
        let in_flight: u64 = self.in_flight.iter().map(|f| f.bytes).sum();
        let partials: u64 = self
            .states
            .values()
            .flat_map(|s| s.levels.iter())
            .map(|l| l.capacity() as u64)
            .sum::<u64>()
            + self
                .tasks
                .iter()
                .map(|t| t.partials.capacity() as u64)
                .sum::<u64>();
        let outs: u64 = self.in_flight.iter().map(|f| f.outs.len() as u64).sum();
        let now = ring
            + in_flight
            + self.host_bytes
            + self.pending.capacity() as u64 * 4
            + partials * PARTIAL_BYTES
            + outs * std::mem::size_of::<Out>() as u64;
        self.stats.peak_bytes = self.stats.peak_bytes.max(now);
    }
}

impl Drop for StreamReducer {
    /// A stream dropped (or failed) with work in flight waits for it: its
    /// pooled buffers must not go back to the pool while the GPU uses them.
    fn drop(&mut self) {
        if let Some(last) = self.in_flight.back() {
            let _ = self.engine.device().poll(wgpu::PollType::Wait {
                submission_index: Some(last.index.clone()),
                timeout: None,
            });
        }
        // Let pending map callbacks run before the buffers are dropped.
        let _ = self.engine.device().poll(wgpu::PollType::Poll);
    }
}

/// `Params` in reduce.wgsl (the same layout as in `exec.rs`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    unit_base: u32,
    unit_count: u32,
    input_base_lo: u32,
    out_base: u32,
    segment_count: u32,
    one: f32,
    _pad: [u32; 2],
}

/// One level over one input buffer, ready to encode: its bind groups and
/// the buffer its partials go to.
struct LevelWork {
    pass: Pass,
    kernel: KernelOp,
    groups: Vec<(wgpu::BindGroup, u32, u32)>,
    param_stride: u64,
    units: u64,
    output: PooledBuffer,
    tables: PooledBuffer,
    params: PooledBuffer,
}

impl LevelWork {
    fn prepare(
        ctx: &Context,
        kernel: KernelOp,
        level: &Level,
        input: &wgpu::Buffer,
        items: u64,
    ) -> Result<Self> {
        let item_bytes = match level.pass {
            Pass::Elements => 4,
            Pass::Partials => PARTIAL_BYTES,
        };
        let span = Span {
            base_item: 0,
            items,
        };
        let ds = dispatches(0, level, &[span], item_bytes, &ctx.dispatch_limits());
        let device = &ctx.device;
        let table_bytes = level.table.len() as u64 * SEGMENT_BYTES;
        if table_bytes > ctx.limits.max_binding_bytes {
            return Err(Error::Gpu(
                "streaming segment table exceeds a binding (a bug in gpulanes)".into(),
            ));
        }
        let tables = ctx.pool.take(
            device,
            table_bytes,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            "gpulanes stream segments",
        );
        ctx.queue
            .write_buffer(&tables, 0, bytemuck::cast_slice(&level.table));
        let stride = ctx.limits.uniform_alignment.max(PARAMS_BYTES);
        let params = ctx.pool.take(
            device,
            ds.len() as u64 * stride,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            "gpulanes stream params",
        );
        let mut param_bytes = vec![0u8; (ds.len() as u64 * stride) as usize];
        for (i, d) in ds.iter().enumerate() {
            let p = Params {
                unit_base: d.unit_base,
                unit_count: d.unit_count,
                input_base_lo: d.input.base_item as u32,
                out_base: d.output.base_item as u32,
                segment_count: level.table.len() as u32 - 1,
                one: 1.0,
                _pad: [0; 2],
            };
            let at = i * stride as usize;
            param_bytes[at..at + PARAMS_BYTES as usize].copy_from_slice(bytemuck::bytes_of(&p));
        }
        ctx.queue.write_buffer(&params, 0, &param_bytes);
        let output = ctx.pool.take(
            device,
            level.units * PARTIAL_BYTES,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            "gpulanes stream partials out",
        );
        fn binding(buffer: &wgpu::Buffer, offset: u64, size: u64) -> wgpu::BindingResource<'_> {
            wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer,
                offset,
                size: NonZeroU64::new(size.max(16)),
            })
        }
        let mut groups = Vec::with_capacity(ds.len());
        for d in &ds {
            let window = || binding(input, d.input.byte_offset, d.input.byte_size);
            let mut entries = vec![
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: binding(&params, 0, PARAMS_BYTES),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: binding(&tables, 0, table_bytes),
                },
                wgpu::BindGroupEntry {
                    binding: 4,
                    resource: binding(&output, d.output.byte_offset, d.output.byte_size),
                },
            ];
            match level.pass {
                Pass::Elements => {
                    entries.push(wgpu::BindGroupEntry {
                        binding: 2,
                        resource: window(),
                    });
                    entries.push(wgpu::BindGroupEntry {
                        binding: 3,
                        resource: window(),
                    });
                }
                Pass::Partials => entries.push(wgpu::BindGroupEntry {
                    binding: 5,
                    resource: window(),
                }),
            }
            let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: ctx.kernels.layout(level.pass),
                entries: &entries,
            });
            groups.push((group, d.unit_base, d.unit_count));
        }
        Ok(LevelWork {
            pass: level.pass,
            kernel,
            groups,
            param_stride: stride,
            units: level.units,
            output,
            tables,
            params,
        })
    }

    fn encode(&self, ctx: &Context, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(ctx.kernels.pipeline(self.pass, self.kernel));
        for (i, (group, _, units)) in self.groups.iter().enumerate() {
            pass.set_bind_group(0, group, &[(i as u64 * self.param_stride) as u32]);
            let x = (*units).min(ctx.limits.max_workgroups_per_dim);
            pass.dispatch_workgroups(x, units.div_ceil(x), 1);
        }
    }

    fn bytes(&self) -> u64 {
        self.output.size() + self.tables.size() + self.params.size()
    }

    fn into_buffers(self) -> [PooledBuffer; 3] {
        [self.output, self.tables, self.params]
    }
}

/// Streaming throughput next to the rates that bound it, measured in one
/// run on one file: how fast the page cache delivers the file, how fast the
/// staging ring uploads it, how fast the device reduces data it already
/// holds, and how fast the whole stream reduces the file. Streaming
/// overlaps the three stages, so at best it runs at the slowest one.
#[derive(Clone, Debug, Serialize)]
pub struct StreamThroughput {
    pub adapter: String,
    /// True on a software adapter (lavapipe): compare ratios only.
    pub software: bool,
    pub bytes: u64,
    pub budget_bytes: u64,
    pub chunk_bytes: u64,
    /// Reading the (cached) file into a host chunk with `read(2)`, GB/s.
    pub read_gbps: f64,
    /// Host chunk -> staging ring -> device buffer, no compute, GB/s.
    pub upload_gbps: f64,
    /// Sum of a device-resident array (up to 64 MiB), no transfers, GB/s.
    pub compute_gbps: f64,
    /// [`Engine::reduce_file`] (sum, whole) end to end, GB/s.
    pub stream_gbps: f64,
    /// `stream_gbps / read_gbps`.
    pub stream_vs_read: f64,
    /// `stream_gbps / upload_gbps`.
    pub stream_vs_upload: f64,
    /// `stream_gbps / compute_gbps`.
    pub stream_vs_compute: f64,
    /// `stream_gbps / min(read, upload, compute)`: 1.0 means streaming runs
    /// at the rate of its slowest stage.
    pub stream_vs_bound: f64,
    /// Seconds the stream waited for input and for the GPU.
    pub input_wait_seconds: f64,
    pub gpu_wait_seconds: f64,
}

/// Writes a raw float32 file of `bytes` bytes (rounded down to whole values)
/// in the temp directory, then measures the page-cache read rate, the upload
/// rate and the streaming rate on it (see [`StreamThroughput`]); the file is
/// removed afterwards. For `gpulanes bench`.
pub fn measure_stream_throughput(
    engine: &Engine,
    bytes: u64,
    budget_bytes: u64,
) -> Result<StreamThroughput> {
    let options = StreamOptions::with_budget(budget_bytes);
    let ctx = engine.context();
    let layout = Layout::new(ctx, &options)?;
    let chunk_items = layout.chunk_items as usize;
    let items = bytes / 4;
    let bytes = items * 4;
    let path = std::env::temp_dir().join(format!(
        "gpulanes-stream-throughput-{}-{}.f32",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    let file_error = |e: std::io::Error| Error::File {
        path: path.clone(),
        message: e.to_string(),
    };
    struct Remove<'a>(&'a Path);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let _remove = Remove(&path);
    {
        let mut f = std::io::BufWriter::new(File::create(&path).map_err(file_error)?);
        let mut chunk = vec![0f32; chunk_items];
        let mut written = 0u64;
        while written < items {
            let n = (items - written).min(chunk_items as u64) as usize;
            for (i, x) in chunk[..n].iter_mut().enumerate() {
                *x = ((written + i as u64) % 1000) as f32 * 0.25 - 100.0;
            }
            f.write_all(bytemuck::cast_slice(&chunk[..n]))
                .map_err(file_error)?;
            written += n as u64;
        }
        f.flush().map_err(file_error)?;
    }

    // Page-cache read rate: one pass to warm the cache, one timed.
    let mut buf = vec![0u8; chunk_items * 4];
    let mut read_rate = || -> Result<f64> {
        let mut f = File::open(&path).map_err(file_error)?;
        let t = Instant::now();
        while f.read(&mut buf).map_err(file_error)? > 0 {}
        Ok(bytes as f64 / t.elapsed().as_secs_f64().max(1e-9) / 1e9)
    };
    read_rate()?;
    let read_gbps = read_rate()?;

    // Upload rate: the same ring of staging and device buffers, no compute.
    let upload_gbps = {
        let device = &ctx.device;
        let host = vec![1f32; chunk_items];
        let slots: Vec<(wgpu::Buffer, wgpu::Buffer, Arc<AtomicU8>)> = (0..RING)
            .map(|_| {
                (
                    device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("gpulanes upload probe staging"),
                        size: chunk_items as u64 * 4,
                        usage: wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC,
                        mapped_at_creation: true,
                    }),
                    device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("gpulanes upload probe input"),
                        size: chunk_items as u64 * 4,
                        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    }),
                    Arc::new(AtomicU8::new(MAPPED)),
                )
            })
            .collect();
        let wait = |index: Option<wgpu::SubmissionIndex>| {
            device
                .poll(wgpu::PollType::Wait {
                    submission_index: index,
                    timeout: None,
                })
                .map_err(|e| Error::Gpu(format!("waiting for the GPU failed: {e}")))
        };
        let t = Instant::now();
        let mut sent = 0u64;
        let mut i = 0usize;
        let mut submitted: VecDeque<wgpu::SubmissionIndex> = VecDeque::new();
        while sent < items {
            if submitted.len() >= RING {
                wait(submitted.pop_front())?;
            }
            let (staging, input, state) = &slots[i % RING];
            // Mapped again once its copy finished (requested below).
            while state.load(Ordering::Acquire) != MAPPED {
                if state.load(Ordering::Acquire) == MAP_FAILED {
                    return Err(Error::Gpu("mapping a staging buffer failed".into()));
                }
                wait(None)?;
            }
            let n = (items - sent).min(chunk_items as u64);
            {
                let mut view = staging
                    .get_mapped_range_mut(0..n * 4)
                    .map_err(|e| Error::Gpu(format!("staging buffer not mapped: {e}")))?;
                view.copy_from_slice(bytemuck::cast_slice(&host[..n as usize]));
            }
            staging.unmap();
            let mut encoder = device.create_command_encoder(&Default::default());
            encoder.copy_buffer_to_buffer(staging, 0, input, 0, n * 4);
            submitted.push_back(ctx.queue.submit([encoder.finish()]));
            state.store(MAPPING, Ordering::Release);
            let state = state.clone();
            staging.map_async(wgpu::MapMode::Write, .., move |r| {
                state.store(
                    if r.is_ok() { MAPPED } else { MAP_FAILED },
                    Ordering::Release,
                );
            });
            sent += n;
            i += 1;
        }
        wait(None)?;
        bytes as f64 / t.elapsed().as_secs_f64().max(1e-9) / 1e9
    };

    // Compute rate: a device-resident sum, no transfers.
    let compute_gbps = {
        let n = items.min(16 << 20) as usize;
        let host: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 0.25).collect();
        let array = engine.upload(&host)?;
        let sum =
            || engine.reduce_device(&array, Op::Sum, &Partitions::Whole, NanPolicy::Propagate);
        sum()?;
        let t = Instant::now();
        sum()?;
        sum()?;
        2.0 * n as f64 * 4.0 / t.elapsed().as_secs_f64().max(1e-9) / 1e9
    };

    let input = InputFile::open(&path, FileFormat::RawF32)?;
    let t = Instant::now();
    let (_, stats) = engine.reduce_input_file(
        input,
        Op::Sum,
        &Partitions::Whole,
        NanPolicy::Propagate,
        &options,
    )?;
    let stream_gbps = bytes as f64 / t.elapsed().as_secs_f64().max(1e-9) / 1e9;
    let adapter = engine.adapter();
    Ok(StreamThroughput {
        adapter: adapter.name.clone(),
        software: adapter.software,
        bytes,
        budget_bytes,
        chunk_bytes: layout.chunk_items * 4,
        read_gbps,
        upload_gbps,
        stream_gbps,
        stream_vs_read: stream_gbps / read_gbps,
        stream_vs_upload: stream_gbps / upload_gbps,
        compute_gbps,
        stream_vs_compute: stream_gbps / compute_gbps,
        stream_vs_bound: stream_gbps / read_gbps.min(upload_gbps).min(compute_gbps),
        input_wait_seconds: stats.input_wait_seconds,
        gpu_wait_seconds: stats.gpu_wait_seconds,
    })
}
