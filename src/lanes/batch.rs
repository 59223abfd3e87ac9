//! The batch lane's side of the dispatcher: a batch job submitted one chunk
//! (one element-pass dispatch, sized to the quantum) at a time.
//!
//! A job with more partitions than one reduction may have on this device
//! runs as consecutive groups of partitions (see `groups`), one job after
//! the other, each chunked the same way, with the same bits as the job run
//! alone by [`Engine::reduce_partitions`](crate::Engine::reduce_partitions)
//! or [`Engine::reduce_device`](crate::Engine::reduce_device).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::handle::Slot;
use super::{Input, Lane, Shared, busy_for, lock, mark_done, release_slot, track};
use crate::device_array::pooled_input;
use crate::error::Result;
use crate::exec::{Job, max_partitions};
use crate::groups::{Gather, PartitionGroups};
use crate::op::{NanPolicy, Op, Reduction};
use crate::plan::{Plan, Span};
use crate::pool::PooledBuffer;

/// Batch chunks per chunk timed with GPU timestamps.
const TIMED_EVERY: u64 = 4;

/// A queued batch job.
pub(super) struct BatchEntry {
    pub input: Input,
    offsets: Vec<u64>,
    op: Op,
    nan: NanPolicy,
    enqueued: Instant,
    pub slot: Arc<Slot<Reduction>>,
    /// Groups of at most the device's per-reduction limit of partitions.
    groups: PartitionGroups,
    /// The group to activate next.
    next_group: usize,
    /// Device buffers for host input, filled chunk by chunk and shared by
    /// every group's job (made when the first group starts).
    host: Option<Arc<HostInput>>,
    /// The groups' results until the last one is in.
    results: Arc<Mutex<Gather>>,
    /// The group being submitted chunk by chunk.
    active: Option<ActiveGroup>,
}

/// Device buffers holding a job's host input.
struct HostInput {
    buffers: Vec<PooledBuffer>,
    spans: Vec<Span>,
}

/// One group of a batch job being submitted chunk by chunk.
struct ActiveGroup {
    job: Job,
    /// Index of the group within the job.
    index: usize,
    /// The next dispatch to submit.
    next: usize,
}

impl BatchEntry {
    /// A job over `input` with checked `offsets`, to run in groups of at
    /// most `max_partitions` partitions.
    pub fn new(
        sh: &Shared,
        input: Input,
        offsets: Vec<u64>,
        op: Op,
        nan: NanPolicy,
        slot: Arc<Slot<Reduction>>,
    ) -> Self {
        let groups = PartitionGroups::new(offsets.len() - 1, max_partitions(&sh.ctx));
        BatchEntry {
            input,
            offsets,
            op,
            nan,
            enqueued: Instant::now(),
            slot,
            groups,
            next_group: 0,
            host: None,
            results: Arc::new(Mutex::new(Gather::new(op, groups.count()))),
            active: None,
        }
    }

    fn fail(&self, sh: &Shared, e: crate::error::Error) {
        if self.slot.complete(Err(e)) {
            lock(&sh.metrics).batch.failed += 1;
        }
    }
}

/// Submits the next chunk of a batch job; returns the entry if unfinished.
pub(super) fn run_batch_chunk(sh: &Arc<Shared>, mut entry: BatchEntry) -> Option<BatchEntry> {
    if entry.slot.is_settled() {
        return None; // cancelled (or a group failed): stop here, buffers are released
    }
    let ctx = &sh.ctx;
    if entry.active.is_none() {
        match activate(sh, &mut entry) {
            Ok(a) => entry.active = Some(a),
            Err(e) => {
                entry.fail(sh, e);
                return None;
            }
        }
    }
    if entry
        .active
        .as_ref()
        .is_some_and(|a| a.job.dispatch_count() == 0)
    {
        // No items in this group (an empty input, or only empty
        // partitions): nothing to run, and its result is ready now.
        let active = entry.active.take().expect("activated");
        return finish_group(sh, entry, active);
    }
    let active = entry.active.as_mut().expect("activated");
    let job = &active.job;
    let total = job.dispatch_count();
    // One element-pass dispatch per chunk; the small upper levels and the
    // readback ride along with the last one.
    let mut end = active.next + 1;
    while end < total && job.input_window(end).is_none() {
        end += 1;
    }
    let last = end >= total;
    let scope = crate::engine::ErrorScopes::push(&ctx.device);
    let mut chunk_bytes = 0u64;
    for i in active.next..end {
        if let Some((buffer, range)) = job.input_window(i) {
            chunk_bytes += range.end - range.start;
            if let (Input::Host(data), Some(host)) = (&entry.input, &entry.host) {
                // Upload just this chunk's window, right before it runs.
                let span = host.spans[buffer];
                let first = span.base_item + range.start / 4;
                let end_item = (span.base_item + range.end / 4).min(span.base_item + span.items);
                if end_item > first {
                    ctx.queue.write_buffer(
                        &host.buffers[buffer],
                        range.start,
                        bytemuck::cast_slice(&data[first as usize..end_item as usize]),
                    );
                }
            }
        }
    }
    let mut encoder = ctx
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("gpulanes batch chunk"),
        });
    // One chunk in TIMED_EVERY carries timestamps: enough observations for
    // the throughput average, and on lavapipe each timed chunk's extra
    // passes, resolve and readback cost as much as a small chunk's work.
    let chunk_no = sh.chunks.fetch_add(1, Ordering::Relaxed);
    let timed = if chunk_no.is_multiple_of(TIMED_EVERY) {
        sh.timer.as_ref().and_then(|t| t.claim())
    } else {
        None
    };
    if let Some(t) = &timed {
        t.begin(&mut encoder);
    }
    job.encode(ctx, &mut encoder, active.next..end);
    if let Some(t) = &timed {
        t.end(&mut encoder);
    }
    if last {
        job.encode_readback(&mut encoder);
    }
    active.next = end;
    let index = ctx.queue.submit([encoder.finish()]);
    let submitted = Instant::now();
    if let Err(e) = scope.check() {
        entry.fail(sh, e);
        return None;
    }
    let predicted = busy_for(sh, chunk_bytes);
    {
        let mut st = lock(&sh.state);
        st.batch_in_flight += 1;
        st.pred.predict(submitted, predicted);
    }
    lock(&sh.metrics).batch.on_submit(chunk_bytes, submitted);
    let sh2 = sh.clone();
    // The chunk's GPU time from its timestamps where the device has them;
    // otherwise from when completions arrive (coarser: callbacks come in
    // bursts, and real-time work runs between chunks).
    let wall_clock_observation = sh.timer.is_none();
    if let Some(t) = timed {
        let sh3 = sh.clone();
        t.read(move |gpu_time| {
            if let Some(d) = gpu_time {
                lock(&sh3.throughput).observe(chunk_bytes, d, true);
            }
        });
    }
    ctx.queue.on_submitted_work_done(move || {
        if wall_clock_observation {
            let busy = mark_done(&sh2, submitted);
            lock(&sh2.throughput).observe(chunk_bytes, busy, false);
        }
        release_slot(&sh2, Lane::Batch, predicted);
    });
    let result = if last {
        let active = entry.active.take().expect("active");
        finish_group(sh, entry, active)
    } else {
        Some(entry)
    };
    track(sh, index);
    result
}

/// Reads a group's result back once its last chunk is done (at once for a
/// group with nothing to run). The last group's readback completes the
/// job's handle with every group's results in order; a failed readback
/// fails it at once. Returns the entry while groups remain to run.
fn finish_group(sh: &Arc<Shared>, entry: BatchEntry, active: ActiveGroup) -> Option<BatchEntry> {
    let (op, nan, enqueued) = (entry.op, entry.nan, entry.enqueued);
    let slot = entry.slot.clone();
    let results = entry.results.clone();
    let bytes = entry.input.len() * 4;
    let sh2 = sh.clone();
    // The input stays alive until the group's results are read.
    let keep = (entry.input.clone(), entry.host.clone());
    let index = active.index;
    active.job.read_async(move |r| {
        let _keep = keep;
        let r = r.map(|f| {
            let k = f.partition_lens.len();
            f.finish(op, nan, 0..k)
        });
        let Some(outcome) = lock(&results).put(index, r) else {
            return; // the last group's readback (or the first error) completes the job
        };
        let now = Instant::now();
        let mut m = lock(&sh2.metrics);
        let ok = outcome.is_ok();
        let wakeup = slot.settle(outcome);
        if wakeup.is_some() {
            if ok {
                m.batch.on_done(now - enqueued, bytes, now);
            } else {
                m.batch.failed += 1;
            }
        }
        drop(m);
        if let Some(w) = wakeup {
            w.wake();
        }
    });
    (entry.next_group < entry.groups.count()).then_some(entry)
}

/// Prepares the job's next group: device buffers for host input (made for
/// the first group, filled chunk by chunk later), and all the group's
/// dispatches cut to the current quantum. A group's offsets stay absolute:
/// its partitions are read where they lie in the input.
fn activate(sh: &Shared, entry: &mut BatchEntry) -> Result<ActiveGroup> {
    let ctx = &sh.ctx;
    let index = entry.next_group;
    let plan = Plan::new(entry.groups.offsets(&entry.offsets, index))?;
    // The quantum bounds the batch work queued ahead of a real-time
    // request: one chunk plus at most the lead of the next one. (A chunk
    // gets at least half the quantum, so a lead above half the quantum
    // stretches that bound to chunk + lead.)
    let chunk_time = sh.quantum.saturating_sub(sh.lead).max(sh.quantum / 2);
    let units =
        lock(&sh.throughput).units_for(chunk_time, sh.cfg.min_chunk_units, sh.cfg.max_chunk_units);
    let scope = crate::engine::ErrorScopes::push(&ctx.device);
    let job = match &entry.input {
        Input::Device(array) => {
            let inputs: Vec<&wgpu::Buffer> = array.pieces.iter().map(|p| &p.buffer).collect();
            Job::prepare(
                ctx,
                entry.op.kernel(),
                plan,
                &inputs,
                &array.spans(),
                Some(units),
            )?
        }
        Input::Host(data) => {
            let host = entry.host.get_or_insert_with(|| {
                // Filled chunk by chunk, right before each chunk runs.
                let (buffers, spans) =
                    pooled_input(ctx, data.len() as u64, None, "gpulanes batch input");
                Arc::new(HostInput { buffers, spans })
            });
            let inputs: Vec<&wgpu::Buffer> = host.buffers.iter().map(|b| &**b).collect();
            Job::prepare(
                ctx,
                entry.op.kernel(),
                plan,
                &inputs,
                &host.spans,
                Some(units),
            )?
        }
    };
    scope.check()?;
    entry.next_group += 1;
    Ok(ActiveGroup {
        job,
        index,
        next: 0,
    })
}
