//! Submission: checking a request and queueing it on its lane, waiting for
//! room (first come, first served) or refusing when the queue is full. A
//! batch job is prepared here, on the submitting thread, so that the
//! dispatcher only submits.

use std::sync::{Arc, MutexGuard, Weak};
use std::time::Instant;

use super::Lanes;
use super::answer::Answer;
use super::batch::BatchEntry;
use super::calibration::warm_dtype;
use super::config::WhenFull;
use super::handle::{Handle, Slot};
use super::keyed::{KeyedBatch, KeyedRequest};
use super::queued::{BatchJob, RtJob};
use super::realtime::{RtEntry, check_realtime_plan};
use super::request::{Input, Lane, Request};
use super::shared::{Shared, State, lock};
use crate::dtype::Dtype;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::keyed::{Grouped, Key};

impl Lanes {
    /// Checks and queues `request` (its input shared, not copied), its
    /// result to go to `answer`. With `wait` false a full queue is
    /// [`Error::QueueFull`] at once. `Ok` also where the request was queued
    /// and failed at once (a batch job that cannot be prepared): `answer`
    /// has its error.
    pub(super) fn enqueue<T>(
        &self,
        lane: Lane,
        request: &Request<T>,
        answer: Answer,
        wait: bool,
    ) -> Result<()> {
        let sh = &self.shared;
        sh.ctx.health.check()?;
        let offsets = request.partitions.offsets(request.input.len())?;
        let bytes = request.input.bytes();
        if let Input::Device(a) = &request.input {
            a.check_owner(&sh.ctx)?;
        }
        match lane {
            Lane::RealTime => {
                let Input::Host(data) = &request.input else {
                    return Err(Error::InvalidInput(
                        "real-time requests take host data; submit device arrays to the batch lane"
                            .into(),
                    ));
                };
                if bytes > sh.cfg.max_realtime_request_bytes {
                    return Err(Error::InvalidInput(format!(
                        "real-time request of {bytes} bytes exceeds max_realtime_request_bytes ({}); use the batch lane",
                        sh.cfg.max_realtime_request_bytes
                    )));
                }
                // Validate the plan now so a bad request never joins a group.
                let footprint = check_realtime_plan(sh, &offsets, data.dtype())?;
                self.warm(data.dtype());
                let mut st = self.wait_for_space(lane, bytes, wait)?;
                st.rt_bytes += bytes;
                if let Some(d) = request.deadline.filter(|_| sh.cfg.reject_late) {
                    st.deadlines.note(d);
                }
                st.rt.push_back(RtJob::Reduce(RtEntry {
                    data: data.clone(),
                    offsets,
                    op: request.op,
                    nan: request.nan,
                    deadline: request.deadline,
                    footprint,
                    enqueued: Instant::now(),
                    answer,
                    inject_failure: request.inject_failure,
                }));
            }
            Lane::Batch => {
                if request.deadline.is_some() {
                    return Err(Error::InvalidInput(
                        "deadlines apply to real-time requests only".into(),
                    ));
                }
                self.warm(request.input.dtype());
                // Any number of partitions: over the per-reduction limit the
                // job runs in groups (see `batch`), each planned when it
                // starts (the offsets are checked above).
                let mut entry = BatchEntry::new(
                    sh,
                    request.input.clone(),
                    offsets,
                    request.op,
                    request.nan,
                    answer.clone(),
                );
                // Prepared here, not by the dispatcher, once it has queue
                // space (held meanwhile, so a rejected job costs nothing);
                // a job that cannot be prepared (out of memory) fails
                // alone, through its handle, as it would have when it
                // started.
                let mut st = self.wait_for_space(lane, bytes, wait)?;
                st.batch_reserved += 1;
                drop(st);
                let prepared = entry.prepare_first(sh);
                st = lock(&sh.state);
                st.batch_reserved -= 1;
                if st.shutdown {
                    // The dispatcher has failed the queue and left.
                    return Err(Error::Shutdown);
                }
                if let Err(e) = prepared {
                    drop(st);
                    sh.space.notify_all();
                    if answer.fail(e) {
                        lock(&sh.metrics).batch.failed += 1;
                    }
                    return Ok(());
                }
                // Its latency counts from here, as a real-time request's
                // does.
                entry.mark_enqueued();
                st.batch.push_back(BatchJob::Reduce(entry));
            }
        }
        sh.work.notify_all();
        Ok(())
    }

    /// Runs `dtype`'s kernels once, on this thread, if nothing has yet (see
    /// `calibration::warm_dtype`): the first request of a dtype pays for
    /// its pipelines itself instead of holding the queue for every other
    /// request. Warming only saves time: where it fails (a lost device, no
    /// memory) the request goes on and meets the failure itself, with the
    /// error it names, and the next request tries again. Two threads may
    /// both warm a dtype; the second run costs a few small reductions.
    fn warm(&self, dtype: Dtype) {
        let sh = &self.shared;
        let code = dtype.code() as usize;
        if lock(&sh.warmed)[code] {
            return;
        }
        match warm_dtype(&Engine::sharing(&sh.ctx), dtype) {
            Ok(()) => lock(&sh.warmed)[code] = true,
            Err(e) => log::debug!("warming the {dtype} kernels failed ({e}); the request goes on"),
        }
    }

    /// Checks, plans and queues a keyed `request` (its data shared, not
    /// copied). With `wait` false a full queue is [`Error::QueueFull`] at
    /// once.
    pub(super) fn enqueue_keyed<K: Key>(
        &self,
        lane: Lane,
        request: &KeyedRequest<K>,
        wait: bool,
    ) -> Result<Handle<Grouped<K>>> {
        let sh = &self.shared;
        sh.ctx.health.check()?;
        let bytes = request.bytes();
        let slot = Slot::new();
        match lane {
            Lane::RealTime => {
                if bytes > sh.cfg.max_realtime_request_bytes {
                    return Err(Error::InvalidInput(format!(
                        "real-time keyed request of {bytes} bytes (keys and values) exceeds max_realtime_request_bytes ({}); use the batch lane",
                        sh.cfg.max_realtime_request_bytes
                    )));
                }
                // Checked, planned and recorded now, on this thread: a
                // real-time request is small, and the dispatcher only
                // submits. Recorded once it has queue space (held
                // meanwhile), so a request refused for a full queue costs
                // no recording, and one recording is within the queue's
                // bounds.
                let mut entry = request.plan(slot.clone(), lane)?;
                let mut st = self.wait_for_space(lane, bytes, wait)?;
                st.rt_reserved += 1;
                st.rt_reserved_bytes += bytes;
                drop(st);
                entry.encode_now(sh);
                st = lock(&sh.state);
                st.rt_reserved -= 1;
                st.rt_reserved_bytes -= bytes;
                if st.shutdown {
                    // The dispatcher has failed the queue and left.
                    return Err(Error::Shutdown);
                }
                st.rt_bytes += bytes;
                if let Some(d) = entry.deadline.filter(|_| sh.cfg.reject_late) {
                    st.deadlines.note(d);
                }
                st.rt.push_back(RtJob::Keyed(entry));
            }
            Lane::Batch => {
                if request.deadline.is_some() {
                    return Err(Error::InvalidInput(
                        "deadlines apply to real-time requests only".into(),
                    ));
                }
                // Planned here once it has queue space (held meanwhile, so
                // a rejected job costs nothing), as a batch reduction is
                // prepared, and its passes' pipelines built (its steps are
                // sized when each is submitted).
                let mut st = self.wait_for_space(lane, bytes, wait)?;
                st.batch_reserved += 1;
                drop(st);
                let planned = request
                    .plan(slot.clone(), lane)
                    .and_then(|entry| KeyedBatch::new(sh, entry));
                st = lock(&sh.state);
                st.batch_reserved -= 1;
                if st.shutdown {
                    // The dispatcher has failed the queue and left.
                    return Err(Error::Shutdown);
                }
                let mut job = match planned {
                    Ok(job) => job,
                    Err(e) => {
                        drop(st);
                        sh.space.notify_all();
                        return Err(e);
                    }
                };
                // Its latency counts from here, as a real-time request's
                // does.
                job.entry.mark_enqueued();
                st.batch.push_back(BatchJob::Keyed(job));
            }
        }
        sh.work.notify_all();
        Ok(self.handle(lane, slot))
    }

    /// The handle of a request queued on `lane`; cancelling it counts in
    /// the lane's metrics and has the dispatcher drop the request from the
    /// queue.
    pub(super) fn handle<T: Send + 'static>(&self, lane: Lane, slot: Arc<Slot<T>>) -> Handle<T> {
        let weak: Weak<Shared> = Arc::downgrade(&self.shared);
        Handle::new(slot, move || {
            if let Some(sh) = weak.upgrade() {
                let mut m = lock(&sh.metrics);
                match lane {
                    Lane::RealTime => m.rt.cancelled += 1,
                    Lane::Batch => m.batch.cancelled += 1,
                }
                drop(m);
                // The slot is settled outside the state lock; taking it
                // here orders this wake-up after any look the dispatcher
                // is taking at the queues, so the wake-up is not lost
                // between its look and its wait.
                lock(&sh.state).cancelled_since_look = true;
                sh.work.notify_all();
            }
        })
    }

    /// Waits for room for `bytes` in `lane`'s queue (or fails, see
    /// [`WhenFull`]; at once unless `wait`), and returns the state lock to
    /// queue the request with. Blocked submitters get room in the order they came (see
    /// `space_line`).
    fn wait_for_space(&self, lane: Lane, bytes: u64, wait: bool) -> Result<MutexGuard<'_, State>> {
        let sh = &self.shared;
        let cfg = &sh.cfg;
        let mut st = lock(&sh.state);
        let mut ticket: Option<u64> = None;
        let outcome = loop {
            if st.shutdown {
                break Err(Error::Shutdown);
            }
            if let Err(lost) = sh.ctx.health.check() {
                break Err(lost);
            }
            let full = match lane {
                Lane::RealTime => {
                    let queued = st.rt.len() + st.rt_reserved;
                    queued >= cfg.realtime_queue_len
                        || (queued > 0
                            && st.rt_bytes + st.rt_reserved_bytes + bytes
                                > cfg.realtime_queue_bytes)
                }
                Lane::Batch => st.batch_jobs() >= cfg.batch_queue_len,
            };
            let line = match lane {
                Lane::RealTime => &mut st.rt_line,
                Lane::Batch => &mut st.batch_line,
            };
            if !full && line.is_first(ticket) {
                break Ok(());
            }
            if cfg.when_full == WhenFull::Reject || !wait {
                let detail = match lane {
                    Lane::RealTime => {
                        format!("{} requests, {} bytes queued", st.rt.len(), st.rt_bytes)
                    }
                    Lane::Batch => {
                        format!("{} jobs queued", st.batch_jobs())
                    }
                };
                break Err(Error::QueueFull {
                    lane: lane.name(),
                    detail,
                });
            }
            if ticket.is_none() {
                ticket = Some(line.join());
            }
            st = sh.space.wait(st).unwrap_or_else(|e| e.into_inner());
        };
        if let Some(t) = ticket {
            let line = match lane {
                Lane::RealTime => &mut st.rt_line,
                Lane::Batch => &mut st.batch_line,
            };
            line.leave(t);
            // The next in line looks again: there may be room for it too
            // (or it is first now that this one gave up).
            if !line.is_empty() {
                sh.space.notify_all();
            }
        }
        outcome.map(|()| st)
    }
}
