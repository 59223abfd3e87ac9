//! One level of partial reduction over one input buffer, ready to encode
//! into a stream's submission: its segment table, its per-dispatch
//! `Params`, its bind groups and the buffer its partials go to.

use crate::context::Context;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::exec::{BindRange, dispatch_bind_group, encode_dispatch, write_params};
use crate::kernels::{PARTIAL_BYTES, Pass, SEGMENT_BYTES};
use crate::op::KernelOp;
use crate::plan::{Level, Span, dispatches};
use crate::pool::PooledBuffer;

/// One level over one input buffer, ready to encode: its bind groups and
/// the buffer its partials go to.
pub(super) struct LevelWork {
    pass: Pass,
    kernel: KernelOp,
    groups: Vec<(wgpu::BindGroup, u32, u32)>,
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
        let ds = dispatches(
            0,
            level,
            &[span],
            item_bytes,
            PARTIAL_BYTES,
            &ctx.dispatch_limits(),
        );
        let device = &ctx.device;
        let table_bytes = level.table.len() as u64 * SEGMENT_BYTES;
        if table_bytes > ctx.limits.max_binding_bytes {
            return Err(Error::Internal(
                "streaming segment table exceeds a binding".into(),
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
        let params = write_params(
            ctx,
            &ds,
            level.table.len() as u32 - 1,
            "gpulanes stream params",
        );
        let output = ctx.pool.take(
            device,
            level.units * PARTIAL_BYTES,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            "gpulanes stream partials out",
        );
        let groups = ds
            .iter()
            .map(|d| {
                let group = dispatch_bind_group(
                    ctx,
                    level.pass,
                    &params,
                    BindRange {
                        buffer: &tables,
                        offset: 0,
                        size: table_bytes,
                    },
                    BindRange {
                        buffer: input,
                        offset: d.input.byte_offset,
                        size: d.input.byte_size,
                    },
                    BindRange {
                        buffer: &output,
                        offset: d.output.byte_offset,
                        size: d.output.byte_size,
                    },
                );
                (group, d.unit_base, d.unit_count)
            })
            .collect();
        Ok(LevelWork {
            pass: level.pass,
            kernel,
            groups,
            units: level.units,
            output,
            tables,
            params,
        })
    }

    pub(super) fn encode(&self, ctx: &Context, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(
            ctx.kernels
                .pipeline(&ctx.device, Dtype::F32, self.pass, self.kernel),
        );
        for (i, (group, _, units)) in self.groups.iter().enumerate() {
            encode_dispatch(ctx, pass, i, group, *units);
        }
    }

    pub(super) fn into_buffers(self) -> [PooledBuffer; 3] {
        [self.output, self.tables, self.params]
    }
}
