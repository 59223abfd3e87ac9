//! Keyed groups finished on the device (shaders/finish_groups.wgsl): after
//! a window's passes, one invocation per group rounds its exact sum and
//! mean once and writes a record of [`RECORD_WORDS`] words (counts, flags,
//! best keys, rounded sum and mean), which is read back instead of the
//! accumulators. The host then finishes a group with no arithmetic on the
//! exact sum ([`FinishedSum`]), under the rules every state follows
//! ([`Settled::finalize`]). Callers that need mergeable states read the
//! accumulators themselves ([`Finish::OnHost`]).

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::Mutex;

use crate::context::Context;
use crate::dtype::Dtype;
use crate::kernels::{BindingKind, kernel_layouts};
use crate::options::KernelBuild;
use crate::pool::PooledBuffer;
use crate::state::ExactValue;
use crate::sync::cached;

use super::limbs::Limbs;

pub const FINISH_WGSL: &str = include_str!("../../shaders/finish_groups.wgsl");

/// Words of one group's finished record (`REC` in finish_groups.wgsl).
pub const RECORD_WORDS: usize = 14;

/// Word offsets in a finished record: non-NaN count (lo, hi), NaN count
/// (lo, hi), flags, max key (lo, hi), min key (lo, hi), status, rounded sum
/// (lo, hi), rounded mean (lo, hi).
pub(crate) mod record {
    pub const COUNT: usize = 0;
    pub const NANS: usize = 2;
    pub const FLAGS: usize = 4;
    pub const MAX: usize = 5;
    pub const MIN: usize = 7;
    pub const STATUS: usize = 9;
    pub const SUM: usize = 10;
    pub const MEAN: usize = 12;
}

/// Status bits (finish_groups.wgsl's `ST_ZERO`, `ST_OVERFLOW`).
const ST_ZERO: u32 = 1;
const ST_OVERFLOW: u32 = 2;

/// Invocations per workgroup of the finishing kernel.
pub const FINISH_WG: u64 = 64;

/// Bytes of the finishing kernel's uniform (the window's group count and
/// the accumulators' first limb, padded).
pub const FINISH_PARAMS_BYTES: u64 = 16;

/// The finishing kernel's bindings: params, accumulators, records.
pub const FINISH_BINDINGS: [(u32, BindingKind); 3] = [
    (0, BindingKind::Uniform),
    (1, BindingKind::ReadOnly),
    (2, BindingKind::ReadWrite),
];

/// Where a window's groups are finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Finish {
    /// On the host, from the accumulators read back (states that merge).
    OnHost,
    /// On the device (results only); `mean`: means are wanted too.
    OnDevice { mean: bool },
}

/// A group's sum as its finished record gives it: value and mean already
/// rounded once in the sum type (float32 for float32 values, float64
/// otherwise), or the int64 sum of an integer dtype.
pub(crate) struct FinishedSum {
    dtype: Dtype,
    status: u32,
    sum: u64,
    mean: u64,
    /// The non-NaN count the mean divides by.
    count: u64,
}

impl FinishedSum {
    /// The sum of the record `r` of a group of `dtype` values.
    #[inline]
    pub fn of(dtype: Dtype, r: &[u32]) -> Self {
        let pair = |i: usize| r[i] as u64 | (r[i + 1] as u64) << 32;
        FinishedSum {
            dtype,
            status: r[record::STATUS],
            sum: pair(record::SUM),
            mean: pair(record::MEAN),
            count: pair(record::COUNT),
        }
    }

    /// The float `bits` of the sum type as an f64 holding the value.
    fn value(&self, bits: u64, target: Dtype) -> f64 {
        debug_assert_eq!(
            target,
            if self.dtype == Dtype::F32 {
                Dtype::F32
            } else {
                Dtype::F64
            }
        );
        match self.dtype {
            Dtype::F32 => f32::from_bits(bits as u32) as f64,
            _ => f64::from_bits(bits),
        }
    }
}

impl ExactValue for FinishedSum {
    fn is_zero(&self) -> bool {
        self.status & ST_ZERO != 0
    }
    fn round(&self, target: Dtype) -> f64 {
        debug_assert!(self.dtype.is_float());
        self.value(self.sum, target)
    }
    fn mean(&self, count: u64, target: Dtype) -> f64 {
        debug_assert_eq!(count, self.count, "a record's mean is over its own count");
        self.value(self.mean, target)
    }
    fn to_i64(&self) -> Option<i64> {
        (self.status & ST_OVERFLOW == 0).then_some(self.sum as i64)
    }
}

/// The finishing kernel's layout and pipelines of one engine.
pub(crate) struct FinishKernels {
    layout: wgpu::BindGroupLayout,
    pipeline_layout: wgpu::PipelineLayout,
    /// Per dtype and limbs a side.
    modules: Mutex<HashMap<(Dtype, u32), wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<(Dtype, u32, bool, bool), wgpu::ComputePipeline>>,
    build: KernelBuild,
}

/// The finishing kernel of `dtype` over accumulators of `limbs.len` limbs
/// a side: its header and finish_groups.wgsl.
pub fn finish_shader_source(dtype: Dtype, limbs: Limbs) -> String {
    format!(
        "// {dtype} group finishing kernel, {limbs} limbs.\n\
         const LIMBS: u32 = {limbs}u;\n\
         const STRIDE: u32 = {stride}u;\n\
         const DTYPE: u32 = {code}u;\n\
         {FINISH_WGSL}",
        limbs = limbs.len,
        stride = limbs.stride,
        code = dtype.code(),
    )
}

impl FinishKernels {
    pub fn new(device: &wgpu::Device, build: KernelBuild) -> Self {
        let (layout, pipeline_layout) = kernel_layouts(
            device,
            "finish groups",
            &FINISH_BINDINGS,
            FINISH_PARAMS_BYTES,
            false,
        );
        FinishKernels {
            layout,
            pipeline_layout,
            modules: Mutex::default(),
            pipelines: Mutex::default(),
            build,
        }
    }

    /// Pipelines built so far (tests check what recording builds).
    #[cfg(test)]
    pub(crate) fn pipelines_built(&self) -> usize {
        crate::sync::lock(&self.pipelines).len()
    }

    pub(crate) fn pipeline(
        &self,
        device: &wgpu::Device,
        dtype: Dtype,
        limbs: Limbs,
        sum: bool,
        mean: bool,
    ) -> wgpu::ComputePipeline {
        // Built outside the caches' locks, as the group pipelines are.
        cached(&self.pipelines, (dtype, limbs.len, sum, mean), || {
            let module = cached(&self.modules, (dtype, limbs.len), || {
                self.build.module(
                    device,
                    "finish groups",
                    // Base 0: the base is a uniform, not compiled in.
                    finish_shader_source(dtype, Limbs { base: 0, ..limbs }),
                )
            });
            let flag = |b: bool| if b { 1.0 } else { 0.0 };
            self.build.pipeline(
                device,
                &self.pipeline_layout,
                &module,
                "finish_groups",
                &[("WANT_SUM", flag(sum)), ("WANT_MEAN", flag(mean))],
            )
        })
    }
}

/// Encodes the finishing of `count` groups whose accumulators (holding
/// `limbs`) are in `acc` into `records`; `sum`: the pass summed, `mean`:
/// means are wanted. Returns the uniform buffer, to keep until the
/// submission is done.
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_finish(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    dtype: Dtype,
    limbs: Limbs,
    sum: bool,
    mean: bool,
    count: u64,
    acc: &wgpu::Buffer,
    records: &wgpu::Buffer,
) -> PooledBuffer {
    let kernels = &ctx.group_kernels.finish;
    let params = ctx.pool.take(
        &ctx.device,
        FINISH_PARAMS_BYTES,
        wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        "gpulanes finish params",
    );
    let mut words = [0u32; 4];
    words[0] = count as u32;
    words[1] = limbs.base;
    ctx.queue
        .write_buffer(&params, 0, bytemuck::cast_slice(&words));
    fn binding(buffer: &wgpu::Buffer, bytes: u64) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer,
            offset: 0,
            size: NonZeroU64::new(bytes),
        })
    }
    let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("finish groups"),
        layout: &kernels.layout,
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: binding(&params, FINISH_PARAMS_BYTES),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: binding(acc, count * limbs.stride as u64 * 4),
            },
            wgpu::BindGroupEntry {
                binding: 2,
                resource: binding(records, count * RECORD_WORDS as u64 * 4),
            },
        ],
    });
    let pipeline = kernels.pipeline(&ctx.device, dtype, limbs, sum, mean);
    let workgroups = count.div_ceil(FINISH_WG);
    let x = workgroups.min(ctx.limits.max_workgroups_per_dim as u64) as u32;
    let mut cpass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some("finish groups"),
        timestamp_writes: None,
    });
    cpass.set_pipeline(&pipeline);
    cpass.set_bind_group(0, &bind_group, &[]);
    cpass.dispatch_workgroups(x, workgroups.div_ceil(x as u64) as u32, 1);
    drop(cpass);
    params
}

#[cfg(test)]
mod tests {
    //! The finishing kernel against the host's finishing of the same
    //! accumulators (`State`, whose exact arithmetic tests/exact.rs checks
    //! against an independent reference), on synthetic accumulators no
    //! input of a test's size reaches: sums across every limb, ties and
    //! lone sticky bits, counts past 2^32 and up to 2^64 - 1, int64 limits.

    use super::*;
    use crate::keyed::accumulators::{AccumulatorLayout, GroupAccumulators};
    use crate::keyed::run::{WindowBuffers, read_mapped};
    use crate::{Engine, NanPolicy, Op, Scalar, StateKind};

    use crate::test_rng::xorshift;

    /// `groups` accumulators of `dtype` laid out as `limbs` says: sparse
    /// limb patterns (zeros, lone bits, all ones) on both sides with
    /// headroom above the top limb, counts of every size, random flags and
    /// keys.
    fn accumulators(dtype: Dtype, limbs: Limbs, groups: usize, seed: u64) -> Vec<u32> {
        let mut next = xorshift(seed);
        let l = limbs.len as usize;
        let stride = limbs.stride as usize;
        let at = AccumulatorLayout::of(limbs);
        let mut words = vec![0u32; groups * stride];
        for g in 0..groups {
            let w = &mut words[g * stride..(g + 1) * stride];
            // The highest limb either side may use, so some sums are small.
            let reach = 1 + (next() % l as u64) as usize;
            for side in 0..2 {
                if g % 7 == 3 && side == 1 {
                    continue; // positive only
                }
                for i in 0..reach {
                    w[side * l + i] = match next() % 5 {
                        0 | 1 => 0,
                        2 => 1 << (next() % 32),
                        3 => u32::MAX,
                        _ => next() as u32,
                    };
                }
                // Headroom: the difference's top bit is its sign.
                w[side * l + l - 1] &= 0x3fff_ffff;
            }
            if g % 9 == 8 {
                // count x tie x 2^shift (+ 1): a mean exactly halfway
                // between two values of the sum type, which a lone bit
                // anywhere under the dividend's top decides.
                let precision = if dtype == Dtype::F32 { 24 } else { 53 };
                let mant = (next() >> (64 - precision)) | 1 << (precision - 1);
                let tie = (mant as u128) << 1 | 1;
                let count = match g % 4 {
                    0 => 1 + next() % 1000,
                    1 => 1 + next() % (1 << 32),
                    _ => 1 + (next() >> 1) % (1 << 62),
                };
                let product = tie * count as u128;
                // Under the top bit (narrow layouts may not hold the widest).
                if let Some(room) = (32 * l as u32).checked_sub(2 + 128 - product.leading_zeros()) {
                    let shift = (next() % (room.min(200) as u64 + 1)) as u32;
                    w[..2 * l].fill(0);
                    let side = (g / 9 % 2) * l;
                    w[side..side + l].copy_from_slice(&magnitude(l, product, shift));
                    w[side] |= (g / 18 % 2) as u32;
                    w[at.count] = count as u32;
                    w[at.count + 1] = (count >> 32) as u32;
                    w[at.nans] = 0;
                    w[at.flags] = 0;
                    continue;
                }
            }
            if g % 11 == 5 {
                // Equal sides: a zero sum.
                let (pos, neg) = w[..2 * l].split_at_mut(l);
                neg.copy_from_slice(pos);
            }
            let count: u64 = match g % 6 {
                0 => 1 + next() % 4,
                1 => 1 + next() % 1000,
                2 => 1 + next() % (1 << 32),
                3 => (1 << 32) + next() % 1000,
                4 => next() | 1,
                _ => u64::MAX - next() % 3,
            };
            w[at.count] = count as u32;
            w[at.count + 1] = (count >> 32) as u32;
            let nans = if g % 5 == 0 { next() % 3 } else { 0 };
            w[at.nans] = nans as u32;
            w[at.flags] = (next() % 16) as u32 & if nans > 0 { 15 } else { 14 };
            for k in [at.max, at.min] {
                w[k] = next() as u32;
                w[k + 1] = next() as u32;
            }
        }
        words
    }

    /// A value's type and bits (NaN equals NaN; -0.0 is not +0.0).
    fn scalar_bits(s: Scalar) -> (u8, u64) {
        match s {
            Scalar::F32(x) => (0, x.to_bits() as u64),
            Scalar::F64(x) => (1, x.to_bits()),
            Scalar::I32(x) => (2, x as u32 as u64),
            Scalar::U32(x) => (3, x as u64),
            Scalar::I64(x) => (4, x as u64),
        }
    }

    /// `value << shift` as `l` little-endian words.
    fn magnitude(l: usize, value: u128, shift: u32) -> Vec<u32> {
        crate::exact::shifted_words(value, shift, l)
    }

    /// Subtracts one from little-endian words.
    fn minus_one(mut m: Vec<u32>) -> Vec<u32> {
        for w in m.iter_mut() {
            let (v, borrow) = w.overflowing_sub(1);
            *w = v;
            if !borrow {
                break;
            }
        }
        m
    }

    /// Sums and counts at the edges of the results: int64's limits, sums
    /// half an ulp under and at the overflow threshold of the sum type, sums
    /// at a tie that a lone bit far under it decides,
    /// means rounding from the largest subnormal up to the smallest normal,
    /// means underflowing to zero and halfway between subnormals, both
    /// signs. (magnitude, negative, count)
    fn edge_cases(dtype: Dtype) -> Vec<(Vec<u32>, bool, u64)> {
        let l = dtype.limbs();
        let mut cases = Vec::new();
        if !dtype.is_float() {
            for (value, shift) in [(1u128 << 63, 0), (1 << 64, 0), (1, 64), (1 << 62, 1)] {
                for negative in [false, true] {
                    cases.push((magnitude(l, value, shift), negative, 3));
                    cases.push((minus_one(magnitude(l, value, shift)), negative, 3));
                    let plus = magnitude(l, value + 1, shift);
                    cases.push((plus, negative, 3));
                }
            }
            return cases;
        }
        // Precision, and the grid position of the sum type's largest
        // finite value's lowest bit and of its smallest normal.
        let (p, max_low, min_normal) = if dtype == Dtype::F32 {
            (24, 104 + 149, 23)
        } else {
            (53, 971 + 1074, 52)
        };
        // Halfway from the largest finite value to the next power of two:
        // rounds to even, which overflows; one unit under it does not.
        let half_over = ((1u128 << (p + 1)) - 1, max_low - 1);
        for negative in [false, true] {
            let at = magnitude(l, half_over.0, half_over.1);
            cases.push((minus_one(at.clone()), negative, 1));
            cases.push((at, negative, 1));
            // Sums exactly halfway between two values of the sum type, but
            // for a lone bit anywhere under them, which decides.
            // An even mantissa: a tie alone rounds down (to even).
            let mant = (1u128 << (p - 1)) | 0x5a5a4 & ((1 << (p - 1)) - 1);
            let tie = mant << 1 | 1;
            for shift in [70u32, 101, 133] {
                for lone in [
                    None,
                    Some(0u32),
                    Some(shift / 3),
                    Some(shift - 40),
                    Some(shift - 1),
                ] {
                    let mut m = magnitude(l, tie, shift);
                    if let Some(j) = lone {
                        m[j as usize / 32] |= 1 << (j % 32);
                    }
                    cases.push((m, negative, 1));
                }
            }
            // Means: (3 x 2^min_normal - 1) / 3 rounds up to the smallest
            // normal; 1/3, 1/2 and 3/2 of the smallest subnormal.
            cases.push((magnitude(l, (3u128 << min_normal) - 1, 0), negative, 3));
            for (value, count) in [(1u128, 3u64), (1, 2), (3, 2), (5, 2)] {
                cases.push((magnitude(l, value, 0), negative, count));
            }
        }
        cases
    }

    /// A full-grid magnitude's limbs `limbs.base ..` where it lies inside
    /// them under their top bit (the rule narrow layouts keep).
    fn inside(mag: &[u32], limbs: Limbs) -> Option<Vec<u32>> {
        let (base, end) = (limbs.base as usize, (limbs.base + limbs.len) as usize);
        let outside = mag[..base].iter().chain(&mag[end..]).any(|&w| w != 0);
        (!outside && mag[end - 1] >> 31 == 0).then(|| mag[base..end].to_vec())
    }

    /// Every layout a pass may use: the full one, and each narrow class at
    /// the lowest, a middle and the highest base, and at the base whose
    /// limbs hold the sums at the overflow threshold of `edge_cases`
    /// (floats; integers sit at base 0).
    fn layouts(dtype: Dtype) -> Vec<Limbs> {
        let full = Limbs::full(dtype);
        // The limb of the sum type's largest finite value's lowest bit.
        let overflow_limb = if dtype == Dtype::F32 {
            252 / 32
        } else {
            2044 / 32
        };
        let mut out = Vec::new();
        for class in Limbs::classes(dtype) {
            let top = full.len - class.len;
            let mut bases = if dtype.is_float() {
                vec![0, top / 2, top, overflow_limb.min(top)]
            } else {
                vec![0]
            };
            bases.sort();
            bases.dedup();
            out.extend(bases.into_iter().map(|base| Limbs { base, ..class }));
        }
        out
    }

    #[test]
    fn device_finishing_gives_the_host_results() {
        let engine = Engine::new().expect("an adapter");
        let ctx = engine.context();
        let groups = 3000;
        let all_ops = [Op::Sum, Op::Mean, Op::Max, Op::Min, Op::Count];
        for (i, dtype) in Dtype::ALL.into_iter().enumerate() {
            for limbs in layouts(dtype) {
                finish_and_compare(ctx, dtype, limbs, groups, 0x9e37_79b9 + i as u64, &all_ops);
            }
        }
    }

    /// Finishes synthetic accumulators of `dtype` in the layout `limbs` on
    /// the device with every finishing pipeline, and checks each group's
    /// results against the host's exact finishing of the same words.
    fn finish_and_compare(
        ctx: &Context,
        dtype: Dtype,
        limbs: Limbs,
        groups: usize,
        seed: u64,
        all_ops: &[Op],
    ) {
        {
            let mut words = accumulators(dtype, limbs, groups, seed);
            let (l, stride) = (limbs.len as usize, limbs.stride as usize);
            let at = AccumulatorLayout::of(limbs);
            let cases = edge_cases(dtype)
                .into_iter()
                .filter_map(|(mag, negative, count)| Some((inside(&mag, limbs)?, negative, count)));
            for (g, (mag, negative, count)) in cases.enumerate() {
                let w = &mut words[g * stride..(g + 1) * stride];
                w.fill(0);
                let side = if negative { l } else { 0 };
                w[side..side + l].copy_from_slice(&mag);
                w[at.count] = count as u32;
                w[at.count + 1] = (count >> 32) as u32;
            }
            // Every finishing pipeline: sums and means, sums only, neither.
            for (sum, mean) in [(true, true), (true, false), (false, false)] {
                let window =
                    WindowBuffers::new(ctx, dtype, limbs, groups as u64, Finish::OnDevice { mean });
                ctx.queue
                    .write_buffer(&window.acc, 0, bytemuck::cast_slice(&words));
                let mut encoder = ctx
                    .device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
                let wanted = crate::keyed::run::Wanted {
                    sum,
                    max: true,
                    min: true,
                };
                let params = window.encode_read(ctx, &mut encoder, wanted);
                let index = ctx.queue.submit([encoder.finish()]);
                let records = read_mapped(ctx, &window.readback, window.read_bytes, index, |w| {
                    w.to_vec()
                })
                .expect("records");
                drop(params);
                let host = GroupAccumulators::new(dtype, limbs, words.as_slice());
                let device = GroupAccumulators::finished(dtype, records);
                let ops = all_ops.iter().filter(|&&op| match op {
                    Op::Sum => sum,
                    Op::Mean => mean,
                    _ => true,
                });
                for g in 0..groups {
                    assert_eq!(device.rows(g), host.rows(g), "{dtype} group {g}: rows");
                    let finished = device.finished_sum(g);
                    for &op in ops.clone() {
                        let kind = StateKind::for_op(op);
                        let state = host.state(g, kind);
                        let settled = device.settled(g, kind);
                        for nan in [NanPolicy::Propagate, NanPolicy::Ignore] {
                            let want = state.finalize(op, nan);
                            let got = settled.finalize(op, nan, &finished);
                            let bits = |r: &crate::Result<Option<Scalar>>| match r {
                                Ok(v) => Ok(v.map(scalar_bits)),
                                Err(e) => Err(e.to_string()),
                            };
                            assert_eq!(
                                bits(&got),
                                bits(&want),
                                "{dtype} {limbs:?} group {g} {op} {nan:?} (sum {sum}, mean {mean}): {:x?}",
                                host.state(g, StateKind::Sum)
                            );
                            assert_eq!(settled.count(nan), state.count(nan));
                        }
                    }
                }
            }
        }
    }
}
