//! Choosing a GPU adapter. Honours `WGPU_BACKEND` (comma list of vulkan,
//! metal, dx12, gl), `WGPU_ADAPTER_NAME` (case-insensitive substring of the
//! adapter name) and `WGPU_POWER_PREF` (low, high, none). A name that matches
//! nothing is an error listing the adapters that were found.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::kernels::KernelShape;

/// What a user (and the JSON output) needs to know about the adapter.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    /// True for CPU (software) adapters such as lavapipe: their timings say
    /// nothing about GPU speed.
    pub software: bool,
    /// The engine's kernels use subgroup operations.
    pub subgroups: bool,
    /// The engine's kernel shape (all shapes give the same bits).
    pub kernels: KernelShape,
    pub subgroup_min_size: u32,
    pub subgroup_max_size: u32,
    pub timestamps: bool,
    /// A self-check measured once when the engine starts: whether the sum
    /// of the smallest subnormal came back as zero. The kernels decode
    /// values from their bits and never do float arithmetic on them, so it
    /// is false on every device, also those that flush subnormals in float
    /// arithmetic (WGSL allows it; NVIDIA does).
    pub flushes_subnormals: bool,
    pub max_storage_binding_bytes: u64,
    pub max_buffer_bytes: u64,
    pub max_workgroups_per_dimension: u32,
}

impl AdapterSummary {
    /// The summary of a device whose engine runs `kernels`.
    pub(crate) fn new(
        info: &wgpu::AdapterInfo,
        features: wgpu::Features,
        limits: &wgpu::Limits,
        kernels: KernelShape,
    ) -> Self {
        AdapterSummary {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend).to_lowercase(),
            device_type: format!("{:?}", info.device_type),
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
            software: info.device_type == wgpu::DeviceType::Cpu,
            subgroups: kernels == KernelShape::Subgroup,
            kernels,
            subgroup_min_size: info.subgroup_min_size,
            subgroup_max_size: info.subgroup_max_size,
            timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            flushes_subnormals: false,
            max_storage_binding_bytes: limits.max_storage_buffer_binding_size,
            max_buffer_bytes: limits.max_buffer_size,
            max_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
        }
    }
}

/// Backends from `WGPU_BACKEND`, or `None` when it is unset.
pub fn backends_from_env() -> Result<Option<wgpu::Backends>> {
    let Ok(value) = std::env::var("WGPU_BACKEND") else {
        return Ok(None);
    };
    let mut backends = wgpu::Backends::empty();
    for name in value
        .split(',')
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
    {
        backends |= match name.as_str() {
            "vulkan" | "vk" => wgpu::Backends::VULKAN,
            "metal" | "mtl" => wgpu::Backends::METAL,
            "dx12" | "d3d12" => wgpu::Backends::DX12,
            "gl" | "gles" | "opengl" => wgpu::Backends::GL,
            "primary" => wgpu::Backends::PRIMARY,
            "secondary" => wgpu::Backends::SECONDARY,
            _ => {
                return Err(Error::InvalidEnv {
                    var: "WGPU_BACKEND",
                    value,
                    expected: "a comma list of vulkan, metal, dx12, gl",
                });
            }
        };
    }
    if backends.is_empty() {
        return Err(Error::InvalidEnv {
            var: "WGPU_BACKEND",
            value,
            expected: "a comma list of vulkan, metal, dx12, gl",
        });
    }
    Ok(Some(backends))
}

/// Opens an instance and picks an adapter. Without `WGPU_BACKEND`, native
/// backends (Vulkan, Metal, DX12) are tried first and GL only when none has
/// an adapter, so machines without GL drivers print no EGL noise.
pub fn open() -> Result<(wgpu::Instance, wgpu::Adapter)> {
    let tries = match backends_from_env()? {
        Some(b) => vec![b],
        None => vec![wgpu::Backends::PRIMARY, wgpu::Backends::SECONDARY],
    };
    let mut last = None;
    for backends in tries {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        match select_adapter(&instance, backends) {
            Ok(adapter) => return Ok((instance, adapter)),
            Err(e @ Error::NoAdapter { .. }) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("at least one backend set was tried"))
}

/// Power preference from `WGPU_POWER_PREF` (default: high performance).
pub fn power_from_env() -> Result<wgpu::PowerPreference> {
    match std::env::var("WGPU_POWER_PREF") {
        Err(_) => Ok(wgpu::PowerPreference::HighPerformance),
        Ok(v) => match v.to_lowercase().as_str() {
            "high" => Ok(wgpu::PowerPreference::HighPerformance),
            "low" => Ok(wgpu::PowerPreference::LowPower),
            "none" => Ok(wgpu::PowerPreference::None),
            _ => Err(Error::InvalidEnv {
                var: "WGPU_POWER_PREF",
                value: v,
                expected: "low, high or none",
            }),
        },
    }
}

/// Picks an adapter following the environment variables above.
pub fn select_adapter(
    instance: &wgpu::Instance,
    backends: wgpu::Backends,
) -> Result<wgpu::Adapter> {
    let power = power_from_env()?;
    let adapters = pollster::block_on(instance.enumerate_adapters(backends));
    if adapters.is_empty() {
        return Err(Error::NoAdapter {
            backends: format!("{backends:?}"),
            hint: "install a GPU driver or Mesa's software Vulkan driver (Debian/Ubuntu: apt-get install mesa-vulkan-drivers; or run scripts/ensure-vulkan.sh)".into(),
        });
    }
    let wanted = std::env::var("WGPU_ADAPTER_NAME")
        .ok()
        .filter(|s| !s.is_empty());
    let mut candidates: Vec<wgpu::Adapter> = match &wanted {
        None => adapters,
        Some(name) => {
            let needle = name.to_lowercase();
            let (hit, miss): (Vec<_>, Vec<_>) = adapters
                .into_iter()
                .partition(|a| a.get_info().name.to_lowercase().contains(&needle));
            if hit.is_empty() {
                let found = miss
                    .iter()
                    .map(|a| {
                        let i = a.get_info();
                        format!("{:?} ({:?})", i.name, i.backend)
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(Error::AdapterNotFound {
                    wanted: name.clone(),
                    found,
                });
            }
            hit
        }
    };
    candidates.sort_by_key(|a| rank(&a.get_info(), power));
    Ok(candidates.remove(0))
}

/// Lower is better: device type by power preference, then native backends over GL.
fn rank(info: &wgpu::AdapterInfo, power: wgpu::PowerPreference) -> (u8, u8) {
    use wgpu::DeviceType::*;
    let ty = match (power, info.device_type) {
        (wgpu::PowerPreference::LowPower, IntegratedGpu) => 0,
        (wgpu::PowerPreference::LowPower, DiscreteGpu) => 1,
        (_, DiscreteGpu) => 0,
        (_, IntegratedGpu) => 1,
        (_, VirtualGpu) => 2,
        (_, Other) => 3,
        (_, Cpu) => 4,
    };
    let backend = if info.backend == wgpu::Backend::Gl {
        1
    } else {
        0
    };
    (ty, backend)
}
