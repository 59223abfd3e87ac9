//! Per-lane metrics: queue depth, latency histogram (hdrhistogram),
//! throughput, chunk sizes, deadline misses, and outcome counters.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency percentiles in microseconds.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

/// A lane's metrics at one moment.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct LaneSnapshot {
    /// Real-time: requests waiting to be dispatched. Batch: jobs not yet
    /// wholly submitted (a job stays queued until its last chunk goes, so
    /// a running job counts). Cancelled ones leave at the dispatcher's
    /// next look.
    pub queue_depth: u64,
    /// Submissions to the GPU queue made for this lane.
    pub submits: u64,
    /// Results delivered (late ones included where late results are
    /// delivered, see `LanesConfig::reject_late`).
    pub completed: u64,
    /// Errors delivered (deadline misses rejected, device errors,
    /// shutdown), cancellations aside.
    pub failed: u64,
    pub cancelled: u64,
    /// Real-time requests whose deadline passed, rejected or delivered
    /// late.
    pub deadline_misses: u64,
    /// From submission by the user to the result being ready.
    pub latency: LatencySummary,
    /// Input bytes reduced.
    pub bytes: u64,
    /// Input bytes per second between the first dispatch and the last completion.
    pub throughput_bytes_per_s: f64,
    /// Input bytes per GPU submission (real-time: per coalesced batch;
    /// batch: per chunk).
    pub chunk_bytes_p50: u64,
    pub chunk_bytes_max: u64,
}

/// Both lanes.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct MetricsSnapshot {
    pub realtime: LaneSnapshot,
    pub batch: LaneSnapshot,
}

/// The counters behind a [`LaneSnapshot`], for one interval: what
/// [`Lanes::take_lane_metrics`](super::Lanes::take_lane_metrics) hands
/// out, so that an experiment can merge the intervals it measures (rounds
/// of phases) and summarize them together. Not meant for apps, which read
/// [`MetricsSnapshot`]s.
#[doc(hidden)]
#[derive(Clone)]
pub struct LaneMetrics {
    latency_us: Histogram<u64>,
    chunk_bytes: Histogram<u64>,
    pub(crate) submits: u64,
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    pub(crate) cancelled: u64,
    pub(crate) deadline_misses: u64,
    pub(crate) bytes: u64,
    first_dispatch: Option<Instant>,
    last_completion: Option<Instant>,
    /// Time between first dispatch and last completion of metrics merged
    /// in from other intervals (see [`LaneMetrics::merge`]).
    merged_span: Duration,
}

impl Default for LaneMetrics {
    fn default() -> Self {
        LaneMetrics {
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds"),
            chunk_bytes: Histogram::new_with_bounds(1, 1 << 44, 2).expect("valid histogram bounds"),
            submits: 0,
            completed: 0,
            failed: 0,
            cancelled: 0,
            deadline_misses: 0,
            bytes: 0,
            first_dispatch: None,
            last_completion: None,
            merged_span: Duration::ZERO,
        }
    }
}

impl LaneMetrics {
    pub(crate) fn on_submit(&mut self, bytes: u64, now: Instant) {
        self.submits += 1;
        self.first_dispatch.get_or_insert(now);
        self.chunk_bytes.saturating_record(bytes.max(1));
    }

    pub(crate) fn on_done(&mut self, latency: Duration, bytes: u64, now: Instant) {
        self.completed += 1;
        self.bytes += bytes;
        self.latency_us
            .saturating_record((latency.as_micros() as u64).max(1));
        self.last_completion = Some(now);
    }

    fn own_span(&self) -> Duration {
        match (self.first_dispatch, self.last_completion) {
            (Some(a), Some(b)) if b > a => b - a,
            _ => Duration::ZERO,
        }
    }

    /// Adds the metrics of another, disjoint interval (e.g. one round of an
    /// experiment): counts and histograms add up, and throughput becomes
    /// all bytes over the sum of both intervals' spans.
    pub fn merge(&mut self, other: &LaneMetrics) {
        self.merged_span += other.merged_span + other.own_span();
        self.latency_us
            .add(&other.latency_us)
            .expect("histograms with the same bounds add");
        self.chunk_bytes
            .add(&other.chunk_bytes)
            .expect("histograms with the same bounds add");
        self.submits += other.submits;
        self.completed += other.completed;
        self.failed += other.failed;
        self.cancelled += other.cancelled;
        self.deadline_misses += other.deadline_misses;
        self.bytes += other.bytes;
    }

    /// The summary of this interval, with `queue_depth` as the queue's.
    pub fn snapshot(&self, queue_depth: u64) -> LaneSnapshot {
        let h = &self.latency_us;
        let q = |p: f64| {
            if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(p) as f64
            }
        };
        let elapsed = (self.merged_span + self.own_span()).as_secs_f64();
        LaneSnapshot {
            queue_depth,
            submits: self.submits,
            completed: self.completed,
            failed: self.failed,
            cancelled: self.cancelled,
            deadline_misses: self.deadline_misses,
            latency: LatencySummary {
                count: h.len(),
                p50_us: q(0.5),
                p99_us: q(0.99),
                p999_us: q(0.999),
                max_us: if h.is_empty() { 0.0 } else { h.max() as f64 },
                mean_us: if h.is_empty() { 0.0 } else { h.mean() },
            },
            bytes: self.bytes,
            throughput_bytes_per_s: if elapsed > 0.0 {
                self.bytes as f64 / elapsed
            } else {
                0.0
            },
            chunk_bytes_p50: if self.chunk_bytes.is_empty() {
                0
            } else {
                self.chunk_bytes.value_at_quantile(0.5)
            },
            chunk_bytes_max: if self.chunk_bytes.is_empty() {
                0
            } else {
                self.chunk_bytes.max()
            },
        }
    }
}
