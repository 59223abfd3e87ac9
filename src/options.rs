//! The options an engine is opened with: caps below the device's own
//! limits and a forced kernel shape, for tests and special deployments.

use crate::kernels::KernelShape;

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
}

impl EngineOptions {
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
}
