//! The WGSL pipelines, built once per engine and reused for every reduction
//! (like wgpu's `repeated_compute` example). `reduce.wgsl` (the folds and the
//! combine) is composed with one [`KernelShape`]: the wide kernels (256
//! invocations per unit, `wide.wgsl` plus a tree through subgroups or
//! workgroup memory) for GPUs, the narrow ones (`narrow.wgsl`, 8 invocations
//! per unit) for CPU adapters. All three compute the same tree over the same
//! per-invocation partials, so they give the same bits.

use serde::Serialize;

use crate::op::KernelOp;

/// Items (f32) one element-pass workgroup reduces: `BLOCK` in reduce.wgsl.
pub const BLOCK: u64 = 8192;
/// Partials one partial-pass workgroup reduces: `GROUP` in reduce.wgsl.
pub const GROUP: u64 = 2048;
/// Bytes of one `Partial`.
pub const PARTIAL_BYTES: u64 = 32;
/// Bytes of one `Segment` table entry.
pub const SEGMENT_BYTES: u64 = 16;
/// Bytes of one `Params` uniform.
pub const PARAMS_BYTES: u64 = 32;

pub const REDUCE_WGSL: &str = include_str!("../shaders/reduce.wgsl");
pub const WIDE_WGSL: &str = include_str!("../shaders/wide.wgsl");
pub const NARROW_WGSL: &str = include_str!("../shaders/narrow.wgsl");
pub const TREE_WORKGROUP_WGSL: &str = include_str!("../shaders/tree_workgroup.wgsl");
pub const TREE_SUBGROUP_WGSL: &str = include_str!("../shaders/tree_subgroup.wgsl");

/// How the kernels spread one unit's work over invocations. Every shape
/// computes the same tree over the same 256 per-invocation partials, so the
/// results are the same bits; only the speed differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelShape {
    /// 256 invocations per unit, the tree in workgroup memory (any GPU).
    Workgroup,
    /// 256 invocations per unit, the tree's last levels through subgroup
    /// shuffles (GPUs with `Features::SUBGROUP`).
    Subgroup,
    /// 8 invocations per unit, each computing 32 of the partials and most of
    /// the tree in registers: for CPU adapters (lavapipe, SwiftShader), which
    /// run every branch of a SIMD group masked, so the wide tree costs them
    /// 8 combines in each of its SIMD groups (32 of 8 lanes on lavapipe).
    /// On lavapipe: sums 1.75x and maxima 1.3x as fast as the subgroup tree.
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

/// The full WGSL source of one shape.
pub fn shader_source(shape: KernelShape) -> String {
    match shape {
        // naga 30 enables subgroup builtins through Features::SUBGROUP and
        // rejects the `enable subgroups;` directive, so none is written.
        KernelShape::Subgroup => format!("{REDUCE_WGSL}\n{WIDE_WGSL}\n{TREE_SUBGROUP_WGSL}"),
        KernelShape::Workgroup => format!("{REDUCE_WGSL}\n{WIDE_WGSL}\n{TREE_WORKGROUP_WGSL}"),
        KernelShape::Narrow => format!("{REDUCE_WGSL}\n{NARROW_WGSL}"),
    }
}

/// Which pass a pipeline runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    Elements,
    Partials,
}

/// All pipelines and layouts of one engine.
pub(crate) struct Kernels {
    pub elements_layout: wgpu::BindGroupLayout,
    pub partials_layout: wgpu::BindGroupLayout,
    elements: [wgpu::ComputePipeline; 3],
    partials: [wgpu::ComputePipeline; 3],
}

impl Kernels {
    pub fn new(device: &wgpu::Device, shape: KernelShape) -> Self {
        let label = format!("reduce ({})", shape.name());
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&label),
            source: wgpu::ShaderSource::Wgsl(shader_source(shape).into()),
        });
        let entry = |binding, ty| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty,
            count: None,
        };
        let storage = |read_only| wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        };
        let uniform = wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: true,
            min_binding_size: wgpu::BufferSize::new(PARAMS_BYTES),
        };
        let elements_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("reduce elements"),
            entries: &[
                entry(0, uniform),
                entry(1, storage(true)),
                entry(2, storage(true)),
                entry(3, storage(true)),
                entry(4, storage(false)),
            ],
        });
        let partials_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("reduce partials"),
            entries: &[
                entry(0, uniform),
                entry(1, storage(true)),
                entry(4, storage(false)),
                entry(5, storage(true)),
            ],
        });
        let make = |layout: &wgpu::BindGroupLayout, entry_point: &str, op: KernelOp| {
            let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(entry_point),
                bind_group_layouts: &[Some(layout)],
                immediate_size: 0,
            });
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry_point),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(entry_point),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &[("OP", op as u32 as f64)],
                    zero_initialize_workgroup_memory: true,
                },
                cache: None,
            })
        };
        let ops = [KernelOp::Sum, KernelOp::Max, KernelOp::Min];
        Kernels {
            elements: ops.map(|op| make(&elements_layout, "reduce_elements", op)),
            partials: ops.map(|op| make(&partials_layout, "reduce_partials", op)),
            elements_layout,
            partials_layout,
        }
    }

    pub fn pipeline(&self, pass: Pass, op: KernelOp) -> &wgpu::ComputePipeline {
        match pass {
            Pass::Elements => &self.elements[op as usize],
            Pass::Partials => &self.partials[op as usize],
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
