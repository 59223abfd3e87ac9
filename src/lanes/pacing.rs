//! Just-in-time submission: when the dispatcher may submit what.
//!
//! The dispatcher keeps a [`Prediction`] of when the GPU will be done with
//! what it has been given (each submission adds its predicted GPU time;
//! every completion re-anchors it) and asks [`decide`] what to do next.
//! While more than the lead of work is queued and a batch chunk is part of
//! it, new work would only wait behind that chunk, so it is held, and
//! real-time requests coalesce meanwhile, until the GPU nears the end of it.
//! Then real-time work goes first, then the next chunk. The logic is pure
//! (queue counts and times in, a decision out), so it is tested here without
//! a device.

use std::time::{Duration, Instant};

/// Longest GPU time one submission is predicted to take (keeps the
/// host-clock arithmetic far from overflow whatever the estimate says).
pub(crate) const MAX_PREDICTION: Duration = Duration::from_secs(3600);

/// Longest sleep of the dispatcher between looks at its queues.
pub(crate) const IDLE_WAIT: Duration = Duration::from_millis(50);

/// When the GPU will be done with what it has been given (host clock), and
/// the dispatcher's own timings that widen the lead.
#[derive(Clone, Debug, Default)]
pub(crate) struct Prediction {
    /// When the GPU is predicted to finish everything submitted so far.
    gpu_free_at: Option<Instant>,
    /// Predicted GPU time of the submissions not yet completed.
    in_flight_busy: Duration,
    /// Moving average of how late the dispatcher's timed waits end; added
    /// to the lead.
    wake_late: Duration,
    /// Moving average of the dispatcher's host time to prepare a real-time
    /// group: held requests are released this much earlier, so their
    /// preparation overlaps the batch chunk they wait behind.
    rt_prep: Duration,
}

impl Prediction {
    /// Adds `busy` of predicted GPU time behind the work already queued.
    /// Pass the same `busy` to [`Prediction::note_completion`] when it
    /// completes.
    pub fn predict(&mut self, now: Instant, busy: Duration) {
        let busy = busy.min(MAX_PREDICTION);
        let start = self.gpu_free_at.map_or(now, |t| t.max(now));
        self.gpu_free_at = Some(start + busy);
        self.in_flight_busy = self.in_flight_busy.saturating_add(busy);
    }

    /// Predicted GPU time still queued ahead of a submission made `now`.
    pub fn queued_ahead(&self, now: Instant) -> Duration {
        self.gpu_free_at
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
    }

    /// Called after a submission predicted at `busy` completed; `idle` says
    /// nothing is in flight any more. What is still in flight cannot end
    /// later than its own predicted time from now, so the prediction is
    /// re-anchored (work that ran faster than estimated, or real-time groups
    /// whose fixed cost overlapped, hold nothing back); once nothing is in
    /// flight the GPU is idle, whatever the prediction said.
    pub fn note_completion(&mut self, now: Instant, busy: Duration, idle: bool) {
        self.in_flight_busy = self.in_flight_busy.saturating_sub(busy.min(MAX_PREDICTION));
        if idle {
            self.gpu_free_at = None;
            self.in_flight_busy = Duration::ZERO;
        } else {
            let bound = now + self.in_flight_busy;
            self.gpu_free_at = self.gpu_free_at.map(|t| t.min(bound));
        }
    }

    /// Folds one timed wait's lateness into the average (at most `cap`).
    pub fn observe_wake_late(&mut self, late: Duration, cap: Duration) {
        self.wake_late = moving_average(self.wake_late, late, cap);
    }

    /// Folds one real-time group's preparation time into the average (at
    /// most `cap`).
    pub fn observe_rt_prep(&mut self, took: Duration, cap: Duration) {
        self.rt_prep = moving_average(self.rt_prep, took, cap);
    }

    /// How late the dispatcher's timed waits have been ending.
    pub fn wake_late(&self) -> Duration {
        self.wake_late
    }
}

/// One step of a moving average that weighs the newest sample 1/4, capped.
fn moving_average(average: Duration, sample: Duration, cap: Duration) -> Duration {
    (average.mul_f64(0.75) + sample.mul_f64(0.25)).min(cap)
}

/// The limits [`decide`] applies.
pub(crate) struct Pacing {
    pub lead: Duration,
    /// The driver's submit blocks while the queue executes.
    pub submit_blocks: bool,
    pub max_realtime_in_flight: usize,
    pub max_batch_in_flight: usize,
    /// How long a waiting batch chunk may be passed over by real-time work.
    pub batch_max_wait: Duration,
}

/// What [`decide`] needs to know of the two lanes' queues.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Queues {
    pub rt_waiting: bool,
    pub rt_in_flight: usize,
    pub batch_waiting: bool,
    pub batch_in_flight: usize,
    /// Since when the waiting batch work has been passed over.
    pub last_batch_submit: Option<Instant>,
}

/// What the dispatcher may do now.
#[derive(Debug, PartialEq)]
pub(crate) enum Decision {
    Realtime,
    Batch,
    /// Nothing yet; look again after this long (or when woken).
    Wait(Duration),
}

/// Just-in-time submission, real-time first. While more than the lead of
/// work is queued on the GPU and a batch chunk is part of it, new work
/// would only wait behind it, so it is held (and real-time requests
/// coalesce) until the GPU nears the end of that work; real-time requests
/// are released early by their preparation time. Where the driver's submit
/// blocks while the queue executes, a batch chunk never goes behind another
/// chunk, only onto an idle queue or within the lead of real-time work's
/// end. A batch lane owed its share goes regardless.
pub(crate) fn decide(q: &Queues, pred: &Prediction, now: Instant, p: &Pacing) -> Decision {
    // The dispatcher's timed waits end late by the OS timer slack and
    // scheduling; the lead covers that too, or the GPU would run dry.
    let lead = p.lead.saturating_add(pred.wake_late);
    let ahead = pred.queued_ahead(now);
    let at_boundary = ahead <= lead;
    let rt_release = lead.saturating_add(pred.rt_prep);
    let rt_ready = q.rt_waiting
        && q.rt_in_flight < p.max_realtime_in_flight
        && (ahead <= rt_release || q.batch_in_flight == 0);
    let batch_can = q.batch_waiting && q.batch_in_flight < p.max_batch_in_flight;
    // A batch lane owed its share goes even if the prediction says the GPU
    // is busy (under a real-time flood it may never say otherwise).
    let batch_starved = batch_can
        && q.last_batch_submit
            .is_some_and(|t| now.duration_since(t) >= p.batch_max_wait);
    // Where the driver's submit blocks while the queue is busy, a chunk
    // submitted behind a running chunk would hold the dispatcher (and every
    // real-time request arriving meanwhile) for that whole chunk, so a
    // chunk goes only when no other chunk is in flight: onto an idle queue,
    // or just in time behind real-time work, whose end is near (waiting for
    // the queue to drain instead cost lavapipe a fifth of its batch
    // throughput under a 1 kHz real-time stream).
    let boundary = if p.submit_blocks {
        q.batch_in_flight == 0 && (q.rt_in_flight == 0 || at_boundary)
    } else {
        at_boundary
    };
    let batch_ready = batch_can && (boundary || batch_starved);
    if rt_ready && !batch_starved {
        return Decision::Realtime;
    }
    // A batch chunk is not queued ahead of waiting real-time requests
    // unless the batch lane is owed its share, even when those requests
    // wait for a real-time slot (the GPU then has real-time work, and the
    // next group goes the moment a slot frees).
    if batch_ready && (!q.rt_waiting || batch_starved) {
        return Decision::Batch;
    }
    // With nothing queued there is nothing to hold: only new work (which
    // wakes the loop) gives the dispatcher something to do.
    if !q.rt_waiting && !q.batch_waiting {
        return Decision::Wait(IDLE_WAIT);
    }
    // Where submit blocks, a batch chunk in flight keeps the next one back
    // until it completes (unless the batch lane is owed its share, above),
    // and its completion wakes the loop: a timed look before then would
    // find nothing to do (on lavapipe it was one wasted wake-up of the
    // dispatcher per chunk, about 2500 a second, each taking CPU from the
    // device's own threads). Real-time work waiting still needs one, to be
    // released just before the chunk ends.
    if p.submit_blocks && q.batch_in_flight > 0 && !q.rt_waiting {
        return Decision::Wait(IDLE_WAIT);
    }
    // Held work is reconsidered when the GPU nears the end of the queued
    // work; completions, new work and shutdown wake the loop earlier.
    let release = if q.rt_waiting { rt_release } else { lead };
    Decision::Wait(match ahead.checked_sub(release) {
        Some(d) if d > Duration::ZERO => d.min(IDLE_WAIT),
        _ => IDLE_WAIT,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    const PACING: Pacing = Pacing {
        lead: Duration::from_micros(100),
        submit_blocks: false,
        max_realtime_in_flight: 2,
        max_batch_in_flight: 2,
        batch_max_wait: Duration::from_millis(20),
    };

    /// A chunk with 2 ms of predicted GPU time left is running; one more
    /// chunk of the job waits, and real-time requests if `rt`.
    fn chunk_running(now: Instant, rt: bool) -> (Queues, Prediction) {
        let q = Queues {
            rt_waiting: rt,
            batch_waiting: true,
            batch_in_flight: 1,
            last_batch_submit: Some(now),
            ..Queues::default()
        };
        let mut pred = Prediction::default();
        pred.predict(now, ms(2));
        (q, pred)
    }

    #[test]
    fn work_waits_for_the_end_of_the_running_chunk_then_realtime_goes_first() {
        let t0 = Instant::now();
        let (mut q, mut pred) = chunk_running(t0, true);
        // Mid-chunk: both lanes are held until the chunk is about to end.
        assert_eq!(
            decide(&q, &pred, t0, &PACING),
            Decision::Wait(ms(2) - us(100))
        );
        // Within the lead of its end, real-time goes first...
        let near_end = t0 + ms(2) - us(50);
        assert_eq!(decide(&q, &pred, near_end, &PACING), Decision::Realtime);
        // ...and is released earlier by its measured preparation time.
        for _ in 0..40 {
            pred.observe_rt_prep(us(400), ms(1));
        }
        let at_1ms = decide(&q, &pred, t0 + ms(1), &PACING);
        assert!(
            matches!(at_1ms, Decision::Wait(d) if d > us(495) && d < us(505)),
            "{at_1ms:?}"
        );
        let after = t0 + ms(1) + us(600);
        assert_eq!(decide(&q, &pred, after, &PACING), Decision::Realtime);
        // With no real-time work waiting, the next chunk goes at the lead.
        q.rt_waiting = false;
        assert_eq!(
            decide(&q, &pred, t0 + ms(1), &PACING),
            Decision::Wait(ms(1) - us(100))
        );
        assert_eq!(decide(&q, &pred, near_end, &PACING), Decision::Batch);
    }

    #[test]
    fn where_submit_blocks_a_chunk_never_queues_behind_another_chunk() {
        let blocking = Pacing {
            submit_blocks: true,
            ..PACING
        };
        let t0 = Instant::now();
        let (mut q, mut pred) = chunk_running(t0, false);
        // Mid-chunk, no timed look: only the chunk's completion (which
        // wakes the loop) lets the next one go.
        assert_eq!(decide(&q, &pred, t0, &blocking), Decision::Wait(IDLE_WAIT));
        // Real-time work waiting is held to just before the chunk's end.
        q.rt_waiting = true;
        assert_eq!(
            decide(&q, &pred, t0, &blocking),
            Decision::Wait(ms(2) - PACING.lead)
        );
        q.rt_waiting = false;
        // Within the lead, and even past the prediction: the running chunk
        // has not been seen to complete.
        let near_end = t0 + ms(2) - us(50);
        assert_eq!(
            decide(&q, &pred, near_end, &blocking),
            Decision::Wait(IDLE_WAIT)
        );
        assert_eq!(
            decide(&q, &pred, t0 + ms(3), &blocking),
            Decision::Wait(IDLE_WAIT)
        );
        // Real-time work is still released early: its submit then waits
        // for the running chunk, and it is first in line after it.
        q.rt_waiting = true;
        assert_eq!(decide(&q, &pred, near_end, &blocking), Decision::Realtime);
        q.rt_waiting = false;
        q.batch_in_flight = 0;
        pred.note_completion(t0 + ms(2), ms(2), true);
        assert_eq!(decide(&q, &pred, t0 + ms(2), &blocking), Decision::Batch);
        // Behind a real-time group it goes just in time: held while more
        // than the lead of the group is left, then queued behind it.
        let t1 = t0 + ms(2);
        pred.predict(t1, us(400));
        q.rt_in_flight = 1;
        assert_eq!(
            decide(&q, &pred, t1, &blocking),
            Decision::Wait(us(400) - PACING.lead)
        );
        assert_eq!(decide(&q, &pred, t1 + us(350), &blocking), Decision::Batch);
        // Never behind a chunk, even within the lead of the work's end.
        q.batch_in_flight = 1;
        assert_eq!(
            decide(&q, &pred, t1 + us(350), &blocking),
            Decision::Wait(IDLE_WAIT)
        );
        // A starved batch lane still goes onto a busy queue, with or
        // without real-time work waiting.
        let late = t0 + PACING.batch_max_wait;
        for rt in [true, false] {
            let (busy, pred) = chunk_running(t0, rt);
            assert_eq!(decide(&busy, &pred, late, &blocking), Decision::Batch);
        }
    }

    #[test]
    fn late_timed_wake_ups_widen_the_lead() {
        let t0 = Instant::now();
        let (q, mut pred) = chunk_running(t0, false);
        let early = t0 + ms(2) - us(250);
        assert_eq!(decide(&q, &pred, early, &PACING), Decision::Wait(us(150)));
        for _ in 0..40 {
            pred.observe_wake_late(us(200), ms(1));
        }
        assert!(pred.wake_late() > us(190) && pred.wake_late() <= us(200));
        assert_eq!(decide(&q, &pred, early, &PACING), Decision::Batch);
        // The lateness is capped (at half the quantum in the dispatcher).
        pred.observe_wake_late(Duration::from_secs(1), us(300));
        assert_eq!(pred.wake_late(), us(300));
    }

    #[test]
    fn realtime_goes_at_once_when_no_batch_chunk_is_queued() {
        let t0 = Instant::now();
        // Even with real-time work predicted on the GPU: only batch work is
        // worth holding back for.
        let mut q = Queues {
            rt_waiting: true,
            rt_in_flight: 1,
            ..Queues::default()
        };
        let mut pred = Prediction::default();
        pred.predict(t0, ms(5));
        assert_eq!(decide(&q, &pred, t0, &PACING), Decision::Realtime);
        // The in-flight bound still applies.
        q.rt_in_flight = 2;
        assert_eq!(
            decide(&q, &pred, t0, &PACING),
            Decision::Wait(ms(5) - us(100))
        );
    }

    #[test]
    fn a_starved_batch_lane_goes_ahead_of_realtime_work_within_the_in_flight_bound() {
        let t0 = Instant::now();
        let (q, pred) = chunk_running(t0, true);
        let late = t0 + PACING.batch_max_wait;
        // The running chunk's prediction has passed: at the boundary, and the
        // batch lane has waited its longest.
        assert_eq!(decide(&q, &pred, late, &PACING), Decision::Batch);
        // Before its wait is up, real-time work goes first.
        assert_eq!(decide(&q, &pred, t0 + ms(3), &PACING), Decision::Realtime);
        // The hard in-flight bound holds even for a starved lane.
        let full = Queues {
            rt_waiting: false,
            batch_in_flight: 2,
            ..q
        };
        assert_eq!(
            decide(&full, &pred, late, &PACING),
            Decision::Wait(IDLE_WAIT)
        );
    }

    #[test]
    fn with_nothing_queued_the_dispatcher_sleeps_until_new_work_not_until_the_gpu_is_done() {
        let t0 = Instant::now();
        let (q, pred) = chunk_running(t0, false);
        let empty = Queues {
            batch_waiting: false,
            ..q
        };
        // 2 ms of work in flight, nothing held: no timed wake-up near its end.
        assert_eq!(
            decide(&empty, &pred, t0, &PACING),
            Decision::Wait(IDLE_WAIT)
        );
        // With a chunk waiting, the hold ends within the lead of the end.
        assert_eq!(
            decide(&q, &pred, t0, &PACING),
            Decision::Wait(ms(2) - us(100))
        );
    }

    /// Pipelined real-time groups under a flood keep the prediction far in
    /// the future; the batch lane still gets its share.
    #[test]
    fn a_starved_batch_lane_goes_even_when_a_realtime_flood_keeps_the_gpu_predicted_busy() {
        let t0 = Instant::now();
        let q = Queues {
            rt_waiting: true,
            rt_in_flight: 1,
            batch_waiting: true,
            last_batch_submit: Some(t0),
            ..Queues::default()
        };
        let mut pred = Prediction::default();
        pred.predict(t0, Duration::from_secs(1));
        assert_eq!(decide(&q, &pred, t0 + ms(1), &PACING), Decision::Realtime);
        let late = t0 + PACING.batch_max_wait;
        assert_eq!(decide(&q, &pred, late, &PACING), Decision::Batch);
    }

    #[test]
    fn predicted_gpu_work_queues_up_and_clears_when_the_gpu_is_seen_idle() {
        let mut pred = Prediction::default();
        let t0 = Instant::now();
        assert_eq!(pred.queued_ahead(t0), Duration::ZERO);
        pred.predict(t0, ms(2));
        assert_eq!(pred.queued_ahead(t0), ms(2));
        // A later submission queues behind the work already there.
        pred.predict(t0 + ms(1), ms(1));
        assert_eq!(pred.queued_ahead(t0 + ms(1)), ms(2));
        // Past the prediction nothing is ahead.
        assert_eq!(pred.queued_ahead(t0 + ms(10)), Duration::ZERO);
        // The chunk completes early, at 0.5 ms: what is left in flight (the
        // 1 ms group) cannot end later than 1 ms from now.
        pred.note_completion(t0 + us(500), ms(2), false);
        assert_eq!(pred.queued_ahead(t0 + us(500)), ms(1));
        // Once nothing is in flight the GPU is idle, whatever the
        // prediction said.
        pred.note_completion(t0 + us(600), ms(1), true);
        assert_eq!(pred.queued_ahead(t0 + us(600)), Duration::ZERO);
        assert_eq!(pred.in_flight_busy, Duration::ZERO);
        // Absurd estimates are capped instead of overflowing the clock.
        pred.predict(t0, Duration::MAX);
        pred.predict(t0, Duration::MAX);
        assert_eq!(pred.queued_ahead(t0), MAX_PREDICTION * 2);
    }
}
