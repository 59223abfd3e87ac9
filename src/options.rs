//! The options an engine is opened with: caps below the device's own
//! limits and a forced kernel shape, for tests and special deployments.

use crate::kernels::{GroupStrategy, KernelShape};

/// Knobs for tests and special deployments; the defaults use the device's
/// own limits and the kernel shape that suits it.
///
/// Built from [`EngineOptions::default`] with the setters (the struct is
/// `#[non_exhaustive]`, so new options do not break callers):
///
/// ```
/// use gpulanes::{Engine, EngineOptions, KernelShape};
/// let options = EngineOptions::default()
///     .kernels(KernelShape::Workgroup)
///     .max_binding_bytes(1 << 20);
/// let engine = Engine::with_options(options)?;
/// assert!(engine.limits().max_binding_bytes <= 1 << 20);
/// # Ok::<(), gpulanes::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct EngineOptions {
    /// The kernel shape (`Some(KernelShape::Subgroup)` fails where the
    /// device lacks `Features::SUBGROUP`); `None` picks
    /// [`KernelShape::for_device`]. Every shape gives the same bits.
    pub kernels: Option<KernelShape>,
    /// Cap on one storage binding, in bytes (at least 64 KiB).
    pub max_binding_bytes: Option<u64>,
    /// Cap on one buffer, in bytes (at least 64 KiB).
    pub max_buffer_bytes: Option<u64>,
    /// Cap on workgroups per grid dimension (at least 1).
    pub max_workgroups_per_dim: Option<u32>,
    /// Cap on workgroups (units) per dispatch.
    pub max_units_per_dispatch: Option<u64>,
    /// How the kernels' shader modules and pipelines are built (see
    /// [`EngineOptions::zero_initialize_workgroup_memory`] and
    /// [`EngineOptions::unchecked_shaders`]).
    pub(crate) build: KernelBuild,
    /// See [`EngineOptions::persistent_workgroups`].
    pub(crate) persistent_workgroups: Option<u32>,
    /// See [`EngineOptions::group_strategy`].
    pub(crate) group_strategy: GroupStrategy,
}

/// How the kernels are compiled: wgpu's safety measures, on by default,
/// which a GPU diagnosis may turn off to measure what they cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct KernelBuild {
    /// wgpu does not zero-initialise workgroup memory (the kernels clear
    /// their own).
    pub skip_workgroup_zero_init: bool,
    /// Shader modules without wgpu's runtime bounds checks.
    pub unchecked: bool,
}

impl KernelBuild {
    /// A shader module from WGSL, with or without wgpu's runtime checks.
    pub(crate) fn module(
        self,
        device: &wgpu::Device,
        label: &str,
        wgsl: String,
    ) -> wgpu::ShaderModule {
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(label),
            source: wgpu::ShaderSource::Wgsl(wgsl.into()),
        };
        if self.unchecked {
            // SAFETY: `unchecked` is set only through the unsafe
            // `EngineOptions::unchecked_shaders`, whose caller vouches that
            // dropping the checks is acceptable; every kernel indexes its
            // bindings within the ranges the host sized them for.
            unsafe {
                device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked())
            }
        } else {
            device.create_shader_module(desc)
        }
    }

    /// `PipelineCompilationOptions::zero_initialize_workgroup_memory`.
    pub(crate) fn zero_init(self) -> bool {
        !self.skip_workgroup_zero_init
    }

    /// The compute pipeline of `entry_point` in `module` with the override
    /// `constants` (the kernels clear their own workgroup memory; see
    /// [`KernelBuild::zero_init`] for wgpu's clearing).
    pub(crate) fn pipeline(
        self,
        device: &wgpu::Device,
        layout: &wgpu::PipelineLayout,
        module: &wgpu::ShaderModule,
        entry_point: &str,
        constants: &[(&str, f64)],
    ) -> wgpu::ComputePipeline {
        device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry_point),
            layout: Some(layout),
            module,
            entry_point: Some(entry_point),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants,
                zero_initialize_workgroup_memory: self.zero_init(),
            },
            cache: None,
        })
    }
}

impl EngineOptions {
    /// Forces how keyed reductions take rows and where they accumulate
    /// (see [`GroupStrategy`]; every way gives the same bits), for
    /// measuring the ways against one another.
    #[doc(hidden)]
    #[must_use]
    pub fn group_strategy(mut self, strategy: GroupStrategy) -> Self {
        self.group_strategy = strategy;
        self
    }

    /// Forces the kernel shape (every shape gives the same bits;
    /// [`KernelShape::Subgroup`] fails on a device without
    /// `Features::SUBGROUP`).
    #[must_use]
    pub fn kernels(mut self, shape: KernelShape) -> Self {
        self.kernels = Some(shape);
        self
    }

    /// Caps one storage binding at `bytes` (at least 64 KiB; the engine
    /// refuses less when it opens).
    #[must_use]
    pub fn max_binding_bytes(mut self, bytes: u64) -> Self {
        self.max_binding_bytes = Some(bytes);
        self
    }

    /// Caps one buffer at `bytes` (at least 64 KiB; the engine refuses less
    /// when it opens).
    #[must_use]
    pub fn max_buffer_bytes(mut self, bytes: u64) -> Self {
        self.max_buffer_bytes = Some(bytes);
        self
    }

    /// Caps workgroups per grid dimension (values under 1 count as 1).
    #[must_use]
    pub fn max_workgroups_per_dim(mut self, count: u32) -> Self {
        self.max_workgroups_per_dim = Some(count);
        self
    }

    /// Caps workgroups (units) per dispatch (values under 1 count as 1).
    #[must_use]
    pub fn max_units_per_dispatch(mut self, count: u64) -> Self {
        self.max_units_per_dispatch = Some(count);
        self
    }

    /// Launches at most `count` workgroups (at least 1) per dispatch of the
    /// tree kernels, each taking several units of the input in turn
    /// ("persistent" workgroups; at most 64 units each, so a dispatch of
    /// more units launches more), instead of one workgroup per unit. Every
    /// unit is reduced by the same code whichever workgroup takes it, so
    /// the bits are the same; whether it is faster depends on the device
    /// (`gpulanes doctor` compares). Default: one workgroup per unit.
    #[must_use]
    pub fn persistent_workgroups(mut self, count: u32) -> Self {
        self.persistent_workgroups = Some(count);
        self
    }

    /// Whether wgpu zero-initialises the kernels' workgroup memory (on by
    /// default). The kernels clear their own workgroup memory, so the bits
    /// are the same either way; wgpu's initialisation adds stores and a
    /// barrier to every workgroup, and turning it off measures their cost.
    #[must_use]
    pub fn zero_initialize_workgroup_memory(mut self, on: bool) -> Self {
        self.build.skip_workgroup_zero_init = !on;
        self
    }

    /// Builds the kernels without wgpu's runtime bounds checks
    /// (`ShaderRuntimeChecks::unchecked`), to measure what they cost.
    ///
    /// # Safety
    ///
    /// wgpu no longer guarantees that the kernels stay inside their
    /// bindings: every kernel is written to index only within the ranges
    /// the host sizes its bindings for, but a defect there would read or
    /// write out of bounds (undefined behaviour) instead of being clamped.
    #[must_use]
    pub unsafe fn unchecked_shaders(mut self) -> Self {
        self.build.unchecked = true;
        self
    }
}
