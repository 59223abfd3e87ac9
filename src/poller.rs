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

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::device_health::DeviceHealth;
use crate::error::{Error, Result};
use crate::sync::lock;

/// Called once the GPU has finished a submission (`Ok`: its callbacks have
/// been taken out to run) or the wait for it failed.
pub(crate) type Settle = Box<dyn FnOnce(Result<()>) + Send>;

/// The poller of one engine; the thread starts on the first [`Poller::watch`].
#[derive(Default)]
pub(crate) struct Poller {
    started: Mutex<Option<Started>>,
}

struct Started {
    shared: Arc<Shared>,
    thread: JoinHandle<()>,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

#[derive(Default)]
struct Queue {
    waits: VecDeque<(wgpu::SubmissionIndex, Settle)>,
    /// The engine is gone: finish what is queued, then stop.
    closed: bool,
}

impl Poller {
    /// Has the poller thread wait for submission `index`, then call
    /// `settle`. Starts the thread if this is the first call.
    ///
    /// # Errors
    /// [`Error::Thread`] when the thread cannot be started (`settle` is
    /// dropped uncalled).
    pub fn watch(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        health: &Arc<DeviceHealth>,
        index: wgpu::SubmissionIndex,
        settle: Settle,
    ) -> Result<()> {
        let shared = {
            let mut started = lock(&self.started);
            match &*started {
                Some(s) => s.shared.clone(),
                None => {
                    let shared = Arc::new(Shared::default());
                    let (s, device, queue, health) = (
                        shared.clone(),
                        device.clone(),
                        queue.clone(),
                        health.clone(),
                    );
                    let thread = std::thread::Builder::new()
                        .name("gpulanes-poller".into())
                        .spawn(move || run(&s, &device, &queue, &health))
                        .map_err(|e| Error::Thread {
                            thread: "async poller",
                            source: Arc::new(e),
                        })?;
                    *started = Some(Started {
                        shared: shared.clone(),
                        thread,
                    });
                    shared
                }
            }
        };
        lock(&shared.queue).waits.push_back((index, settle));
        shared.wake.notify_one();
        Ok(())
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        let Some(Started { shared, thread }) = lock(&self.started).take() else {
            return;
        };
        lock(&shared.queue).closed = true;
        shared.wake.notify_one();
        // The thread settles what is queued (waits for submitted work),
        // then ends. An engine dropped by code the poller runs (a waker)
        // is not joined from the poller itself.
        if thread.thread().id() != std::thread::current().id() {
            let _ = thread.join();
        }
    }
}

/// The poller thread: one blocking wait per queued submission, in order
/// (a wait for a later submission finds earlier ones done).
fn run(shared: &Shared, device: &wgpu::Device, queue: &wgpu::Queue, health: &DeviceHealth) {
    loop {
        let (index, settle) = {
            let mut q = lock(&shared.queue);
            loop {
                if let Some(next) = q.waits.pop_front() {
                    break next;
                }
                if q.closed {
                    return;
                }
                q = shared.wake.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        let waited = device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .map(|_| ())
            .map_err(|e| health.poll_failed(device, queue, "waiting for the GPU", e));
        settle(waited);
    }
}
