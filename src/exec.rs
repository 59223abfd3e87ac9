//! Recording a planned reduction into a command encoder, separate from
//! submitting it (as vello separates recording from execution): `record`
//! uploads the tables, encodes every dispatch of every level and the copy of
//! the final partials into a mappable buffer; `Recorded::finish` turns the
//! mapped bytes into a [`Reduction`].

use std::num::NonZeroU64;

use crate::engine::Context;
use crate::error::{Error, Result};
use crate::kernels::{PARAMS_BYTES, PARTIAL_BYTES, Pass, SEGMENT_BYTES};
use crate::op::{NanPolicy, Op, Reduction};
use crate::partial::{Partial, finalize};
use crate::plan::{Dispatch, Plan, Span, dispatches};
use crate::pool::PooledBuffer;

/// `Params` in reduce.wgsl.
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

/// A reduction whose GPU work is encoded; holds every buffer it uses until
/// the results are read.
pub(crate) struct Recorded {
    op: Op,
    nan: NanPolicy,
    plan: Plan,
    readback: Option<PooledBuffer>,
    _keep: Vec<PooledBuffer>,
}

impl Recorded {
    /// The mappable buffer with the final partials, if any GPU work exists.
    pub fn readback(&self) -> Option<(&wgpu::Buffer, u64)> {
        self.readback
            .as_ref()
            .map(|b| (&**b, self.plan.final_units() * PARTIAL_BYTES))
    }

    /// After the encoder holding this reduction was submitted: maps the
    /// results and calls `done` with the reduction once the GPU has finished
    /// (from inside a `device.poll`, on whichever thread polls). Cheap when
    /// there was no GPU work: `done` runs at once.
    pub fn read_async(self, done: impl FnOnce(Result<Reduction>) + Send + 'static) {
        let Some((buffer, bytes)) = self.readback() else {
            done(Ok(self.finish(&[])));
            return;
        };
        let buffer = buffer.clone();
        let mapped = buffer.clone();
        buffer.map_async(wgpu::MapMode::Read, 0..bytes, move |r| {
            let result = r
                .map_err(|e| Error::Gpu(format!("mapping the results failed: {e}")))
                .and_then(|()| {
                    let view = mapped
                        .get_mapped_range(0..bytes)
                        .map_err(|e| Error::Gpu(format!("reading the results failed: {e}")))?;
                    Ok(self.finish(&view))
                });
            mapped.unmap();
            done(result);
        });
    }

    /// Builds the result from the final partials (`bytes`, empty when there
    /// was no GPU work).
    pub fn finish(&self, bytes: &[u8]) -> Reduction {
        let partials: &[Partial] = if bytes.is_empty() {
            &[]
        } else {
            bytemuck::cast_slice(bytes)
        };
        let (values, counts) = self
            .plan
            .partition_lens
            .iter()
            .zip(&self.plan.final_unit)
            .map(|(&len, unit)| {
                finalize(self.op, self.nan, len, unit.map(|u| &partials[u as usize]))
            })
            .unzip();
        Reduction {
            op: self.op,
            values,
            counts,
        }
    }
}

/// Encodes the reduction of `inputs` (buffers holding the items of `spans`)
/// described by `plan`.
pub(crate) fn record(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    op: Op,
    nan: NanPolicy,
    plan: Plan,
    inputs: &[&wgpu::Buffer],
    spans: &[Span],
) -> Result<Recorded> {
    if plan.levels.is_empty() {
        return Ok(Recorded {
            op,
            nan,
            plan,
            readback: None,
            _keep: Vec::new(),
        });
    }
    let limits = ctx.dispatch_limits();
    let align = ctx.limits.offset_alignment;

    // Dispatches of every level and where each level's table sits.
    let mut all: Vec<Dispatch> = Vec::new();
    let mut table_offsets = Vec::with_capacity(plan.levels.len());
    let mut table_bytes = 0u64;
    for (i, level) in plan.levels.iter().enumerate() {
        let ds = if i == 0 {
            dispatches(0, level, spans, 4, &limits)
        } else {
            let prev = &plan.levels[i - 1];
            dispatches(
                i,
                level,
                &[Span {
                    base_item: 0,
                    items: prev.units,
                }],
                PARTIAL_BYTES,
                &limits,
            )
        };
        all.extend(ds);
        table_offsets.push(table_bytes);
        table_bytes += (level.table.len() as u64 * SEGMENT_BYTES).next_multiple_of(align);
    }
    let segment_limit = ctx.limits.max_binding_bytes / SEGMENT_BYTES;
    if plan.levels[0].table.len() as u64 > segment_limit {
        return Err(Error::InvalidPartitions(format!(
            "{} partitions exceed this device's limit of {} per reduction",
            plan.partition_lens.len(),
            segment_limit - 1
        )));
    }

    let device = &ctx.device;
    let storage_dst = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
    let tables = ctx
        .pool
        .take(device, table_bytes, storage_dst, "gpulanes segment tables");
    for (level, &offset) in plan.levels.iter().zip(&table_offsets) {
        ctx.queue
            .write_buffer(&tables, offset, bytemuck::cast_slice(&level.table));
    }
    let param_stride = ctx.limits.uniform_alignment.max(PARAMS_BYTES);
    let params = ctx.pool.take(
        device,
        all.len() as u64 * param_stride,
        wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        "gpulanes params",
    );
    let mut param_bytes = vec![0u8; (all.len() as u64 * param_stride) as usize];
    for (i, d) in all.iter().enumerate() {
        let p = Params {
            unit_base: d.unit_base,
            unit_count: d.unit_count,
            input_base_lo: d.input.base_item as u32,
            out_base: d.output.base_item as u32,
            segment_count: plan.partition_lens.len() as u32,
            one: 1.0,
            _pad: [0; 2],
        };
        let at = i * param_stride as usize;
        param_bytes[at..at + PARAMS_BYTES as usize].copy_from_slice(bytemuck::bytes_of(&p));
    }
    ctx.queue.write_buffer(&params, 0, &param_bytes);

    // Ping-pong partial buffers: level i writes buffer i % 2.
    let mut partial_sizes = [PARTIAL_BYTES; 2];
    for (i, level) in plan.levels.iter().enumerate() {
        partial_sizes[i % 2] = partial_sizes[i % 2].max(level.units * PARTIAL_BYTES);
    }
    let partial_usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
    let partials: Vec<PooledBuffer> = partial_sizes
        .iter()
        .take(plan.levels.len().min(2))
        .map(|&size| {
            ctx.pool
                .take(device, size, partial_usage, "gpulanes partials")
        })
        .collect();

    fn binding(buffer: &wgpu::Buffer, offset: u64, size: u64) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer,
            offset,
            size: NonZeroU64::new(size.max(16)),
        })
    }
    {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("gpulanes reduce"),
            timestamp_writes: None,
        });
        for (i, d) in all.iter().enumerate() {
            let level = &plan.levels[d.level];
            let table = binding(
                &tables,
                table_offsets[d.level],
                level.table.len() as u64 * SEGMENT_BYTES,
            );
            let out = binding(
                &partials[d.level % 2],
                d.output.byte_offset,
                d.output.byte_size,
            );
            let uniform = wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &params,
                offset: 0,
                size: NonZeroU64::new(PARAMS_BYTES),
            });
            let entries: Vec<wgpu::BindGroupEntry> = match level.pass {
                Pass::Elements => {
                    let input = inputs[d.input.buffer];
                    vec![
                        wgpu::BindGroupEntry {
                            binding: 0,
                            resource: uniform,
                        },
                        wgpu::BindGroupEntry {
                            binding: 1,
                            resource: table,
                        },
                        wgpu::BindGroupEntry {
                            binding: 2,
                            resource: binding(input, d.input.byte_offset, d.input.byte_size),
                        },
                        wgpu::BindGroupEntry {
                            binding: 3,
                            resource: binding(input, d.input.byte_offset, d.input.byte_size),
                        },
                        wgpu::BindGroupEntry {
                            binding: 4,
                            resource: out,
                        },
                    ]
                }
                Pass::Partials => {
                    let input = &partials[(d.level - 1) % 2];
                    vec![
                        wgpu::BindGroupEntry {
                            binding: 0,
                            resource: uniform,
                        },
                        wgpu::BindGroupEntry {
                            binding: 1,
                            resource: table,
                        },
                        wgpu::BindGroupEntry {
                            binding: 4,
                            resource: out,
                        },
                        wgpu::BindGroupEntry {
                            binding: 5,
                            resource: binding(input, d.input.byte_offset, d.input.byte_size),
                        },
                    ]
                }
            };
            let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: ctx.kernels.layout(level.pass),
                entries: &entries,
            });
            pass.set_pipeline(ctx.kernels.pipeline(level.pass, op.kernel()));
            pass.set_bind_group(0, &bind_group, &[(i as u64 * param_stride) as u32]);
            let x = (d.unit_count).min(ctx.limits.max_workgroups_per_dim);
            let y = d.unit_count.div_ceil(x);
            pass.dispatch_workgroups(x, y, 1);
        }
    }
    let final_bytes = plan.final_units() * PARTIAL_BYTES;
    let readback = ctx.pool.take(
        device,
        final_bytes,
        wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        "gpulanes readback",
    );
    encoder.copy_buffer_to_buffer(
        &partials[(plan.levels.len() - 1) % 2],
        0,
        &readback,
        0,
        final_bytes,
    );
    let mut keep = partials;
    keep.push(tables);
    keep.push(params);
    Ok(Recorded {
        op,
        nan,
        plan,
        readback: Some(readback),
        _keep: keep,
    })
}
