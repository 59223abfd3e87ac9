//! The engine facade: opens (or adopts) a wgpu device, builds the kernels
//! once, and offers reductions over slices, `ndarray` views and
//! device-resident arrays, blocking here and async in `async_forms`.

use std::sync::{Arc, Mutex};

use ndarray::{ArrayView1, ArrayView2, Axis};

use crate::adapter::{self, AdapterSummary};
// The schedulers in `lanes` reach the context through the engine.
use crate::context::EffectiveLimits;
use crate::context::{Context, ErrorScopes};
use crate::device_array::{DeviceArray, pooled_input};
use crate::dtype::{Dtype, Element, Scalar};
use crate::error::{Error, Result};
use crate::exec::{self, Recorded};
use crate::groups::{self, Gather, PartitionGroups};
use crate::kernels::KernelShape;
use crate::op::{KernelOp, NanPolicy, Op, Reduction};
use crate::options::EngineOptions;
use crate::partial::scalar_to_f32;
use crate::partition::Partitions;
use crate::plan::Plan;
use crate::state::{State, StateKind};

mod async_forms;

/// A reduction encoded into a caller's command encoder (see
/// [`Engine::encode`]). Submit the encoder, then call [`PendingReduction::wait`]
/// or [`PendingReduction::on_complete`].
pub struct PendingReduction {
    op: Op,
    /// One per group of partitions (see `groups`), in order.
    groups: Vec<Recorded>,
}

impl PendingReduction {
    fn one(recorded: Recorded) -> Self {
        PendingReduction {
            op: recorded.op(),
            groups: vec![recorded],
        }
    }

    /// Blocks until the GPU has finished submission `index` and returns the result.
    ///
    /// Empty partitions and NaN follow the table in [`crate::op`]: an empty
    /// partition's `sum` and `count` are 0, its `mean`, `max` and `min` `None`;
    /// under [`NanPolicy::Propagate`] a NaN makes the value NaN, under
    /// [`NanPolicy::Ignore`] NaNs are skipped (an all-NaN `max`/`min` is
    /// `None`).
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when the device cannot hold the request (other
    /// requests go on); [`Error::DeviceLost`] once the device is lost;
    /// [`Error::Validation`], [`Error::Wait`] or [`Error::Internal`] for other
    /// GPU failures (see [`Error`]).
    pub fn wait(self, engine: &Engine, index: wgpu::SubmissionIndex) -> Result<Reduction> {
        wait_for(&engine.ctx, index, self)
    }

    /// Calls `done` with the result once the GPU has finished submission
    /// `index` (what `queue.submit` returned for the encoder holding this
    /// reduction); someone must poll the device (`device.poll`) for the
    /// callback to run ([`PendingReduction::wait_async`] has the engine's
    /// poller thread do it). The index is a reminder to submit first (it is not
    /// checked against this encoder: any earlier submission's index would
    /// pass): mapped before the submit, the result buffers would be read at
    /// once and `done` would get whatever they held. With no GPU work (only
    /// empty partitions) `done` runs at once, inside this call.
    pub fn on_complete(
        self,
        index: &wgpu::SubmissionIndex,
        done: impl FnOnce(Result<Reduction>) + Send + 'static,
    ) {
        // Only a witness that the encoder was submitted: mapping after the
        // submit is what makes the readback wait for the GPU.
        let _ = index;
        let mut groups = self.groups;
        if groups.len() == 1 {
            return groups.remove(0).read_async(done);
        }
        // Several groups read back one by one; the whole result (or the
        // first error) goes to `done` once.
        let gather = Arc::new(Mutex::new((Gather::new(self.op, groups.len()), Some(done))));
        for (index, recorded) in groups.into_iter().enumerate() {
            let gather = gather.clone();
            recorded.read_async(move |r| {
                let mut g = gather.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(outcome) = g.0.put(index, r)
                    && let Some(done) = g.1.take()
                {
                    drop(g);
                    done(outcome);
                }
            });
        }
    }
}

/// A reduction of an array of any dtype encoded into a caller's command
/// encoder (see [`Engine::encode_typed`]). Submit the encoder, then call
/// [`PendingTypedReduction::wait`] or
/// [`PendingTypedReduction::wait_async`].
pub struct PendingTypedReduction {
    op: Op,
    nan: NanPolicy,
    /// One per group of partitions, in order.
    jobs: Vec<exec::Job>,
}

impl PendingTypedReduction {
    /// Blocks until the GPU has finished submission `index` (what
    /// `queue.submit` returned for the encoder holding this reduction) and
    /// returns the result, each value in its op's result type.
    ///
    /// Empty partitions and NaN follow the table in [`crate::op`]: an empty
    /// partition's `sum` and `count` are 0, its `mean`, `max` and `min` `None`;
    /// under [`NanPolicy::Propagate`] a NaN makes the value NaN, under
    /// [`NanPolicy::Ignore`] NaNs are skipped (an all-NaN `max`/`min` is
    /// `None`).
    ///
    /// # Errors
    /// [`Error::Overflow`] for an integer sum outside int64;
    /// [`Error::OutOfMemory`] when the device cannot hold the request (other
    /// requests go on); [`Error::DeviceLost`] once the device is lost;
    /// [`Error::Validation`], [`Error::Wait`] or [`Error::Internal`] for other
    /// GPU failures (see [`Error`]).
    pub fn wait(self, engine: &Engine, index: wgpu::SubmissionIndex) -> Result<Reduction<Scalar>> {
        engine
            .ctx
            .wait_callback(&index, |done| read_jobs(self.jobs, self.op, self.nan, done))
    }
}

/// Reads every job back and hands `done` their finished values, in order,
/// once all are in (or the first error).
fn read_jobs(
    jobs: Vec<exec::Job>,
    op: Op,
    nan: NanPolicy,
    done: impl FnOnce(Result<Reduction<Scalar>>) + Send + 'static,
) {
    let gather = Arc::new(Mutex::new((Gather::new(op, jobs.len()), Some(done))));
    for (index, job) in jobs.into_iter().enumerate() {
        let gather = gather.clone();
        job.read_async(move |r| {
            let r = r.and_then(|f| {
                let mut out = Reduction::empty(op);
                f.finish_into(op, nan, &mut out)?;
                Ok(out)
            });
            let mut g = gather.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(outcome) = g.0.put(index, r)
                && let Some(done) = g.1.take()
            {
                drop(g);
                done(outcome);
            }
        });
    }
}

// The public constructor of an array over an app's buffer lives here, by
// the engine it takes, so that `device_array` does not depend on the engine.
impl DeviceArray {
    /// Wraps a buffer the app made on the engine's device, so the engine
    /// reduces it in place (no copy): `len` values of `dtype` from byte 0,
    /// little-endian, as the app's shaders or `queue.write_buffer` left
    /// them. The engine only reads the buffer.
    ///
    /// The buffer must:
    /// - have been made by `engine.device()` (a buffer of another device
    ///   fails the reductions with [`Error::Validation`]);
    /// - have [`wgpu::BufferUsages::STORAGE`] (the kernels bind it as a
    ///   read-only storage buffer); [`wgpu::BufferUsages::COPY_SRC`] is
    ///   needed as well where the array serves as sparse group keys (they
    ///   are read back once);
    /// - hold at least `len` values, rounded up to a multiple of 16 bytes
    ///   (the kernels read 16-byte words; bytes past the `len` values are
    ///   never counted);
    /// - fit one buffer of the engine ([`EffectiveLimits::max_buffer_bytes`](crate::EffectiveLimits));
    /// - be unmapped and alive whenever a reduction of it is submitted
    ///   (the array holds a reference; a mapped or destroyed buffer fails
    ///   that reduction with [`Error::Validation`], wgpu does not tell
    ///   the mapping state beforehand).
    ///
    /// Writes the app submits before a reduction are seen by it (one queue
    /// orders them).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the rule broken (missing usage, too
    /// small, too large); [`Error::DeviceLost`] on a lost device.
    pub fn from_buffer(
        engine: &Engine,
        buffer: wgpu::Buffer,
        dtype: Dtype,
        len: u64,
    ) -> Result<Self> {
        DeviceArray::adopt(&engine.ctx, buffer, dtype, len)
    }
}

/// The GPU reduction engine. Cheap to clone; clones share the device.
///
/// Every reduction has a blocking form (`sum`, `reduce_partitions`, ...)
/// and the main ones an async form (`sum_async`,
/// `reduce_partitions_async`, ...) returning a [`ReductionFuture`](crate::ReductionFuture).
#[derive(Clone)]
pub struct Engine {
    ctx: Arc<Context>,
}

impl Engine {
    /// Opens the adapter chosen by the environment (see [`crate::adapter`]).
    ///
    /// # Errors
    /// [`Error::NoAdapter`], [`Error::AdapterNotFound`] or
    /// [`Error::InvalidEnv`] when the environment names no usable adapter;
    /// [`Error::RequestDevice`] when the adapter refuses a device;
    /// [`Error::OutOfMemory`] when the device cannot hold the request (other
    /// requests go on); [`Error::DeviceLost`] once the device is lost;
    /// [`Error::Validation`], [`Error::Wait`] or [`Error::Internal`] for other
    /// GPU failures (see [`Error`]).
    pub fn new() -> Result<Self> {
        Self::with_options(
            EngineOptions {
                kernels: KernelShape::from_env()?,
                ..Default::default()
            }
            .group_strategy(crate::kernels::GroupStrategy::from_env()?),
        )
    }

    /// Like [`Engine::new`], with options.
    ///
    /// # Errors
    /// As [`Engine::new`]; [`Error::InvalidInput`] for options the device
    /// cannot meet (subgroup kernels without `Features::SUBGROUP`, caps under
    /// 64 KiB).
    pub fn with_options(options: EngineOptions) -> Result<Self> {
        let (_instance, adapter) = adapter::open()?;
        let info = adapter.get_info();
        let wanted = wgpu::Features::SUBGROUP | wgpu::Features::TIMESTAMP_QUERY;
        let features = adapter.features() & wanted;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("gpulanes"),
            required_features: features,
            required_limits: adapter.limits(),
            ..Default::default()
        }))
        .map_err(|e| Error::RequestDevice {
            adapter: info.name.clone(),
            source: Arc::new(e),
        })?;
        log::info!(
            "gpulanes on {} ({:?}, {:?})",
            info.name,
            info.backend,
            info.device_type
        );
        Engine::start(Context::new(device, queue, &info, &options, true)?)
    }

    /// Wraps a context and measures what only running a kernel tells.
    fn start(ctx: Context) -> Result<Self> {
        let mut engine = Engine { ctx: Arc::new(ctx) };
        let tiny = f32::from_bits(1); // 2^-149, the smallest subnormal
        let flushed = engine.sum(&[tiny])? == 0.0;
        if let Some(ctx) = Arc::get_mut(&mut engine.ctx) {
            ctx.adapter.flushes_subnormals = flushed;
        }
        if flushed {
            log::info!("{} flushes subnormals to zero", engine.ctx.adapter.name);
        }
        Ok(engine)
    }

    /// Adopts a device and queue the application already has. The subgroup
    /// kernels are used only if the device was created with
    /// `Features::SUBGROUP`.
    ///
    /// The app's uncaptured-error handler is left alone: the engine catches
    /// its own errors in error scopes and returns them as [`Error`]s. It
    /// does install the device's lost callback (wgpu keeps one per device,
    /// so this replaces the app's; ask [`Engine::is_device_lost`] instead).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for options the device cannot meet (subgroup
    /// kernels without `Features::SUBGROUP`, caps under 64 KiB);
    /// [`Error::Validation`] or [`Error::OutOfMemory`] if the kernels cannot
    /// be built on the device; [`Error::DeviceLost`] if it is lost.
    pub fn from_device(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: &wgpu::AdapterInfo,
        options: EngineOptions,
    ) -> Result<Self> {
        Engine::start(Context::new(device, queue, info, &options, false)?)
    }

    /// The adapter and the limits that matter.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.ctx.adapter
    }

    /// The limits the engine works within.
    pub fn limits(&self) -> EffectiveLimits {
        self.ctx.limits
    }

    pub(crate) fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// Another handle on the engine of `ctx` (an engine holds nothing but
    /// its context), for work on threads of its own.
    pub(crate) fn sharing(ctx: &Arc<Context>) -> Engine {
        Engine { ctx: ctx.clone() }
    }

    /// True once the device is lost (destroyed, reset by the driver): every
    /// request then fails with [`Error::DeviceLost`]; a new [`Engine`]
    /// opens a new device.
    pub fn is_device_lost(&self) -> bool {
        self.ctx.health.is_lost()
    }

    /// The wgpu device (for apps that share it).
    pub fn device(&self) -> &wgpu::Device {
        &self.ctx.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.ctx.queue
    }

    /// Exact sum of `data`, rounded once to float32.
    ///
    /// **NaN policy: [`NanPolicy::Propagate`]** (as NumPy's `sum`): any NaN
    /// gives NaN. To skip NaNs, use [`Engine::reduce_partitions`] with
    /// [`NanPolicy::Ignore`].
    ///
    /// Empty input gives 0; `+inf` and `-inf` together give NaN.
    ///
    /// ```
    /// let engine = gpulanes::Engine::new()?;
    /// assert_eq!(engine.sum(&[])?, 0.0);
    /// assert_eq!(engine.sum(&[1e8, 1.0, -1e8])?, 1.0);
    /// assert!(engine.sum(&[1.0, f32::NAN])?.is_nan());
    /// assert_eq!(engine.mean(&[])?, None);
    /// # Ok::<(), gpulanes::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when the device cannot hold the request (other
    /// requests go on); [`Error::DeviceLost`] once the device is lost;
    /// [`Error::Validation`], [`Error::Wait`] or [`Error::Internal`] for other
    /// GPU failures (see [`Error`]).
    pub fn sum(&self, data: &[f32]) -> Result<f32> {
        Ok(self.reduce(data, Op::Sum)?.unwrap_or(0.0))
    }

    /// Mean of `data`: its exact sum over its count, rounded once.
    ///
    /// **NaN policy: [`NanPolicy::Propagate`]** (as NumPy's `mean`): any NaN
    /// gives `Some(NaN)`. To skip NaNs, use [`Engine::reduce_partitions`]
    /// with [`NanPolicy::Ignore`].
    ///
    /// Empty input gives `None`.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when the device cannot hold the request (other
    /// requests go on); [`Error::DeviceLost`] once the device is lost;
    /// [`Error::Validation`], [`Error::Wait`] or [`Error::Internal`] for other
    /// GPU failures (see [`Error`]).
    pub fn mean(&self, data: &[f32]) -> Result<Option<f32>> {
        self.reduce(data, Op::Mean)
    }

    /// Largest value of `data`.
    ///
    /// **NaN policy: [`NanPolicy::Propagate`]**: any NaN gives `Some(NaN)`
    /// (skip NaNs with [`Engine::reduce_partitions`] and
    /// [`NanPolicy::Ignore`]). Empty input gives `None`.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when the device cannot hold the request (other
    /// requests go on); [`Error::DeviceLost`] once the device is lost;
    /// [`Error::Validation`], [`Error::Wait`] or [`Error::Internal`] for other
    /// GPU failures (see [`Error`]).
    pub fn max(&self, data: &[f32]) -> Result<Option<f32>> {
        self.reduce(data, Op::Max)
    }

    /// Smallest value of `data`.
    ///
    /// **NaN policy: [`NanPolicy::Propagate`]**: any NaN gives `Some(NaN)`
    /// (skip NaNs with [`Engine::reduce_partitions`] and
    /// [`NanPolicy::Ignore`]). Empty input gives `None`.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when the device cannot hold the request (other
    /// requests go on); [`Error::DeviceLost`] once the device is lost;
    /// [`Error::Validation`], [`Error::Wait`] or [`Error::Internal`] for other
    /// GPU failures (see [`Error`]).
    pub fn min(&self, data: &[f32]) -> Result<Option<f32>> {
        self.reduce(data, Op::Min)
    }

    /// `op` over the whole of `data`.
    ///
    /// **NaN policy: [`NanPolicy::Propagate`]**: any NaN gives NaN (see
    /// [`crate::op`]; [`Engine::reduce_partitions`] takes a policy).
    ///
    /// Empty input: `Some(0.0)` for `sum` and `count`, `None` for `mean`,
    /// `max` and `min`.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when the device cannot hold the request (other
    /// requests go on); [`Error::DeviceLost`] once the device is lost;
    /// [`Error::Validation`], [`Error::Wait`] or [`Error::Internal`] for other
    /// GPU failures (see [`Error`]).
    pub fn reduce(&self, data: &[f32], op: Op) -> Result<Option<f32>> {
        Ok(self
            .reduce_partitions(data, op, &Partitions::Whole, NanPolicy::Propagate)?
            .value())
    }

    /// Most partitions one reduction may have on this device: its segment
    /// table must fit one binding. This bounds one real-time request;
    /// [`Engine::reduce_partitions`], [`Engine::reduce_device`],
    /// [`Engine::encode`], batch jobs and the streaming paths take any
    /// number, in groups of at most this many.
    pub fn max_partitions(&self) -> u64 {
        exec::max_partitions(&self.ctx)
    }

    /// `op` over each partition of `data`. Any number of partitions: over
    /// [`Engine::max_partitions`], consecutive groups of partitions are
    /// reduced one after another, with the same bits (a partition's tree
    /// depends only on positions inside it).
    ///
    /// Empty partitions and NaN follow the table in [`crate::op`]: an empty
    /// partition's `sum` and `count` are 0, its `mean`, `max` and `min` `None`;
    /// under [`NanPolicy::Propagate`] a NaN makes the value NaN, under
    /// [`NanPolicy::Ignore`] NaNs are skipped (an all-NaN `max`/`min` is
    /// `None`).
    ///
    /// ```
    /// use gpulanes::{Engine, NanPolicy, Op, Partitions};
    /// let engine = Engine::new()?;
    /// let data = [1.0, f32::NAN, 3.0];
    /// let parts = Partitions::Offsets(vec![0, 0, 3]); // an empty one, then all
    /// let r = engine.reduce_partitions(&data, Op::Max, &parts, NanPolicy::Ignore)?;
    /// assert_eq!(r.values, vec![None, Some(3.0)]);
    /// let r = engine.reduce_partitions(&data, Op::Sum, &parts, NanPolicy::Propagate)?;
    /// assert_eq!(r.values[0], Some(0.0));
    /// assert!(r.values[1].is_some_and(f32::is_nan));
    /// # Ok::<(), gpulanes::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidPartitions`] when `partitions` do not describe the
    /// input;
    /// [`Error::OutOfMemory`] when the device cannot hold the request (other
    /// requests go on); [`Error::DeviceLost`] once the device is lost;
    /// [`Error::Validation`], [`Error::Wait`] or [`Error::Internal`] for other
    /// GPU failures (see [`Error`]).
    pub fn reduce_partitions(
        &self,
        data: &[f32],
        op: Op,
        partitions: &Partitions,
        nan: NanPolicy,
    ) -> Result<Reduction> {
        if self
            .small_partitions(data.len() as u64, partitions)?
            .is_some()
        {
            let r = self.reduce_slice(data, op, partitions, nan)?;
            return Ok(Reduction {
                op,
                values: r.values.into_iter().map(|v| v.map(scalar_to_f32)).collect(),
                counts: r.counts,
            });
        }
        let offsets = partitions.offsets(data.len() as u64)?;
        self.in_groups(op, &offsets, |group| {
            // Only the group's items are uploaded, its offsets rebased.
            let base = group[0];
            let rebased: Vec<u64> = group.iter().map(|o| o - base).collect();
            let items = &data[base as usize..group[group.len() - 1] as usize];
            self.reduce_offsets(items, op, &rebased, nan)
        })
    }

    /// Runs `reduce` over consecutive groups of at most
    /// [`Engine::max_partitions`] partitions of `offsets` (each group given
    /// as its k+1 offsets) and concatenates the results; one call when
    /// they fit.
    fn in_groups(
        &self,
        op: Op,
        offsets: &[u64],
        mut reduce: impl FnMut(&[u64]) -> Result<Reduction>,
    ) -> Result<Reduction> {
        let groups = PartitionGroups::new(offsets.len() - 1, self.max_partitions());
        let parts = (0..groups.count())
            .map(|i| reduce(groups.offsets(offsets, i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(groups::concat(op, parts))
    }

    /// One reduction of `data` over checked `offsets`.
    fn reduce_offsets(
        &self,
        data: &[f32],
        op: Op,
        offsets: &[u64],
        nan: NanPolicy,
    ) -> Result<Reduction> {
        let plan = Plan::new(offsets)?;
        let ctx = &*self.ctx;
        let scope = ErrorScopes::push(ctx);
        let (buffers, spans) = pooled_input(ctx, data.len() as u64, Some(data), "gpulanes input");
        let inputs: Vec<&wgpu::Buffer> = buffers.iter().map(|b| &**b).collect();
        self.record_and_run(scope, op, nan, plan, &inputs, &spans)
    }

    /// Copies `data` (of any [`Element`] type) to GPU memory once, for
    /// many reductions.
    ///
    /// Empty data gives an empty array; NaNs are stored as they are.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when the device cannot hold the request (other
    /// requests go on); [`Error::DeviceLost`] once the device is lost;
    /// [`Error::Validation`], [`Error::Wait`] or [`Error::Internal`] for other
    /// GPU failures (see [`Error`]).
    pub fn upload<E: Element>(&self, data: &[E]) -> Result<DeviceArray> {
        self.ctx.health.check()?;
        DeviceArray::upload(&self.ctx, data)
    }

    /// `op` over each partition of `data`, of any [`Element`] type, each
    /// value in its op's result type (see [`crate::dtype`]): float sums and
    /// means are exact sums rounded once; integer sums are exact int64
    /// ([`Error::Overflow`] when they do not fit).
    ///
    /// Empty partitions and NaN follow the table in [`crate::op`]: an empty
    /// partition's `sum` and `count` are 0, its `mean`, `max` and `min` `None`;
    /// under [`NanPolicy::Propagate`] a NaN makes the value NaN, under
    /// [`NanPolicy::Ignore`] NaNs are skipped (an all-NaN `max`/`min` is
    /// `None`).
    ///
    /// # Errors
    /// [`Error::InvalidPartitions`] when `partitions` do not describe the
    /// input;
    /// [`Error::Overflow`] for an integer sum outside int64;
    /// [`Error::OutOfMemory`] when the device cannot hold the request (other
    /// requests go on); [`Error::DeviceLost`] once the device is lost;
    /// [`Error::Validation`], [`Error::Wait`] or [`Error::Internal`] for other
    /// GPU failures (see [`Error`]).
    pub fn reduce_slice<E: Element>(
        &self,
        data: &[E],
        op: Op,
        partitions: &Partitions,
        nan: NanPolicy,
    ) -> Result<Reduction<Scalar>> {
        let mut out = Reduction::empty(op);
        if let Some(small) = self.small_partitions(data.len() as u64, partitions)? {
            self.ctx.health.check()?;
            crate::keyed::partition_results(
                &self.ctx,
                E::DTYPE,
                crate::keyed::Words::Host(bytemuck::cast_slice(data)),
                &small,
                partitions,
                op,
                nan,
                &mut out,
            )?;
            return Ok(out);
        }
        self.slice_groups(data, StateKind::for_op(op), partitions, |f| {
            f.finish_into(op, nan, &mut out)
        })?;
        Ok(out)
    }

    /// The offsets of `partitions` over `len` values when they are small
    /// enough for the group kernel (more than one, averaging fewer than
    /// [`crate::SMALL_PARTITION`] values), else `None`.
    fn small_partitions(&self, len: u64, partitions: &Partitions) -> Result<Option<Vec<u64>>> {
        let count = match partitions {
            Partitions::Whole => return Ok(None),
            Partitions::EqualSize(s) => len.div_ceil((*s).max(1)),
            Partitions::Offsets(o) => o.len().saturating_sub(1) as u64,
        };
        if count < 2 || len / count >= crate::keyed::SMALL_PARTITION {
            return Ok(None);
        }
        partitions.offsets(len).map(Some)
    }

    /// `op` over a 1-D view of any [`Element`] type. A non-contiguous view
    /// is copied into a contiguous buffer first.
    ///
    /// Empty partitions and NaN follow the table in [`crate::op`]: an empty
    /// partition's `sum` and `count` are 0, its `mean`, `max` and `min` `None`;
    /// under [`NanPolicy::Propagate`] a NaN makes the value NaN, under
    /// [`NanPolicy::Ignore`] NaNs are skipped (an all-NaN `max`/`min` is
    /// `None`).
    ///
    /// # Errors
    /// [`Error::Overflow`] for an integer sum outside int64;
    /// [`Error::OutOfMemory`] when the device cannot hold the request (other
    /// requests go on); [`Error::DeviceLost`] once the device is lost;
    /// [`Error::Validation`], [`Error::Wait`] or [`Error::Internal`] for other
    /// GPU failures (see [`Error`]).
    pub fn reduce_view_typed<E: Element>(
        &self,
        view: ArrayView1<E>,
        op: Op,
        nan: NanPolicy,
    ) -> Result<Reduction<Scalar>> {
        match view.as_slice() {
            Some(s) => self.reduce_slice(s, op, &Partitions::Whole, nan),
            None => self.reduce_slice(&view.to_vec(), op, &Partitions::Whole, nan),
        }
    }

    /// The partial [`State`] of each partition of `data`, computed on the
    /// GPU: merge them with states of other pieces of the data (from this
    /// or another machine) and finalise the merge.
    ///
    /// An empty partition gives an empty state (count 0); NaNs are kept in the
    /// state and handled by the policy given when it is finalised.
    ///
    /// # Errors
    /// [`Error::InvalidPartitions`] when `partitions` do not describe the
    /// input;
    /// [`Error::OutOfMemory`] when the device cannot hold the request (other
    /// requests go on); [`Error::DeviceLost`] once the device is lost;
    /// [`Error::Validation`], [`Error::Wait`] or [`Error::Internal`] for other
    /// GPU failures (see [`Error`]).
    pub fn states<E: Element>(
        &self,
        data: &[E],
        kind: StateKind,
        partitions: &Partitions,
    ) -> Result<Vec<State>> {
        let mut out = Vec::new();
        if let Some(small) = self.small_partitions(data.len() as u64, partitions)? {
            self.ctx.health.check()?;
            crate::keyed::partition_states(
                &self.ctx,
                E::DTYPE,
                crate::keyed::Words::Host(bytemuck::cast_slice(data)),
                &small,
                partitions,
                kind,
                |s| {
                    out.push(s);
                    Ok(())
                },
            )?;
            return Ok(out);
        }
        self.slice_groups(data, kind, partitions, |f| {
            out.extend(f.states());
            Ok(())
        })?;
        Ok(out)
    }

    /// Reduces `data` in groups of partitions (as many as one reduction
    /// may hold) and hands each group's final partials to `each`, in order.
    fn slice_groups<E: Element>(
        &self,
        data: &[E],
        kind: StateKind,
        partitions: &Partitions,
        mut each: impl FnMut(exec::FinalPartials) -> Result<()>,
    ) -> Result<()> {
        self.ctx.health.check()?;
        let offsets = partitions.offsets(data.len() as u64)?;
        let words: &[u32] = bytemuck::cast_slice(data);
        let w = E::DTYPE.words();
        let ctx = &*self.ctx;
        let groups =
            PartitionGroups::new(offsets.len() - 1, exec::max_partitions_for(ctx, E::DTYPE));
        for i in 0..groups.count() {
            let group = groups.offsets(&offsets, i);
            let (first, last) = (group[0], group[group.len() - 1]);
            // Only the group's words are uploaded, its offsets rebased.
            let rebased: Vec<u64> = group.iter().map(|o| (o - first) * w).collect();
            let items = &words[(first * w) as usize..(last * w) as usize];
            let plan = Plan::new(&rebased)?;
            crate::fit::check_dtype(ctx, &plan, E::DTYPE)?;
            let scope = ErrorScopes::push(ctx);
            let (buffers, spans) =
                pooled_input(ctx, items.len() as u64, Some(items), "gpulanes input");
            let inputs: Vec<&wgpu::Buffer> = buffers.iter().map(|b| &**b).collect();
            let job =
                exec::Job::prepare(ctx, E::DTYPE, kernel_of(kind), plan, &inputs, &spans, None)?;
            each(self.run_job(scope, job)?)?;
        }
        Ok(())
    }

    /// `op` over each partition of a device-resident array of any dtype,
    /// each value in its op's result type.
    ///
    /// Empty partitions and NaN follow the table in [`crate::op`]: an empty
    /// partition's `sum` and `count` are 0, its `mean`, `max` and `min` `None`;
    /// under [`NanPolicy::Propagate`] a NaN makes the value NaN, under
    /// [`NanPolicy::Ignore`] NaNs are skipped (an all-NaN `max`/`min` is
    /// `None`).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an array of another engine;
    /// [`Error::InvalidPartitions`] when `partitions` do not describe the
    /// input;
    /// [`Error::Overflow`] for an integer sum outside int64;
    /// [`Error::OutOfMemory`] when the device cannot hold the request (other
    /// requests go on); [`Error::DeviceLost`] once the device is lost;
    /// [`Error::Validation`], [`Error::Wait`] or [`Error::Internal`] for other
    /// GPU failures (see [`Error`]).
    pub fn reduce_device_typed(
        &self,
        array: &DeviceArray,
        op: Op,
        partitions: &Partitions,
        nan: NanPolicy,
    ) -> Result<Reduction<Scalar>> {
        let mut out = Reduction::empty(op);
        match self.small_device_offsets(array, partitions)? {
            Some(offsets) => crate::keyed::partition_results(
                &self.ctx,
                array.dtype(),
                crate::keyed::Words::Device(array),
                &offsets,
                partitions,
                op,
                nan,
                &mut out,
            )?,
            None => self.device_groups(array, StateKind::for_op(op), partitions, |f| {
                f.finish_into(op, nan, &mut out)
            })?,
        }
        Ok(out)
    }

    /// The offsets of the partitions of `array` when they are small enough
    /// for the group kernel ([`Engine::small_partitions`]), after checking
    /// the array is this engine's and, for small ones, the device's health.
    fn small_device_offsets(
        &self,
        array: &DeviceArray,
        partitions: &Partitions,
    ) -> Result<Option<Vec<u64>>> {
        array.check_owner(&self.ctx)?;
        let offsets = self.small_partitions(array.len(), partitions)?;
        if offsets.is_some() {
            self.ctx.health.check()?;
        }
        Ok(offsets)
    }

    /// Hands the state of each small partition of `array` to `each` (through
    /// the group kernel, see [`Engine::small_partitions`]); false, with
    /// nothing done, when the partitions are not small.
    fn small_device_states(
        &self,
        array: &DeviceArray,
        kind: StateKind,
        partitions: &Partitions,
        each: impl FnMut(State) -> Result<()>,
    ) -> Result<bool> {
        let Some(offsets) = self.small_device_offsets(array, partitions)? else {
            return Ok(false);
        };
        crate::keyed::partition_states(
            &self.ctx,
            array.dtype(),
            crate::keyed::Words::Device(array),
            &offsets,
            partitions,
            kind,
            each,
        )?;
        Ok(true)
    }

    /// The partial [`State`] of each partition of a device-resident array.
    ///
    /// An empty partition gives an empty state (count 0); NaNs are kept in the
    /// state and handled by the policy given when it is finalised.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an array of another engine;
    /// [`Error::InvalidPartitions`] when `partitions` do not describe the
    /// input;
    /// [`Error::OutOfMemory`] when the device cannot hold the request (other
    /// requests go on); [`Error::DeviceLost`] once the device is lost;
    /// [`Error::Validation`], [`Error::Wait`] or [`Error::Internal`] for other
    /// GPU failures (see [`Error`]).
    pub fn device_states(
        &self,
        array: &DeviceArray,
        kind: StateKind,
        partitions: &Partitions,
    ) -> Result<Vec<State>> {
        let mut out = Vec::new();
        if self.small_device_states(array, kind, partitions, |s| {
            out.push(s);
            Ok(())
        })? {
            return Ok(out);
        }
        self.device_groups(array, kind, partitions, |f| {
            out.extend(f.states());
            Ok(())
        })?;
        Ok(out)
    }

    /// [`Engine::slice_groups`] for a device-resident array.
    fn device_groups(
        &self,
        array: &DeviceArray,
        kind: StateKind,
        partitions: &Partitions,
        mut each: impl FnMut(exec::FinalPartials) -> Result<()>,
    ) -> Result<()> {
        array.check_owner(&self.ctx)?;
        self.ctx.health.check()?;
        let offsets = partitions.offsets(array.len())?;
        let inputs = array.buffers();
        let spans = array.spans();
        let groups = PartitionGroups::new(
            offsets.len() - 1,
            exec::max_partitions_for(&self.ctx, array.dtype()),
        );
        for i in 0..groups.count() {
            // Offsets stay absolute.
            let plan = Plan::of_values(groups.offsets(&offsets, i), array.dtype())?;
            crate::fit::check_dtype(&self.ctx, &plan, array.dtype())?;
            let scope = ErrorScopes::push(&self.ctx);
            let job = exec::Job::prepare(
                &self.ctx,
                array.dtype(),
                kernel_of(kind),
                plan,
                &inputs,
                &spans,
                None,
            )?;
            each(self.run_job(scope, job)?)?;
        }
        Ok(())
    }

    /// Submits a prepared job, waits for it and reads its partials back.
    fn run_job(&self, scope: ErrorScopes, job: exec::Job) -> Result<exec::FinalPartials> {
        let ctx = &*self.ctx;
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("gpulanes"),
            });
        job.encode(ctx, &mut encoder, 0..job.dispatch_count());
        job.encode_readback(&mut encoder);
        let index = ctx.queue.submit([encoder.finish()]);
        scope.check()?;
        ctx.wait_callback(&index, |done| job.read_async(done))
    }

    /// `op` over each partition of a device-resident array. Any number of
    /// partitions: over [`Engine::max_partitions`], consecutive groups are
    /// reduced one after another, with the same bits.
    ///
    /// Empty partitions and NaN follow the table in [`crate::op`]: an empty
    /// partition's `sum` and `count` are 0, its `mean`, `max` and `min` `None`;
    /// under [`NanPolicy::Propagate`] a NaN makes the value NaN, under
    /// [`NanPolicy::Ignore`] NaNs are skipped (an all-NaN `max`/`min` is
    /// `None`).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an array of another engine or of another
    /// dtype than float32 (use [`Engine::reduce_device_typed`]);
    /// [`Error::InvalidPartitions`] when `partitions` do not describe the
    /// input;
    /// [`Error::OutOfMemory`] when the device cannot hold the request (other
    /// requests go on); [`Error::DeviceLost`] once the device is lost;
    /// [`Error::Validation`], [`Error::Wait`] or [`Error::Internal`] for other
    /// GPU failures (see [`Error`]).
    pub fn reduce_device(
        &self,
        array: &DeviceArray,
        op: Op,
        partitions: &Partitions,
        nan: NanPolicy,
    ) -> Result<Reduction> {
        array.check_owner(&self.ctx)?;
        check_f32(array)?;
        if self.small_partitions(array.len(), partitions)?.is_some() {
            let r = self.reduce_device_typed(array, op, partitions, nan)?;
            return Ok(Reduction {
                op,
                values: r.values.into_iter().map(|v| v.map(scalar_to_f32)).collect(),
                counts: r.counts,
            });
        }
        let offsets = partitions.offsets(array.len())?;
        let inputs = array.buffers();
        let spans = array.spans();
        self.in_groups(op, &offsets, |group| {
            // A group's offsets stay absolute: its partitions are read where
            // they lie in the array.
            let plan = Plan::new(group)?;
            let scope = ErrorScopes::push(&self.ctx);
            self.record_and_run(scope, op, nan, plan, &inputs, &spans)
        })
    }

    /// Encodes a reduction of a device-resident array into `encoder` without
    /// submitting it, for apps that batch GPU work (and for timing with
    /// timestamp queries around it). Submit the encoder, then wait on the
    /// returned [`PendingReduction`]. Any number of partitions: over
    /// [`Engine::max_partitions`], consecutive groups are encoded one after
    /// another, with the same bits (every group's buffers are held until
    /// the result is read). On an error nothing is encoded.
    ///
    /// Empty partitions and NaN follow the table in [`crate::op`]: an empty
    /// partition's `sum` and `count` are 0, its `mean`, `max` and `min` `None`;
    /// under [`NanPolicy::Propagate`] a NaN makes the value NaN, under
    /// [`NanPolicy::Ignore`] NaNs are skipped (an all-NaN `max`/`min` is
    /// `None`).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an array of another engine or of another
    /// dtype than float32;
    /// [`Error::InvalidPartitions`] when `partitions` do not describe the
    /// input;
    /// [`Error::OutOfMemory`] when a group would pass the device's largest
    /// buffer; [`Error::DeviceLost`] once the device is lost. GPU failures of
    /// the submitted work come back from [`PendingReduction::wait`].
    pub fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        array: &DeviceArray,
        op: Op,
        partitions: &Partitions,
        nan: NanPolicy,
    ) -> Result<PendingReduction> {
        array.check_owner(&self.ctx)?;
        check_f32(array)?;
        self.ctx.health.check()?;
        let offsets = partitions.offsets(array.len())?;
        let inputs = array.buffers();
        self.encode_offsets(encoder, &inputs, &array.spans(), &offsets, op, nan)
    }

    /// Encodes `op` over checked `offsets` of the float32 items in `inputs`
    /// (buffers holding `spans`), in groups of at most
    /// [`Engine::max_partitions`] partitions; on an error nothing is
    /// encoded.
    fn encode_offsets(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &[&wgpu::Buffer],
        spans: &[crate::plan::Span],
        offsets: &[u64],
        op: Op,
        nan: NanPolicy,
    ) -> Result<PendingReduction> {
        let groups = PartitionGroups::new(offsets.len() - 1, self.max_partitions());
        // Offsets stay absolute, as in `reduce_device`.
        let plans = (0..groups.count()).map(|i| {
            let plan = Plan::new(groups.offsets(offsets, i))?;
            crate::fit::check(&self.ctx, &plan)?;
            Ok(plan)
        });
        let recorded = exec::record_all(
            &self.ctx,
            encoder,
            Dtype::F32,
            op,
            nan,
            plans,
            inputs,
            spans,
        )?;
        Ok(PendingReduction {
            op,
            groups: recorded,
        })
    }

    /// [`Engine::encode`] for a device-resident array of any dtype: encodes
    /// the reduction into `encoder` without submitting it; submit the
    /// encoder, then wait on the returned [`PendingTypedReduction`]. Any
    /// number of partitions, in consecutive groups (every group's buffers
    /// are held until the result is read). On an error nothing is encoded.
    ///
    /// Empty partitions and NaN follow the table in [`crate::op`], as for
    /// [`Engine::reduce_device_typed`] (the same bits).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an array of another engine;
    /// [`Error::InvalidPartitions`] when `partitions` do not describe the
    /// input; [`Error::OutOfMemory`] when a group would pass the device's
    /// largest buffer; [`Error::DeviceLost`] once the device is lost. GPU
    /// failures of the submitted work, and integer overflow, come back from
    /// [`PendingTypedReduction::wait`].
    pub fn encode_typed(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        array: &DeviceArray,
        op: Op,
        partitions: &Partitions,
        nan: NanPolicy,
    ) -> Result<PendingTypedReduction> {
        array.check_owner(&self.ctx)?;
        self.ctx.health.check()?;
        let offsets = partitions.offsets(array.len())?;
        let inputs = array.buffers();
        let jobs = self.encode_typed_offsets(
            encoder,
            array.dtype(),
            &inputs,
            &array.spans(),
            &offsets,
            op,
        )?;
        Ok(PendingTypedReduction { op, nan, jobs })
    }

    /// Prepares one job per group of partitions of `offsets` (in values)
    /// over `inputs` (buffers holding `spans`, in words) of `dtype`, then
    /// encodes them all; on an error nothing is encoded.
    fn encode_typed_offsets(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        dtype: Dtype,
        inputs: &[&wgpu::Buffer],
        spans: &[crate::plan::Span],
        offsets: &[u64],
        op: Op,
    ) -> Result<Vec<exec::Job>> {
        let ctx = &*self.ctx;
        let groups = PartitionGroups::new(offsets.len() - 1, exec::max_partitions_for(ctx, dtype));
        let jobs = (0..groups.count())
            .map(|i| {
                // Offsets stay absolute.
                let plan = Plan::of_values(groups.offsets(offsets, i), dtype)?;
                crate::fit::check_dtype(ctx, &plan, dtype)?;
                let kernel = kernel_of(StateKind::for_op(op));
                exec::Job::prepare(ctx, dtype, kernel, plan, inputs, spans, None)
            })
            .collect::<Result<Vec<_>>>()?;
        for job in &jobs {
            job.encode(ctx, encoder, 0..job.dispatch_count());
            job.encode_readback(encoder);
        }
        Ok(jobs)
    }

    /// `op` over a 1-D view (any stride).
    ///
    /// Empty partitions and NaN follow the table in [`crate::op`]: an empty
    /// partition's `sum` and `count` are 0, its `mean`, `max` and `min` `None`;
    /// under [`NanPolicy::Propagate`] a NaN makes the value NaN, under
    /// [`NanPolicy::Ignore`] NaNs are skipped (an all-NaN `max`/`min` is
    /// `None`).
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when the device cannot hold the request (other
    /// requests go on); [`Error::DeviceLost`] once the device is lost;
    /// [`Error::Validation`], [`Error::Wait`] or [`Error::Internal`] for other
    /// GPU failures (see [`Error`]).
    pub fn reduce_view(&self, view: ArrayView1<f32>, op: Op, nan: NanPolicy) -> Result<Reduction> {
        match view.as_slice() {
            Some(s) => self.reduce_partitions(s, op, &Partitions::Whole, nan),
            None => self.reduce_partitions(&view.to_vec(), op, &Partitions::Whole, nan),
        }
    }

    /// `op` along `axis` of a 2-D view: `Axis(1)` reduces each row (one
    /// result per row), `Axis(0)` each column (one result per column).
    ///
    /// An axis of length 0 gives one empty partition per lane (see
    /// [`crate::op`] for empty partitions and NaN).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an axis other than 0 or 1;
    /// [`Error::OutOfMemory`] when the device cannot hold the request (other
    /// requests go on); [`Error::DeviceLost`] once the device is lost;
    /// [`Error::Validation`], [`Error::Wait`] or [`Error::Internal`] for other
    /// GPU failures (see [`Error`]).
    pub fn reduce_axis(
        &self,
        view: ArrayView2<f32>,
        axis: Axis,
        op: Op,
        nan: NanPolicy,
    ) -> Result<Reduction> {
        let (rows, cols) = view.dim();
        // Lay the reduced lanes out contiguously, then use equal partitions.
        let (lanes, lane_len) = match axis.index() {
            1 => (view.as_standard_layout().into_owned(), cols),
            0 => (view.t().as_standard_layout().into_owned(), rows),
            a => {
                return Err(Error::InvalidInput(format!(
                    "axis {a} out of range for a 2-D array (use 0 or 1)"
                )));
            }
        };
        let n_lanes = if axis.index() == 1 { rows } else { cols };
        let data = lanes.as_slice().expect("standard layout is contiguous");
        let offsets: Vec<u64> = (0..=n_lanes as u64).map(|i| i * lane_len as u64).collect();
        self.reduce_partitions(data, op, &Partitions::Offsets(offsets), nan)
    }

    /// `op` along `axis` of a 2-D view of any [`Element`] type, each value
    /// in its op's result type: `Axis(1)` one result per row, `Axis(0)` one
    /// per column. The reduced lanes are laid out contiguously (a copy
    /// unless the view already is, along rows).
    ///
    /// An axis of length 0 gives one empty partition per lane (see
    /// [`crate::op`] for empty partitions and NaN).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an axis other than 0 or 1;
    /// [`Error::Overflow`] for an integer sum outside int64;
    /// [`Error::OutOfMemory`] when the device cannot hold the request (other
    /// requests go on); [`Error::DeviceLost`] once the device is lost;
    /// [`Error::Validation`], [`Error::Wait`] or [`Error::Internal`] for other
    /// GPU failures (see [`Error`]).
    pub fn reduce_axis_typed<E: Element>(
        &self,
        view: ArrayView2<E>,
        axis: Axis,
        op: Op,
        nan: NanPolicy,
    ) -> Result<Reduction<Scalar>> {
        let (rows, cols) = view.dim();
        let transposed = view.t();
        let (lanes, lane_len, n_lanes) = match axis.index() {
            1 => (view.as_standard_layout(), cols, rows),
            0 => (transposed.as_standard_layout(), rows, cols),
            a => {
                return Err(Error::InvalidInput(format!(
                    "axis {a} out of range for a 2-D array (use 0 or 1)"
                )));
            }
        };
        let data = lanes.as_slice().expect("standard layout is contiguous");
        let offsets: Vec<u64> = (0..=n_lanes as u64).map(|i| i * lane_len as u64).collect();
        self.reduce_slice(data, op, &Partitions::Offsets(offsets), nan)
    }

    fn record_and_run(
        &self,
        scope: ErrorScopes,
        op: Op,
        nan: NanPolicy,
        plan: Plan,
        inputs: &[&wgpu::Buffer],
        spans: &[crate::plan::Span],
    ) -> Result<Reduction> {
        let ctx = &*self.ctx;
        ctx.health.check()?;
        crate::fit::check(ctx, &plan)?;
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("gpulanes"),
            });
        let recorded = exec::record(ctx, &mut encoder, Dtype::F32, op, nan, plan, inputs, spans)?;
        run(ctx, scope, encoder, recorded)
    }
}

/// The kernel family that computes states of `kind`.
fn kernel_of(kind: StateKind) -> KernelOp {
    match kind {
        StateKind::Sum => KernelOp::Sum,
        StateKind::Max => KernelOp::Max,
        StateKind::Min => KernelOp::Min,
    }
}

/// The float32 entry points take float32 arrays only.
fn check_f32(array: &DeviceArray) -> Result<()> {
    if array.dtype() != Dtype::F32 {
        return Err(Error::InvalidInput(format!(
            "this DeviceArray holds {}: reduce it with Engine::reduce_device_typed",
            array.dtype()
        )));
    }
    Ok(())
}

/// Submits the encoder, waits for the GPU, maps the readback and finishes
/// the reduction. GPU errors become typed errors (see [`ErrorScopes`] and
/// `device_health`).
fn run(
    ctx: &Context,
    scope: ErrorScopes,
    encoder: wgpu::CommandEncoder,
    recorded: Recorded,
) -> Result<Reduction> {
    let index = ctx.queue.submit([encoder.finish()]);
    scope.check()?;
    wait_for(ctx, index, PendingReduction::one(recorded))
}

/// Blocks until `pending` (submitted as `index`) has its result.
fn wait_for(
    ctx: &Context,
    index: wgpu::SubmissionIndex,
    pending: PendingReduction,
) -> Result<Reduction> {
    ctx.wait_callback(&index, |done| pending.on_complete(&index, done))
}
