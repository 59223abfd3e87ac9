//! Locking that outlives a panic.
//!
//! A thread that panics while holding a mutex poisons it. The engine's
//! shared state (futures' slots, the poller's and the keyed threads'
//! queues, the device's health, the schedulers' state) stays consistent
//! across any panic of the code run under its locks, and whoever comes next
//! still has to settle the requests it holds, so every lock is taken
//! whether or not it is poisoned.

use std::sync::{Mutex, MutexGuard};

/// Takes `m`, also after a thread panicked holding it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_mutex_is_still_taken() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let held = m.clone();
        let _ = std::thread::spawn(move || {
            let _guard = held.lock().unwrap();
            panic!("poisons the mutex");
        })
        .join();
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }
}
