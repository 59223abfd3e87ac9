//! Locking that outlives a panic.
//!
//! A thread that panics while holding a mutex poisons it. The engine's
//! shared state (futures' slots, the poller's and the keyed threads'
//! queues, the device's health, the schedulers' state) stays consistent
//! across any panic of the code run under its locks, and whoever comes next
//! still has to settle the requests it holds, so every lock is taken
//! whether or not it is poisoned.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};

/// Takes `m`, also after a thread panicked holding it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The value of `key` in `cache`, made by `make` where it has none.
/// `make` runs without the lock held, so a lookup of another key (or of
/// this one, once made) never waits for a slow `make`, such as a pipeline
/// build; two threads may both make a missing value, and the first one
/// kept is the one every caller gets.
pub(crate) fn cached<K: Eq + Hash, V: Clone>(
    cache: &Mutex<HashMap<K, V>>,
    key: K,
    make: impl FnOnce() -> V,
) -> V {
    if let Some(v) = lock(cache).get(&key) {
        return v.clone();
    }
    let made = make();
    lock(cache).entry(key).or_insert(made).clone()
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

    #[test]
    fn a_cached_value_is_made_without_the_lock_and_the_first_kept_wins() {
        use std::sync::mpsc;
        let cache = std::sync::Arc::new(Mutex::new(HashMap::from([(1, "one")])));
        let (inside, is_inside) = mpsc::channel();
        let (go_on, wait) = mpsc::channel::<()>();
        let c = cache.clone();
        let maker = std::thread::spawn(move || {
            cached(&c, 2, || {
                inside.send(()).unwrap();
                wait.recv().unwrap();
                "two, slowly"
            })
        });
        is_inside.recv().unwrap();
        // While the slow value is being made, the cache is free.
        assert!(cache.try_lock().is_ok());
        assert_eq!(cached(&cache, 1, || unreachable!("kept already")), "one");
        // Another thread makes the same value first: its one is kept.
        assert_eq!(cached(&cache, 2, || "two, first"), "two, first");
        go_on.send(()).unwrap();
        assert_eq!(maker.join().unwrap(), "two, first");
        assert_eq!(
            cached(&cache, 2, || unreachable!("kept already")),
            "two, first"
        );
    }
}
