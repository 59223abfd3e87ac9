//! First come, first served for queue space: submitters blocked on a full
//! queue take a ticket and get space in ticket order, and a submitter that
//! arrives while others wait queues behind them even if its request would
//! fit, so a large request is not overtaken indefinitely by smaller ones.

use std::collections::VecDeque;

#[derive(Default)]
pub(crate) struct SpaceLine {
    waiting: VecDeque<u64>,
    next: u64,
}

impl SpaceLine {
    /// A new waiter's ticket, last in line.
    pub fn join(&mut self) -> u64 {
        let ticket = self.next;
        self.next += 1;
        self.waiting.push_back(ticket);
        ticket
    }

    /// Whether the holder of `ticket` (or, with `None`, a newcomer) is
    /// first in line.
    pub fn is_first(&self, ticket: Option<u64>) -> bool {
        self.waiting.front().copied() == ticket || self.waiting.is_empty()
    }

    /// `ticket` leaves the line (served, or given up).
    pub fn leave(&mut self, ticket: u64) {
        self.waiting.retain(|&t| t != ticket);
    }

    /// Whether someone waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_are_served_in_ticket_order_and_newcomers_wait_behind_them() {
        let mut line = SpaceLine::default();
        assert!(line.is_first(None), "nobody waits: a newcomer goes");
        let a = line.join();
        let b = line.join();
        assert!(line.is_first(Some(a)));
        assert!(!line.is_first(Some(b)));
        assert!(!line.is_first(None), "a newcomer waits behind a and b");
        line.leave(a);
        assert!(line.is_first(Some(b)));
        let c = line.join();
        line.leave(b);
        assert!(line.is_first(Some(c)));
        line.leave(c);
        assert!(line.is_empty());
        assert!(line.is_first(None));
    }
}
