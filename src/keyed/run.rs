//! Running the group kernel over rows held on the host: the rows are
//! uploaded once in chunks that each fit one binding, then every window of
//! consecutive groups whose accumulators fit one binding is cleared, filled
//! by one dispatch per chunk (and a second round for the low words of
//! 64-bit max/min keys), and read back.

use std::num::NonZeroU64;
use std::ops::Range;
use std::sync::mpsc;

use crate::dtype::Dtype;
use crate::engine::{Context, ErrorScopes};
use crate::error::{Error, Result};
use crate::pool::PooledBuffer;
use crate::readback::map_read;

use super::accumulators::GroupAccumulators;
use super::kernels::{GROUP_PARAMS_BYTES, GroupMode, PassKind, rows_per_invocation, stride_words};

/// Rows one dispatch covers at most (besides the binding limits), so that
/// one chunk's upload stays a modest staging copy.
const MAX_CHUNK_ROWS: u64 = 1 << 24;

/// Where each row's group comes from.
#[derive(Clone, Copy)]
pub(crate) enum RowGroups<'a> {
    /// One key word per row; group = key - base (wrapping).
    Keys32 { keys: &'a [u32], base: u32 },
    /// Two key words per row (lo, hi); group = key - base.
    Keys64 { keys: &'a [u32], base: u64 },
    /// Partitions of `size` rows (the last may be shorter).
    EqualSize { size: u64 },
    /// Partition j holds rows offsets[j]..offsets[j + 1].
    Offsets { offsets: &'a [u64] },
}

impl RowGroups<'_> {
    fn mode(&self) -> GroupMode {
        match self {
            RowGroups::Keys32 { .. } => GroupMode::Keys32,
            RowGroups::Keys64 { .. } => GroupMode::Keys64,
            RowGroups::EqualSize { .. } => GroupMode::EqualSize,
            RowGroups::Offsets { .. } => GroupMode::Offsets,
        }
    }

    fn key_words(&self) -> u64 {
        match self {
            RowGroups::Keys32 { .. } => 1,
            RowGroups::Keys64 { .. } => 2,
            _ => 0,
        }
    }

    /// Rows that may hold groups `groups` (all rows for keys).
    fn rows_of(&self, groups: &Range<u64>, rows: u64) -> Range<u64> {
        match self {
            RowGroups::Keys32 { .. } | RowGroups::Keys64 { .. } => 0..rows,
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
}

/// Which accumulators to fill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Wanted {
    pub sum: bool,
    pub max: bool,
    pub min: bool,
}

/// One uploaded chunk of rows.
struct Chunk {
    rows: Range<u64>,
    values: PooledBuffer,
    keys: Option<PooledBuffer>,
    /// Offsets mode: the segment table, the global index of its first
    /// segment and its length.
    segments: Option<(PooledBuffer, u64, u32)>,
}

impl Chunk {
    fn len(&self) -> u64 {
        self.rows.end - self.rows.start
    }
}

/// Groups one window's accumulators may hold on this device.
pub(crate) fn window_groups(ctx: &Context, dtype: Dtype) -> u64 {
    (ctx.limits.max_binding_bytes / (stride_words(dtype) as u64 * 4)).clamp(1, 1 << 30)
}

fn storage_buffer(ctx: &Context, words: &[u32], label: &str) -> PooledBuffer {
    let b = ctx.pool.take(
        &ctx.device,
        (words.len() as u64 * 4).max(16),
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        label,
    );
    if !words.is_empty() {
        ctx.queue.write_buffer(&b, 0, bytemuck::cast_slice(words));
    }
    b
}

fn bind(buffer: &wgpu::Buffer, bytes: u64) -> wgpu::BindingResource<'_> {
    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
        buffer,
        offset: 0,
        size: NonZeroU64::new(bytes.max(4)),
    })
}

/// Reduces `values` (`dtype`'s words, `rows` rows) into `groups` groups
/// found by `by`, and hands each window of consecutive groups' accumulators
/// to `each` with the window's first group, in order.
pub(crate) fn reduce_groups(
    ctx: &Context,
    dtype: Dtype,
    values: &[u32],
    by: RowGroups<'_>,
    groups: u64,
    wanted: Wanted,
    mut each: impl FnMut(u64, GroupAccumulators) -> Result<()>,
) -> Result<()> {
    let wpe = dtype.words();
    let rows = values.len() as u64 / wpe;
    if groups == 0 {
        return Ok(());
    }
    let kernels = &ctx.group_kernels;
    let wg = kernels.shape().workgroup_size() as u64;
    let per_unit = wg * rows_per_invocation(kernels.shape()) as u64;
    let binding = ctx.limits.max_binding_bytes;
    let key_limit = match by.key_words() {
        0 => u64::MAX,
        w => binding / (w * 4),
    };
    let chunk_rows = (binding / (wpe * 4))
        .min(key_limit)
        .min(ctx.limits.max_units_per_dispatch.saturating_mul(per_unit))
        .clamp(1, MAX_CHUNK_ROWS);
    let mut first_scope = Some(ErrorScopes::push(ctx));
    let chunks = upload_chunks(ctx, values, wpe, by, chunk_rows)?;
    let stride = stride_words(dtype) as u64;
    let window = window_groups(ctx, dtype);
    let two_phase = wpe == 2 && (wanted.max || wanted.min);
    let pass = |phase| PassKind {
        mode: by.mode(),
        sum: wanted.sum,
        max: wanted.max,
        min: wanted.min,
        phase,
    };
    let pipelines: Vec<wgpu::ComputePipeline> = (0..if two_phase { 2 } else { 1 })
        .map(|p| kernels.pipeline(&ctx.device, dtype, pass(p)))
        .collect();
    let mut g0 = 0;
    while g0 < groups {
        let scope = first_scope.take().unwrap_or_else(|| ErrorScopes::push(ctx));
        let g1 = (g0 + window).min(groups);
        let count = g1 - g0;
        let acc_bytes = count * stride * 4;
        let acc = ctx.pool.take(
            &ctx.device,
            acc_bytes,
            wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            "gpulanes group accumulators",
        );
        let readback = ctx.pool.take(
            &ctx.device,
            acc_bytes,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            "gpulanes group readback",
        );
        let row_range = by.rows_of(&(g0..g1), rows);
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("gpulanes groups"),
            });
        encoder.clear_buffer(&acc, 0, Some(acc_bytes));
        let mut bound = Vec::new();
        for chunk in chunks
            .iter()
            .filter(|c| c.rows.start < row_range.end && row_range.start < c.rows.end)
        {
            let p = chunk_params(&by, chunk, g0, count);
            let params = ctx.pool.take(
                &ctx.device,
                GROUP_PARAMS_BYTES,
                wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                "gpulanes group params",
            );
            ctx.queue.write_buffer(&params, 0, bytemuck::bytes_of(&p));
            // Absent bindings are bound to the values (never read).
            let values_bytes = chunk.len() * wpe * 4;
            let (keys, keys_bytes) = chunk
                .keys
                .as_ref()
                .map_or((&chunk.values, values_bytes), |k| {
                    (k, chunk.len() * by.key_words() * 4)
                });
            let (segs, segs_bytes) = chunk
                .segments
                .as_ref()
                .map_or((&chunk.values, values_bytes), |s| (&s.0, s.2 as u64 * 4));
            let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("reduce groups"),
                layout: &kernels.layout,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: bind(&params, GROUP_PARAMS_BYTES),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: bind(keys, keys_bytes),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: bind(&chunk.values, values_bytes),
                    },
                    wgpu::BindGroupEntry {
                        binding: 3,
                        resource: bind(&acc, acc_bytes),
                    },
                    wgpu::BindGroupEntry {
                        binding: 4,
                        resource: bind(segs, segs_bytes),
                    },
                ],
            });
            let units = chunk.len().div_ceil(per_unit) as u32;
            bound.push((bind_group, units, params));
        }
        // Every chunk's high words before any chunk's low words.
        for pipeline in &pipelines {
            let mut cpass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("reduce groups"),
                timestamp_writes: None,
            });
            cpass.set_pipeline(pipeline);
            for (bind_group, units, _) in &bound {
                cpass.set_bind_group(0, bind_group, &[]);
                let x = (*units).min(ctx.limits.max_workgroups_per_dim);
                cpass.dispatch_workgroups(x, units.div_ceil(x), 1);
            }
        }
        encoder.copy_buffer_to_buffer(&acc, 0, &readback, 0, acc_bytes);
        let index = ctx.queue.submit([encoder.finish()]);
        scope.check()?;
        let words = read_words(ctx, &readback, acc_bytes, index)?;
        drop(bound);
        each(g0, GroupAccumulators::new(dtype, words))?;
        g0 = g1;
    }
    Ok(())
}

/// Uploads the rows in chunks of at most `chunk_rows`, with their keys or
/// segment tables.
fn upload_chunks(
    ctx: &Context,
    values: &[u32],
    wpe: u64,
    by: RowGroups<'_>,
    chunk_rows: u64,
) -> Result<Vec<Chunk>> {
    let rows = values.len() as u64 / wpe;
    let mut chunks = Vec::new();
    let mut r0 = 0;
    while r0 < rows {
        let r1 = (r0 + chunk_rows).min(rows);
        let vals = &values[(r0 * wpe) as usize..(r1 * wpe) as usize];
        let keys = match by {
            RowGroups::Keys32 { keys, .. } => Some(&keys[r0 as usize..r1 as usize]),
            RowGroups::Keys64 { keys, .. } => Some(&keys[2 * r0 as usize..2 * r1 as usize]),
            _ => None,
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
                Some((
                    storage_buffer(ctx, &table, "gpulanes segment starts"),
                    j0 as u64,
                    n,
                ))
            }
            _ => None,
        };
        chunks.push(Chunk {
            rows: r0..r1,
            values: storage_buffer(ctx, vals, "gpulanes group values"),
            keys: keys.map(|k| storage_buffer(ctx, k, "gpulanes group keys")),
            segments,
        });
        r0 = r1;
    }
    if chunks
        .iter()
        .any(|c| c.rows.end - c.rows.start > u32::MAX as u64)
    {
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
fn read_words(
    ctx: &Context,
    readback: &wgpu::Buffer,
    bytes: u64,
    index: wgpu::SubmissionIndex,
) -> Result<Vec<u32>> {
    ctx.health.check()?;
    let (tx, rx) = mpsc::channel();
    map_read(
        readback,
        bytes,
        "group accumulators",
        |r| r.map(|b| bytemuck::cast_slice::<u8, u32>(b).to_vec()),
        move |r| {
            let _ = tx.send(r);
        },
    );
    ctx.device
        .poll(wgpu::PollType::Wait {
            submission_index: Some(index),
            timeout: None,
        })
        .map_err(|e| {
            ctx.health
                .poll_failed(&ctx.device, &ctx.queue, "waiting for the GPU", e)
        })?;
    rx.recv()
        .map_err(|_| Error::Gpu("readback callback never ran".into()))?
}
