//! The engine's async forms. Each records and submits its reduction at
//! once, on the calling thread, which never waits for the GPU, and returns
//! a [`ReductionFuture`] that the readback callback settles. The engine's
//! poller thread (see `poller`) waits for the GPU, so the futures need no
//! runtime and no one else polling wgpu: await them on any executor.
//!
//! Results are the bits of the blocking forms: sums are exact, so the
//! reduction tree does not matter. Every partitioning runs through the
//! tree kernels (the blocking forms send many small partitions through the
//! group kernel instead, with the same bits); partitions over
//! [`Engine::max_partitions`] are encoded as consecutive groups into one
//! submission. Host data is copied to GPU memory before the method
//! returns, so the future borrows nothing.

use super::{Engine, PendingReduction, PendingTypedReduction, read_jobs};
use crate::context::ErrorScopes;
use crate::device_array::{DeviceArray, pooled_input};
use crate::dtype::{Dtype, Element, Scalar};
use crate::error::Result;
use crate::future::{Promise, ReductionFuture};
use crate::op::{NanPolicy, Op, Reduction};
use crate::partition::Partitions;
use crate::plan::Span;

/// The callback a readback settles.
type Done<R> = Box<dyn FnOnce(Result<R>) + Send>;

impl Engine {
    /// Async [`Engine::sum`]: the exact sum of `data`, rounded once to
    /// float32.
    ///
    /// **NaN policy: [`NanPolicy::Propagate`]**: any NaN gives NaN
    /// ([`Engine::reduce_partitions_async`] takes a policy).
    ///
    /// Empty input gives 0; `+inf` and `-inf` together give NaN.
    ///
    /// ```
    /// let engine = gpulanes::Engine::new()?;
    /// let total = pollster::block_on(engine.sum_async(&[1e8, 1.0, -1e8]))?;
    /// assert_eq!(total, 1.0);
    /// # Ok::<(), gpulanes::Error>(())
    /// ```
    ///
    /// # Errors
    /// From the future: [`Error::OutOfMemory`](crate::Error::OutOfMemory) when the device cannot hold
    /// the request (other requests go on); [`Error::DeviceLost`](crate::Error::DeviceLost) once the
    /// device is lost; [`Error::Validation`](crate::Error::Validation), [`Error::Wait`](crate::Error::Wait),
    /// [`Error::Thread`](crate::Error::Thread) or [`Error::Internal`](crate::Error::Internal) for other failures (see
    /// [`Error`](crate::Error)).
    pub fn sum_async(&self, data: &[f32]) -> ReductionFuture<f32> {
        self.partitions_async(
            data,
            Op::Sum,
            &Partitions::Whole,
            NanPolicy::Propagate,
            |r| Ok(r.value().unwrap_or(0.0)),
        )
    }

    /// Async [`Engine::reduce`]: `op` over the whole of `data`.
    ///
    /// **NaN policy: [`NanPolicy::Propagate`]**: any NaN gives NaN
    /// ([`Engine::reduce_partitions_async`] takes a policy).
    ///
    /// Empty input: `Some(0.0)` for `sum` and `count`, `None` for `mean`,
    /// `max` and `min`; any NaN gives NaN (see [`crate::op`]).
    ///
    /// # Errors
    /// From the future: as [`Engine::sum_async`].
    pub fn reduce_async(&self, data: &[f32], op: Op) -> ReductionFuture<Option<f32>> {
        self.partitions_async(data, op, &Partitions::Whole, NanPolicy::Propagate, |r| {
            Ok(r.value())
        })
    }

    /// Async [`Engine::reduce_partitions`]: `op` over each partition of
    /// `data`, any number of partitions.
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
    /// let data: Vec<f32> = (0..10_000).map(|i| i as f32).collect();
    /// let future = engine.reduce_partitions_async(&data, Op::Max, &Partitions::EqualSize(100), NanPolicy::Propagate);
    /// drop(data); // the future borrows nothing
    /// let r = pollster::block_on(future)?;
    /// assert_eq!(r.values[0], Some(99.0));
    /// # Ok::<(), gpulanes::Error>(())
    /// ```
    ///
    /// # Errors
    /// From the future: [`Error::InvalidPartitions`](crate::Error::InvalidPartitions) when `partitions` do
    /// not describe the input; otherwise as [`Engine::sum_async`].
    pub fn reduce_partitions_async(
        &self,
        data: &[f32],
        op: Op,
        partitions: &Partitions,
        nan: NanPolicy,
    ) -> ReductionFuture<Reduction> {
        self.partitions_async(data, op, partitions, nan, Ok)
    }

    /// Async [`Engine::reduce_device`]: `op` over each partition of a
    /// device-resident float32 array (the GPU work holds the array's
    /// buffers; the array may be dropped before the future settles).
    ///
    /// Empty partitions and NaN follow the table in [`crate::op`]: an empty
    /// partition's `sum` and `count` are 0, its `mean`, `max` and `min` `None`;
    /// under [`NanPolicy::Propagate`] a NaN makes the value NaN, under
    /// [`NanPolicy::Ignore`] NaNs are skipped (an all-NaN `max`/`min` is
    /// `None`).
    ///
    /// # Errors
    /// From the future: [`Error::InvalidInput`](crate::Error::InvalidInput) for an array of another
    /// engine or of another dtype than float32 (use
    /// [`Engine::reduce_device_typed_async`]); [`Error::InvalidPartitions`](crate::Error::InvalidPartitions)
    /// when `partitions` do not describe the array; otherwise as
    /// [`Engine::sum_async`].
    pub fn reduce_device_async(
        &self,
        array: &DeviceArray,
        op: Op,
        partitions: &Partitions,
        nan: NanPolicy,
    ) -> ReductionFuture<Reduction> {
        let scope = ErrorScopes::push(&self.ctx);
        let mut encoder = self.command_encoder();
        match self.encode(&mut encoder, array, op, partitions, nan) {
            Ok(pending) => self.launch(scope, encoder, read_pending(pending), Ok),
            Err(e) => ReductionFuture::ready(Err(e)),
        }
    }

    /// Async [`Engine::reduce_slice`]: `op` over each partition of `data`,
    /// of any [`Element`] type, each value in its op's result type.
    ///
    /// Empty partitions and NaN follow the table in [`crate::op`]: an empty
    /// partition's `sum` and `count` are 0, its `mean`, `max` and `min` `None`;
    /// under [`NanPolicy::Propagate`] a NaN makes the value NaN, under
    /// [`NanPolicy::Ignore`] NaNs are skipped (an all-NaN `max`/`min` is
    /// `None`).
    ///
    /// # Errors
    /// From the future: [`Error::InvalidPartitions`](crate::Error::InvalidPartitions) when `partitions` do
    /// not describe the input; [`Error::Overflow`](crate::Error::Overflow) for an integer sum
    /// outside int64; otherwise as [`Engine::sum_async`].
    pub fn reduce_slice_async<E: Element>(
        &self,
        data: &[E],
        op: Op,
        partitions: &Partitions,
        nan: NanPolicy,
    ) -> ReductionFuture<Reduction<Scalar>> {
        let words: &[u32] = bytemuck::cast_slice(data);
        let launched = self.ready_to_launch().and_then(|()| {
            let offsets = partitions.offsets(data.len() as u64)?;
            let scope = ErrorScopes::push(&self.ctx);
            let (buffers, spans) =
                pooled_input(&self.ctx, words.len() as u64, Some(words), "gpulanes input");
            // Handles to the pooled buffers, which the GPU work keeps.
            let handles: Vec<wgpu::Buffer> = buffers.iter().map(|b| (**b).clone()).collect();
            let inputs: Vec<&wgpu::Buffer> = handles.iter().collect();
            self.typed_async(scope, E::DTYPE, &inputs, &spans, &offsets, op, nan, buffers)
        });
        launched.unwrap_or_else(|e| ReductionFuture::ready(Err(e)))
    }

    /// Async [`Engine::reduce_device_typed`]: `op` over each partition of a
    /// device-resident array of any dtype, each value in its op's result
    /// type.
    ///
    /// Empty partitions and NaN follow the table in [`crate::op`]: an empty
    /// partition's `sum` and `count` are 0, its `mean`, `max` and `min` `None`;
    /// under [`NanPolicy::Propagate`] a NaN makes the value NaN, under
    /// [`NanPolicy::Ignore`] NaNs are skipped (an all-NaN `max`/`min` is
    /// `None`).
    ///
    /// # Errors
    /// From the future: [`Error::InvalidInput`](crate::Error::InvalidInput) for an array of another
    /// engine; [`Error::InvalidPartitions`](crate::Error::InvalidPartitions) when `partitions` do not
    /// describe the array; [`Error::Overflow`](crate::Error::Overflow) for an integer sum outside
    /// int64; otherwise as [`Engine::sum_async`].
    pub fn reduce_device_typed_async(
        &self,
        array: &DeviceArray,
        op: Op,
        partitions: &Partitions,
        nan: NanPolicy,
    ) -> ReductionFuture<Reduction<Scalar>> {
        let launched = self.ready_to_launch().and_then(|()| {
            array.check_owner(&self.ctx)?;
            let offsets = partitions.offsets(array.len())?;
            let scope = ErrorScopes::push(&self.ctx);
            let inputs = array.buffers();
            let spans = array.spans();
            self.typed_async(scope, array.dtype(), &inputs, &spans, &offsets, op, nan, ())
        });
        launched.unwrap_or_else(|e| ReductionFuture::ready(Err(e)))
    }

    /// The float32 host forms: uploads `data` whole, encodes its groups of
    /// partitions into one submission and settles the future with
    /// `finish` of the result.
    fn partitions_async<T: Send + 'static>(
        &self,
        data: &[f32],
        op: Op,
        partitions: &Partitions,
        nan: NanPolicy,
        finish: impl FnOnce(Reduction) -> Result<T> + Send + 'static,
    ) -> ReductionFuture<T> {
        let launched = self.ready_to_launch().and_then(|()| {
            let offsets = partitions.offsets(data.len() as u64)?;
            let scope = ErrorScopes::push(&self.ctx);
            let (buffers, spans) =
                pooled_input(&self.ctx, data.len() as u64, Some(data), "gpulanes input");
            let inputs: Vec<&wgpu::Buffer> = buffers.iter().map(|b| &**b).collect();
            let mut encoder = self.command_encoder();
            let pending = self.encode_offsets(&mut encoder, &inputs, &spans, &offsets, op, nan)?;
            drop(inputs);
            Ok(
                self.launch(scope, encoder, read_pending(pending), move |r| {
                    // The input buffers return to the pool only once the GPU
                    // is done with them.
                    drop(buffers);
                    finish(r)
                }),
            )
        });
        launched.unwrap_or_else(|e| ReductionFuture::ready(Err(e)))
    }

    /// Prepares one job per group of partitions of `offsets` (in values)
    /// over `inputs` of `dtype`, encodes them into one submission and
    /// returns the future of their finished values; `keep` (the input
    /// buffers) is held until the GPU is done. On an error nothing is
    /// submitted.
    #[allow(clippy::too_many_arguments)]
    fn typed_async<K: Send + 'static>(
        &self,
        scope: ErrorScopes,
        dtype: Dtype,
        inputs: &[&wgpu::Buffer],
        spans: &[Span],
        offsets: &[u64],
        op: Op,
        nan: NanPolicy,
        keep: K,
    ) -> Result<ReductionFuture<Reduction<Scalar>>> {
        let mut encoder = self.command_encoder();
        let jobs = self.encode_typed_offsets(&mut encoder, dtype, inputs, spans, offsets, op)?;
        let read = move |_: &wgpu::SubmissionIndex, done: Done<Reduction<Scalar>>| {
            read_jobs(jobs, op, nan, done)
        };
        Ok(self.launch(scope, encoder, read, move |r| {
            drop(keep);
            Ok(r)
        }))
    }

    /// The device check every async form makes first.
    fn ready_to_launch(&self) -> Result<()> {
        self.ctx.health.check()
    }

    fn command_encoder(&self) -> wgpu::CommandEncoder {
        self.ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("gpulanes"),
            })
    }

    /// Submits `encoder` (whose commands `scope` watches) and returns the
    /// future its readback settles: `read` gets the submission's index and
    /// the callback for the readback, `finish` turns what the callback gets
    /// into the result.
    fn launch<R: Send + 'static, T: Send + 'static>(
        &self,
        scope: ErrorScopes,
        encoder: wgpu::CommandEncoder,
        read: impl FnOnce(&wgpu::SubmissionIndex, Done<R>),
        finish: impl FnOnce(R) -> Result<T> + Send + 'static,
    ) -> ReductionFuture<T> {
        let index = self.ctx.queue.submit([encoder.finish()]);
        if let Err(e) = scope.check() {
            return ReductionFuture::ready(Err(e));
        }
        self.settle_on_readback(index, read, finish)
    }

    /// The future of a readback of submission `index` (see
    /// [`Engine::launch`]); the poller waits for the submission, which
    /// runs the readback's callback.
    fn settle_on_readback<R: Send + 'static, T: Send + 'static>(
        &self,
        index: wgpu::SubmissionIndex,
        read: impl FnOnce(&wgpu::SubmissionIndex, Done<R>),
        finish: impl FnOnce(R) -> Result<T> + Send + 'static,
    ) -> ReductionFuture<T> {
        let (future, slot) = ReductionFuture::pending();
        let promise = Promise::new(&slot);
        read(&index, Box::new(move |r| promise.keep(r.and_then(finish))));
        let settled = slot.clone();
        let watched = self.ctx.watch(
            index,
            Box::new(move |waited| {
                // After a successful wait the readback callback has run or
                // runs soon, on whichever thread polled it out (its promise
                // settles the future if wgpu drops it instead); a failed
                // wait is this request's error.
                if let Err(e) = waited {
                    settled.settle(Err(e));
                }
            }),
        );
        if let Err(e) = watched {
            slot.settle(Err(e));
        }
        future
    }
}

impl PendingReduction {
    /// The async form of [`PendingReduction::wait`]: a future of the
    /// result once the GPU has finished submission `index` (what
    /// `queue.submit` returned for the encoder holding this reduction).
    /// The engine's poller thread waits for the GPU; nothing blocks the
    /// caller.
    ///
    /// Empty partitions and NaN follow the table in [`crate::op`], as for
    /// [`PendingReduction::wait`].
    ///
    /// # Errors
    /// From the future: as [`PendingReduction::wait`], and
    /// [`Error::Thread`](crate::Error::Thread) when the poller thread cannot be started.
    pub fn wait_async(
        self,
        engine: &Engine,
        index: wgpu::SubmissionIndex,
    ) -> ReductionFuture<Reduction> {
        if let Err(e) = engine.ready_to_launch() {
            return ReductionFuture::ready(Err(e));
        }
        engine.settle_on_readback(index, read_pending(self), Ok)
    }
}

impl PendingTypedReduction {
    /// The async form of [`PendingTypedReduction::wait`]: a future of the
    /// result once the GPU has finished submission `index`. The engine's
    /// poller thread waits for the GPU; nothing blocks the caller.
    ///
    /// Empty partitions and NaN follow the table in [`crate::op`], as for
    /// [`PendingTypedReduction::wait`].
    ///
    /// # Errors
    /// From the future: as [`PendingTypedReduction::wait`], and
    /// [`Error::Thread`](crate::Error::Thread) when the poller thread cannot be started.
    pub fn wait_async(
        self,
        engine: &Engine,
        index: wgpu::SubmissionIndex,
    ) -> ReductionFuture<Reduction<Scalar>> {
        if let Err(e) = engine.ready_to_launch() {
            return ReductionFuture::ready(Err(e));
        }
        let (op, nan, jobs) = (self.op, self.nan, self.jobs);
        let read = move |_: &wgpu::SubmissionIndex, done: Done<Reduction<Scalar>>| {
            read_jobs(jobs, op, nan, done)
        };
        engine.settle_on_readback(index, read, Ok)
    }
}

/// The readback of an encoded float32 reduction.
fn read_pending(pending: PendingReduction) -> impl FnOnce(&wgpu::SubmissionIndex, Done<Reduction>) {
    move |index, done| pending.on_complete(index, done)
}
