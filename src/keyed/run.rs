//! Running the group kernel over rows held on the host: the rows are
//! uploaded once in chunks that each fit one binding, then every window of
//! consecutive groups whose accumulators fit one binding is cleared, filled
//! by one dispatch per chunk that holds rows of its groups (and a second
//! round for the low words of 64-bit max/min keys), and read back. Rows in
//! group order ([`RowGroups::SortedIds`]) are read only where the window's
//! groups lie; otherwise every window reads every row and skips the rows
//! of other windows.

use std::num::NonZeroU64;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::context::{Context, ErrorScopes};
use crate::device_array::DeviceArray;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::pool::PooledBuffer;

use super::accumulators::GroupAccumulators;
use super::finish::{Finish, RECORD_WORDS, encode_finish};
use super::kernels::{
    GROUP_PARAMS_BYTES, GroupMode, Local, PassKind, group_workgroup_size, rows_per_invocation,
    units_per_private_workgroup,
};
use super::limbs::{Limbs, Spread, spread_of_words};
use super::spread::device_spread;

/// Workgroups a private pass launches at least (where it has that many
/// units), so that several cores share a small pass.
const MIN_PRIVATE_WORKGROUPS: u64 = 16;

/// Rows one dispatch covers at most (besides the binding limits), so that
/// one chunk's upload stays a modest staging copy.
const MAX_CHUNK_ROWS: u64 = 1 << 24;

/// Where a column's words are: on the host (uploaded chunk by chunk), in
/// a device array (bound in place), or both (a group index's groups:
/// bound in place, sampled on the host without a readback).
#[derive(Clone, Copy)]
pub(crate) enum Words<'a> {
    Host(&'a [u32]),
    Device(&'a DeviceArray),
    Mirrored {
        host: &'a [u32],
        device: &'a DeviceArray,
    },
}

impl<'a> Words<'a> {
    fn len(&self) -> u64 {
        match self {
            Words::Host(w) | Words::Mirrored { host: w, .. } => w.len() as u64,
            Words::Device(a) => a.len() * a.dtype().words(),
        }
    }

    /// The words on the host, where they are there.
    fn host(&self) -> Option<&'a [u32]> {
        match *self {
            Words::Host(w) | Words::Mirrored { host: w, .. } => Some(w),
            Words::Device(_) => None,
        }
    }

    /// The device array, where the words are in one.
    fn device(&self) -> Option<&'a DeviceArray> {
        match *self {
            Words::Device(a) | Words::Mirrored { device: a, .. } => Some(a),
            Words::Host(_) => None,
        }
    }
}

/// Where each row's group comes from.
#[derive(Clone, Copy)]
pub(crate) enum RowGroups<'a> {
    /// One key word per row; group = key - base (wrapping).
    Keys32 { keys: Words<'a>, base: u32 },
    /// Two key words per row (lo, hi); group = key - base.
    Keys64 { keys: Words<'a>, base: u64 },
    /// Host-held group ids in ascending order (rows sorted by group): a
    /// window's rows are one range of them, and its passes read only
    /// that range.
    SortedIds { ids: &'a [u32] },
    /// Partitions of `size` rows (the last may be shorter).
    EqualSize { size: u64 },
    /// Partition j holds rows offsets[j]..offsets[j + 1].
    Offsets { offsets: &'a [u64] },
}

impl RowGroups<'_> {
    fn mode(&self) -> GroupMode {
        match self {
            RowGroups::Keys32 { .. } | RowGroups::SortedIds { .. } => GroupMode::Keys32,
            RowGroups::Keys64 { .. } => GroupMode::Keys64,
            RowGroups::EqualSize { .. } => GroupMode::EqualSize,
            RowGroups::Offsets { .. } => GroupMode::Offsets,
        }
    }

    fn keys(&self) -> Option<Words<'_>> {
        match *self {
            RowGroups::Keys32 { keys, .. } | RowGroups::Keys64 { keys, .. } => Some(keys),
            RowGroups::SortedIds { ids } => Some(Words::Host(ids)),
            _ => None,
        }
    }

    fn key_words(&self) -> u64 {
        match self {
            RowGroups::Keys32 { .. } | RowGroups::SortedIds { .. } => 1,
            RowGroups::Keys64 { .. } => 2,
            _ => 0,
        }
    }

    /// Rows that may hold groups `groups` (all rows for unsorted keys).
    fn rows_of(&self, groups: &Range<u64>, rows: u64) -> Range<u64> {
        match self {
            RowGroups::Keys32 { .. } | RowGroups::Keys64 { .. } => 0..rows,
            RowGroups::SortedIds { ids } => {
                let first = |g: u64| ids.partition_point(|&id| (id as u64) < g) as u64;
                first(groups.start)..first(groups.end)
            }
            RowGroups::EqualSize { size } => {
                (groups.start * size).min(rows)..(groups.end.saturating_mul(*size)).min(rows)
            }
            RowGroups::Offsets { offsets } => {
                offsets[groups.start as usize]..offsets[groups.end as usize]
            }
        }
    }
}

/// `Params` in group.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct GroupParams {
    rows: u32,
    group_count: u32,
    key_base_lo: u32,
    key_base_hi: u32,
    size: u32,
    first_group: u32,
    first_skip: u32,
    seg_count: u32,
    limb_base: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

/// `GroupParams`' layout, checked against group.wgsl's `Params` by
/// tests/wgsl_layout.rs.
pub(crate) fn group_params_layout() -> crate::layout::HostStruct {
    crate::layout::host_struct!(
        "Params",
        GroupParams {
            rows,
            group_count,
            key_base_lo,
            key_base_hi,
            size,
            first_group,
            first_skip,
            seg_count,
            limb_base,
            pad0,
            pad1,
            pad2,
        }
    )
}

/// Which accumulators to fill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Wanted {
    pub sum: bool,
    pub max: bool,
    pub min: bool,
}

/// A byte range of a buffer, to bind.
struct Bound {
    buffer: wgpu::Buffer,
    offset: u64,
    bytes: u64,
}

/// One chunk of rows: its values, keys and segment table bound where they
/// are.
pub(crate) struct Chunk {
    rows: Range<u64>,
    values: Bound,
    keys: Option<Bound>,
    /// Offsets mode: the segment table, the global index of its first
    /// segment and its length.
    segments: Option<(Bound, u64, u32)>,
    /// Buffers uploaded for this chunk.
    _uploads: Vec<PooledBuffer>,
}

/// What one dispatch reads of a chunk: how many rows, and their values
/// and keys bound.
struct ChunkRead {
    rows: u64,
    values: Bound,
    keys: Option<Bound>,
}

/// Rows from a multiple of this can start a binding (chunks start there):
/// their words, one or more a row, lie on the binding offset alignment.
fn row_alignment(ctx: &Context) -> u64 {
    (ctx.limits.offset_alignment / 4).max(1)
}

impl Bound {
    /// `rows` rows of `words` words each, from row `skip` of this range.
    fn rows(&self, skip: u64, rows: u64, words: u64) -> Bound {
        Bound {
            buffer: self.buffer.clone(),
            offset: self.offset + skip * words * 4,
            bytes: rows * words * 4,
        }
    }
}

impl Chunk {
    fn len(&self) -> u64 {
        self.rows.end - self.rows.start
    }

    /// What a window's pass reads of this chunk: for rows sorted by group
    /// only the part of `window_rows` in it (from a row that `align`
    /// divides, as the chunk's own start is; rows of other groups before
    /// it are skipped by the kernel), else every row of it (rows of other
    /// windows are skipped there too).
    fn read_for(
        &self,
        by: &RowGroups<'_>,
        window_rows: &Range<u64>,
        align: u64,
        wpe: u64,
    ) -> ChunkRead {
        let (skip, rows) = match by {
            RowGroups::SortedIds { .. } => {
                let start = (window_rows.start / align * align).max(self.rows.start);
                let end = window_rows.end.min(self.rows.end).max(start);
                (start - self.rows.start, end - start)
            }
            _ => (0, self.len()),
        };
        ChunkRead {
            rows,
            values: self.values.rows(skip, rows, wpe),
            keys: self
                .keys
                .as_ref()
                .map(|k| k.rows(skip, rows, by.key_words())),
        }
    }
}

/// Groups one window's accumulators (laid out as `limbs` says) may hold on
/// this device.
pub(crate) fn window_groups(ctx: &Context, limbs: Limbs) -> u64 {
    (ctx.limits.max_binding_bytes / (limbs.stride as u64 * 4)).clamp(1, 1 << 30)
}

/// The accumulator layout for `values` of `dtype` (`sum`: the pass adds
/// them to the limbs): narrow where their spread is known (host-held
/// values, scanned here, a pass over the column on the calling thread;
/// integers), full for device-resident floats; the narrowest where no sum
/// is wanted.
pub(crate) fn limbs_for(dtype: Dtype, values: Words<'_>, sum: bool) -> Limbs {
    if !sum {
        return Limbs::unsummed(dtype);
    }
    let rows = values.len() / dtype.words();
    let spread = match values.host() {
        Some(words) => spread_of_words(dtype, words),
        None if !dtype.is_float() => Spread::Within { lo: 0, hi: 0 },
        None => Spread::Unknown,
    };
    Limbs::for_values(dtype, spread, rows)
}

/// The accumulator layout of a pass over `values` into `groups` groups:
/// [`limbs_for`], except that device-resident floats get their spread from
/// the device ([`device_spread`]: one more pass over the column and a
/// wait) where there are more groups than workgroup memory holds in the
/// full layout (private accumulation, or compact where rows go one by one
/// (`direct`), which does not depend on the layout), so that the
/// accumulators' footprint matters; the full layout where the spread
/// cannot be read.
fn pass_limbs(
    ctx: &Context,
    dtype: Dtype,
    values: Words<'_>,
    sum: bool,
    groups: u64,
    direct: bool,
) -> Limbs {
    let kernels = &ctx.group_kernels;
    let compact = if direct {
        kernels.compact_groups(dtype)
    } else {
        0
    };
    let local = kernels.private_groups(Limbs::full(dtype)).max(compact) as u64;
    match values {
        Words::Device(array) if sum && dtype.is_float() && groups > local => {
            let spread = device_spread(ctx, array).unwrap_or(Spread::Unknown);
            Limbs::for_values(dtype, spread, values.len() / dtype.words())
        }
        _ => limbs_for(dtype, values, sum),
    }
}

/// How host rows reach the device: through the upload ring (large columns
/// in reused staging buffers; may wait for earlier work, so only for callers
/// that block anyway) or through the queue's own staging (never waits: the
/// scheduler's thread).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Staging {
    Ring,
    Queue,
}

fn storage_buffer(
    ctx: &Context,
    words: &[u32],
    label: &str,
    staging: Staging,
) -> Result<PooledBuffer> {
    let b = ctx.pool.take(
        &ctx.device,
        (words.len() as u64 * 4).max(16),
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        label,
    );
    match staging {
        Staging::Ring => crate::upload::write(ctx, &b, bytemuck::cast_slice(words))?,
        Staging::Queue if !words.is_empty() => {
            ctx.queue.write_buffer(&b, 0, bytemuck::cast_slice(words))
        }
        Staging::Queue => {}
    }
    Ok(b)
}

fn bind(b: &Bound) -> wgpu::BindingResource<'_> {
    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
        buffer: &b.buffer,
        offset: b.offset,
        size: NonZeroU64::new(b.bytes.max(4)),
    })
}

/// How a pass of the group kernel is cut on this device: rows per chunk
/// (each chunk's columns fit one binding and one dispatch), the alignment
/// of chunk starts, groups per window (a window's accumulators fit one
/// binding), the phases (64-bit max/min keys take a second round for
/// their low words, after every row's first round), and whether rows are
/// added one by one ([`keys_change_often`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PassShape {
    pub chunk_rows: u64,
    pub align: u64,
    /// The accumulators' layout.
    pub limbs: Limbs,
    pub window: u64,
    pub phases: u32,
    pub direct: bool,
}

/// Adjacent row pairs [`keys_change_often`] looks at.
const SAMPLE_PAIRS: usize = 4096;

/// Blocks of adjacent device-resident keys read back to judge them, and
/// rows per block; smaller inputs are not sampled (either way costs little
/// there).
const DEVICE_SAMPLE_BLOCKS: u64 = 4;
const DEVICE_SAMPLE_ROWS: u64 = 1024;
const MIN_SAMPLED_DEVICE_ROWS: u64 = 1 << 16;

/// True when the keys change between adjacent rows more often than not:
/// runs would end on nearly every row, and the kernel's per-run
/// bookkeeping costs more than adding each row straight to its group
/// (`DIRECT` in group.wgsl). Host-held keys are judged from up to
/// [`SAMPLE_PAIRS`] evenly spaced pairs; device-resident ones from a few
/// evenly spaced blocks read back (a small copy and one wait), and go run
/// by run where that fails. Both ways give the same bits.
pub(crate) fn keys_change_often(ctx: &Context, by: &RowGroups<'_>) -> bool {
    let w = by.key_words() as usize;
    match by.keys() {
        Some(Words::Host(words) | Words::Mirrored { host: words, .. }) => {
            host_keys_change_often(words, w)
        }
        Some(Words::Device(array)) => device_keys_change_often(ctx, array, w).unwrap_or(false),
        None => false,
    }
}

/// [`keys_change_often`] for host-held keys (`w` words a key), from
/// [`SAMPLE_PAIRS`] evenly spaced adjacent pairs.
fn host_keys_change_often(words: &[u32], w: usize) -> bool {
    let pairs = (words.len() / w).saturating_sub(1);
    if pairs == 0 {
        return false;
    }
    let samples = pairs.min(SAMPLE_PAIRS);
    let step = pairs / samples;
    let changes = (0..samples)
        .map(|s| s * step * w)
        .filter(|&at| words[at..at + w] != words[at + w..at + 2 * w])
        .count();
    changes * 2 > samples
}

/// [`keys_change_often`] for keys in `array` (`w` words a key), from
/// [`DEVICE_SAMPLE_BLOCKS`] blocks of adjacent keys; `None` where they
/// cannot be read (a buffer without COPY_SRC, a GPU error).
fn device_keys_change_often(ctx: &Context, array: &DeviceArray, w: usize) -> Option<bool> {
    let w = w as u64;
    let rows = array.len() * array.dtype().words() / w;
    if rows < MIN_SAMPLED_DEVICE_ROWS {
        return None;
    }
    let block_words = DEVICE_SAMPLE_ROWS * w;
    let blocks: Vec<Range<u64>> = (0..DEVICE_SAMPLE_BLOCKS)
        .map(|b| (rows - DEVICE_SAMPLE_ROWS) * b / (DEVICE_SAMPLE_BLOCKS - 1) * w)
        .map(|word| word..word + block_words)
        .collect();
    let sample = read_device_ranges(ctx, array, &blocks, "sampled group keys").ok()?;
    let (mut pairs, mut changes) = (0, 0);
    for block in sample.chunks(block_words as usize) {
        let keys: Vec<&[u32]> = block.chunks_exact(w as usize).collect();
        pairs += keys.len().saturating_sub(1);
        changes += keys.windows(2).filter(|k| k[0] != k[1]).count();
    }
    Some(pairs > 0 && changes * 2 > pairs)
}

impl PassShape {
    /// The shape of a pass over values of `dtype` grouped by `by`, into
    /// accumulators laid out as `limbs` says given whether rows go one by
    /// one ([`limbs_for`] the values).
    pub fn new(
        ctx: &Context,
        dtype: Dtype,
        limbs: impl FnOnce(bool) -> Limbs,
        by: &RowGroups<'_>,
        wanted: Wanted,
    ) -> Self {
        let wpe = dtype.words();
        let kernels = &ctx.group_kernels;
        let wg = kernels.shape().workgroup_size() as u64;
        let per_unit = wg * rows_per_invocation(kernels.shape()) as u64;
        let binding = ctx.limits.max_binding_bytes;
        let key_limit = match by.key_words() {
            0 => u64::MAX,
            w => binding / (w * 4),
        };
        let align = row_alignment(ctx);
        let chunk_rows = (binding / (wpe * 4))
            .min(key_limit)
            .min(ctx.limits.max_units_per_dispatch.saturating_mul(per_unit))
            .clamp(1, MAX_CHUNK_ROWS);
        let chunk_rows = (chunk_rows / align * align).max(align);
        let direct = ctx
            .group_kernels
            .strategy
            .direct
            .unwrap_or_else(|| keys_change_often(ctx, by));
        let limbs = limbs(direct && by.key_words() > 0);
        PassShape {
            chunk_rows,
            align,
            limbs,
            window: window_groups(ctx, limbs),
            phases: if wpe == 2 && (wanted.max || wanted.min) {
                2
            } else {
                1
            },
            direct,
        }
    }
}

/// A window's accumulators on the device, its finished records (when its
/// groups are finished there) and the buffer they are read back through.
pub(crate) struct WindowBuffers {
    pub acc: PooledBuffer,
    pub records: Option<PooledBuffer>,
    pub readback: PooledBuffer,
    /// Bytes of the accumulators.
    pub bytes: u64,
    /// Bytes read back: the records', or the accumulators'.
    pub read_bytes: u64,
    pub count: u64,
    pub dtype: Dtype,
    /// The accumulators' layout.
    pub limbs: Limbs,
    /// Where the window's groups are finished.
    pub finish: Finish,
}

impl WindowBuffers {
    /// Buffers for `count` groups' accumulators of `dtype`, laid out as
    /// `limbs` says (and records, for groups finished on the device).
    pub fn new(ctx: &Context, dtype: Dtype, limbs: Limbs, count: u64, finish: Finish) -> Self {
        let bytes = count * limbs.stride as u64 * 4;
        let acc = ctx.pool.take(
            &ctx.device,
            bytes,
            wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            "gpulanes group accumulators",
        );
        let (records, read_bytes) = match finish {
            Finish::OnHost => (None, bytes),
            Finish::OnDevice { .. } => {
                let record_bytes = count * RECORD_WORDS as u64 * 4;
                let records = ctx.pool.take(
                    &ctx.device,
                    record_bytes,
                    wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                    "gpulanes group records",
                );
                (Some(records), record_bytes)
            }
        };
        let readback = ctx.pool.take(
            &ctx.device,
            read_bytes,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            "gpulanes group readback",
        );
        WindowBuffers {
            acc,
            records,
            readback,
            bytes,
            read_bytes,
            count,
            dtype,
            limbs,
            finish,
        }
    }

    /// Zeroes the accumulators (before a window's first rows).
    pub fn encode_clear(&self, encoder: &mut wgpu::CommandEncoder) {
        encoder.clear_buffer(&self.acc, 0, Some(self.bytes));
    }

    /// After a window's last rows: finishes its groups on the device (where
    /// it has records; `wanted`: what the passes filled) and copies the
    /// records, or the accumulators, to the readback buffer. Returns the
    /// uniform buffer the finishing reads, to keep until the submission is
    /// done.
    pub fn encode_read(
        &self,
        ctx: &Context,
        encoder: &mut wgpu::CommandEncoder,
        wanted: Wanted,
    ) -> Option<PooledBuffer> {
        match (&self.records, self.finish) {
            (Some(records), Finish::OnDevice { mean }) => {
                let params = encode_finish(
                    ctx, encoder, self.dtype, self.limbs, wanted.sum, mean, self.count, &self.acc,
                    records,
                );
                encoder.copy_buffer_to_buffer(records, 0, &self.readback, 0, self.read_bytes);
                Some(params)
            }
            _ => {
                encoder.copy_buffer_to_buffer(&self.acc, 0, &self.readback, 0, self.bytes);
                None
            }
        }
    }
}

/// The kind of pass (its pipeline) that phase `phase` of a window of
/// `count` groups runs, accumulating into `limbs`; `direct` where rows
/// would be added one by one (see [`keys_change_often`]).
#[allow(clippy::too_many_arguments)]
fn pass_kind(
    ctx: &Context,
    dtype: Dtype,
    by: &RowGroups<'_>,
    wanted: Wanted,
    count: u64,
    phase: u32,
    direct: bool,
    limbs: Limbs,
) -> PassKind {
    let kernels = &ctx.group_kernels;
    // Few keyed groups: each workgroup accumulates privately first, so rows
    // of the same group do not contend for the same global words (CPU
    // drivers also check every global access's bounds); rows added one by
    // one use the compact layout, which holds more groups.
    let direct = direct && by.key_words() > 0;
    let compact_fits = direct && count <= kernels.compact_groups(dtype) as u64;
    let private_fits = count <= kernels.private_groups(limbs) as u64;
    let local = match kernels.strategy.local {
        _ if by.key_words() == 0 || phase != 0 => Local::Global,
        Some(Local::Global) => Local::Global,
        Some(Local::Private) if private_fits => Local::Private,
        Some(Local::Compact) if compact_fits => Local::Compact,
        _ if compact_fits => Local::Compact,
        _ if private_fits => Local::Private,
        _ => Local::Global,
    };
    PassKind {
        mode: by.mode(),
        sum: wanted.sum,
        max: wanted.max,
        min: wanted.min,
        phase,
        local,
        direct,
    }
}

/// Builds every pipeline that the passes of `shape` over `groups` groups
/// will record (each phase of a full window and of the last, and the
/// finishing kernel where `finish` finishes on the device), so that
/// recording them later finds them built. Pipelines are built on first
/// use, which can take about 100 ms on a CPU driver: a caller that records
/// on a thread others wait for (the lanes' dispatcher) builds them first
/// on its own.
#[allow(clippy::too_many_arguments)]
pub(crate) fn build_pass_pipelines(
    ctx: &Context,
    dtype: Dtype,
    by: &RowGroups<'_>,
    wanted: Wanted,
    finish: Finish,
    shape: &PassShape,
    groups: u64,
) {
    let kernels = &ctx.group_kernels;
    let mut counts = vec![shape.window.min(groups)];
    if groups > shape.window && !groups.is_multiple_of(shape.window) {
        counts.push(groups % shape.window);
    }
    for count in counts.into_iter().filter(|&c| c > 0) {
        for phase in 0..shape.phases {
            let kind = pass_kind(
                ctx,
                dtype,
                by,
                wanted,
                count,
                phase,
                shape.direct,
                shape.limbs,
            );
            kernels.pipeline(&ctx.device, dtype, shape.limbs, kind);
        }
    }
    if let Finish::OnDevice { mean } = finish
        && groups > 0
    {
        kernels
            .finish
            .pipeline(&ctx.device, dtype, shape.limbs, wanted.sum, mean);
    }
}

/// Encodes phase `phase` of the pass over `chunks` (every one that holds
/// rows of the window's groups) into the accumulators of the window of
/// `count` groups from `g0`. Returns the uniform buffers the dispatches
/// read, to keep until the submission is done.
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_window_phase(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    dtype: Dtype,
    by: &RowGroups<'_>,
    wanted: Wanted,
    chunks: &[Chunk],
    g0: u64,
    count: u64,
    phase: u32,
    direct: bool,
    window: &WindowBuffers,
) -> Vec<PooledBuffer> {
    let kernels = &ctx.group_kernels;
    let kind = pass_kind(ctx, dtype, by, wanted, count, phase, direct, window.limbs);
    let (local, direct) = (kind.local, kind.direct);
    let private = local != Local::Global;
    log::debug!(
        "group pass: {dtype}, {count} groups, phase {phase}, {local:?} accumulation, rows {}",
        if direct { "one by one" } else { "run by run" }
    );
    let wg = group_workgroup_size(kernels.shape(), local) as u64;
    let per_unit = wg * rows_per_invocation(kernels.shape()) as u64;
    let pipeline = kernels.pipeline(&ctx.device, dtype, window.limbs, kind);
    let rows = chunks.last().map_or(0, |c| c.rows.end);
    let row_range = by.rows_of(&(g0..g0 + count), rows);
    let align = row_alignment(ctx);
    let mut bound = Vec::new();
    // A window without rows dispatches nothing; otherwise each chunk that
    // overlaps its rows reads at least one row.
    for chunk in chunks.iter().filter(|c| {
        !row_range.is_empty() && c.rows.start < row_range.end && row_range.start < c.rows.end
    }) {
        let read = chunk.read_for(by, &row_range, align, dtype.words());
        let p = GroupParams {
            limb_base: window.limbs.base,
            rows: read.rows as u32,
            ..chunk_params(by, chunk, g0, count)
        };
        let params = ctx.pool.take(
            &ctx.device,
            GROUP_PARAMS_BYTES,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            "gpulanes group params",
        );
        ctx.queue.write_buffer(&params, 0, bytemuck::bytes_of(&p));
        // Absent bindings are bound to the values (never read).
        let keys = read.keys.as_ref().unwrap_or(&read.values);
        let segs = chunk.segments.as_ref().map_or(&chunk.values, |s| &s.0);
        let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("reduce groups"),
            layout: &kernels.layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: bind(&Bound {
                        buffer: (*params).clone(),
                        offset: 0,
                        bytes: GROUP_PARAMS_BYTES,
                    }),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: bind(keys),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: bind(&read.values),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: bind(&Bound {
                        buffer: (*window.acc).clone(),
                        offset: 0,
                        bytes: window.bytes,
                    }),
                },
                wgpu::BindGroupEntry {
                    binding: 4,
                    resource: bind(segs),
                },
            ],
        });
        let units = read.rows.div_ceil(per_unit);
        // A private workgroup takes several units (the kernel loops over
        // them), and at least a few workgroups share the work.
        let workgroups = if private {
            units
                .div_ceil(units_per_private_workgroup(kernels.shape(), direct))
                .max(units.min(MIN_PRIVATE_WORKGROUPS))
        } else {
            units
        };
        bound.push((bind_group, workgroups as u32, params));
    }
    {
        let mut cpass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("reduce groups"),
            timestamp_writes: None,
        });
        cpass.set_pipeline(&pipeline);
        for (bind_group, units, _) in &bound {
            cpass.set_bind_group(0, bind_group, &[]);
            let x = (*units).min(ctx.limits.max_workgroups_per_dim);
            cpass.dispatch_workgroups(x, units.div_ceil(x), 1);
        }
    }
    bound.into_iter().map(|(_, _, params)| params).collect()
}

/// Reduces `values` (`dtype`'s words, `rows` rows) into `groups` groups
/// found by `by`, and hands each window of consecutive groups to `each`
/// with the window's first group, in order: its accumulators read back, or
/// its records where `finish` finishes the groups on the device.
#[allow(clippy::too_many_arguments)]
pub(crate) fn reduce_groups(
    ctx: &Context,
    dtype: Dtype,
    values: Words<'_>,
    by: RowGroups<'_>,
    groups: u64,
    wanted: Wanted,
    finish: Finish,
    mut each: impl FnMut(u64, &GroupAccumulators<'_>) -> Result<()>,
) -> Result<()> {
    let wpe = dtype.words();
    let rows = values.len() / wpe;
    if groups == 0 {
        return Ok(());
    }
    // Stage times, logged at debug level: what a slow call spends where.
    let started = Instant::now();
    let limbs = |direct| pass_limbs(ctx, dtype, values, wanted.sum, groups, direct);
    let shape = PassShape::new(ctx, dtype, limbs, &by, wanted);
    let planned = started.elapsed();
    let mut first_scope = Some(ErrorScopes::push(ctx));
    let chunks = make_chunks(
        ctx,
        values,
        wpe,
        by,
        0..rows,
        shape.chunk_rows,
        shape.align,
        Staging::Ring,
    )?;
    let uploaded = started.elapsed().saturating_sub(planned);
    let (mut on_device, mut finishing) = (Duration::ZERO, Duration::ZERO);
    let mut g0 = 0;
    while g0 < groups {
        let window_started = Instant::now();
        let scope = first_scope.take().unwrap_or_else(|| ErrorScopes::push(ctx));
        let g1 = (g0 + shape.window).min(groups);
        let count = g1 - g0;
        let window = WindowBuffers::new(ctx, dtype, shape.limbs, count, finish);
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("gpulanes groups"),
            });
        window.encode_clear(&mut encoder);
        // Every chunk's high words before any chunk's low words.
        let mut params = Vec::new();
        for phase in 0..shape.phases {
            params.extend(encode_window_phase(
                ctx,
                &mut encoder,
                dtype,
                &by,
                wanted,
                &chunks,
                g0,
                count,
                phase,
                shape.direct,
                &window,
            ));
        }
        params.extend(window.encode_read(ctx, &mut encoder, wanted));
        let index = ctx.queue.submit([encoder.finish()]);
        scope.check()?;
        // Finished from the mapped readback, where the words lie.
        let mut mapped = Duration::ZERO;
        read_mapped(ctx, &window.readback, window.read_bytes, index, |words| {
            mapped = window_started.elapsed();
            each(
                g0,
                &GroupAccumulators::read_back(dtype, shape.limbs, finish, words),
            )
        })??;
        on_device += mapped;
        finishing += window_started.elapsed().saturating_sub(mapped);
        drop(params);
        g0 = g1;
    }
    log::debug!(
        "groups: {rows} {dtype} rows into {groups} groups ({} a window, {} limbs a side): \
         layout {planned:?} (value scan), rows to the device {uploaded:?}, \
         passes recorded to readback mapped {on_device:?}, results {finishing:?}",
        shape.window,
        shape.limbs.len,
    );
    Ok(())
}

/// Reads the word ranges `ranges` of `array` back, one after another, in
/// one submission; `what` names the words in the error for a buffer
/// without COPY_SRC (arrays an app wraps may lack it, and a copy from such
/// a buffer would be a validation error).
pub(crate) fn read_device_ranges(
    ctx: &Context,
    array: &DeviceArray,
    ranges: &[Range<u64>],
    what: &str,
) -> Result<Vec<u32>> {
    if let Some(p) = array
        .pieces
        .iter()
        .find(|p| !p.buffer.usage().contains(wgpu::BufferUsages::COPY_SRC))
    {
        return Err(Error::InvalidInput(format!(
            "{what} are read back, so their buffer needs COPY_SRC (usage: {:?})",
            p.buffer.usage()
        )));
    }
    let total: u64 = ranges.iter().map(|r| r.end - r.start).sum();
    let bytes = (total * 4).max(4);
    let scope = ErrorScopes::push(ctx);
    let readback = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("gpulanes words readback"),
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = ctx
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("gpulanes words readback"),
        });
    // Pieces overlap and come in order: each part of a range is copied from
    // the first piece that holds its start.
    let mut at = 0;
    for r in ranges {
        let mut done = r.start;
        for p in &array.pieces {
            let end = (p.span.base_item + p.span.items).min(r.end);
            if p.span.base_item <= done && end > done {
                let from = done - p.span.base_item;
                encoder.copy_buffer_to_buffer(
                    &p.buffer,
                    from * 4,
                    &readback,
                    at * 4,
                    (end - done) * 4,
                );
                at += end - done;
                done = end;
            }
        }
    }
    let index = ctx.queue.submit([encoder.finish()]);
    scope.check()?;
    read_words(ctx, &readback, total * 4, index)
}

/// The piece of `array` holding word `word` that reaches furthest (pieces
/// overlap by a block, so a chunk that starts there can run on).
fn piece_at(array: &DeviceArray, word: u64) -> &crate::device_array::Piece {
    array
        .pieces
        .iter()
        .filter(|p| p.span.base_item <= word)
        .max_by_key(|p| p.span.base_item + p.span.items)
        .expect("the first piece starts at word 0")
}

/// Binds (or uploads) rows `r0..r1` of a column of `w` words per row.
fn bound(
    ctx: &Context,
    src: Words<'_>,
    w: u64,
    rows: &Range<u64>,
    uploads: &mut Vec<PooledBuffer>,
    label: &str,
    staging: Staging,
) -> Result<Bound> {
    let (a, b) = (rows.start * w, rows.end * w);
    Ok(match src.device() {
        None => {
            let words = src.host().unwrap_or_default();
            let buf = storage_buffer(ctx, &words[a as usize..b as usize], label, staging)?;
            let bound = Bound {
                buffer: (*buf).clone(),
                offset: 0,
                bytes: (b - a) * 4,
            };
            uploads.push(buf);
            bound
        }
        Some(array) => {
            let piece = piece_at(array, a);
            Bound {
                buffer: piece.buffer.clone(),
                offset: (a - piece.span.base_item) * 4,
                bytes: (b - a) * 4,
            }
        }
    })
}

/// Splits rows `range` into chunks of at most `chunk_rows` that start at
/// multiples of `align` rows (`range.start` must be one) and lie inside one
/// piece of every device column, and binds (or uploads, by `staging`) their
/// values, keys and segment tables.
#[allow(clippy::too_many_arguments)]
pub(crate) fn make_chunks(
    ctx: &Context,
    values: Words<'_>,
    wpe: u64,
    by: RowGroups<'_>,
    range: Range<u64>,
    chunk_rows: u64,
    align: u64,
    staging: Staging,
) -> Result<Vec<Chunk>> {
    let rows = range.end;
    let columns: Vec<(Words<'_>, u64)> = std::iter::once((values, wpe))
        .chain(by.keys().map(|k| (k, by.key_words())))
        .collect();
    let mut chunks = Vec::new();
    let mut r0 = range.start;
    while r0 < rows {
        let mut r1 = (r0 + chunk_rows).min(rows);
        for &(col, w) in &columns {
            if let Some(array) = col.device() {
                let p = piece_at(array, r0 * w);
                r1 = r1.min((p.span.base_item + p.span.items) / w);
            }
        }
        if r1 < rows {
            r1 = r1 / align * align;
        }
        if r1 <= r0 {
            return Err(Error::InvalidInput(
                "device array pieces too small to bind a chunk of rows".into(),
            ));
        }
        let range = r0..r1;
        let mut uploads = Vec::new();
        let values_bound = bound(
            ctx,
            values,
            wpe,
            &range,
            &mut uploads,
            "gpulanes group values",
            staging,
        )?;
        let keys = match by.keys() {
            Some(k) => Some(bound(
                ctx,
                k,
                by.key_words(),
                &range,
                &mut uploads,
                "gpulanes group keys",
                staging,
            )?),
            None => None,
        };
        let segments = match by {
            RowGroups::Offsets { offsets } => {
                // The segments overlapping r0..r1: the last starting at or
                // before r0, then every one starting before r1.
                let j0 = offsets.partition_point(|&o| o <= r0) - 1;
                let j1 = offsets.partition_point(|&o| o < r1);
                let table: Vec<u32> = offsets[j0..j1]
                    .iter()
                    .map(|&o| (o.max(r0) - r0) as u32)
                    .collect();
                let n = table.len() as u32;
                let buf = storage_buffer(ctx, &table, "gpulanes segment starts", staging)?;
                let b = Bound {
                    buffer: (*buf).clone(),
                    offset: 0,
                    bytes: n as u64 * 4,
                };
                uploads.push(buf);
                Some((b, j0 as u64, n))
            }
            _ => None,
        };
        chunks.push(Chunk {
            rows: range,
            values: values_bound,
            keys,
            segments,
            _uploads: uploads,
        });
        r0 = r1;
    }
    if chunks.iter().any(|c| c.len() > u32::MAX as u64) {
        return Err(Error::InvalidInput("a chunk of rows exceeds 2^32".into()));
    }
    Ok(chunks)
}

/// The uniform of `chunk` for the window of `count` groups from `g0`.
fn chunk_params(by: &RowGroups<'_>, chunk: &Chunk, g0: u64, count: u64) -> GroupParams {
    let mut p = GroupParams {
        rows: (chunk.rows.end - chunk.rows.start) as u32,
        group_count: count as u32,
        size: 1,
        ..Default::default()
    };
    match *by {
        RowGroups::Keys32 { base, .. } => p.key_base_lo = base.wrapping_add(g0 as u32),
        RowGroups::SortedIds { .. } => p.key_base_lo = g0 as u32,
        RowGroups::Keys64 { base, .. } => {
            let b = base.wrapping_add(g0);
            p.key_base_lo = b as u32;
            p.key_base_hi = (b >> 32) as u32;
        }
        RowGroups::EqualSize { size } => {
            let r0 = chunk.rows.start;
            p.size = size as u32;
            p.first_group = (r0 / size).wrapping_sub(g0) as u32;
            p.first_skip = (r0 % size) as u32;
        }
        RowGroups::Offsets { .. } => {
            let (_, j0, n) = chunk
                .segments
                .as_ref()
                .expect("offsets chunks have segments");
            p.first_group = j0.wrapping_sub(g0) as u32;
            p.seg_count = *n;
        }
    }
    p
}

/// Waits for submission `index` and reads `bytes` of `readback` as words.
pub(crate) fn read_words(
    ctx: &Context,
    readback: &wgpu::Buffer,
    bytes: u64,
    index: wgpu::SubmissionIndex,
) -> Result<Vec<u32>> {
    read_mapped(ctx, readback, bytes, index, |words| words.to_vec())
}

/// Waits for submission `index`, maps `bytes` of `readback` and hands its
/// words to `read` on this thread while mapped; unmaps it whatever
/// happens after the map.
pub(crate) fn read_mapped<R>(
    ctx: &Context,
    readback: &wgpu::Buffer,
    bytes: u64,
    index: wgpu::SubmissionIndex,
    read: impl FnOnce(&[u32]) -> R,
) -> Result<R> {
    ctx.wait_callback(&index, |done| {
        readback.map_async(wgpu::MapMode::Read, 0..bytes, move |r| {
            done(r.map_err(|e| Error::lost_while("mapping groups read back failed", Arc::new(e))))
        })
    })?;
    let out = match readback.get_mapped_range(0..bytes) {
        Ok(view) => Ok(read(bytemuck::cast_slice::<u8, u32>(&view))),
        Err(e) => Err(Error::lost_while(
            "reading groups read back failed",
            Arc::new(e),
        )),
    };
    readback.unmap();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Engine;
    use crate::test_rng::xorshift;

    fn built(ctx: &Context) -> (usize, usize) {
        let kernels = &ctx.group_kernels;
        (kernels.pipelines_built(), kernels.finish.pipelines_built())
    }

    /// Recording a pass after [`build_pass_pipelines`] builds no pipeline:
    /// the lanes build a keyed batch job's pipelines when it is planned so
    /// that recording its steps on the dispatcher never builds one. Covers
    /// few groups (private and compact accumulation), many (global), rows
    /// in runs and one by one, 64-bit keys, two-phase 64-bit max/min,
    /// finishing on the host and on the device, and (with 64 KiB bindings)
    /// several windows with a shorter last one.
    #[test]
    fn recording_after_building_a_pass_builds_no_pipeline() {
        let engine = Engine::new().expect("engine");
        build_then_record(&engine);
        let small =
            Engine::with_options(crate::EngineOptions::default().max_binding_bytes(64 << 10))
                .expect("engine with 64 KiB bindings");
        assert!(
            build_then_record(&small) > 0,
            "no case had a shorter last window"
        );
    }

    /// Builds, then records, each case on `engine`, checking that recording
    /// built nothing; returns the cases whose last window was shorter than
    /// the others.
    fn build_then_record(engine: &Engine) -> usize {
        let ctx = engine.context();
        let mut partial_windows = 0;
        let mut next = xorshift(0x005e_ed0f_9a55);
        let rows = 5000u64;
        let random = |groups: u64, next: &mut dyn FnMut() -> u64| -> Vec<u32> {
            (0..rows).map(|_| (next() % groups) as u32).collect()
        };
        let all = Wanted {
            sum: true,
            max: true,
            min: true,
        };
        let extremes = Wanted {
            sum: false,
            max: true,
            min: true,
        };
        let sorted: Vec<u32> = (0..rows).map(|r| (r * 7 / rows) as u32).collect();
        type Case = (Dtype, Vec<u32>, u64, Wanted, Finish, bool);
        let cases: Vec<Case> = vec![
            (
                Dtype::F32,
                random(7, &mut next),
                7,
                all,
                Finish::OnHost,
                false,
            ),
            (
                Dtype::F32,
                sorted,
                7,
                all,
                Finish::OnDevice { mean: true },
                false,
            ),
            (
                Dtype::F64,
                random(3000, &mut next),
                3000,
                extremes,
                Finish::OnDevice { mean: false },
                false,
            ),
            (
                Dtype::I64,
                random(50, &mut next),
                50,
                all,
                Finish::OnDevice { mean: true },
                true,
            ),
            (
                Dtype::I32,
                random(20_000, &mut next),
                20_000,
                all,
                Finish::OnHost,
                false,
            ),
        ];
        let mut check = |(dtype, groups_of_rows, groups, wanted, finish, wide): Case| {
            let mut next_value = xorshift(0x9e37_79b9 ^ groups);
            let values: Vec<u32> = (0..rows * dtype.words())
                .map(|_| next_value() as u32 & 0x3f80_ffff)
                .collect();
            // 64-bit keys are the group ids plus a base past 32 bits.
            let base = 1u64 << 40;
            let wide_keys: Vec<u32> = groups_of_rows
                .iter()
                .flat_map(|&g| {
                    let k = base + g as u64;
                    [k as u32, (k >> 32) as u32]
                })
                .collect();
            let by = if wide {
                RowGroups::Keys64 {
                    keys: Words::Host(&wide_keys),
                    base,
                }
            } else {
                RowGroups::Keys32 {
                    keys: Words::Host(&groups_of_rows),
                    base: 0,
                }
            };
            let words = Words::Host(&values);
            let limbs = |direct| pass_limbs(ctx, dtype, words, wanted.sum, groups, direct);
            let shape = PassShape::new(ctx, dtype, limbs, &by, wanted);
            build_pass_pipelines(ctx, dtype, &by, wanted, finish, &shape, groups);
            let before = built(ctx);
            let mut windows = 0;
            reduce_groups(ctx, dtype, words, by, groups, wanted, finish, |_, _| {
                windows += 1;
                Ok(())
            })
            .expect("reduce");
            assert!(windows > 0, "{dtype}: no window was reduced");
            assert_eq!(
                built(ctx),
                before,
                "{dtype}, {groups} groups: recording built a pipeline"
            );
            partial_windows += usize::from(windows > 1 && !groups.is_multiple_of(shape.window));
            shape.window
        };
        let windows: Vec<u64> = cases.into_iter().map(&mut check).collect();
        // A few groups past a whole window of the float64 max/min case's
        // layout: the last window's are few enough to accumulate
        // privately, where a whole one's are not.
        let window = windows[2];
        if window < 3000 {
            let groups = window + 3;
            let keys = random(groups, &mut next);
            let f64_case = (
                Dtype::F64,
                keys,
                groups,
                extremes,
                Finish::OnDevice { mean: false },
                false,
            );
            check(f64_case);
        }
        assert!(built(ctx).0 >= 5, "{:?}", built(ctx));
        partial_windows
    }
}
