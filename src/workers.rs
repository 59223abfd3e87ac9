//! Threads that run an engine's blocking background work, in order: the
//! poller's waits for the GPU (one thread, see `poller`) and the keyed
//! async requests (a few threads).
//!
//! A keyed request plans its keys, uploads its rows, waits for the GPU
//! between windows of groups and finishes its groups on the host: work
//! that blocks, so an async form runs it off the caller's thread. Each
//! engine (each device context) runs that work on a few threads of its
//! own, [`KEYED_THREADS`] at most, started as requests come while every
//! started thread is busy; requests beyond them wait in a queue, in order.
//! So any number of requests in flight costs a bounded number of threads
//! and holds the device memory of a bounded number of requests at a time
//! (two let one request's host work overlap another's GPU work; more would
//! only share the same GPU queue and cores).
//!
//! A queued keyed job holds its own engine, so the context, and with it
//! the pool, lives until every job is done. A pool's threads end when it
//! is dropped, once its queue is empty; dropping it joins them, except the
//! thread that dropped it (a job's engine may be the context's last
//! reference). A job that panics leaves its thread running the next.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::sync::lock;

/// Most threads one context runs keyed async requests on.
pub(crate) const KEYED_THREADS: usize = 2;

/// A request's work, run once on one of the pool's threads.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// Threads that run jobs in the order they came, started on demand.
pub(crate) struct Workers {
    name: &'static str,
    limit: usize,
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Started threads waiting for a job.
    idle: usize,
    /// The pool is dropped: the threads end once the queue is empty.
    closed: bool,
}

impl Workers {
    /// A pool of at most `limit` threads named `name` (no thread yet).
    pub fn new(name: &'static str, limit: usize) -> Self {
        Workers {
            name,
            limit: limit.max(1),
            shared: Arc::new(Shared::default()),
            threads: Mutex::new(Vec::new()),
        }
    }

    /// Queues `job`, starting a thread for it where every started thread
    /// is busy and the pool has fewer than its limit.
    ///
    /// # Errors
    /// [`Error::Thread`] when no thread is running and none can be started
    /// (`job` is dropped unrun).
    pub fn run(&self, job: Job) -> Result<()> {
        let mut threads = lock(&self.threads);
        let start = {
            let mut q = lock(&self.shared.queue);
            q.jobs.push_back(job);
            // Idle threads take queued jobs first; a new thread only for a
            // job none of them will take.
            q.jobs.len() > q.idle && threads.len() < self.limit
        };
        self.shared.wake.notify_one();
        if start {
            let shared = self.shared.clone();
            match std::thread::Builder::new()
                .name(self.name.into())
                .spawn(move || work(&shared))
            {
                Ok(handle) => threads.push(handle),
                // The running threads take the job in turn.
                Err(_) if !threads.is_empty() => {}
                Err(e) => {
                    // Dropped once the lock is released: a job may hold the
                    // last reference to what owns this pool.
                    let unrun = lock(&self.shared.queue).jobs.pop_back();
                    drop(threads);
                    drop(unrun);
                    return Err(Error::Thread {
                        thread: self.name,
                        source: Arc::new(e),
                    });
                }
            }
        }
        Ok(())
    }

    /// Threads started so far (they run until the pool is dropped).
    #[cfg(test)]
    fn started(&self) -> usize {
        lock(&self.threads).len()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        lock(&self.shared.queue).closed = true;
        self.shared.wake.notify_all();
        let me = std::thread::current().id();
        for t in lock(&self.threads).drain(..) {
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
    }
}

/// A pool thread: the queue's jobs, first come first run, until the pool
/// is closed and the queue empty. A job that panics is its own to report
/// (the keyed forms settle their future from a guard); the thread goes on.
fn work(shared: &Shared) {
    loop {
        let job = {
            let mut q = lock(&shared.queue);
            loop {
                if let Some(job) = q.jobs.pop_front() {
                    break job;
                }
                if q.closed {
                    return;
                }
                q.idle += 1;
                q = shared.wake.wait(q).unwrap_or_else(|e| e.into_inner());
                q.idle -= 1;
            }
        };
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn many_jobs_run_on_at_most_the_limit_of_threads() {
        let pool = Workers::new("test-workers", 2);
        let (tx, rx) = mpsc::channel();
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        for i in 0..20 {
            let (tx, running, most) = (tx.clone(), running.clone(), most.clone());
            pool.run(Box::new(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
                running.fetch_sub(1, Ordering::SeqCst);
                tx.send(i).unwrap();
            }))
            .unwrap();
        }
        let mut done: Vec<i32> = (0..20).map(|_| rx.recv().unwrap()).collect();
        assert!(pool.started() <= 2, "{} threads", pool.started());
        assert!(most.load(Ordering::SeqCst) <= 2);
        done.sort();
        assert_eq!(done, (0..20).collect::<Vec<_>>());
    }

    #[test]
    fn one_thread_runs_jobs_in_the_order_they_came() {
        let pool = Workers::new("test-workers", 1);
        let (tx, rx) = mpsc::channel();
        for i in 0..50 {
            let tx = tx.clone();
            pool.run(Box::new(move || tx.send(i).unwrap())).unwrap();
        }
        let done: Vec<i32> = (0..50).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(done, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn a_panicking_job_leaves_the_thread_running_the_next() {
        let pool = Workers::new("test-workers", 1);
        let (tx, rx) = mpsc::channel();
        pool.run(Box::new(|| panic!("a job panics"))).unwrap();
        pool.run(Box::new(move || tx.send(7).unwrap())).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Ok(7));
        assert_eq!(pool.started(), 1);
    }

    #[test]
    fn dropping_the_pool_runs_what_is_queued_then_joins() {
        let count = Arc::new(AtomicUsize::new(0));
        {
            let pool = Workers::new("test-workers", 2);
            for _ in 0..10 {
                let count = count.clone();
                pool.run(Box::new(move || {
                    std::thread::sleep(Duration::from_millis(1));
                    count.fetch_add(1, Ordering::SeqCst);
                }))
                .unwrap();
            }
        }
        assert_eq!(count.load(Ordering::SeqCst), 10);
    }

    #[test]
    fn a_job_may_drop_the_pool_it_runs_on() {
        let pool = Arc::new(Mutex::new(Some(Workers::new("test-workers", 1))));
        let (tx, rx) = mpsc::channel();
        let inner = pool.clone();
        lock(&pool)
            .as_ref()
            .unwrap()
            .run(Box::new(move || {
                // The last owner, dropped from its own thread: no self-join.
                let taken = lock(&inner).take();
                drop(taken);
                tx.send(()).unwrap();
            }))
            .unwrap();
        rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert!(lock(&pool).is_none());
    }
}
