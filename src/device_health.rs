//! Whether the engine's device is still alive.
//!
//! wgpu reports a lost device only through the device's lost callback: on a
//! lost (or destroyed) device, submissions are refused and maps fail
//! without an error in any scope. So the engine installs that callback once
//! per device and remembers the loss; from then on every request fails at
//! once with [`Error::DeviceLost`] instead of touching the device, and the
//! schedulers on the engine are told (they fail their queued work).
//!
//! wgpu calls the callback from inside a `device.poll` once the lost
//! device's queue is empty (on whichever thread polls), or at once for a
//! loss the driver reports. The first signs come earlier: a submission the
//! device refused (a poll that knows no such submission), a validation
//! error on an object made after the loss, a failed readback. On those,
//! [`DeviceHealth::confirm_loss`] asks the device directly: a lost device
//! refuses even an empty submission, a live one never does.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::sync::lock;

/// Told once when the device is lost (the lanes' scheduler, to fail its
/// queued work and wake whoever waits on it).
pub(crate) trait LostListener: Send + Sync {
    fn device_lost(&self);
}

/// How the device was lost: what every later request's error says.
#[derive(Clone, Debug)]
struct Loss {
    message: String,
    reason: Option<wgpu::DeviceLostReason>,
}

/// The device's liveness, shared by everything built on one engine.
#[derive(Default)]
pub(crate) struct DeviceHealth {
    /// How the device was lost; `None` while it lives.
    lost: Mutex<Option<Loss>>,
    /// Dropped listeners are pruned when another registers.
    listeners: Mutex<Vec<Weak<dyn LostListener>>>,
}

impl DeviceHealth {
    /// Installs `device`'s lost callback (wgpu keeps one per device: this
    /// replaces any the app set) and returns the state it updates.
    pub fn watch(device: &wgpu::Device) -> Arc<Self> {
        let health = Arc::new(DeviceHealth::default());
        let weak = Arc::downgrade(&health);
        device.set_device_lost_callback(move |reason, message| {
            if let Some(health) = weak.upgrade() {
                let why = match (reason, message.trim()) {
                    (wgpu::DeviceLostReason::Destroyed, "") => "the device was destroyed".into(),
                    (wgpu::DeviceLostReason::Destroyed, m) => {
                        format!("the device was destroyed ({m})")
                    }
                    (_, "") => "the driver reported the device lost".into(),
                    (_, m) => format!("the driver reported the device lost ({m})"),
                };
                health.record(why, Some(reason));
            }
        });
        health
    }

    /// Records a loss the engine found (the first one stays) and tells the
    /// listeners.
    pub fn mark_lost(&self, why: String) {
        self.record(why, None);
    }

    /// Records the loss, with wgpu's reason where its callback gave one
    /// (the first loss stays), and tells the listeners.
    fn record(&self, why: String, reason: Option<wgpu::DeviceLostReason>) {
        {
            let mut lost = lock(&self.lost);
            if lost.is_some() {
                return;
            }
            log::error!("gpulanes: {why}; every request on this engine now fails");
            *lost = Some(Loss {
                message: why,
                reason,
            });
        }
        // Outside the lock: a listener may ask whether the device is lost.
        let listeners = std::mem::take(&mut *lock(&self.listeners));
        for l in listeners.iter().filter_map(Weak::upgrade) {
            l.device_lost();
        }
    }

    /// True once the device is lost.
    pub fn is_lost(&self) -> bool {
        lock(&self.lost).is_some()
    }

    /// `Err(DeviceLost)` once the device is lost.
    pub fn check(&self) -> Result<()> {
        match self.lost_error(None) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The [`Error::DeviceLost`] of a recorded loss, with `source`: the
    /// wgpu error with which this request met it. `None` while the device
    /// lives.
    fn lost_error(
        &self,
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    ) -> Option<Error> {
        lock(&self.lost).clone().map(|l| Error::DeviceLost {
            message: l.message,
            reason: l.reason,
            source,
        })
    }

    /// After a sign of trouble while doing `what` (a failed wait or map, a
    /// validation error): [`Error::DeviceLost`] carrying `e` where the
    /// device turns out lost (see [`DeviceHealth::confirm_loss`]), `None`
    /// where it lives.
    pub fn lost_with(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        what: &str,
        e: Arc<dyn std::error::Error + Send + Sync>,
    ) -> Option<Error> {
        if !self.confirm_loss(device, queue) {
            return None;
        }
        Some(
            self.lost_error(Some(e.clone()))
                .unwrap_or_else(|| Error::lost_while(format!("{what} failed"), e)),
        )
    }

    /// Tells `listener` when the device is lost (at once if it is).
    pub fn subscribe(&self, listener: Weak<dyn LostListener>) {
        let mut listeners = lock(&self.listeners);
        // Looked at under the listeners' lock: `mark_lost` records the loss
        // before it takes the list, so a listener pushed here while the
        // device lives is in the list it takes.
        if !self.is_lost() {
            listeners.retain(|l| l.strong_count() > 0);
            listeners.push(listener);
            return;
        }
        drop(listeners);
        if let Some(l) = listener.upgrade() {
            l.device_lost();
        }
    }

    /// After a sign of trouble (a refused submission, a failed wait, a
    /// validation error): says whether the device is lost, recording it if
    /// so. An empty submission is refused only by a lost device (wgpu
    /// refuses it before anything else when the device is invalid, and
    /// orders submissions, so a poll for an accepted one always knows it);
    /// the poll runs completed work's callbacks on this thread, as any
    /// poll does. Only for failure paths: it costs a submission.
    pub fn confirm_loss(&self, device: &wgpu::Device, queue: &wgpu::Queue) -> bool {
        if self.is_lost() {
            return true;
        }
        let probe = queue.submit([]);
        let refused = matches!(
            device.poll(wgpu::PollType::Wait {
                submission_index: Some(probe),
                timeout: Some(Duration::ZERO),
            }),
            Err(wgpu::PollError::WrongSubmissionIndex(..))
        );
        if refused {
            self.mark_lost("the device refuses work (it was destroyed or lost)".into());
        }
        self.is_lost()
    }

    /// The error for a failed poll: [`Error::DeviceLost`] where the device
    /// turns out lost, [`Error::Wait`] naming `what` otherwise.
    pub fn poll_failed(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        what: &str,
        e: wgpu::PollError,
    ) -> Error {
        let e = Arc::new(e);
        self.lost_with(device, queue, what, e.clone())
            .unwrap_or_else(|| Error::Wait {
                context: what.into(),
                source: e,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl LostListener for Count {
        fn device_lost(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn listener(c: &Arc<Count>) -> Weak<dyn LostListener> {
        Arc::downgrade(c) as Weak<Count>
    }

    #[test]
    fn listeners_hear_of_a_loss_once_and_the_first_reason_stays() {
        let health = DeviceHealth::default();
        let (before, after, gone) = (
            Arc::<Count>::default(),
            Arc::<Count>::default(),
            Arc::<Count>::default(),
        );
        health.subscribe(listener(&before));
        health.subscribe(listener(&gone));
        drop(gone);
        assert!(health.check().is_ok());
        health.mark_lost("first".into());
        health.mark_lost("second".into());
        assert_eq!(before.0.load(Ordering::SeqCst), 1);
        assert!(matches!(
            health.check(),
            Err(Error::DeviceLost { message, reason: None, .. }) if message == "first"
        ));
        // Subscribing after the loss hears of it at once.
        health.subscribe(listener(&after));
        assert_eq!(after.0.load(Ordering::SeqCst), 1);
        assert!(health.is_lost());
    }
}
