//! The batch lane's side of the dispatcher: a batch job submitted one chunk
//! (one element-pass dispatch, sized to the quantum) at a time.
//!
//! A job with more partitions than one reduction may have on this device
//! runs as consecutive groups of partitions (see `groups`), one job after
//! the other, each chunked the same way, with the same bits as the job run
//! alone by [`Engine::reduce_partitions`](crate::Engine::reduce_partitions)
//! or [`Engine::reduce_device`](crate::Engine::reduce_device).
//!
//! A job over host data holds only a few chunks' worth of it on the device,
//! however large it is: its input is cut into spans of a few chunks, and
//! the spans take turns in a ring of [`HOST_SLOTS`] device buffers, each
//! chunk's window written into its span's buffer just before the chunk
//! runs. Reusing a buffer needs no wait: the queue orders the write after
//! the submissions that read the buffer's previous span.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::answer::Answer;
use super::poller::track;
use super::request::{Input, Lane};
use super::shared::{Shared, busy_for, lock, mark_done, release_slot};
use crate::context::{Context, ErrorScopes};
use crate::device_array::{pooled_input_buffer, split_into_spans};
use crate::dtype::Scalar;
use crate::error::Result;
use crate::exec::{Job, max_partitions_for};
use crate::groups::{Gather, PartitionGroups};
use crate::kernels::BLOCK;
use crate::op::{NanPolicy, Op};
use crate::plan::{Plan, Span};
use crate::pool::PooledBuffer;
use crate::timing::TimerSlot;

/// Batch chunks per chunk timed with GPU timestamps.
const TIMED_EVERY: u64 = 4;

/// A slot of the lanes' GPU timer for the next batch submission (a chunk
/// or a keyed step), where it is to carry timestamps: one submission in
/// [`TIMED_EVERY`] (enough observations for the throughput averages; on
/// lavapipe each timed submission's extra passes, resolve and readback cost
/// as much as a small chunk's work), or this one where `wanted`. `None`
/// without a timer or a free slot.
pub(super) fn claim_batch_timer(sh: &Shared, wanted: bool) -> Option<TimerSlot> {
    let chunk_no = sh.chunks.fetch_add(1, Ordering::Relaxed);
    if wanted || chunk_no.is_multiple_of(TIMED_EVERY) {
        sh.timer.as_ref().and_then(|t| t.claim())
    } else {
        None
    }
}

/// Hands the GPU time between `slot`'s two stamps to `then` once they are
/// read (never where they cannot be).
pub(super) fn read_gpu_time(slot: TimerSlot, then: impl FnOnce(Duration) + Send + 'static) {
    slot.read(move |gpu_ns| {
        if let Some(&ns) = gpu_ns.as_ref().and_then(|v| v.first()) {
            then(Duration::from_nanos(ns as u64));
        }
    });
}

/// Timed chunks that may be in flight at once (slots of the lanes' GPU
/// timer, two stamps each): more than are ever in flight, so a chunk that
/// finds every slot busy, and goes untimed, is rare.
pub(super) const TIMER_SLOTS: u32 = 8;

/// Device buffers a host job's input spans take turns in.
const HOST_SLOTS: usize = 3;

/// Chunks of the first group's size per host-input span.
const CHUNKS_PER_SPAN: u64 = 4;

/// A queued batch job.
pub(super) struct BatchEntry {
    pub input: Input,
    /// Partition offsets in values.
    offsets: Vec<u64>,
    op: Op,
    nan: NanPolicy,
    enqueued: Instant,
    pub answer: Answer,
    /// Groups of at most the device's per-reduction limit of partitions.
    groups: PartitionGroups,
    /// The group to activate next.
    next_group: usize,
    /// The ring of device buffers for host input, filled chunk by chunk and
    /// shared by every group's job (made when the first group starts).
    host: Option<Arc<HostInput>>,
    /// The groups' results until the last one is in.
    results: Arc<Mutex<Gather<Scalar>>>,
    /// The group being submitted chunk by chunk.
    active: Option<ActiveGroup>,
}

/// Device buffers for a job's host input: its spans (a few chunks each,
/// overlapping by a block like any input's spans; in 32-bit words) and the
/// ring of buffers they take turns in.
struct HostInput {
    slots: Vec<PooledBuffer>,
    spans: Vec<Span>,
}

impl HostInput {
    /// The ring for `len` words, in spans of [`CHUNKS_PER_SPAN`] chunks of
    /// `units` units.
    fn new(ctx: &Context, len: u64, units: u64) -> Self {
        let spans = host_spans(len, units, ctx.max_buffer_items());
        // The first span is the largest.
        let slots = (0..spans.len().min(HOST_SLOTS))
            .map(|_| pooled_input_buffer(ctx, spans[0].items, "gpulanes batch input"))
            .collect();
        HostInput { slots, spans }
    }

    /// The buffer span `span` is written into.
    fn slot(&self, span: usize) -> &wgpu::Buffer {
        &self.slots[span % self.slots.len()]
    }
}

/// Spans for `len` host items read in chunks of `units` units: each holds
/// [`CHUNKS_PER_SPAN`] chunks plus the one block by which spans overlap,
/// within a buffer's limit of `max_buffer_items` (a multiple of 64, at
/// least two blocks). At least one span, however short the input.
fn host_spans(len: u64, units: u64, max_buffer_items: u64) -> Vec<Span> {
    let items = units
        .saturating_mul(CHUNKS_PER_SPAN)
        .saturating_mul(BLOCK)
        .saturating_add(BLOCK)
        .min(max_buffer_items);
    split_into_spans(len, items)
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
        answer: Answer,
    ) -> Self {
        let groups = PartitionGroups::new(
            offsets.len() - 1,
            max_partitions_for(&sh.ctx, input.dtype()),
        );
        BatchEntry {
            input,
            offsets,
            op,
            nan,
            enqueued: Instant::now(),
            answer,
            groups,
            next_group: 0,
            host: None,
            results: Arc::new(Mutex::new(Gather::new(op, groups.count()))),
            active: None,
        }
    }

    /// Prepares the first group (buffers, tables, bind groups, dispatches
    /// cut to the current chunk size) on the calling thread: the submitter's,
    /// so that the dispatcher, which real-time requests wait for, only
    /// submits. On lavapipe a 16M-float job's first group (about 200
    /// dispatches) took the dispatcher 0.5-0.7 ms, longer than a quantum.
    /// Later groups of a job over the partition limit are prepared by the
    /// dispatcher when they start, one group at a time (each holds device
    /// memory, and all of them at once could hold far more).
    pub fn prepare_first(&mut self, sh: &Shared) -> Result<()> {
        if self.active.is_none() {
            self.active = Some(activate(sh, self)?);
        }
        Ok(())
    }

    /// Starts the latency clock: the job has entered the queue.
    pub fn mark_enqueued(&mut self) {
        self.enqueued = Instant::now();
    }

    fn fail(&self, sh: &Shared, e: crate::error::Error) {
        if self.answer.fail(e) {
            lock(&sh.metrics).batch.failed += 1;
        }
    }
}

/// Submits the next chunk of a batch job; returns the entry if unfinished.
pub(super) fn run_batch_chunk(sh: &Arc<Shared>, mut entry: BatchEntry) -> Option<BatchEntry> {
    if entry.answer.is_settled() {
        return None; // cancelled (or a group failed): stop here, buffers are released
    }
    // A lost device: the job fails without touching it.
    if let Err(lost) = sh.ctx.health.check() {
        entry.fail(sh, lost);
        return None;
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
    let scope = ErrorScopes::push(ctx);
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
                        host.slot(buffer),
                        range.start,
                        bytemuck::cast_slice(&data.words()[first as usize..end_item as usize]),
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
    let timed = claim_batch_timer(sh, false);
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
        read_gpu_time(t, move |d| {
            lock(&sh3.throughput).observe(chunk_bytes, d, true)
        });
    }
    let on_done = Box::new(move || {
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
    track(sh, index, Some(on_done));
    result
}

/// Reads a group's result back once its last chunk is done (at once for a
/// group with nothing to run). The last group's readback completes the
/// job's handle with every group's results in order; a failed readback
/// fails it at once. Returns the entry while groups remain to run.
fn finish_group(sh: &Arc<Shared>, entry: BatchEntry, active: ActiveGroup) -> Option<BatchEntry> {
    let (op, nan, enqueued) = (entry.op, entry.nan, entry.enqueued);
    let answer = entry.answer.clone();
    let results = entry.results.clone();
    let bytes = entry.input.bytes();
    let sh2 = sh.clone();
    // The input stays alive until the group's results are read.
    let keep = (entry.input.clone(), entry.host.clone());
    let index = active.index;
    active.job.read_async(move |r| {
        let _keep = keep;
        let r = r.and_then(|f| f.finish_range(op, nan, 0..f.len()));
        let Some(outcome) = lock(&results).put(index, r) else {
            return; // the last group's readback (or the first error) completes the job
        };
        let now = Instant::now();
        let mut m = lock(&sh2.metrics);
        let ok = outcome.is_ok();
        let wakeup = answer.settle(outcome);
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
    let dtype = entry.input.dtype();
    let plan = Plan::of_values(entry.groups.offsets(&entry.offsets, index), dtype)?;
    crate::fit::check_dtype(ctx, &plan, dtype)?;
    // The quantum bounds the batch work queued ahead of a real-time
    // request: one chunk plus at most the lead of the next one. (A chunk
    // gets at least half the quantum, so a lead above half the quantum
    // stretches that bound to chunk + lead.)
    let chunk_time = sh.quantum.saturating_sub(sh.lead).max(sh.quantum / 2);
    let units =
        lock(&sh.throughput).units_for(chunk_time, sh.cfg.min_chunk_units, sh.cfg.max_chunk_units);
    let scope = ErrorScopes::push(ctx);
    let job = match &entry.input {
        Input::Device(array) => {
            let inputs = array.buffers();
            Job::prepare(
                ctx,
                dtype,
                entry.op.kernel(),
                plan,
                &inputs,
                &array.spans(),
                Some(units),
            )?
        }
        Input::Host(data) => {
            // Filled chunk by chunk, right before each chunk runs.
            let words = data.words().len() as u64;
            let host = entry
                .host
                .get_or_insert_with(|| Arc::new(HostInput::new(ctx, words, units)));
            let inputs: Vec<&wgpu::Buffer> = (0..host.spans.len()).map(|k| host.slot(k)).collect();
            Job::prepare(
                ctx,
                dtype,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A host job's device footprint is the ring, a few chunks' worth,
    /// however long the input; the spans still cover it all, overlapping by
    /// the block every unit needs to lie wholly in one span.
    #[test]
    fn host_input_spans_are_a_few_chunks_and_cover_the_input() {
        let max_items = 1 << 28; // a 1 GiB buffer limit
        let len = 10_000_000_003u64; // 40 GB of floats
        for units in [1u64, 2, 37, 4096] {
            let spans = host_spans(len, units, max_items);
            let span_items = units * CHUNKS_PER_SPAN * BLOCK + BLOCK;
            assert_eq!(spans[0].base_item, 0);
            assert!(spans[0].items <= span_items);
            for w in spans.windows(2) {
                assert_eq!(w[0].base_item + w[0].items, w[1].base_item + BLOCK);
                assert!(w[1].items <= w[0].items);
            }
            let last = spans.last().unwrap();
            assert_eq!(last.base_item + last.items, len);
            let ring_bytes = HOST_SLOTS as u64 * spans[0].items * 4;
            assert!(ring_bytes <= HOST_SLOTS as u64 * span_items * 4);
            assert!(
                ring_bytes * 20 < len * 4,
                "units {units}: {ring_bytes} bytes"
            );
        }
        // Huge chunks are held to the buffer limit.
        let spans = host_spans(len, u64::MAX, max_items);
        assert!(spans[0].items <= max_items);
        // Short inputs are one span, the input's own size.
        for len in [0u64, 5, 3 * BLOCK] {
            let spans = host_spans(len, 2, max_items);
            assert_eq!(
                spans,
                vec![Span {
                    base_item: 0,
                    items: len
                }]
            );
        }
    }
}
