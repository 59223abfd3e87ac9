//! Scheduler settings ([`LanesConfig`], with its defaults and setters), their
//! validation, and the timing derived from them and the start-up
//! calibration (quantum, submit lead).

use std::time::Duration;

use super::calibration::{Calibration, default_quantum};
use crate::dtype::Dtype;
use crate::error::{Error, Result};

/// What submission does when a lane's queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenFull {
    /// Wait for space.
    Block,
    /// Fail at once with [`Error::QueueFull`].
    Reject,
}

/// Scheduler settings. The defaults suit a discrete GPU and still work on a
/// software adapter.
///
/// Start from [`LanesConfig::default()`] and change what differs with the
/// setters, one per field (each field's documentation says what it does):
///
/// ```
/// use std::time::Duration;
/// use gpulanes::LanesConfig;
/// use gpulanes::lanes::WhenFull;
///
/// let cfg = LanesConfig::default()
///     .quantum(Duration::from_millis(1))
///     .batch_queue_len(8)
///     .when_full(WhenFull::Reject);
/// assert_eq!(cfg.quantum, Some(Duration::from_millis(1)));
/// ```
///
/// The struct is `#[non_exhaustive]`, so settings added later do not break
/// code that builds one: it cannot be written as a struct literal, but its
/// fields can be read and assigned.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LanesConfig {
    /// GPU time of the batch work that may be queued ahead of a real-time
    /// request. Batch chunks are sized to `quantum - submit_lead` of GPU time
    /// (at least half the quantum), measured with GPU timestamps where the
    /// device has them. `None` derives it from this device's measured
    /// real-time round trip RT, within 200 us ..= 4 ms:
    /// * where submissions queue (GPUs), chunks pipeline behind each other
    ///   and cost little beyond their work, so the quantum follows the
    ///   latency target alone: 1 RT, a chunk of about half a round trip,
    ///   which a request arriving as a chunk starts waits for on top of
    ///   its own round trip (the 1.5x-of-idle-p99 target);
    /// * where the driver's submit blocks while its queue executes
    ///   (lavapipe), each chunk also costs about one round trip of device
    ///   time, so chunks are longer to keep the batch lane's throughput:
    ///   3 RT, a chunk of about 2.5 RT (a request arriving as one starts
    ///   waits about 3.5 RT in all, against the 1.5-2 RT of an idle p99).
    pub quantum: Option<Duration>,
    /// Just-in-time submission: the next batch chunk is submitted when the
    /// work already queued on the GPU is predicted to end within this lead
    /// (so the GPU stays fed, yet a real-time request finds at most one
    /// chunk ahead of it), and real-time requests that arrive while a chunk
    /// runs are held and coalesced until that point, where they go first.
    /// Must not exceed the quantum. `None` derives it from the measured
    /// round trip (half of it, within 50 us ..= 500 us, and at most the
    /// quantum).
    pub submit_lead: Option<Duration>,
    /// Hard bound on batch chunks queued on the GPU at once; pacing keeps
    /// it at one except within the lead, or when a chunk overruns its
    /// predicted time. Where the driver's submit blocks while its queue
    /// executes (probed at start; lavapipe), a chunk never goes behind
    /// another chunk (onto an idle queue, or just in time behind real-time
    /// work), so one at a time.
    pub max_batch_in_flight: usize,
    /// Coalesced real-time submissions queued on the GPU at once.
    pub max_realtime_in_flight: usize,
    /// How long the first waiting real-time request may wait for others to
    /// coalesce with (dynamic batching delay). The default, zero, still
    /// coalesces: requests that arrive while `max_realtime_in_flight`
    /// submissions are on the GPU all go in the next one. A timed wait costs
    /// more than it saves at low rates (measured on lavapipe: 4096-float
    /// requests, p50 142 us with no delay, 259 us with a 20 us delay, since
    /// the OS sleeps longer than asked; the direct blocking path took 127 us).
    pub coalesce_delay: Duration,
    /// Most requests in one coalesced submission (at least 1; 1 turns
    /// coalescing off). (A group also stays
    /// within the device's partition limit per reduction, so a request
    /// never fails for the partitions of the others; one real-time request
    /// over that limit is refused when submitted; batch jobs take any
    /// number.)
    pub max_coalesced_requests: usize,
    /// Most input bytes in one coalesced submission (at least 1; a request
    /// bigger than this still goes, alone).
    pub max_coalesced_bytes: u64,
    /// Largest real-time request; bigger ones belong in the batch lane.
    pub max_realtime_request_bytes: u64,
    /// Real-time queue bound, in input bytes.
    pub realtime_queue_bytes: u64,
    /// Real-time queue bound, in requests.
    pub realtime_queue_len: usize,
    /// Batch queue bound, in jobs.
    pub batch_queue_len: usize,
    /// Behaviour of a full queue.
    pub when_full: WhenFull,
    /// Share of GPU time the batch lane keeps under a real-time flood (0..1).
    /// With 0, steady real-time traffic may hold batch chunks back
    /// indefinitely.
    pub batch_min_share: f64,
    /// Fail real-time requests whose deadline passes (the default): a
    /// request still queued at its deadline leaves the queue and fails
    /// then (within the dispatcher's wake-up granularity, or once a blocking
    /// submit in progress returns), without running, and a result that
    /// arrives after it is replaced by the error; both with
    /// [`Error::DeadlineExceeded`]. With
    /// `false`, such requests run and their results are delivered late.
    /// Either way each one counts in the lane's `deadline_misses`.
    pub reject_late: bool,
    /// Smallest batch chunk, in units of 8192 floats (at least 1, at most
    /// `max_chunk_units`). A keyed batch job's steps count 8192 value words
    /// a unit (4096 64-bit values), each row's key on top.
    pub min_chunk_units: u64,
    /// Largest batch chunk, in units of 8192 floats (counted as for
    /// `min_chunk_units`).
    pub max_chunk_units: u64,
    /// CPU time slice the dispatcher and poller threads ask the OS for, so
    /// that when woken they preempt CPU-bound work promptly (Linux 6.12+,
    /// no privilege needed; elsewhere ignored). `None` leaves them alone.
    pub thread_slice: Option<Duration>,
    /// Dtypes whose reduction kernels [`Lanes::new`](super::Lanes::new)
    /// runs once besides float32's (always run). A reduction of a dtype not
    /// run yet runs them on its submitting thread before it is queued (some
    /// drivers build a pipeline on its first dispatch), so its own latency,
    /// and its deadline, pay for them: name the dtypes an app submits with
    /// tight deadlines here to pay that at start instead. Keyed requests
    /// use other kernels, not run here: the first keyed request of a kind
    /// builds them itself.
    pub warm_dtypes: Vec<Dtype>,
}

impl Default for LanesConfig {
    fn default() -> Self {
        LanesConfig {
            quantum: None,
            submit_lead: None,
            max_batch_in_flight: 2,
            max_realtime_in_flight: 2,
            coalesce_delay: Duration::ZERO,
            max_coalesced_requests: 4096,
            max_coalesced_bytes: 64 << 20,
            max_realtime_request_bytes: 16 << 20,
            realtime_queue_bytes: 256 << 20,
            realtime_queue_len: 65536,
            batch_queue_len: 64,
            when_full: WhenFull::Block,
            batch_min_share: 0.2,
            reject_late: true,
            min_chunk_units: 4,
            max_chunk_units: 1 << 20,
            thread_slice: Some(Duration::from_micros(100)),
            warm_dtypes: Vec::new(),
        }
    }
}

/// Builder-style setters, one per field, named after it; each field's
/// documentation says what the setting does. Settings that may be left to
/// the scheduler (`Option` fields) take a value or `None`.
impl LanesConfig {
    /// Sets [`quantum`](LanesConfig#structfield.quantum) (`None`: derived
    /// from the measured round trip).
    #[must_use]
    pub fn quantum(mut self, quantum: impl Into<Option<Duration>>) -> Self {
        self.quantum = quantum.into();
        self
    }

    /// Sets [`submit_lead`](LanesConfig#structfield.submit_lead) (`None`:
    /// derived from the measured round trip).
    #[must_use]
    pub fn submit_lead(mut self, lead: impl Into<Option<Duration>>) -> Self {
        self.submit_lead = lead.into();
        self
    }

    /// Sets [`max_batch_in_flight`](LanesConfig#structfield.max_batch_in_flight).
    #[must_use]
    pub fn max_batch_in_flight(mut self, n: usize) -> Self {
        self.max_batch_in_flight = n;
        self
    }

    /// Sets [`max_realtime_in_flight`](LanesConfig#structfield.max_realtime_in_flight).
    #[must_use]
    pub fn max_realtime_in_flight(mut self, n: usize) -> Self {
        self.max_realtime_in_flight = n;
        self
    }

    /// Sets [`coalesce_delay`](LanesConfig#structfield.coalesce_delay).
    #[must_use]
    pub fn coalesce_delay(mut self, delay: Duration) -> Self {
        self.coalesce_delay = delay;
        self
    }

    /// Sets [`max_coalesced_requests`](LanesConfig#structfield.max_coalesced_requests).
    #[must_use]
    pub fn max_coalesced_requests(mut self, n: usize) -> Self {
        self.max_coalesced_requests = n;
        self
    }

    /// Sets [`max_coalesced_bytes`](LanesConfig#structfield.max_coalesced_bytes).
    #[must_use]
    pub fn max_coalesced_bytes(mut self, bytes: u64) -> Self {
        self.max_coalesced_bytes = bytes;
        self
    }

    /// Sets [`max_realtime_request_bytes`](LanesConfig#structfield.max_realtime_request_bytes).
    #[must_use]
    pub fn max_realtime_request_bytes(mut self, bytes: u64) -> Self {
        self.max_realtime_request_bytes = bytes;
        self
    }

    /// Sets [`realtime_queue_bytes`](LanesConfig#structfield.realtime_queue_bytes).
    #[must_use]
    pub fn realtime_queue_bytes(mut self, bytes: u64) -> Self {
        self.realtime_queue_bytes = bytes;
        self
    }

    /// Sets [`realtime_queue_len`](LanesConfig#structfield.realtime_queue_len).
    #[must_use]
    pub fn realtime_queue_len(mut self, n: usize) -> Self {
        self.realtime_queue_len = n;
        self
    }

    /// Sets [`batch_queue_len`](LanesConfig#structfield.batch_queue_len).
    #[must_use]
    pub fn batch_queue_len(mut self, n: usize) -> Self {
        self.batch_queue_len = n;
        self
    }

    /// Sets [`when_full`](LanesConfig#structfield.when_full).
    #[must_use]
    pub fn when_full(mut self, when_full: WhenFull) -> Self {
        self.when_full = when_full;
        self
    }

    /// Sets [`batch_min_share`](LanesConfig#structfield.batch_min_share)
    /// (checked by [`Lanes::new`](super::Lanes::new): 0 <= share < 1).
    #[must_use]
    pub fn batch_min_share(mut self, share: f64) -> Self {
        self.batch_min_share = share;
        self
    }

    /// Sets [`reject_late`](LanesConfig#structfield.reject_late).
    #[must_use]
    pub fn reject_late(mut self, reject: bool) -> Self {
        self.reject_late = reject;
        self
    }

    /// Sets [`min_chunk_units`](LanesConfig#structfield.min_chunk_units).
    #[must_use]
    pub fn min_chunk_units(mut self, units: u64) -> Self {
        self.min_chunk_units = units;
        self
    }

    /// Sets [`max_chunk_units`](LanesConfig#structfield.max_chunk_units).
    #[must_use]
    pub fn max_chunk_units(mut self, units: u64) -> Self {
        self.max_chunk_units = units;
        self
    }

    /// Sets [`thread_slice`](LanesConfig#structfield.thread_slice) (`None`:
    /// the threads keep the OS's default).
    #[must_use]
    pub fn thread_slice(mut self, slice: impl Into<Option<Duration>>) -> Self {
        self.thread_slice = slice.into();
        self
    }

    /// Sets [`warm_dtypes`](LanesConfig#structfield.warm_dtypes).
    #[must_use]
    pub fn warm_dtypes(mut self, dtypes: impl IntoIterator<Item = Dtype>) -> Self {
        self.warm_dtypes = dtypes.into_iter().collect();
        self
    }
}

/// The timing the scheduler runs with: configured, or derived from the
/// start-up calibration.
pub(super) struct Timing {
    /// The batch quantum.
    pub quantum: Duration,
    /// The just-in-time submission lead.
    pub lead: Duration,
    /// Predicted GPU time of a real-time submission besides its bytes.
    pub rt_fixed: Duration,
}

impl LanesConfig {
    /// Refuses settings the scheduler cannot run with, before anything
    /// touches the device.
    pub(super) fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.batch_min_share) {
            return Err(Error::InvalidInput(format!(
                "batch_min_share must be in [0, 1), got {}",
                self.batch_min_share
            )));
        }
        if self.max_batch_in_flight == 0 || self.max_realtime_in_flight == 0 {
            return Err(Error::InvalidInput(
                "in-flight bounds must be at least 1".into(),
            ));
        }
        // A zero-length queue could never take a request: submitters would
        // block forever (or always be rejected).
        if self.realtime_queue_len == 0 || self.batch_queue_len == 0 {
            return Err(Error::InvalidInput(format!(
                "queue bounds must be at least 1 (realtime_queue_len {}, batch_queue_len {})",
                self.realtime_queue_len, self.batch_queue_len
            )));
        }
        // Zero would mean "nothing per submission"; every submission still
        // takes one request, so a zero is a mistake, not a setting.
        if self.max_coalesced_requests == 0 || self.max_coalesced_bytes == 0 {
            return Err(Error::InvalidInput(format!(
                "coalescing bounds must be at least 1 (max_coalesced_requests {}, \
                 max_coalesced_bytes {}); 1 request means no coalescing",
                self.max_coalesced_requests, self.max_coalesced_bytes
            )));
        }
        if self.min_chunk_units == 0 || self.min_chunk_units > self.max_chunk_units {
            return Err(Error::InvalidInput(format!(
                "batch chunk bounds must satisfy 1 <= min_chunk_units <= max_chunk_units \
                 (got {} and {})",
                self.min_chunk_units, self.max_chunk_units
            )));
        }
        if self.thread_slice == Some(Duration::ZERO) {
            return Err(Error::InvalidInput(
                "thread_slice must be positive (None leaves the threads' slice to the OS)".into(),
            ));
        }
        Ok(())
    }

    /// The quantum and lead (configured, or derived from the measured round
    /// trip; see the fields) and the fixed cost of a real-time submission.
    pub(super) fn timing(&self, calibration: &Calibration) -> Result<Timing> {
        let quantum = self
            .quantum
            .unwrap_or_else(|| default_quantum(calibration.round_trip, calibration.submit_blocks));
        let lead = match self.submit_lead {
            Some(lead) if lead > quantum => {
                return Err(Error::InvalidInput(format!(
                    "submit_lead ({} us) must not exceed the quantum ({} us)",
                    lead.as_micros(),
                    quantum.as_micros()
                )));
            }
            Some(lead) => lead,
            None => (calibration.round_trip / 2)
                .clamp(Duration::from_micros(50), Duration::from_micros(500))
                .min(quantum),
        };
        Ok(Timing {
            quantum,
            lead,
            rt_fixed: calibration.round_trip / 2,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each setting the scheduler cannot run with is refused, naming it.
    #[test]
    fn validate_refuses_settings_that_cannot_run_naming_them() {
        let refused = [
            (
                LanesConfig::default().batch_min_share(1.0),
                "batch_min_share",
            ),
            (
                LanesConfig::default().batch_min_share(f64::NAN),
                "batch_min_share",
            ),
            (LanesConfig::default().max_batch_in_flight(0), "in-flight"),
            (
                LanesConfig::default().max_realtime_in_flight(0),
                "in-flight",
            ),
            (
                LanesConfig::default().realtime_queue_len(0),
                "realtime_queue_len",
            ),
            (LanesConfig::default().batch_queue_len(0), "batch_queue_len"),
            (
                LanesConfig::default().max_coalesced_requests(0),
                "max_coalesced_requests",
            ),
            (
                LanesConfig::default().max_coalesced_bytes(0),
                "max_coalesced_bytes",
            ),
            (LanesConfig::default().min_chunk_units(0), "min_chunk_units"),
            (
                LanesConfig::default().min_chunk_units(9).max_chunk_units(8),
                "max_chunk_units",
            ),
            (
                LanesConfig::default().thread_slice(Duration::ZERO),
                "thread_slice",
            ),
        ];
        for (cfg, named) in refused {
            match cfg.validate() {
                Err(Error::InvalidInput(msg)) => assert!(msg.contains(named), "{named}: {msg}"),
                other => panic!("{named}: expected a refusal, got {other:?}"),
            }
        }
        let accepted = [
            LanesConfig::default(),
            LanesConfig::default().min_chunk_units(8).max_chunk_units(8),
            LanesConfig::default().max_coalesced_requests(1),
            // Every batch chunk at its smallest.
            LanesConfig::default().quantum(Duration::ZERO),
            LanesConfig::default().thread_slice(None),
            LanesConfig::default().batch_min_share(0.0),
        ];
        for cfg in accepted {
            assert!(cfg.validate().is_ok(), "{cfg:?}");
        }
    }
}
