//! Deadlines of queued real-time requests, so that the dispatcher fails a
//! request at its deadline while it still waits in the queue (behind a
//! batch chunk, or for a real-time slot) instead of when it is reached.
//!
//! Only the instants are kept, in a min-heap: when the earliest one has
//! passed, the dispatcher sweeps the queue for every request past its
//! deadline. An instant whose request was dispatched meanwhile stays until
//! it passes (and then costs one sweep that finds nothing), or until the
//! queue empties, when all of them are dropped.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

#[derive(Default)]
pub(crate) struct QueuedDeadlines {
    heap: BinaryHeap<Reverse<Instant>>,
}

impl QueuedDeadlines {
    /// A request with `deadline` entered the queue.
    pub fn note(&mut self, deadline: Instant) {
        self.heap.push(Reverse(deadline));
    }

    /// The queue is empty: no instant kept belongs to a queued request.
    pub fn clear(&mut self) {
        self.heap.clear();
    }

    /// Whether some deadline has passed by `now` (forgetting those that
    /// have): the queue needs a sweep.
    pub fn take_passed(&mut self, now: Instant) -> bool {
        let mut passed = false;
        while self.heap.peek().is_some_and(|Reverse(d)| *d <= now) {
            self.heap.pop();
            passed = true;
        }
        passed
    }

    /// How long from `now` until the earliest deadline kept (`None` with
    /// none): the dispatcher sleeps no longer than that.
    pub fn until_next(&self, now: Instant) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse(d)| d.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passed_deadlines_call_for_a_sweep_once_and_the_next_one_bounds_the_wait() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = QueuedDeadlines::default();
        assert_eq!(d.until_next(t0), None);
        assert!(!d.take_passed(t0));
        for n in [30, 10, 20, 10] {
            d.note(t0 + ms(n));
        }
        assert_eq!(d.until_next(t0), Some(ms(10)));
        assert!(!d.take_passed(t0 + ms(9)));
        assert!(d.take_passed(t0 + ms(10)));
        assert!(
            !d.take_passed(t0 + ms(10)),
            "both 10 ms deadlines were taken"
        );
        assert_eq!(d.until_next(t0 + ms(10)), Some(ms(10)));
        assert_eq!(d.until_next(t0 + ms(25)), Some(Duration::ZERO));
        assert!(d.take_passed(t0 + ms(40)));
        assert_eq!(d.until_next(t0), None);
        d.note(t0);
        d.clear();
        assert!(!d.take_passed(t0 + ms(100)));
    }
}
