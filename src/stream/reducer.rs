//! The core of a stream, [`StreamReducer`]: cuts the input into units on
//! the partitions' block boundaries, uploads chunks through the ring,
//! submits the element pass and the partial passes, files the partials that
//! come back per partition and level, and finalizes partitions once they
//! are down to one partial (see the [module docs](super)).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use super::level_work::LevelWork;
use super::ring::{Layout, MAP_FAILED, MAPPED, MAPPING, Slot};
use super::{RING, StreamOptions, StreamStats};
use crate::context::ErrorScopes;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::kernels::{BLOCK, GROUP, PARTIAL_BYTES, Pass};
use crate::op::{NanPolicy, Op, Reduction};
use crate::partial::{Partial, finalize};
use crate::partition::Partitions;
use crate::plan::{Level, depth_of};
use crate::pool::PooledBuffer;
use crate::readback::map_read;

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

struct InFlight {
    index: wgpu::SubmissionIndex,
    outs: Vec<Out>,
    result: mpsc::Receiver<Result<Vec<Partial>>>,
    bytes: u64,
    _keep: Vec<PooledBuffer>,
}

/// A push-based streaming reduction (see the module docs). Created by
/// [`Engine::stream`]. After an error every call fails; nothing partial is
/// ever returned as a result.
pub struct StreamReducer {
    engine: Engine,
    op: Op,
    nan: NanPolicy,
    shape: Shape,
    pub(super) layout: Layout,
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
    pub(super) host_bytes: u64,
    pub(super) stats: StreamStats,
}

impl StreamReducer {
    pub(super) fn new(
        engine: Engine,
        op: Op,
        partitions: &Partitions,
        nan: NanPolicy,
        options: &StreamOptions,
    ) -> Result<Self> {
        // A lost device fails the stream at once (see `device_health`).
        engine.context().health.check()?;
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
        // In scopes: an allocation that fails is this stream's error, not
        // the device owner's uncaptured one.
        let scope = ErrorScopes::push(ctx);
        let ring: Vec<Slot> = (0..RING)
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
        scope.check()?;
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
            return Err(Error::Internal(format!(
                "streaming left {} of {} partitions unfinished",
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
            return Err(Error::Internal(
                "streaming found no whole unit in a full chunk".into(),
            ));
        }
        let slot = self.acquire_slot()?;
        {
            let staging = &self.ring[slot].staging;
            let mut view = staging
                .get_mapped_range_mut(0..n as u64 * 4)
                .map_err(|e| device_failure(&self.engine, "reading a mapped staging buffer", e))?;
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
                    return Err(device_failure(
                        &self.engine,
                        "mapping a staging buffer",
                        wgpu::BufferAsyncError,
                    ));
                }
                _ => {
                    self.engine
                        .device()
                        .poll(wgpu::PollType::Wait {
                            submission_index: None,
                            timeout: Some(Duration::from_millis(100)),
                        })
                        .map_err(|e| wait_failed(&self.engine, e))?;
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
        let scope = ErrorScopes::push(ctx);
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
        map_read(
            &readback,
            out_bytes,
            "the partials",
            |view| view.map(|v| bytemuck::cast_slice::<u8, Partial>(v).to_vec()),
            move |result| {
                let _ = tx.send(result);
            },
        );
        // Every buffer of the submission, each counted once.
        for w in works {
            keep.extend(w.into_buffers());
        }
        let bytes = readback.size() + keep.iter().map(|b| b.size()).sum::<u64>();
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
            .map_err(|e| wait_failed(&self.engine, e))?;
        let result = loop {
            match f.result.try_recv() {
                Ok(r) => break r,
                Err(mpsc::TryRecvError::Empty) => {
                    device
                        .poll(wgpu::PollType::Poll)
                        .map_err(|e| wait_failed(&self.engine, e))?;
                    std::thread::yield_now();
                }
                Err(mpsc::TryRecvError::Disconnected) => {
                    return Err(Error::Internal("a readback callback never ran".into()));
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
        self.states
            .get_mut(&part)
            .ok_or_else(|| Error::Internal(format!("streaming lost partition {part}")))
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
                    return Err(Error::Internal(format!(
                        "streaming partition {part} has no final partial at level {depth} \
                        "
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

/// The error for a failed wait on the GPU: [`Error::DeviceLost`] where the
/// device turns out lost (see `device_health`).
fn wait_failed(engine: &Engine, e: wgpu::PollError) -> Error {
    let ctx = engine.context();
    ctx.health
        .poll_failed(&ctx.device, &ctx.queue, "waiting for the GPU", e)
}

/// The error for a staging buffer that the device did not hand back:
/// [`Error::DeviceLost`] where the device turns out lost, [`Error::Map`]
/// naming `what` otherwise.
fn device_failure(
    engine: &Engine,
    what: &str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    let ctx = engine.context();
    let e: Arc<dyn std::error::Error + Send + Sync> = Arc::new(e);
    ctx.health
        .lost_with(&ctx.device, &ctx.queue, what, e.clone())
        .unwrap_or_else(|| Error::Map {
            context: what.into(),
            source: e,
        })
}
