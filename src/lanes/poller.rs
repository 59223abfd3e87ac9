//! The poller thread: waits on the device for each submission the
//! dispatcher made, in order, so that readback callbacks run and handles
//! complete off the submitting threads (which never block on readback).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::shared::{Shared, lock};

/// What the poller runs once a submission is done.
pub(super) type OnDone = Box<dyn FnOnce() + Send>;

/// Submissions handed to the poller, oldest first, and whether it should
/// stop once they are done.
pub(super) struct Inflight {
    pub(super) queue: VecDeque<(wgpu::SubmissionIndex, Option<OnDone>)>,
    pub(super) stop: bool,
}

/// Hands a submission to the poller, which completes its callbacks and
/// then runs `on_done`. (Not `Queue::on_submitted_work_done`: that attaches
/// to the queue's latest submission when it is called, which another thread
/// sharing the device may have made meanwhile, and its callbacks run only
/// when someone polls past it, which nobody may do: a batch chunk's slot
/// would stay taken and its job would never finish.)
pub(super) fn track(sh: &Shared, index: wgpu::SubmissionIndex, on_done: Option<OnDone>) {
    lock(&sh.inflight).queue.push_back((index, on_done));
    sh.inflight_cv.notify_all();
}

/// The poller thread: waits for each tracked submission in turn (which
/// runs its readback callbacks), then runs its `on_done`. It stops once told
/// to and nothing tracked is left, so work already on the GPU completes its
/// handles before the scheduler is gone.
pub(super) fn poller_loop(sh: &Arc<Shared>) {
    loop {
        let index = {
            let mut inf = lock(&sh.inflight);
            loop {
                if let Some((i, _)) = inf.queue.front() {
                    break i.clone();
                }
                if inf.stop {
                    return;
                }
                inf = sh.inflight_cv.wait(inf).unwrap_or_else(|e| e.into_inner());
            }
        };
        let waited = sh.ctx.device.poll(wgpu::PollType::Wait {
            submission_index: Some(index),
            timeout: Some(Duration::from_secs(1)),
        });
        let done = match waited {
            Ok(_) => lock(&sh.inflight).queue.pop_front(),
            Err(wgpu::PollError::Timeout) => None,
            Err(e) => {
                // A refused submission (a lost device refuses them all):
                // found lost, the device fails the queued work (see
                // `device_health`).
                if sh.ctx.health.confirm_loss(&sh.ctx.device, &sh.ctx.queue) {
                    log::debug!("device poll failed on a lost device: {e}");
                } else {
                    log::error!("device poll failed: {e}");
                }
                lock(&sh.inflight).queue.pop_front()
            }
        };
        if let Some((_, Some(on_done))) = done {
            on_done();
        }
    }
}
