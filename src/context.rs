//! What every user of one device shares: the wgpu device and queue, the
//! kernels built once, the buffer pool, the limits the engine works within
//! and the device's health; the error scopes around each piece of GPU work
//! and the waits for a submission or a readback.
//!
//! Everything that records or runs GPU work (the engine facade, jobs,
//! device arrays, the schedulers, streaming) takes a [`Context`]; the
//! context depends on none of them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use crate::adapter::AdapterSummary;
use crate::device_health::DeviceHealth;
use crate::error::{Error, Result};
use crate::kernels::{BLOCK, KernelShape, Kernels};
use crate::options::EngineOptions;
use crate::plan::DispatchLimits;
use crate::poller::{Poller, Settle};
use crate::pool::BufferPool;
use crate::workers::{Job, KEYED_THREADS, Workers};

/// The limits the engine works within (device limits, possibly capped).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct EffectiveLimits {
    pub max_binding_bytes: u64,
    pub max_buffer_bytes: u64,
    pub offset_alignment: u64,
    pub uniform_alignment: u64,
    pub max_workgroups_per_dim: u32,
    pub max_units_per_dispatch: u64,
}

/// Everything shared by the users of one device.
pub struct Context {
    pub(crate) id: u64,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub(crate) kernels: Kernels,
    pub(crate) group_kernels: crate::keyed::kernels::GroupKernels,
    pub(crate) pool: BufferPool,
    pub adapter: AdapterSummary,
    pub limits: EffectiveLimits,
    /// The device's own largest buffer (the engine's caps aside): what a
    /// buffer the engine cannot split must fit (see `fit`).
    pub(crate) device_buffer_bytes: u64,
    /// Whether the device is lost (see `device_health`).
    pub(crate) health: Arc<DeviceHealth>,
    /// Most workgroups a tree-kernel dispatch launches, each then taking
    /// several units (`EngineOptions::persistent_workgroups`); `None`: one
    /// per unit.
    pub(crate) persistent_workgroups: Option<u32>,
    /// Waits for the async requests' submissions (see `poller`).
    poller: Poller,
    /// Runs the keyed async requests (see `workers`).
    keyed_workers: Workers,
}

static NEXT_ENGINE_ID: AtomicU64 = AtomicU64::new(1);
const MIN_CAP_BYTES: u64 = 64 << 10;

impl Context {
    pub(crate) fn new(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: &wgpu::AdapterInfo,
        options: &EngineOptions,
        owned: bool,
    ) -> Result<Self> {
        let features = device.features();
        let dl = device.limits();
        let has_subgroups = features.contains(wgpu::Features::SUBGROUP);
        let shape = match options.kernels {
            Some(KernelShape::Subgroup) if !has_subgroups => {
                return Err(Error::InvalidInput(
                    "subgroup kernels requested but the device lacks Features::SUBGROUP".into(),
                ));
            }
            Some(shape) => shape,
            None => {
                KernelShape::for_device(info.device_type == wgpu::DeviceType::Cpu, has_subgroups)
            }
        };
        for (name, cap) in [
            ("max_binding_bytes", options.max_binding_bytes),
            ("max_buffer_bytes", options.max_buffer_bytes),
        ] {
            if cap.is_some_and(|c| c < MIN_CAP_BYTES) {
                return Err(Error::InvalidInput(format!(
                    "{name} must be at least {MIN_CAP_BYTES}"
                )));
            }
        }
        let cap = |device: u64, opt: Option<u64>| opt.map_or(device, |o| o.min(device));
        let max_buffer_bytes = cap(dl.max_buffer_size, options.max_buffer_bytes) & !255;
        let max_binding_bytes = cap(
            dl.max_storage_buffer_binding_size,
            options.max_binding_bytes,
        )
        .min(max_buffer_bytes)
            & !255;
        let max_wg = options
            .max_workgroups_per_dim
            .unwrap_or(u32::MAX)
            .clamp(1, dl.max_compute_workgroups_per_dimension);
        let grid = max_wg as u64 * max_wg as u64;
        let limits = EffectiveLimits {
            max_binding_bytes,
            max_buffer_bytes,
            offset_alignment: dl.min_storage_buffer_offset_alignment as u64,
            uniform_alignment: dl.min_uniform_buffer_offset_alignment as u64,
            max_workgroups_per_dim: max_wg,
            max_units_per_dispatch: options
                .max_units_per_dispatch
                .unwrap_or(grid)
                .clamp(1, grid),
        };
        // The uncaptured-error handler is the device owner's: the engine
        // sets it only on a device it opened itself. Every command of the
        // engine runs inside error scopes (see `ErrorScopes`), so nothing
        // it does relies on the handler.
        if owned {
            device.on_uncaptured_error(Arc::new(|e| log::error!("uncaptured wgpu error: {e}")));
        }
        let health = DeviceHealth::watch(&device);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let kernels = Kernels::new(&device, shape, options.build);
        let group_kernels = crate::keyed::kernels::GroupKernels::new(
            &device,
            shape,
            info.backend != wgpu::Backend::Gl,
            options.build,
            options.group_strategy,
        );
        if let Some(e) = pollster::block_on(oom.pop()) {
            return Err(Error::from_wgpu("building the kernels", e));
        }
        if let Some(e) = pollster::block_on(validation.pop()) {
            return Err(Error::validation("building the kernels", e));
        }
        let adapter = AdapterSummary::new(info, features, &dl, shape);
        Ok(Context {
            id: NEXT_ENGINE_ID.fetch_add(1, Ordering::Relaxed),
            device,
            queue,
            kernels,
            group_kernels,
            pool: BufferPool::new(max_buffer_bytes),
            adapter,
            limits,
            device_buffer_bytes: dl.max_buffer_size,
            health,
            persistent_workgroups: options.persistent_workgroups.map(|n| n.max(1)),
            poller: Poller::default(),
            keyed_workers: Workers::new("gpulanes-keyed", KEYED_THREADS),
        })
    }

    pub(crate) fn dispatch_limits(&self) -> DispatchLimits {
        DispatchLimits {
            max_binding_bytes: self.limits.max_binding_bytes,
            offset_alignment: self.limits.offset_alignment,
            max_units_per_dispatch: self.limits.max_units_per_dispatch,
        }
    }

    /// Items one input buffer may hold (a multiple of 64, over one block).
    pub(crate) fn max_buffer_items(&self) -> u64 {
        (self.limits.max_buffer_bytes / 4 / 64 * 64).max(2 * BLOCK)
    }

    /// Blocks until submission `index` is done; a failed wait is checked
    /// for a lost device (`what` names the work waited for).
    pub(crate) fn wait_submission(&self, index: &wgpu::SubmissionIndex, what: &str) -> Result<()> {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index.clone()),
                timeout: None,
            })
            .map(|_| ())
            .map_err(|e| self.health.poll_failed(&self.device, &self.queue, what, e))
    }

    /// Has the engine's poller thread wait for submission `index` (which
    /// runs its readback callbacks), then call `settle`, without blocking
    /// this thread.
    ///
    /// # Errors
    /// [`Error::Thread`] when the poller thread cannot be started.
    pub(crate) fn watch(&self, index: wgpu::SubmissionIndex, settle: Settle) -> Result<()> {
        self.poller
            .watch(&self.device, &self.queue, &self.health, index, settle)
    }

    /// Runs `job` (a keyed async request's blocking work) on one of the
    /// engine's keyed threads, after the jobs queued before it.
    ///
    /// # Errors
    /// [`Error::Thread`] when no such thread runs and none can be started.
    pub(crate) fn run_keyed(&self, job: Job) -> Result<()> {
        self.keyed_workers.run(job)
    }

    /// Hands `start` a callback (for a readback that completes inside the
    /// poll), waits for submission `index` and returns what the callback
    /// was given.
    pub(crate) fn wait_callback<R: Send + 'static>(
        &self,
        index: &wgpu::SubmissionIndex,
        start: impl FnOnce(Box<dyn FnOnce(Result<R>) + Send>),
    ) -> Result<R> {
        self.health.check()?;
        let (tx, rx) = mpsc::channel();
        start(Box::new(move |r| {
            let _ = tx.send(r);
        }));
        self.wait_submission(index, "waiting for the GPU")?;
        rx.recv()
            .map_err(|_| Error::Internal("a readback callback never ran".into()))?
    }
}

/// Validation, internal and out-of-memory error scopes around one
/// reduction, so GPU errors come back as [`Error::OutOfMemory`] or
/// [`Error::Validation`] instead of reaching the device's uncaptured-error
/// handler (which panics unless someone set one, and which belongs to the
/// app on a device it shares). A lost device reports no error of its own, but objects made
/// after the loss are invalid and using them is a validation error: such an
/// error on a device found lost (see `device_health`) is
/// [`Error::DeviceLost`].
pub(crate) struct ErrorScopes {
    // Fields drop in declaration order and wgpu panics unless scopes are
    // popped in reverse push order, so `oom` (pushed last) is declared
    // first: an early `?` return between push and `check` must not panic.
    oom: wgpu::ErrorScopeGuard,
    internal: wgpu::ErrorScopeGuard,
    validation: wgpu::ErrorScopeGuard,
    device: wgpu::Device,
    queue: wgpu::Queue,
    health: Arc<DeviceHealth>,
}

impl ErrorScopes {
    pub(crate) fn push(ctx: &Context) -> Self {
        let validation = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let internal = ctx.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let oom = ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        ErrorScopes {
            validation,
            internal,
            oom,
            device: ctx.device.clone(),
            queue: ctx.queue.clone(),
            health: ctx.health.clone(),
        }
    }

    pub(crate) fn check(self) -> Result<()> {
        let oom = pollster::block_on(self.oom.pop());
        let internal = pollster::block_on(self.internal.pop());
        let validation = pollster::block_on(self.validation.pop()).or(internal);
        match (oom, validation) {
            (Some(e), _) => Err(Error::out_of_memory("allocating for a reduction", e)),
            (None, Some(e)) => {
                let e = Arc::new(e);
                Err(self
                    .health
                    .lost_with(&self.device, &self.queue, "a reduction", e.clone())
                    .unwrap_or_else(|| Error::Validation {
                        context: "a reduction".into(),
                        source: e,
                    }))
            }
            (None, None) => Ok(()),
        }
    }
}
