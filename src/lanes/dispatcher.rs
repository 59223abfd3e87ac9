//! The dispatcher thread: the one thread that submits to the GPU queue. It
//! waits for work, decides what goes next (real-time first, batch chunks
//! just in time and with their guaranteed share; see `pacing`), and hands a
//! coalesced real-time group to `realtime` or a batch job's next chunk to
//! `batch`. Queued work that can no longer run leaves the queue here:
//! cancelled requests, real-time requests past their deadline, everything
//! on a lost device or at shutdown.

use std::collections::VecDeque;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use super::batch::run_batch_chunk;
use super::keyed::{KeyedEntry, run_keyed_realtime, run_keyed_step};
use super::pacing::{Decision, IDLE_WAIT, Pacing, decide};
use super::queued::{BatchJob, RtJob};
use super::realtime::{RtEntry, run_realtime};
use super::shared::{Shared, State, lock, wake_all};
use super::shutdown::{self, FailOnPanic, fail_queued};
use crate::error::Error;
use crate::exec::max_partitions_for;
use crate::fit::Footprint;

/// What the dispatcher does next.
enum Action {
    /// A coalesced group of real-time reductions.
    Realtime(Vec<RtEntry>),
    /// A real-time keyed reduction, alone.
    RealtimeKeyed(Box<KeyedEntry>),
    /// The next chunk (or step) of a batch job.
    Batch(Box<BatchJob>),
    Exit,
}

/// The dispatcher thread: takes the next action and runs it, until the
/// scheduler shuts down.
pub(super) fn dispatcher_loop(sh: &Arc<Shared>) {
    loop {
        match next_action(sh) {
            Action::Exit => return,
            Action::Realtime(reqs) => run_realtime(sh, reqs),
            Action::RealtimeKeyed(entry) => run_keyed_realtime(sh, *entry),
            Action::Batch(job) => {
                let _fail_on_panic = FailOnPanic(job.slot());
                let unfinished = match *job {
                    BatchJob::Reduce(entry) => run_batch_chunk(sh, entry).map(BatchJob::Reduce),
                    BatchJob::Keyed(job) => run_keyed_step(sh, job).map(BatchJob::Keyed),
                };
                let mut st = lock(&sh.state);
                st.batch_taken = false;
                if let Some(e) = unfinished {
                    st.batch.push_front(e);
                }
                drop(st);
                sh.space.notify_all();
            }
        }
    }
}

/// Waits for something to do, real-time first.
fn next_action(sh: &Arc<Shared>) -> Action {
    let cfg = &sh.cfg;
    // With share s, a batch chunk (about one quantum) may wait at most
    // quantum * (1 - s) / s behind real-time work.
    let pacing = Pacing {
        lead: sh.lead,
        submit_blocks: sh.submit_blocks,
        max_realtime_in_flight: cfg.max_realtime_in_flight,
        max_batch_in_flight: cfg.max_batch_in_flight,
        batch_max_wait: if cfg.batch_min_share > 0.0 {
            let factor = (1.0 - cfg.batch_min_share) / cfg.batch_min_share;
            Duration::try_from_secs_f64(sh.quantum.as_secs_f64() * factor).unwrap_or(Duration::MAX)
        } else {
            Duration::MAX
        },
    };
    let mut st = lock(&sh.state);
    loop {
        if st.shutdown {
            shutdown::dispatcher_exits(sh, st);
            return Action::Exit;
        }
        // A lost device: queued work fails now (new submissions are
        // refused); the dispatcher stays, idle, until the scheduler drops.
        if let Err(lost) = sh.ctx.health.check()
            && (!st.rt.is_empty() || !st.batch.is_empty())
        {
            fail_queued(sh, st, &lost);
            st = lock(&sh.state);
            continue;
        }
        // Drop cancelled work from the queues (and free its queue space);
        // only after a cancellation, so that a long queue is not scanned
        // on every wake-up.
        if std::mem::take(&mut st.cancelled_since_look) {
            let before = (st.rt.len(), st.batch.len());
            st.rt.retain(|r| !r.slot().is_settled());
            st.batch.retain(|b| !b.slot().is_settled());
            if (st.rt.len(), st.batch.len()) != before {
                st.rt_bytes = st.rt.iter().map(RtJob::bytes).sum();
                sh.space.notify_all();
            }
        }
        // Real-time requests past their deadline leave the queue now (where
        // late requests are rejected), not when the dispatcher reaches them.
        let now = Instant::now();
        if st.rt.is_empty() {
            st.deadlines.clear();
        } else if st.deadlines.take_passed(now) {
            st = expire_queued(sh, st, now);
            continue;
        }
        let wake = match decide(&st.queues(), &st.pred, now, &pacing) {
            Decision::Realtime => {
                // A keyed request is not coalesced: it goes at once, alone.
                match st.rt.pop_front() {
                    Some(RtJob::Keyed(entry)) => {
                        st.rt_bytes -= entry.bytes;
                        st.rt_in_flight += 1;
                        drop(st);
                        sh.space.notify_all();
                        return Action::RealtimeKeyed(Box::new(entry));
                    }
                    Some(reduction) => st.rt.push_front(reduction),
                    None => {}
                }
                let age = now.duration_since(st.rt.front().expect("non-empty").enqueued());
                let big = st.rt.len() >= cfg.max_coalesced_requests
                    || st.rt_bytes >= cfg.max_coalesced_bytes;
                if age < cfg.coalesce_delay && !big {
                    let hold = cfg.coalesce_delay - age;
                    let hold = st.deadlines.until_next(now).map_or(hold, |d| d.min(hold));
                    st = sh
                        .work
                        .wait_timeout(st, hold)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                    continue;
                }
                let mut reqs = Vec::new();
                let mut bytes = 0;
                // A group is one reduction: its partitions together must
                // stay within the device's limit, and its partials and
                // tables within the device's largest buffer, or every
                // request in it would fail for the size of the others.
                // (Each request alone was checked when submitted.)
                // (Partitions are held to the smallest limit of the
                // dtypes in the group: a bound, as its dtypes run as
                // separate jobs.)
                let mut partitions = 0;
                let mut partition_limit = u64::MAX;
                let mut footprint = Footprint::default();
                // Up to the first keyed request, which goes alone next.
                while let Some(RtJob::Reduce(r)) = st.rt.front() {
                    let b = r.bytes();
                    let k = r.partitions();
                    let limit = partition_limit.min(max_partitions_for(&sh.ctx, r.data.dtype()));
                    let grown = footprint.with(r.footprint);
                    if !reqs.is_empty()
                        && (reqs.len() >= cfg.max_coalesced_requests
                            || bytes + b > cfg.max_coalesced_bytes
                            || partitions + k > limit
                            || !grown.fits_in(&sh.ctx))
                    {
                        break;
                    }
                    bytes += b;
                    partitions += k;
                    partition_limit = limit;
                    footprint = grown;
                    if let Some(RtJob::Reduce(r)) = st.rt.pop_front() {
                        reqs.push(r);
                    }
                }
                st.rt_bytes -= bytes;
                st.rt_in_flight += 1;
                drop(st);
                sh.space.notify_all();
                return Action::Realtime(reqs);
            }
            Decision::Batch => {
                let entry = st.batch.pop_front().expect("non-empty");
                st.batch_taken = true;
                st.last_batch_submit = Some(now);
                return Action::Batch(Box::new(entry));
            }
            Decision::Wait(wake) => match st.deadlines.until_next(now) {
                Some(until) => wake.min(until),
                None => wake,
            },
        };
        if st.batch.is_empty() {
            st.last_batch_submit = None;
        } else if st.last_batch_submit.is_none() {
            st.last_batch_submit = Some(now);
        }
        let (guard, waited) = sh
            .work
            .wait_timeout(st, wake)
            .unwrap_or_else(|e| e.into_inner());
        st = guard;
        if waited.timed_out() && wake < IDLE_WAIT {
            // A hold ended on its timer: learn how late such wake-ups are.
            let late = Instant::now().saturating_duration_since(now + wake);
            st.pred.observe_wake_late(late, sh.quantum / 2);
        }
    }
}

/// Fails the real-time requests still queued past their deadline with
/// [`Error::DeadlineExceeded`] (outside the state lock, as every failure
/// is settled), frees their queue space, and returns the lock.
fn expire_queued<'a>(
    sh: &'a Shared,
    mut st: MutexGuard<'a, State>,
    now: Instant,
) -> MutexGuard<'a, State> {
    let (expired, live): (VecDeque<RtJob>, VecDeque<RtJob>) = std::mem::take(&mut st.rt)
        .into_iter()
        .partition(|r| r.deadline().is_some_and(|d| d <= now));
    st.rt = live;
    if expired.is_empty() {
        return st;
    }
    st.rt_bytes -= expired.iter().map(RtJob::bytes).sum::<u64>();
    drop(st);
    sh.space.notify_all();
    let mut m = lock(&sh.metrics);
    let mut wakeups = Vec::new();
    for r in &expired {
        let late_by = now.saturating_duration_since(r.deadline().expect("expired has a deadline"));
        // A request cancelled meanwhile counts as cancelled only.
        if let Some(w) = r.slot().settle_err(Error::DeadlineExceeded { late_by }) {
            m.rt.deadline_misses += 1;
            m.rt.failed += 1;
            wakeups.push(w);
        }
    }
    drop(m);
    wake_all(wakeups);
    drop(expired);
    lock(&sh.state)
}
