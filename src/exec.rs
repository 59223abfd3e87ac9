//! Recording planned reductions, separate from submitting them (as vello
//! separates recording GPU commands from executing them).
//!
//! [`Job::prepare`] does everything that does not need an encoder: it splits
//! the plan into dispatches, uploads the segment tables and parameters,
//! allocates the partial buffers and builds every bind group. The job can
//! then be encoded all at once ([`record`]) or a range of dispatches at a
//! time ([`Job::encode`]), which is how the batch lane cuts a large job into
//! quanta between real-time submissions without changing a single bit of
//! the result: the dispatches, and so the reduction tree, are the same.

use std::num::NonZeroU64;
use std::ops::Range;

use crate::context::Context;
use crate::dtype::{Dtype, Scalar};
use crate::error::{Error, Result};
use crate::kernels::{PARAMS_BYTES, Pass, SEGMENT_BYTES};
use crate::op::{KernelOp, NanPolicy, Op, Reduction};
use crate::partial::scalar_to_f32;
use crate::plan::{Dispatch, Plan, Span, dispatches};
use crate::pool::PooledBuffer;
use crate::readback::map_read;
use crate::state::{State, StateKind};

/// `Params` in reduce.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    unit_base: u32,
    unit_count: u32,
    input_base_lo: u32,
    out_base: u32,
    segment_count: u32,
    _pad: [u32; 3],
}

/// `Params`' layout, checked against exact.wgsl's by tests/wgsl_layout.rs.
pub(crate) fn params_layout() -> crate::layout::HostStruct {
    crate::layout::host_struct!(
        "Params",
        Params {
            unit_base,
            unit_count,
            input_base_lo,
            out_base,
            segment_count,
            _pad,
        }
    )
}

/// Bytes between consecutive dispatches' [`Params`] in their uniform
/// buffer (each bound at its dynamic offset).
fn param_stride(ctx: &Context) -> u64 {
    ctx.limits.uniform_alignment.max(PARAMS_BYTES)
}

/// A uniform buffer holding one [`Params`] per dispatch of `ds`,
/// [`param_stride`] apart, for a level (or levels) of `segment_count`
/// segments.
pub(crate) fn write_params(
    ctx: &Context,
    ds: &[Dispatch],
    segment_count: u32,
    label: &str,
) -> PooledBuffer {
    let stride = param_stride(ctx);
    let params = ctx.pool.take(
        &ctx.device,
        ds.len() as u64 * stride,
        wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        label,
    );
    let mut param_bytes = vec![0u8; (ds.len() as u64 * stride) as usize];
    for (i, d) in ds.iter().enumerate() {
        let p = Params {
            unit_base: d.unit_base,
            unit_count: d.unit_count,
            input_base_lo: d.input.base_item as u32,
            out_base: d.output.base_item as u32,
            segment_count,
            _pad: [0; 3],
        };
        let at = i * stride as usize;
        param_bytes[at..at + PARAMS_BYTES as usize].copy_from_slice(bytemuck::bytes_of(&p));
    }
    ctx.queue.write_buffer(&params, 0, &param_bytes);
    params
}

/// Units one persistent workgroup takes at most in one dispatch (more
/// workgroups are launched where a dispatch has more units): a bound on
/// how long one invocation loops, which CPU drivers cap (Mesa's llvmpipe
/// stops a loop after 65535 iterations in all), and past a few units per
/// workgroup residency gains nothing more.
const MAX_UNITS_PER_WORKGROUP: u32 = 64;

/// Encodes dispatch `i` of a job or level: its bind group, with its
/// [`Params`] at slot `i` of the uniform buffer ([`write_params`]), and one
/// workgroup per unit (at most the engine's persistent workgroups, which
/// then take several units each) on the 2-D grid exact_entry.wgsl
/// linearises (`workgroup_id.x + workgroup_id.y * num_workgroups.x`), at
/// most `max_workgroups_per_dim` wide.
pub(crate) fn encode_dispatch(
    ctx: &Context,
    pass: &mut wgpu::ComputePass<'_>,
    i: usize,
    bind_group: &wgpu::BindGroup,
    units: u32,
) {
    pass.set_bind_group(0, bind_group, &[(i as u64 * param_stride(ctx)) as u32]);
    let groups = ctx.persistent_workgroups.map_or(units, |p| {
        units.min(p.max(units.div_ceil(MAX_UNITS_PER_WORKGROUP)))
    });
    let x = groups.min(ctx.limits.max_workgroups_per_dim);
    pass.dispatch_workgroups(x, groups.div_ceil(x), 1);
}

/// A byte range of a buffer, to bind as one storage or uniform binding.
#[derive(Clone, Copy)]
pub(crate) struct BindRange<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub offset: u64,
    pub size: u64,
}

impl BindRange<'_> {
    fn resource(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: self.buffer,
            offset: self.offset,
            size: NonZeroU64::new(self.size.max(16)),
        })
    }
}

/// The bind group of one dispatch of `pass` (the layout of reduce.wgsl):
/// its [`Params`] (at a dynamic offset into `params`), the level's segment
/// table, its input window and its output window.
pub(crate) fn dispatch_bind_group(
    ctx: &Context,
    pass: Pass,
    params: &wgpu::Buffer,
    table: BindRange<'_>,
    input: BindRange<'_>,
    output: BindRange<'_>,
) -> wgpu::BindGroup {
    let uniform = BindRange {
        buffer: params,
        offset: 0,
        size: PARAMS_BYTES,
    };
    let mut entries = vec![
        wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.resource(),
        },
        wgpu::BindGroupEntry {
            binding: 1,
            resource: table.resource(),
        },
        wgpu::BindGroupEntry {
            binding: 4,
            resource: output.resource(),
        },
    ];
    match pass {
        // Elements are read through two views of the same window.
        Pass::Elements => {
            for binding in [2, 3] {
                entries.push(wgpu::BindGroupEntry {
                    binding,
                    resource: input.resource(),
                });
            }
        }
        Pass::Partials => entries.push(wgpu::BindGroupEntry {
            binding: 5,
            resource: input.resource(),
        }),
    }
    ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: ctx.kernels.layout(pass),
        entries: &entries,
    })
}

/// Most partitions one float32 reduction may have on this device (see
/// [`max_partitions_for`]).
pub(crate) fn max_partitions(ctx: &Context) -> u64 {
    max_partitions_for(ctx, Dtype::F32)
}

/// Most partitions one reduction of `dtype` values may have on this
/// device: its segment table (one entry per partition, plus a sentinel)
/// must fit one binding, and its partials (at least one per partition) one
/// buffer of the device.
pub(crate) fn max_partitions_for(ctx: &Context, dtype: Dtype) -> u64 {
    let table = (ctx.limits.max_binding_bytes / SEGMENT_BYTES).saturating_sub(1);
    table.min(ctx.device_buffer_bytes / dtype.partial_bytes())
}

/// Fails with [`Error::InvalidPartitions`] when `partitions` exceed
/// [`max_partitions`].
pub(crate) fn check_partition_count(ctx: &Context, partitions: u64) -> Result<()> {
    let limit = max_partitions(ctx);
    if partitions > limit {
        return Err(Error::InvalidPartitions(format!(
            "{partitions} partitions exceed this device's limit of {limit} per reduction"
        )));
    }
    Ok(())
}

/// GPU work for one plan, ready to encode in one piece or in ranges.
pub(crate) struct Job {
    dtype: Dtype,
    kernel: KernelOp,
    plan: Plan,
    dispatches: Vec<Dispatch>,
    bind_groups: Vec<wgpu::BindGroup>,
    /// Index into `partials` of the buffer holding the final level's output.
    final_buffer: usize,
    partials: Vec<PooledBuffer>,
    readback: Option<PooledBuffer>,
    _keep: Vec<PooledBuffer>,
}

/// The final partial of every partition, as the GPU wrote them (a few
/// words each; a [`State`] is made from them only when one is needed, so a
/// reduction of many partitions holds little per partition).
pub(crate) struct FinalPartials {
    dtype: Dtype,
    kind: StateKind,
    /// Values of each partition.
    lens: Vec<u64>,
    /// Each partition's partial in `words` (`None`: an empty partition).
    units: Vec<Option<u32>>,
    words: Vec<u32>,
}

impl FinalPartials {
    /// Number of partitions.
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    /// The state of partition `i`.
    pub fn state(&self, i: usize) -> State {
        match self.units[i] {
            Some(u) => {
                let pw = self.dtype.partial_words();
                let at = u as usize * pw;
                State::from_gpu(
                    self.dtype,
                    self.kind,
                    self.lens[i],
                    &self.words[at..at + pw],
                )
            }
            None => State::empty(self.dtype, self.kind),
        }
    }

    /// Every partition's state.
    pub fn states(&self) -> Vec<State> {
        (0..self.len()).map(|i| self.state(i)).collect()
    }

    /// Values and counts of float32 partitions `range` for `op` under `nan`.
    pub fn finish(&self, op: Op, nan: NanPolicy, range: Range<usize>) -> Reduction {
        let (values, counts) = range
            .map(|i| {
                let s = self.state(i);
                let v = s.finalize(op, nan).expect("float32 states always finalise");
                (v.map(scalar_to_f32), s.count(nan))
            })
            .unzip();
        Reduction { op, values, counts }
    }

    /// Values (each in its result type) and counts of partitions `range`
    /// for `op` under `nan`; [`Error::Overflow`](crate::Error::Overflow)
    /// for an integer sum past int64.
    pub fn finish_range(
        &self,
        op: Op,
        nan: NanPolicy,
        range: Range<usize>,
    ) -> Result<Reduction<Scalar>> {
        let mut out = Reduction::empty(op);
        for i in range {
            let s = self.state(i);
            out.values.push(s.finalize(op, nan)?);
            out.counts.push(s.count(nan));
        }
        Ok(out)
    }

    /// Appends every partition's value (in its result type) and count.
    pub fn finish_into(&self, op: Op, nan: NanPolicy, out: &mut Reduction<Scalar>) -> Result<()> {
        let all = self.finish_range(op, nan, 0..self.len())?;
        out.values.extend(all.values);
        out.counts.extend(all.counts);
        Ok(())
    }
}

impl Job {
    /// Prepares `plan` over `inputs` (buffers holding the items of `spans`).
    /// `max_units_per_dispatch` (if given) cuts dispatches smaller than the
    /// device limits require, so the job can be submitted in quanta.
    pub fn prepare(
        ctx: &Context,
        dtype: Dtype,
        kernel: KernelOp,
        plan: Plan,
        inputs: &[&wgpu::Buffer],
        spans: &[Span],
        max_units_per_dispatch: Option<u64>,
    ) -> Result<Job> {
        let mut limits = ctx.dispatch_limits();
        if let Some(cap) = max_units_per_dispatch {
            limits.max_units_per_dispatch = limits.max_units_per_dispatch.min(cap.max(1));
        }
        let mut job = Job {
            dtype,
            kernel,
            dispatches: Vec::new(),
            bind_groups: Vec::new(),
            final_buffer: plan.levels.len().saturating_sub(1) % 2,
            partials: Vec::new(),
            readback: None,
            _keep: Vec::new(),
            plan,
        };
        if job.plan.levels.is_empty() {
            return Ok(job);
        }
        let plan = &job.plan;
        let align = ctx.limits.offset_alignment;
        let pb = dtype.partial_bytes();
        check_partition_count(ctx, plan.partition_lens.len() as u64)?;

        // Dispatches of every level and where each level's table sits.
        let mut all: Vec<Dispatch> = Vec::new();
        let mut table_offsets = Vec::with_capacity(plan.levels.len());
        let mut table_bytes = 0u64;
        for (i, level) in plan.levels.iter().enumerate() {
            let ds = if i == 0 {
                dispatches(0, level, spans, 4, pb, &limits)
            } else {
                let prev = Span {
                    base_item: 0,
                    items: plan.levels[i - 1].units,
                };
                dispatches(i, level, &[prev], pb, pb, &limits)
            };
            all.extend(ds);
            table_offsets.push(table_bytes);
            table_bytes += (level.table.len() as u64 * SEGMENT_BYTES).next_multiple_of(align);
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
        let params = write_params(
            ctx,
            &all,
            plan.partition_lens.len() as u32,
            "gpulanes params",
        );

        // Ping-pong partial buffers: level i writes buffer i % 2.
        let mut partial_sizes = [pb; 2];
        for (i, level) in plan.levels.iter().enumerate() {
            partial_sizes[i % 2] = partial_sizes[i % 2].max(level.units * pb);
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

        let bind_groups = all
            .iter()
            .map(|d| {
                let level = &plan.levels[d.level];
                let input = match level.pass {
                    Pass::Elements => inputs[d.input.buffer],
                    Pass::Partials => &*partials[(d.level - 1) % 2],
                };
                dispatch_bind_group(
                    ctx,
                    level.pass,
                    &params,
                    BindRange {
                        buffer: &tables,
                        offset: table_offsets[d.level],
                        size: level.table.len() as u64 * SEGMENT_BYTES,
                    },
                    BindRange {
                        buffer: input,
                        offset: d.input.byte_offset,
                        size: d.input.byte_size,
                    },
                    BindRange {
                        buffer: &partials[d.level % 2],
                        offset: d.output.byte_offset,
                        size: d.output.byte_size,
                    },
                )
            })
            .collect();
        job.readback = Some(ctx.pool.take(
            device,
            plan.final_units() * pb,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            "gpulanes readback",
        ));
        job.dispatches = all;
        job.bind_groups = bind_groups;
        job.partials = partials;
        job._keep = vec![tables, params];
        Ok(job)
    }

    /// The job also keeps `buffers` alive until it is dropped.
    pub fn keeping(mut self, buffers: Vec<PooledBuffer>) -> Job {
        self._keep.extend(buffers);
        self
    }

    /// Number of dispatches.
    pub fn dispatch_count(&self) -> usize {
        self.dispatches.len()
    }

    /// For an element-pass dispatch: the input buffer index and the byte
    /// range of it that the dispatch reads (for chunked uploads).
    pub fn input_window(&self, i: usize) -> Option<(usize, Range<u64>)> {
        let d = &self.dispatches[i];
        (d.level == 0).then(|| {
            (
                d.input.buffer,
                d.input.byte_offset..d.input.byte_offset + d.input.byte_size,
            )
        })
    }

    /// Encodes dispatches `range` into one compute pass.
    pub fn encode(&self, ctx: &Context, encoder: &mut wgpu::CommandEncoder, range: Range<usize>) {
        if range.is_empty() {
            return;
        }
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("gpulanes reduce"),
            timestamp_writes: None,
        });
        for i in range {
            let d = &self.dispatches[i];
            let pass_kind = self.plan.levels[d.level].pass;
            pass.set_pipeline(ctx.kernels.pipeline(
                &ctx.device,
                self.dtype,
                pass_kind,
                self.kernel,
            ));
            encode_dispatch(ctx, &mut pass, i, &self.bind_groups[i], d.unit_count);
        }
    }

    /// Encodes the copy of the final partials into the mappable buffer; call
    /// after the last dispatch.
    pub fn encode_readback(&self, encoder: &mut wgpu::CommandEncoder) {
        if let Some(readback) = &self.readback {
            let bytes = self.plan.final_units() * self.dtype.partial_bytes();
            encoder.copy_buffer_to_buffer(&self.partials[self.final_buffer], 0, readback, 0, bytes);
        }
    }

    fn final_partials(&self, bytes: &[u8]) -> FinalPartials {
        let words: &[u32] = if bytes.is_empty() {
            &[]
        } else {
            bytemuck::cast_slice(bytes)
        };
        let kind = match self.kernel {
            KernelOp::Sum => StateKind::Sum,
            KernelOp::Max => StateKind::Max,
            KernelOp::Min => StateKind::Min,
        };
        // Plans count 32-bit words; states count values.
        let per_value = self.dtype.words();
        FinalPartials {
            dtype: self.dtype,
            kind,
            lens: self
                .plan
                .partition_lens
                .iter()
                .map(|&l| l / per_value)
                .collect(),
            units: self.plan.final_unit.clone(),
            words: words.to_vec(),
        }
    }

    /// After the submission holding the readback: maps the results and calls
    /// `done` once the GPU has finished (from inside a `device.poll`, on
    /// whichever thread polls). When there was no GPU work, `done` runs at once.
    pub fn read_async(self, done: impl FnOnce(Result<FinalPartials>) + Send + 'static) {
        self.read_async_keep(move |result, _job| done(result));
    }

    /// Like [`Job::read_async`], and hands the job back (its readback
    /// unmapped, its buffers idle) for reuse with new input data.
    pub fn read_async_keep(self, done: impl FnOnce(Result<FinalPartials>, Job) + Send + 'static) {
        let Some(readback) = &self.readback else {
            let result = Ok(self.final_partials(&[]));
            done(result, self);
            return;
        };
        let bytes = self.plan.final_units() * self.dtype.partial_bytes();
        let buffer: wgpu::Buffer = (**readback).clone();
        map_read(
            &buffer,
            bytes,
            "the results",
            move |view| (view.map(|v| self.final_partials(v)), self),
            move |(result, job)| done(result, job),
        );
    }
}

/// A reduction (or one group of a reduction's partitions) encoded into an
/// encoder; finishes with one op/policy.
pub(crate) struct Recorded {
    op: Op,
    nan: NanPolicy,
    job: Job,
}

impl Recorded {
    pub fn op(&self) -> Op {
        self.op
    }

    /// See [`Job::read_async`] (float32 results).
    pub fn read_async(self, done: impl FnOnce(Result<Reduction>) + Send + 'static) {
        let (op, nan) = (self.op, self.nan);
        self.job.read_async(move |r| {
            done(r.map(|f| {
                let k = f.len();
                f.finish(op, nan, 0..k)
            }))
        });
    }
}

/// Prepares and encodes a whole reduction of `inputs` (buffers holding the
/// items of `spans`) described by `plan`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    dtype: Dtype,
    op: Op,
    nan: NanPolicy,
    plan: Plan,
    inputs: &[&wgpu::Buffer],
    spans: &[Span],
) -> Result<Recorded> {
    let mut recorded = record_all(ctx, encoder, dtype, op, nan, [Ok(plan)], inputs, spans)?;
    Ok(recorded.remove(0))
}

/// Like [`record`] for several plans (groups of one reduction's
/// partitions), in order. Every job is prepared before any is encoded, so
/// on an error nothing is left in `encoder`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_all(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    dtype: Dtype,
    op: Op,
    nan: NanPolicy,
    plans: impl IntoIterator<Item = Result<Plan>>,
    inputs: &[&wgpu::Buffer],
    spans: &[Span],
) -> Result<Vec<Recorded>> {
    let jobs = plans
        .into_iter()
        .map(|plan| Job::prepare(ctx, dtype, op.kernel(), plan?, inputs, spans, None))
        .collect::<Result<Vec<_>>>()?;
    Ok(jobs
        .into_iter()
        .map(|job| {
            job.encode(ctx, encoder, 0..job.dispatch_count());
            job.encode_readback(encoder);
            Recorded { op, nan, job }
        })
        .collect())
}
