//! One level of partial reduction over one input buffer, ready to encode
//! into a stream's submission: its segment table, its per-dispatch
//! [`Params`], its bind groups and the buffer its partials go to.

use std::num::NonZeroU64;

use crate::engine::Context;
use crate::error::{Error, Result};
use crate::kernels::{PARAMS_BYTES, PARTIAL_BYTES, Pass, SEGMENT_BYTES};
use crate::op::KernelOp;
use crate::plan::{Level, Span, dispatches};
use crate::pool::PooledBuffer;

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
pub(super) struct LevelWork {
    pass: Pass,
    kernel: KernelOp,
    groups: Vec<(wgpu::BindGroup, u32, u32)>,
    param_stride: u64,
    pub(super) units: u64,
    pub(super) output: PooledBuffer,
    tables: PooledBuffer,
    params: PooledBuffer,
}

impl LevelWork {
    pub(super) fn prepare(
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

    pub(super) fn encode(&self, ctx: &Context, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(ctx.kernels.pipeline(self.pass, self.kernel));
        for (i, (group, _, units)) in self.groups.iter().enumerate() {
            pass.set_bind_group(0, group, &[(i as u64 * self.param_stride) as u32]);
            let x = (*units).min(ctx.limits.max_workgroups_per_dim);
            pass.dispatch_workgroups(x, units.div_ceil(x), 1);
        }
    }

    pub(super) fn into_buffers(self) -> [PooledBuffer; 3] {
        [self.output, self.tables, self.params]
    }
}
