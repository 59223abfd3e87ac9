//! The WGSL pipelines, built once per engine and dtype and reused for every
//! reduction (like wgpu's `repeated_compute` example). `exact.wgsl` (the
//! accumulator, shared by every dtype) is composed with one dtype's file and
//! the entry points, at the workgroup width of one [`KernelShape`]: 256
//! invocations per unit for GPUs, 8 for CPU adapters. Sums are exact
//! integers and max/min order-free, so every shape gives the same bits.

use std::sync::OnceLock;

use serde::Serialize;

use crate::dtype::Dtype;
use crate::op::KernelOp;
use crate::options::KernelBuild;

/// Input words one element-pass workgroup reduces: `BLOCK` in exact.wgsl
/// (8192 float32/int32 values, 4096 float64/int64 values).
pub const BLOCK: u64 = 8192;
/// Partials one partial-pass workgroup reduces: `GROUP` in exact.wgsl.
pub const GROUP: u64 = 2048;
/// Bytes of one float32 (and int32, uint32, int64) partial; float64
/// partials are larger ([`crate::Dtype`]).
pub const PARTIAL_BYTES: u64 = 64;
/// Bytes of one `Segment` table entry.
pub const SEGMENT_BYTES: u64 = 16;
/// Bytes of one `Params` uniform.
pub const PARAMS_BYTES: u64 = 32;

pub const EXACT_WGSL: &str = include_str!("../shaders/exact.wgsl");
pub const EXACT_F32_WGSL: &str = include_str!("../shaders/exact_f32.wgsl");
pub const EXACT_F64_WGSL: &str = include_str!("../shaders/exact_f64.wgsl");
pub const EXACT_INT_WGSL: &str = include_str!("../shaders/exact_int.wgsl");
pub const EXACT_FLOAT_WGSL: &str = include_str!("../shaders/exact_float.wgsl");
pub const EXACT_ENTRY_WGSL: &str = include_str!("../shaders/exact_entry.wgsl");

#[doc(hidden)]
pub use crate::keyed::finish::{FINISH_BINDINGS, FINISH_PARAMS_BYTES, FINISH_WG, RECORD_WORDS};
/// The kernel that finishes keyed groups on the device.
pub use crate::keyed::finish::{FINISH_WGSL, finish_shader_source};
/// The group kernel (keyed reductions and small partitions).
pub use crate::keyed::kernels::{
    COMPACT_WORDS, GROUP_WGSL, GroupStrategy, Local, compact_groups, group_shader_source,
    private_groups,
};
#[doc(hidden)]
pub use crate::keyed::kernels::{GROUP_BINDINGS, GROUP_PARAMS_BYTES};
/// The layouts of group accumulators (which limbs of the exact sum they hold).
pub use crate::keyed::limbs::{Limbs, NARROW_LIMBS, Spread};
#[doc(hidden)]
pub use crate::keyed::spread::{SPREAD_BINDINGS, SPREAD_PARAMS_BYTES, SPREAD_WG};
/// The kernel that finds the spread of a device-resident float column.
pub use crate::keyed::spread::{SPREAD_WGSL, spread_shader_source};

/// How the host binds one `@group(0)` binding: the bind group layouts are
/// built from the tables below, which tests/wgsl_layout.rs checks against
/// the shaders' `@binding` declarations.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindingKind {
    /// `var<uniform>`, `Params`.
    Uniform,
    /// `var<storage, read>`.
    ReadOnly,
    /// `var<storage, read_write>`.
    ReadWrite,
}

/// The element pass's bindings (exact.wgsl): params, segment table, input
/// as vec4 and as words, output partials.
#[doc(hidden)]
pub const ELEMENTS_BINDINGS: [(u32, BindingKind); 5] = [
    (0, BindingKind::Uniform),
    (1, BindingKind::ReadOnly),
    (2, BindingKind::ReadOnly),
    (3, BindingKind::ReadOnly),
    (4, BindingKind::ReadWrite),
];

/// The partial pass's bindings (exact.wgsl): params, segment table, output
/// partials, input partials.
#[doc(hidden)]
pub const PARTIALS_BINDINGS: [(u32, BindingKind); 4] = [
    (0, BindingKind::Uniform),
    (1, BindingKind::ReadOnly),
    (4, BindingKind::ReadWrite),
    (5, BindingKind::ReadOnly),
];

/// A kernel's bind group layout (its one group, from its binding table)
/// and the pipeline layout of that group.
pub(crate) fn kernel_layouts(
    device: &wgpu::Device,
    label: &str,
    bindings: &[(u32, BindingKind)],
    uniform_bytes: u64,
    dynamic_uniform: bool,
) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(label),
        entries: &layout_entries(bindings, uniform_bytes, dynamic_uniform),
    });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(label),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    (layout, pipeline_layout)
}

/// The layout entries of `bindings`, all visible to compute; the uniform
/// holds `uniform_bytes` and is bound at a dynamic offset when
/// `dynamic_uniform`.
pub(crate) fn layout_entries(
    bindings: &[(u32, BindingKind)],
    uniform_bytes: u64,
    dynamic_uniform: bool,
) -> Vec<wgpu::BindGroupLayoutEntry> {
    bindings
        .iter()
        .map(|&(binding, kind)| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: match kind {
                    BindingKind::Uniform => wgpu::BufferBindingType::Uniform,
                    BindingKind::ReadOnly => wgpu::BufferBindingType::Storage { read_only: true },
                    BindingKind::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                },
                has_dynamic_offset: kind == BindingKind::Uniform && dynamic_uniform,
                min_binding_size: match kind {
                    BindingKind::Uniform => wgpu::BufferSize::new(uniform_bytes),
                    _ => None,
                },
            },
            count: None,
        })
        .collect()
}

/// How many invocations share one unit's work. The sum is an exact
/// integer and max/min are order-free, so every shape gives the same bits;
/// only the speed differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelShape {
    /// 256 invocations per unit (any GPU).
    Workgroup,
    /// 256 invocations per unit; kept as a name for GPUs with
    /// `Features::SUBGROUP` (the kernels need no subgroup operations, so it
    /// runs the same code as `Workgroup`).
    Subgroup,
    /// 8 invocations per unit, each folding 32 groups of 32 words: for CPU
    /// adapters (lavapipe, SwiftShader), which run a workgroup as a few SIMD
    /// groups, so fewer invocations mean fewer atomics and flushes per unit.
    Narrow,
}

impl KernelShape {
    /// The default for an adapter: narrow on CPU adapters, else the subgroup
    /// tree where the device has subgroups.
    pub fn for_device(cpu: bool, subgroups: bool) -> Self {
        match (cpu, subgroups) {
            (true, _) => KernelShape::Narrow,
            (false, true) => KernelShape::Subgroup,
            (false, false) => KernelShape::Workgroup,
        }
    }

    /// The shape named by `GPULANES_KERNELS` (`workgroup`, `subgroup` or
    /// `narrow`; unset or empty: `None`, the device's default), which
    /// [`Engine::new`](crate::Engine::new) honours.
    pub fn from_env() -> crate::Result<Option<Self>> {
        const VAR: &str = "GPULANES_KERNELS";
        let value = match std::env::var(VAR) {
            Err(std::env::VarError::NotPresent) => return Ok(None),
            Err(std::env::VarError::NotUnicode(v)) => v.to_string_lossy().into_owned(),
            Ok(v) if v.trim().is_empty() => return Ok(None),
            Ok(v) => v,
        };
        Self::parse(&value)
            .map(Some)
            .ok_or(crate::Error::InvalidEnv {
                var: VAR,
                value,
                expected: Self::NAMES,
            })
    }

    /// What [`KernelShape::parse`] accepts.
    pub const NAMES: &'static str = "workgroup, subgroup or narrow";

    /// Parses a shape name (case-insensitive, surrounding spaces ignored).
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "workgroup" => Some(KernelShape::Workgroup),
            "subgroup" => Some(KernelShape::Subgroup),
            "narrow" => Some(KernelShape::Narrow),
            _ => None,
        }
    }

    /// The shape's name, as [`KernelShape::parse`] takes it.
    pub fn name(self) -> &'static str {
        match self {
            KernelShape::Workgroup => "workgroup",
            KernelShape::Subgroup => "subgroup",
            KernelShape::Narrow => "narrow",
        }
    }
}

impl KernelShape {
    /// Invocations per workgroup.
    pub fn workgroup_size(self) -> u32 {
        match self {
            KernelShape::Narrow => 8,
            KernelShape::Workgroup | KernelShape::Subgroup => 256,
        }
    }
}

/// The full WGSL source of the kernels for one dtype and shape: a header
/// with the sizes, exact.wgsl, the dtype's file (for floats followed by the
/// band logic they share), the entry points.
pub fn shader_source(dtype: Dtype, shape: KernelShape) -> String {
    let float = |f: &str| format!("{f}\n{EXACT_FLOAT_WGSL}");
    let (file, int_kind) = match dtype {
        Dtype::F32 => (float(EXACT_F32_WGSL), 0),
        Dtype::F64 => (float(EXACT_F64_WGSL), 0),
        Dtype::I32 => (EXACT_INT_WGSL.to_string(), 0),
        Dtype::U32 => (EXACT_INT_WGSL.to_string(), 1),
        Dtype::I64 => (EXACT_INT_WGSL.to_string(), 2),
    };
    format!(
        "// {dtype}, {shape} kernels.\n\
         const WG: u32 = {wg}u;\n\
         const LIMBS: u32 = {limbs}u;\n\
         const WPE: u32 = {wpe}u;\n\
         const PARTIAL_WORDS: u32 = {pw}u;\n\
         const INT_KIND: u32 = {int_kind}u;\n\
         {EXACT_WGSL}\n{file}\n{EXACT_ENTRY_WGSL}",
        shape = shape.name(),
        wg = shape.workgroup_size(),
        limbs = dtype.limbs(),
        wpe = dtype.words(),
        pw = dtype.partial_words(),
    )
}

/// Which pass a pipeline runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    Elements,
    Partials,
}

/// The pipelines of one dtype: element and partial pass for each kernel op.
struct DtypePipelines {
    elements: [wgpu::ComputePipeline; 3],
    partials: [wgpu::ComputePipeline; 3],
}

/// All pipelines and layouts of one engine. Float32 pipelines are built
/// with the engine; those of other dtypes on their first use, once.
pub(crate) struct Kernels {
    shape: KernelShape,
    pub elements_layout: wgpu::BindGroupLayout,
    pub partials_layout: wgpu::BindGroupLayout,
    elements_pipeline_layout: wgpu::PipelineLayout,
    partials_pipeline_layout: wgpu::PipelineLayout,
    by_dtype: [OnceLock<DtypePipelines>; 5],
    build: KernelBuild,
}

impl Kernels {
    pub fn new(device: &wgpu::Device, shape: KernelShape, build: KernelBuild) -> Self {
        let (elements_layout, elements_pipeline_layout) = kernel_layouts(
            device,
            "reduce elements",
            &ELEMENTS_BINDINGS,
            PARAMS_BYTES,
            true,
        );
        let (partials_layout, partials_pipeline_layout) = kernel_layouts(
            device,
            "reduce partials",
            &PARTIALS_BINDINGS,
            PARAMS_BYTES,
            true,
        );
        let kernels = Kernels {
            shape,
            elements_pipeline_layout,
            partials_pipeline_layout,
            elements_layout,
            partials_layout,
            by_dtype: Default::default(),
            build,
        };
        kernels.for_dtype(device, Dtype::F32);
        kernels
    }

    fn build(&self, device: &wgpu::Device, dtype: Dtype) -> DtypePipelines {
        let label = format!("reduce {dtype} ({})", self.shape.name());
        let module = self
            .build
            .module(device, &label, shader_source(dtype, self.shape));
        let make = |layout: &wgpu::PipelineLayout, entry_point: &str, op: KernelOp| {
            self.build.pipeline(
                device,
                layout,
                &module,
                entry_point,
                &[("OP", op as u32 as f64)],
            )
        };
        let ops = [KernelOp::Sum, KernelOp::Max, KernelOp::Min];
        DtypePipelines {
            elements: ops.map(|op| make(&self.elements_pipeline_layout, "reduce_elements", op)),
            partials: ops.map(|op| make(&self.partials_pipeline_layout, "reduce_partials", op)),
        }
    }

    fn for_dtype(&self, device: &wgpu::Device, dtype: Dtype) -> &DtypePipelines {
        self.by_dtype[dtype.code() as usize].get_or_init(|| self.build(device, dtype))
    }

    pub fn pipeline(
        &self,
        device: &wgpu::Device,
        dtype: Dtype,
        pass: Pass,
        op: KernelOp,
    ) -> &wgpu::ComputePipeline {
        let p = self.for_dtype(device, dtype);
        match pass {
            Pass::Elements => &p.elements[op as usize],
            Pass::Partials => &p.partials[op as usize],
        }
    }

    pub fn layout(&self, pass: Pass) -> &wgpu::BindGroupLayout {
        match pass {
            Pass::Elements => &self.elements_layout,
            Pass::Partials => &self.partials_layout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_names_parse_and_bad_ones_are_named() {
        for shape in [
            KernelShape::Workgroup,
            KernelShape::Subgroup,
            KernelShape::Narrow,
        ] {
            assert_eq!(KernelShape::parse(shape.name()), Some(shape));
            assert_eq!(
                KernelShape::parse(&format!(" {} ", shape.name().to_uppercase())),
                Some(shape)
            );
            assert!(KernelShape::NAMES.contains(shape.name()));
        }
        assert_eq!(KernelShape::parse("wide"), None);
        assert_eq!(KernelShape::parse(""), None);
    }

    #[test]
    fn cpu_adapters_get_the_narrow_shape() {
        assert_eq!(KernelShape::for_device(true, true), KernelShape::Narrow);
        assert_eq!(KernelShape::for_device(true, false), KernelShape::Narrow);
        assert_eq!(KernelShape::for_device(false, true), KernelShape::Subgroup);
        assert_eq!(
            KernelShape::for_device(false, false),
            KernelShape::Workgroup
        );
    }
}
