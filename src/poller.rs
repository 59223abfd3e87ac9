//! The device poller behind the engine's async forms.
//!
//! Native wgpu runs readback (map) callbacks only inside `device.poll`, on
//! whichever thread polls; nothing polls on its own. So each engine owns
//! one poller thread, started by its first async request: it waits for
//! each submission an async request hands it, in order, which runs the
//! request's readback callbacks (or lets the thread that polled them out
//! run them), and reports a failed wait to the request. It sleeps while no
//! async request is in flight, and ends once the engine is dropped and the
//! requests handed to it are settled; dropping the engine joins it, so no
//! thread of the engine still uses the device (the last reference to
//! which it may hold) while the process exits. Waiting for the GPU on this thread
//! is what lets an async request finish without blocking the caller's.

use std::sync::Arc;

use crate::device_health::DeviceHealth;
use crate::error::Result;
use crate::workers::Workers;

/// Called once the GPU has finished a submission (`Ok`: its callbacks have
/// been taken out to run) or the wait for it failed.
pub(crate) type Settle = Box<dyn FnOnce(Result<()>) + Send>;

/// The poller of one engine: one thread (started on the first
/// [`Poller::watch`]) that takes the waits in the order they came.
pub(crate) struct Poller {
    thread: Workers,
}

impl Default for Poller {
    fn default() -> Self {
        Poller {
            thread: Workers::new("gpulanes-poller", 1),
        }
    }
}

impl Poller {
    /// Has the poller thread wait for submission `index`, then call
    /// `settle`. Starts the thread if this is the first call.
    ///
    /// # Errors
    /// [`Error::Thread`](crate::Error::Thread) when the thread cannot be
    /// started (`settle` is dropped uncalled).
    pub fn watch(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        health: &Arc<DeviceHealth>,
        index: wgpu::SubmissionIndex,
        settle: Settle,
    ) -> Result<()> {
        let (device, queue, health) = (device.clone(), queue.clone(), health.clone());
        // One blocking wait per queued submission, in order (a wait for a
        // later submission finds earlier ones done).
        self.thread.run(Box::new(move || {
            let waited = device
                .poll(wgpu::PollType::Wait {
                    submission_index: Some(index),
                    timeout: None,
                })
                .map(|_| ())
                .map_err(|e| health.poll_failed(&device, &queue, "waiting for the GPU", e));
            settle(waited);
        }))
    }
}
