//! Keyed async requests in a burst run on the engine's keyed threads (two
//! at most), not on a thread each, and each future still gets its own
//! request's bits. A test binary of its own: it counts the process's
//! threads by name, which other tests' engines would add to.

mod common;

use common::{SplitMix, scalar_bits};
use gpulanes::{Engine, Grouped, NanPolicy, Op};

const OPS: [Op; 5] = [Op::Sum, Op::Mean, Op::Max, Op::Min, Op::Count];

/// Keys, then each op's value bits and counts.
type Bits = (Vec<i32>, Vec<(Vec<Option<(u8, u64)>>, Vec<u64>)>);

fn bits(g: &Grouped<i32>) -> Bits {
    (
        g.keys.clone(),
        g.reductions
            .iter()
            .map(|r| {
                (
                    r.values.iter().map(|v| scalar_bits(*v)).collect(),
                    r.counts.clone(),
                )
            })
            .collect(),
    )
}

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

#[test]
fn a_burst_of_keyed_futures_runs_on_two_threads() {
    let engine = Engine::new().unwrap();
    let mut rng = SplitMix::new(53);
    let n = 60_000;
    let cases: Vec<(Vec<i32>, Vec<f32>)> = (0..12)
        .map(|i| {
            let keys = (0..n).map(|_| rng.below(50 + 400 * i) as i32).collect();
            let values = (0..n).map(|_| rng.below(1 << 20) as f32 - 5e5).collect();
            (keys, values)
        })
        .collect();
    let futures: Vec<_> = cases
        .iter()
        .map(|(k, v)| engine.reduce_by_key_async(k.clone(), v.clone(), &OPS, NanPolicy::Ignore))
        .collect();
    // Twelve requests in flight, two keyed threads: the rest are queued.
    if let Some(t) = threads_named("gpulanes-keyed") {
        assert!((1..=2).contains(&t), "{t} keyed threads for 12 requests");
    }
    for (f, (k, v)) in futures.into_iter().zip(&cases) {
        let got = pollster::block_on(f).unwrap();
        let want = engine.reduce_by_key(k, v, &OPS, NanPolicy::Ignore).unwrap();
        assert_eq!(bits(&got), bits(&want));
    }
    if let Some(t) = threads_named("gpulanes-keyed") {
        assert!(t <= 2, "{t} keyed threads after the burst");
    }
}
