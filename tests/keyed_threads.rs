//! Keyed async requests in a burst run on the engine's keyed threads (two
//! at most), not on a thread each, and each future still gets its own
//! request's bits. A test binary of its own: it counts the process's
//! threads by name, which other tests' engines would add to.

mod common;

use common::{ReductionBits, SplitMix, grouped_bits};
use gpulanes::{Engine, NanPolicy, Op};

const OPS: [Op; 5] = [Op::Sum, Op::Mean, Op::Max, Op::Min, Op::Count];

/// Threads of this process named `name` (Linux: /proc/self/task; `None`
/// elsewhere).
fn threads_named(name: &str) -> Option<usize> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    Some(
        tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.trim_end() == name)
            .count(),
    )
}

/// The future's result, waited for on a thread of its own; a future that
/// does not settle within two minutes fails the test instead of hanging it.
fn settle<T: Send + 'static>(f: gpulanes::ReductionFuture<T>) -> gpulanes::Result<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(pollster::block_on(f));
    });
    rx.recv_timeout(std::time::Duration::from_secs(120))
        .expect("a keyed future did not settle within two minutes")
}

#[test]
fn a_burst_of_keyed_futures_runs_on_two_threads() {
    let engine = Engine::new().unwrap();
    let mut rng = SplitMix::new(53);
    // Small enough that no request splits its own host work over threads
    // (key ranges, exponent scans and results go to several threads only
    // from a million keys or values, or 32,768 groups, up): such threads
    // would take their parent's name and be counted here.
    let n = 60_000;
    let cases: Vec<(Vec<i32>, Vec<f32>)> = (0..12)
        .map(|i| {
            let keys = (0..n).map(|_| rng.below(50 + 400 * i) as i32).collect();
            let values = (0..n).map(|_| rng.below(1 << 20) as f32 - 5e5).collect();
            (keys, values)
        })
        .collect();
    let mut futures: Vec<_> = cases
        .iter()
        .map(|(k, v)| engine.reduce_by_key_async(k.clone(), v.clone(), &OPS, NanPolicy::Ignore))
        .collect();
    let want: Vec<(Vec<i32>, Vec<ReductionBits>)> = cases
        .iter()
        .map(|(k, v)| grouped_bits(&engine.reduce_by_key(k, v, &OPS, NanPolicy::Ignore).unwrap()))
        .collect();
    // Once the first request is done its thread has started (and named
    // itself); the threads live as long as the engine. Twelve requests,
    // two keyed threads: the rest waited in the queue.
    let first = settle(futures.remove(0)).unwrap();
    assert_eq!(grouped_bits(&first), want[0]);
    if let Some(t) = threads_named("gpulanes-keyed") {
        assert!((1..=2).contains(&t), "{t} keyed threads for 12 requests");
    }
    for (f, want) in futures.into_iter().zip(&want[1..]) {
        assert_eq!(&grouped_bits(&settle(f).unwrap()), want);
    }
    if let Some(t) = threads_named("gpulanes-keyed") {
        assert!((1..=2).contains(&t), "{t} keyed threads after the burst");
    }
}
