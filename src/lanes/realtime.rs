//! The real-time lane's side of the dispatcher: a group of queued
//! requests becomes one coalesced submission (one upload, one segmented
//! dispatch per kernel family, one readback), and its results are split
//! back into each request's handle. Requests of one kernel family and one
//! dtype share a job; each request's partitions keep their own reduction
//! tree, so a coalesced result has the same bits as the request run alone. A group shape seen before reuses the job prepared for
//! it (see `job_cache`).

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::answer::Answer;
use super::job_cache::{JobShape, PreparedJob};
use super::poller::track;
use super::request::{HostValues, Lane};
use super::shared::{Shared, busy_for, lock, mark_done, release_slot, wake_all};
use crate::context::ErrorScopes;
use crate::device_array::{pooled_input, write_floats};
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::exec::{FinalPartials, Job, max_partitions_for};
use crate::fit::Footprint;
use crate::op::{KernelOp, NanPolicy, Op};
use crate::plan::Plan;

/// A queued real-time request.
pub(super) struct RtEntry {
    pub data: HostValues,
    /// Partition offsets in values.
    pub offsets: Vec<u64>,
    pub op: Op,
    pub nan: NanPolicy,
    pub deadline: Option<Instant>,
    /// What sizes its share of a coalesced group's partials and tables.
    pub footprint: Footprint,
    pub enqueued: Instant,
    pub answer: Answer,
    /// See [`Request::inject_failure`](super::Request::inject_failure).
    pub inject_failure: bool,
}

impl Drop for RtEntry {
    /// A request dropped without an answer fails with [`Error::Shutdown`]
    /// instead of leaving its handle waiting forever: the dispatcher died
    /// (a bug in gpulanes), or a readback's callback was dropped uncalled.
    /// Every normal path settles the request first; then this does nothing.
    fn drop(&mut self) {
        if let Some(w) = self.answer.settle(Err(Error::Shutdown)) {
            w.wake();
        }
    }
}

impl RtEntry {
    /// Bytes of its values.
    pub fn bytes(&self) -> u64 {
        self.data.words().len() as u64 * 4
    }

    /// Partitions.
    pub fn partitions(&self) -> u64 {
        self.offsets.len() as u64 - 1
    }

    /// The partition offsets in 32-bit words, what plans count.
    fn word_offsets(&self) -> impl Iterator<Item = u64> + '_ {
        let w = self.data.dtype().words();
        self.offsets.iter().map(move |o| o * w)
    }
}

/// Checks a real-time request's partitions (`offsets`, in values of
/// `dtype`) before it is queued: a valid plan, no more partitions than one
/// reduction may have on this device (a group is one reduction; a request
/// with no items needs no segment table; the batch lane takes any number),
/// and buffers that fit the device (else [`Error::OutOfMemory`], for this
/// request alone). Returns what sizes the request's share of a group's
/// buffers.
pub(super) fn check_realtime_plan(sh: &Shared, offsets: &[u64], dtype: Dtype) -> Result<Footprint> {
    let plan = Plan::of_values(offsets, dtype)?;
    let partitions = offsets.len() as u64 - 1;
    let limit = max_partitions_for(&sh.ctx, dtype);
    if !plan.levels.is_empty() && partitions > limit {
        return Err(Error::InvalidPartitions(format!(
            "a real-time request of {partitions} partitions exceeds this device's limit of {limit} per reduction; the batch lane takes any number"
        )));
    }
    let footprint = Footprint::of(&plan, dtype);
    footprint.check(&sh.ctx)?;
    Ok(footprint)
}

/// One coalesced submission for a group of real-time requests.
pub(super) fn run_realtime(sh: &Arc<Shared>, reqs: Vec<RtEntry>) {
    // A lost device: the group fails without touching it.
    if let Err(lost) = sh.ctx.health.check() {
        fail_all(sh, reqs, &lost);
        release_slot(sh, Lane::RealTime, Duration::ZERO);
        return;
    }
    let now = Instant::now();
    // Past their deadline already: not run where late results are
    // rejected (they would fail anyway); run and delivered late otherwise.
    let reject = sh.cfg.reject_late;
    let (live, expired): (Vec<_>, Vec<_>) = reqs
        .into_iter()
        .partition(|r| !reject || r.deadline.is_none_or(|d| d > now));
    if !expired.is_empty() {
        let mut m = lock(&sh.metrics);
        let mut wakeups = Vec::new();
        for r in expired {
            let late_by = now - r.deadline.expect("expired has a deadline");
            // A request cancelled meanwhile counts as cancelled only.
            if let Some(w) = r.answer.settle(Err(Error::DeadlineExceeded { late_by })) {
                m.rt.deadline_misses += 1;
                m.rt.failed += 1;
                wakeups.push(w);
            }
        }
        drop(m);
        wake_all(wakeups);
    }
    // One job per kernel family and dtype; requests keep their own
    // partition ranges.
    let mut groups: Vec<(Family, Vec<RtEntry>)> = Vec::new();
    for r in live {
        let family = (r.op.kernel(), r.data.dtype());
        match groups.iter_mut().find(|(f, _)| *f == family) {
            Some((_, g)) => g.push(r),
            None => groups.push((family, vec![r])),
        }
    }
    if groups.is_empty() {
        release_slot(sh, Lane::RealTime, Duration::ZERO);
        return;
    }
    let ctx = &sh.ctx;
    let mut encoder = ctx
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("gpulanes real-time"),
        });
    let scope = ErrorScopes::push(ctx);
    let mut prepared = Vec::new();
    for (family, group) in groups {
        prepare_isolated(sh, family, group, &mut prepared);
    }
    let mut total_bytes = 0u64;
    for (_, prepared_job, group) in &prepared {
        let job = &prepared_job.job;
        job.encode(ctx, &mut encoder, 0..job.dispatch_count());
        job.encode_readback(&mut encoder);
        total_bytes += group.iter().map(RtEntry::bytes).sum::<u64>();
    }
    if prepared.is_empty() {
        let _ = scope.check();
        release_slot(sh, Lane::RealTime, Duration::ZERO);
        return;
    }
    let command_buffer = encoder.finish();
    // Preparation only: on drivers whose submit blocks while the queue
    // executes (lavapipe), the submit call itself is waiting, not working.
    let prepared_in = now.elapsed();
    let index = ctx.queue.submit([command_buffer]);
    let submitted = Instant::now();
    if let Err(e) = scope.check() {
        for (_, _, group) in prepared {
            fail_all(sh, group, &e);
        }
        release_slot(sh, Lane::RealTime, Duration::ZERO);
        return;
    }
    let busy = sh.rt_fixed.saturating_add(busy_for(sh, total_bytes));
    {
        let mut st = lock(&sh.state);
        st.pred.predict(submitted, busy);
        let cap = sh.quantum.saturating_sub(sh.lead) / 2;
        st.pred.observe_rt_prep(prepared_in, cap);
    }
    lock(&sh.metrics).rt.on_submit(total_bytes, submitted);
    let remaining = Arc::new(AtomicUsize::new(prepared.len()));
    for (
        shape,
        PreparedJob {
            job,
            input,
            single_buffer,
        },
        group,
    ) in prepared
    {
        let sh2 = sh.clone();
        let remaining = remaining.clone();
        job.read_async_keep(move |result, job| {
            // Kept before the handles complete (the results are already
            // read out), so a client that resubmits at once finds it.
            if result.is_ok() {
                let kept = PreparedJob {
                    job,
                    input,
                    single_buffer,
                };
                sh2.jobs.keep(shape, kept);
            }
            finish_group(&sh2, group, result);
            if remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                if sh2.timer.is_none() {
                    mark_done(&sh2, submitted);
                }
                release_slot(&sh2, Lane::RealTime, busy);
            }
        });
    }
    track(sh, index, None);
}

/// A group's job, ready to encode, with its requests.
type Prepared = (JobShape, PreparedJob, Vec<RtEntry>);

/// What requests must share to be one job: the kernel family and dtype.
type Family = (KernelOp, Dtype);

/// Prepares `group` as one job in its own error scopes, so that an
/// allocation or validation failure is known to be this group's. Where a
/// group of several requests fails, each request is prepared alone, in its
/// own scopes: the one that fails fails alone, and the others run (in jobs
/// of their own, with the bits they would have had together).
fn prepare_isolated(sh: &Shared, family: Family, group: Vec<RtEntry>, into: &mut Vec<Prepared>) {
    let attempt = |group: &[RtEntry]| {
        let scope = ErrorScopes::push(&sh.ctx);
        let prepared = prepare_group(sh, family, group);
        // Popped whatever happened, so the scopes stay balanced.
        let checked = scope.check();
        let (shape, job) = prepared?;
        checked?;
        Ok::<_, Error>((shape, job))
    };
    match attempt(&group) {
        Ok((shape, job)) => into.push((shape, job, group)),
        Err(e) if group.len() == 1 => fail_all(sh, group, &e),
        Err(_) => {
            for r in group {
                let one = vec![r];
                match attempt(&one) {
                    Ok((shape, job)) => into.push((shape, job, one)),
                    Err(e) => fail_all(sh, one, &e),
                }
            }
        }
    }
}

fn fail_all(sh: &Shared, group: Vec<RtEntry>, e: &Error) {
    let mut m = lock(&sh.metrics);
    let mut wakeups = Vec::new();
    for r in group {
        if let Some(w) = r.answer.settle(Err(e.clone())) {
            m.rt.failed += 1;
            wakeups.push(w);
        }
    }
    drop(m);
    wake_all(wakeups);
}

/// Concatenates a group's data and partitions, uploads it and prepares one
/// job, or takes one kept for a group of the same shape (then only the data
/// is uploaded).
fn prepare_group(
    sh: &Shared,
    (kernel, dtype): Family,
    group: &[RtEntry],
) -> Result<(JobShape, PreparedJob)> {
    let ctx = &sh.ctx;
    // A group of one request (the common case at low rates) is uploaded
    // from the request's own data, not a copy. Offsets count words.
    let (data, offsets): (Cow<'_, [u32]>, Vec<u64>) = match group {
        [one] => (
            Cow::Borrowed(one.data.words()),
            one.word_offsets().collect(),
        ),
        _ => {
            let total: usize = group.iter().map(|r| r.data.words().len()).sum();
            let mut data = Vec::with_capacity(total);
            let mut offsets = vec![0u64];
            for r in group {
                let base = data.len() as u64;
                offsets.extend(r.word_offsets().skip(1).map(|o| o + base));
                data.extend_from_slice(r.data.words());
            }
            (Cow::Owned(data), offsets)
        }
    };
    if group.iter().any(|r| r.inject_failure) {
        // A real validation error in the group's scopes: MAP_READ goes
        // only with COPY_DST.
        let _ = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("gpulanes injected failure"),
            size: 16,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
    }
    let shape = JobShape {
        kernel,
        dtype,
        offsets,
    };
    if let Some(kept) = sh.jobs.take(&shape) {
        write_floats(&ctx.queue, &kept.input, &data);
        return Ok((shape, kept));
    }
    let plan = Plan::new(&shape.offsets)?;
    let (mut buffers, spans) = pooled_input(
        ctx,
        data.len() as u64,
        Some(&data),
        "gpulanes real-time input",
    );
    let inputs: Vec<&wgpu::Buffer> = buffers.iter().map(|b| &**b).collect();
    let job = Job::prepare(ctx, dtype, kernel, plan, &inputs, &spans, None)?;
    // Inputs over one buffer (only under tiny buffer caps) keep the rest
    // alive inside the job and are never reused.
    let single_buffer = buffers.len() == 1;
    let input = buffers.remove(0);
    let job = job.keeping(buffers);
    Ok((
        shape,
        PreparedJob {
            job,
            input,
            single_buffer,
        },
    ))
}

/// Splits a group's final partials back into per-request results (each
/// finished alone: one request's integer overflow fails that request only).
fn finish_group(sh: &Shared, group: Vec<RtEntry>, result: Result<FinalPartials>) {
    let now = Instant::now();
    let mut m = lock(&sh.metrics);
    let mut wakeups = Vec::new();
    let mut first = 0usize;
    for r in group {
        let k = r.offsets.len() - 1;
        let late = r.deadline.is_some_and(|d| now > d);
        let outcome = match &result {
            Err(e) => Err(e.clone()),
            Ok(f) => match r.deadline {
                Some(d) if late && sh.cfg.reject_late => {
                    Err(Error::DeadlineExceeded { late_by: now - d })
                }
                _ => f.finish_range(r.op, r.nan, first..first + k),
            },
        };
        first += k;
        // Counted only when this completes the request: one cancelled
        // meanwhile counts as cancelled alone. Metrics first, so a client
        // woken by its result sees them; wake-ups after the lock is gone.
        // A late result delivered (`reject_late` off) still counts as a
        // deadline miss: lateness is never silent in the metrics.
        match outcome {
            Ok(v) => {
                if let Some(w) = r.answer.settle(Ok(v)) {
                    m.rt.on_done(now - r.enqueued, r.bytes(), now);
                    m.rt.deadline_misses += u64::from(late);
                    wakeups.push(w);
                }
            }
            Err(e) => {
                let missed = matches!(e, Error::DeadlineExceeded { .. });
                if let Some(w) = r.answer.settle(Err(e)) {
                    m.rt.failed += 1;
                    m.rt.deadline_misses += u64::from(missed);
                    wakeups.push(w);
                }
            }
        }
    }
    drop(m);
    wake_all(wakeups);
}
