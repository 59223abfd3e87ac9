//! The spread of a device-resident float column (shaders/spread.wgsl): one
//! pass over its buffers and an 8-byte readback, so that keyed reductions
//! of device arrays get accumulators sized to their values
//! ([`super::limbs`]) as host-held columns do, where the full layout would
//! keep many groups out of workgroup memory.

use std::num::NonZeroU64;
use std::sync::OnceLock;

use crate::context::{Context, ErrorScopes};
use crate::device_array::DeviceArray;
use crate::dtype::Dtype;
use crate::error::Result;
use crate::kernels::{BindingKind, kernel_layouts};
use crate::options::KernelBuild;

use super::limbs::Spread;
use super::run::read_words;

pub const SPREAD_WGSL: &str = include_str!("../../shaders/spread.wgsl");

/// Bytes of the spread kernel's uniform (the buffer's value count, padded).
pub const SPREAD_PARAMS_BYTES: u64 = 16;

/// Invocations per workgroup of the spread kernel (`WG`).
pub const SPREAD_WG: u32 = 256;

/// The spread kernel's bindings: params, values, the two extremes.
pub const SPREAD_BINDINGS: [(u32, BindingKind); 3] = [
    (0, BindingKind::Uniform),
    (1, BindingKind::ReadOnly),
    (2, BindingKind::ReadWrite),
];

/// Values one invocation takes at most, where the grid allows (few loop
/// iterations: Mesa's llvmpipe stops an invocation after 65535).
const VALUES_PER_INVOCATION: u64 = 32;

/// The spread kernel of a float dtype: its header and spread.wgsl.
pub fn spread_shader_source(dtype: Dtype) -> String {
    format!(
        "// {dtype} spread kernel.\n\
         const WG: u32 = {SPREAD_WG}u;\n\
         const DTYPE: u32 = {code}u;\n\
         {SPREAD_WGSL}",
        code = dtype.code(),
    )
}

/// The spread kernel's layout and its two pipelines (float32, float64).
pub(crate) struct SpreadKernel {
    layout: wgpu::BindGroupLayout,
    pipeline_layout: wgpu::PipelineLayout,
    pipelines: [OnceLock<wgpu::ComputePipeline>; 2],
    build: KernelBuild,
}

impl SpreadKernel {
    pub fn new(device: &wgpu::Device, build: KernelBuild) -> Self {
        let (layout, pipeline_layout) = kernel_layouts(
            device,
            "value spread",
            &SPREAD_BINDINGS,
            SPREAD_PARAMS_BYTES,
            false,
        );
        SpreadKernel {
            layout,
            pipeline_layout,
            pipelines: Default::default(),
            build,
        }
    }

    fn pipeline(&self, device: &wgpu::Device, dtype: Dtype) -> &wgpu::ComputePipeline {
        self.pipelines[(dtype == Dtype::F64) as usize].get_or_init(|| {
            let module = self
                .build
                .module(device, "value spread", spread_shader_source(dtype));
            self.build
                .pipeline(device, &self.pipeline_layout, &module, "spread", &[])
        })
    }
}

/// The spread of a float array on the device (one pass over each of its
/// buffers, bound a binding's worth at a time, and a wait for 8 bytes).
pub(crate) fn device_spread(ctx: &Context, array: &DeviceArray) -> Result<Spread> {
    let dtype = array.dtype();
    debug_assert!(dtype.is_float());
    if array.is_empty() {
        return Ok(Spread::Nothing);
    }
    let kernel = &ctx.group_kernels.spread;
    let scope = ErrorScopes::push(ctx);
    let out = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("gpulanes value spread"),
        size: 8,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    ctx.queue
        .write_buffer(&out, 0, bytemuck::cast_slice(&[u32::MAX, 0u32]));
    let readback = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("gpulanes value spread readback"),
        size: 8,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let wpe = dtype.words();
    let max_dim = ctx.limits.max_workgroups_per_dim as u64;
    // Windows of whole values starting at aligned offsets, each small
    // enough for the grid to give every invocation at most
    // VALUES_PER_INVOCATION values (more windows on a small grid, never
    // longer loops).
    let align = (ctx.limits.offset_alignment / 4).max(wpe);
    let grid_words = max_dim * max_dim * SPREAD_WG as u64 * VALUES_PER_INVOCATION * wpe;
    let window = ((ctx.limits.max_binding_bytes / 4).min(grid_words) / align * align).max(align);
    let pipeline = kernel.pipeline(&ctx.device, dtype);
    let mut encoder = ctx
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("gpulanes value spread"),
        });
    let mut params = Vec::new();
    {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("value spread"),
            timestamp_writes: None,
        });
        pass.set_pipeline(pipeline);
        for piece in &array.pieces {
            let mut at = 0;
            while at < piece.span.items {
                let words = window.min(piece.span.items - at);
                let values = words / wpe;
                let p = ctx.pool.take(
                    &ctx.device,
                    SPREAD_PARAMS_BYTES,
                    wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    "gpulanes spread params",
                );
                ctx.queue
                    .write_buffer(&p, 0, bytemuck::cast_slice(&[values as u32, 0, 0, 0]));
                let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("value spread"),
                    layout: &kernel.layout,
                    entries: &[
                        wgpu::BindGroupEntry {
                            binding: 0,
                            resource: p.as_entire_binding(),
                        },
                        wgpu::BindGroupEntry {
                            binding: 1,
                            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                buffer: &piece.buffer,
                                offset: at * 4,
                                size: NonZeroU64::new(words * 4),
                            }),
                        },
                        wgpu::BindGroupEntry {
                            binding: 2,
                            resource: out.as_entire_binding(),
                        },
                    ],
                });
                let groups = values
                    .div_ceil(SPREAD_WG as u64 * VALUES_PER_INVOCATION)
                    .clamp(1, max_dim * max_dim);
                let x = groups.min(max_dim);
                pass.set_bind_group(0, &bind_group, &[]);
                pass.dispatch_workgroups(x as u32, groups.div_ceil(x) as u32, 1);
                params.push(p);
                at += words;
            }
        }
    }
    encoder.copy_buffer_to_buffer(&out, 0, &readback, 0, 8);
    let index = ctx.queue.submit([encoder.finish()]);
    scope.check()?;
    let extremes = read_words(ctx, &readback, 8, index)?;
    drop(params);
    Ok(match extremes[..] {
        [lo, top] if top > 0 => Spread::Within { lo, hi: top - 1 },
        _ => Spread::Nothing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyed::limbs::spread_of_words;
    use crate::{Engine, EngineOptions};

    /// Float32 and float64 columns of every kind (NaN, infinities, signed
    /// zeros, subnormals, the largest finite values, nothing counted at
    /// all), in arrays of one buffer and of many (small buffers and
    /// bindings, a 3 x 3 grid), and on a one-workgroup grid: the device's
    /// spread is the host scan's.
    #[test]
    fn device_spreads_match_the_host_scan() {
        let engines = [
            Engine::new().expect("an adapter"),
            Engine::with_options(
                EngineOptions::default()
                    .max_binding_bytes(64 << 10)
                    .max_buffer_bytes(256 << 10)
                    .max_workgroups_per_dim(3),
            )
            .expect("an engine with small buffers"),
            // One workgroup a dispatch: windows of 8,192 values, not loops
            // past llvmpipe's limit on an invocation.
            Engine::with_options(EngineOptions::default().max_workgroups_per_dim(1))
                .expect("an engine with a one-workgroup grid"),
        ];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for e in &engines {
            let ctx = e.context();
            for n in [1usize, 7, 1000, 70_001, 300_000] {
                // Random values in [2^-60, 2^68) of either sign, so that
                // each extreme below is one value the pass must not miss.
                let mut f32s: Vec<f32> = (0..n)
                    .map(|_| {
                        let r = next();
                        let e = 67 + (r >> 32) % 128;
                        f32::from_bits((r as u32 & 0x807f_ffff) | (e as u32) << 23)
                    })
                    .collect();
                let mut f64s: Vec<f64> = (0..n)
                    .map(|_| {
                        let r = next();
                        let e = 963 + (r >> 40) % 128;
                        f64::from_bits((r & 0x800f_ffff_ffff_ffff) | e << 52)
                    })
                    .collect();
                let specials = [n / 3, n / 2, n - 1];
                for (k, &i) in specials.iter().enumerate() {
                    f32s[i] = [f32::from_bits(1), f32::MAX, -f32::MIN_POSITIVE][k];
                    f64s[i] = [f64::from_bits(1), -f64::MAX, f64::MIN_POSITIVE][k];
                }
                for (i, v) in f32s.iter_mut().enumerate().step_by(5) {
                    *v = [f32::NAN, f32::INFINITY, -0.0, 0.0][i % 4];
                }
                for (i, v) in f64s.iter_mut().enumerate().step_by(5) {
                    *v = [f64::NAN, f64::NEG_INFINITY, -0.0, 0.0][i % 4];
                }
                let a = e.upload(&f32s).expect("upload");
                assert_eq!(
                    device_spread(ctx, &a).expect("spread"),
                    spread_of_words(Dtype::F32, bytemuck::cast_slice(&f32s)),
                    "float32, {n} values, {} buffers",
                    a.pieces.len()
                );
                let a = e.upload(&f64s).expect("upload");
                assert_eq!(
                    device_spread(ctx, &a).expect("spread"),
                    spread_of_words(Dtype::F64, bytemuck::cast_slice(&f64s)),
                    "float64, {n} values, {} buffers",
                    a.pieces.len()
                );
            }
            let none = e
                .upload(&[f32::NAN, 0.0, -0.0, f32::INFINITY])
                .expect("upload");
            assert_eq!(device_spread(ctx, &none).expect("spread"), Spread::Nothing);
        }
        // More values than one workgroup's 256 invocations could take in
        // 65535 iterations each, the extremes last.
        let e = &engines[2];
        let mut many = vec![0.5f32; 256 * 65536 + 512];
        let n = many.len();
        many[n - 1] = 1.0e30;
        many[n - 2] = -1.0e-30;
        let a = e.upload(&many).expect("upload");
        assert_eq!(
            device_spread(e.context(), &a).expect("spread"),
            spread_of_words(Dtype::F32, bytemuck::cast_slice(&many)),
            "{n} values on a one-workgroup grid"
        );
    }
}
