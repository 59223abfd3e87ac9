//! Soak test of the lanes: 8 threads submit random real-time and batch work
//! (host and device-resident inputs, several partitionings, both NaN
//! policies) for a while, with random cancellations, dropped handles,
//! deadlines and queues small enough to be full (`WhenFull::Reject`).
//!
//! Checked, besides the absence of a hang (every wait is bounded):
//! * every completed result equals the exact CPU reference bit for bit
//!   (integer-valued inputs make every partial sum exact in f32, so there
//!   is no tolerance to hide a wrong or mixed-up result);
//! * every outcome is one that request may have (`Cancelled` only where it
//!   was cancelled, `DeadlineExceeded` only where it had a deadline);
//! * nothing is lost or duplicated: every accepted request's id settles
//!   exactly once (waited, cancelled or dropped), and the scheduler's own
//!   counts (completed + failed + cancelled) equal the accepted requests of
//!   each lane;
//! * resident memory (VmRSS from `/proc/self/status`) stays bounded: it
//!   does not keep growing between the first and the last quarter.
//!
//! `soak_short` runs in CI (`GPULANES_SOAK_SHORT_SECS`, default 15 s);
//! `soak_long` is ignored by default and runs `GPULANES_SOAK_SECS`
//! (default 300 s): `GPULANES_SOAK_SECS=300 cargo test --release --test
//! soak -- --ignored --nocapture`. Both print their figures.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::SplitMix;
use gpulanes::lanes::WhenFull;
use gpulanes::{
    DeviceArray, Engine, Error, Handle, Lane, Lanes, LanesConfig, NanPolicy, Op, Partitions,
    Reduction, Request, cpu,
};

const THREADS: usize = 8;
/// Unsettled handles a thread keeps before it waits for the oldest.
const MAX_PENDING: usize = 24;
/// Far longer than any request takes; only a hang reaches it.
const SETTLE_BOUND: Duration = Duration::from_secs(120);
const OPS: [Op; 5] = [Op::Sum, Op::Mean, Op::Max, Op::Min, Op::Count];
const POLICIES: [NanPolicy; 2] = [NanPolicy::Propagate, NanPolicy::Ignore];

fn secs_from_env(var: &str, default: u64) -> Duration {
    let secs = std::env::var(var)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{var}={v:?}: expected seconds"))
        })
        .unwrap_or(default);
    Duration::from_secs(secs)
}

#[test]
fn soak_short() {
    soak(secs_from_env("GPULANES_SOAK_SHORT_SECS", 15));
}

#[test]
#[ignore = "minutes long; run with --ignored (GPULANES_SOAK_SECS sets the duration)"]
fn soak_long() {
    soak(secs_from_env("GPULANES_SOAK_SECS", 300));
}

// ---------------------------------------------------------------- inputs

/// One input and its partitionings, with the reference for every
/// (partitioning, op, policy).
struct Input {
    data: Arc<[f32]>,
    device: Option<Arc<DeviceArray>>,
    partitions: Vec<Partitions>,
    want: HashMap<(usize, Op, NanPolicy), Reduction>,
}

/// Integers in -3..=3 (exact partial sums), with a few NaNs where `nans`.
fn ints(rng: &mut SplitMix, n: usize, nans: bool) -> Arc<[f32]> {
    let mut v: Vec<f32> = (0..n).map(|_| rng.below(7) as f32 - 3.0).collect();
    if nans && n > 0 {
        for _ in 0..3 {
            let i = rng.below(n as u64) as usize;
            v[i] = f32::NAN;
        }
    }
    v.into()
}

fn input(engine: &Engine, rng: &mut SplitMix, n: usize, nans: bool, resident: bool) -> Input {
    let data = ints(rng, n, nans);
    let n64 = n as u64;
    let partitions = vec![
        Partitions::Whole,
        Partitions::EqualSize((n64 / 7).max(1)),
        // An empty partition in the middle.
        Partitions::Offsets(vec![0, n64 / 3, n64 / 3, n64]),
    ];
    let mut want = HashMap::new();
    for (i, p) in partitions.iter().enumerate() {
        for op in OPS {
            for nan in POLICIES {
                want.insert((i, op, nan), cpu::reference(&data, op, p, nan).unwrap());
            }
        }
    }
    let device = resident.then(|| Arc::new(engine.upload(&data).unwrap()));
    Input {
        data,
        device,
        partitions,
        want,
    }
}

fn bits(r: &Reduction) -> (Vec<Option<u32>>, &[u64]) {
    // Every NaN the same: payloads may differ.
    let v = r
        .values
        .iter()
        .map(|v| v.map(|x| if x.is_nan() { u32::MAX } else { x.to_bits() }))
        .collect();
    (v, &r.counts)
}

// ---------------------------------------------------------------- ledger

/// What a lane's requests came to, as seen by the submitting threads.
#[derive(Default, Debug, Clone, Copy)]
struct Tally {
    accepted: u64,
    completed: u64,
    cancelled: u64,
    dropped: u64,
    expired: u64,
    rejected: u64,
    wrong_results: u64,
    unexpected_errors: u64,
    unsettled: u64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.accepted += o.accepted;
        self.completed += o.completed;
        self.cancelled += o.cancelled;
        self.dropped += o.dropped;
        self.expired += o.expired;
        self.rejected += o.rejected;
        self.wrong_results += o.wrong_results;
        self.unexpected_errors += o.unexpected_errors;
        self.unsettled += o.unsettled;
    }
}

/// One thread's accepted requests by id (ids count up from 0 in each
/// thread), and whether each has settled. A byte per request, so that the
/// bookkeeping itself does not grow the resident memory being watched.
#[derive(Default)]
struct Ledger {
    /// `ISSUED` or `SETTLED`, by id.
    state: Vec<u8>,
    /// Ids settled twice, or settled without being issued.
    duplicates: u64,
}

const ISSUED: u8 = 1;
const SETTLED: u8 = 2;

impl Ledger {
    fn issue(&mut self) -> u64 {
        self.state.push(ISSUED);
        self.state.len() as u64 - 1
    }

    fn settle(&mut self, id: u64) {
        match self.state.get_mut(id as usize) {
            Some(s) if *s == ISSUED => *s = SETTLED,
            _ => self.duplicates += 1,
        }
    }

    fn issued(&self) -> u64 {
        self.state.len() as u64
    }

    fn settled(&self) -> u64 {
        self.state.iter().filter(|&&s| s == SETTLED).count() as u64
    }
}

/// An accepted request, as its thread remembers it.
struct Meta {
    id: u64,
    lane: Lane,
    input: Arc<Input>,
    partitions: usize,
    op: Op,
    nan: NanPolicy,
    cancelled: bool,
    deadline: bool,
}

fn lane_index(lane: Lane) -> usize {
    match lane {
        Lane::RealTime => 0,
        Lane::Batch => 1,
    }
}

/// Classifies a settled request's outcome into `tally`; returns a message
/// for anything that should not have happened.
fn classify(p: &Meta, outcome: Result<Reduction, Error>, tally: &mut Tally) -> Option<String> {
    match outcome {
        Ok(r) => {
            let want = &p.input.want[&(p.partitions, p.op, p.nan)];
            if bits(&r) == bits(want) {
                tally.completed += 1;
                None
            } else {
                tally.wrong_results += 1;
                Some(format!(
                    "request {} ({:?}, {} items, {:?}, {:?}): got {:?}, want {:?}",
                    p.id,
                    p.lane,
                    p.input.data.len(),
                    p.op,
                    p.nan,
                    &r.values[..r.values.len().min(4)],
                    &want.values[..want.values.len().min(4)]
                ))
            }
        }
        Err(Error::Cancelled) if p.cancelled => {
            tally.cancelled += 1;
            None
        }
        Err(Error::DeadlineExceeded { .. }) if p.deadline => {
            tally.expired += 1;
            None
        }
        Err(e) => {
            tally.unexpected_errors += 1;
            Some(format!("request {} ({:?}): unexpected {e:?}", p.id, p.lane))
        }
    }
}

// ---------------------------------------------------------------- memory

/// VmRSS and VmHWM of this process, in KiB (0 where `/proc` lacks them).
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

// ---------------------------------------------------------------- the run

struct Shared {
    lanes: Lanes,
    rt_inputs: Vec<Arc<Input>>,
    batch_inputs: Vec<Arc<Input>>,
    end: Instant,
    problems: Mutex<Vec<String>>,
}

fn worker(sh: &Shared, seed: u64) -> ([Tally; 2], Ledger) {
    let mut rng = SplitMix::new(seed);
    let mut tallies = [Tally::default(); 2];
    let mut ledger = Ledger::default();
    let mut pending: Vec<(Handle<Reduction>, Meta)> = Vec::new();
    let mut problems = Vec::new();
    while Instant::now() < sh.end {
        // 3 in 4 real-time; batch jobs over host or device-resident data.
        let lane = if rng.below(4) < 3 {
            Lane::RealTime
        } else {
            Lane::Batch
        };
        let inputs = match lane {
            Lane::RealTime => &sh.rt_inputs,
            Lane::Batch => &sh.batch_inputs,
        };
        let input = inputs[rng.below(inputs.len() as u64) as usize].clone();
        let partitions = rng.below(input.partitions.len() as u64) as usize;
        let op = OPS[rng.below(OPS.len() as u64) as usize];
        let nan = POLICIES[rng.below(2) as usize];
        let mut request = match (&input.device, lane) {
            (Some(array), Lane::Batch) if rng.below(2) == 0 => Request::device(array.clone(), op),
            _ => Request::host(input.data.clone(), op),
        }
        .partitions(input.partitions[partitions].clone())
        .nan(nan);
        // A fifth of real-time requests have a deadline of 0-20 ms.
        let deadline = lane == Lane::RealTime && rng.below(5) == 0;
        if deadline {
            request = request.timeout(Duration::from_micros(rng.below(20_000)));
        }
        let tally = &mut tallies[lane_index(lane)];
        let handle = match sh.lanes.submit(lane, request) {
            Ok(h) => h,
            Err(Error::QueueFull { .. }) => {
                tally.rejected += 1;
                thread::sleep(Duration::from_millis(1));
                continue;
            }
            Err(e) => {
                tally.unexpected_errors += 1;
                problems.push(format!("submit to {lane:?}: unexpected {e:?}"));
                continue;
            }
        };
        let id = ledger.issue();
        tally.accepted += 1;
        let mut p = Meta {
            id,
            lane,
            input,
            partitions,
            op,
            nan,
            cancelled: false,
            deadline,
        };
        match rng.below(100) {
            // Cancelled at once (it may still have completed).
            0..8 => {
                handle.cancel();
                p.cancelled = true;
                pending.push((handle, p));
            }
            // Dropped at once: the drop cancels it.
            8..14 => {
                tally.dropped += 1;
                ledger.settle(p.id);
                drop(handle);
            }
            _ => pending.push((handle, p)),
        }
        // Now and then cancel or drop one still in flight.
        if !pending.is_empty() && rng.below(20) == 0 {
            let i = rng.below(pending.len() as u64) as usize;
            if rng.below(2) == 0 {
                pending[i].0.cancel();
                pending[i].1.cancelled = true;
            } else {
                let (handle, p) = pending.swap_remove(i);
                tallies[lane_index(p.lane)].dropped += 1;
                ledger.settle(p.id);
                drop(handle);
            }
        }
        // Harvest what has settled; wait for the oldest if too many wait.
        let mut i = 0;
        while i < pending.len() {
            if let Some(outcome) = pending[i].0.try_result() {
                let (_, p) = pending.swap_remove(i);
                settle(&p, outcome, &mut tallies, &mut ledger, &mut problems);
            } else {
                i += 1;
            }
        }
        if pending.len() > MAX_PENDING {
            let (handle, p) = pending.remove(0);
            wait_one(handle, &p, &mut tallies, &mut ledger, &mut problems);
        }
    }
    for (handle, p) in pending {
        wait_one(handle, &p, &mut tallies, &mut ledger, &mut problems);
    }
    sh.problems.lock().unwrap().extend(problems);
    (tallies, ledger)
}

/// Records `p`'s outcome: its id settles, its outcome is classified.
fn settle(
    p: &Meta,
    outcome: Result<Reduction, Error>,
    tallies: &mut [Tally; 2],
    ledger: &mut Ledger,
    problems: &mut Vec<String>,
) {
    ledger.settle(p.id);
    if let Some(msg) = classify(p, outcome, &mut tallies[lane_index(p.lane)]) {
        problems.push(msg);
    }
}

/// Waits for `handle` within [`SETTLE_BOUND`]; one that does not settle is
/// counted unsettled (and dropped, which cancels it).
fn wait_one(
    handle: Handle<Reduction>,
    p: &Meta,
    tallies: &mut [Tally; 2],
    ledger: &mut Ledger,
    problems: &mut Vec<String>,
) {
    match handle.wait_timeout(SETTLE_BOUND) {
        Ok(outcome) => settle(p, outcome, tallies, ledger, problems),
        Err(_) => {
            tallies[lane_index(p.lane)].unsettled += 1;
            problems.push(format!("request {} ({:?}) did not settle", p.id, p.lane));
        }
    }
}

fn soak(duration: Duration) {
    let engine = Engine::new().expect("an adapter (run scripts/ensure-vulkan.sh)");
    let mut rng = SplitMix::new(0x50a4);
    let rt_sizes = [1usize, 100, 4096, 4097, 8192 * 3 + 5, 65_536, 200_003];
    let rt_inputs: Vec<Arc<Input>> = rt_sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| Arc::new(input(&engine, &mut rng, n, i % 2 == 1, false)))
        .collect();
    let batch_sizes = [1usize << 20, (3 << 20) + 17, 1 << 21];
    let batch_inputs: Vec<Arc<Input>> = batch_sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| Arc::new(input(&engine, &mut rng, n, i == 1, i != 1)))
        .collect();
    let lanes = Lanes::new(
        &engine,
        LanesConfig::default()
            // Small queues, rejecting: the submitting threads fill them.
            .realtime_queue_len(48)
            .batch_queue_len(3)
            .when_full(WhenFull::Reject)
            // Batch jobs of tens to hundreds of chunks.
            .min_chunk_units(2)
            .max_chunk_units(16),
    )
    .unwrap();
    let started = Instant::now();
    let sh = Arc::new(Shared {
        lanes,
        rt_inputs,
        batch_inputs,
        end: started + duration,
        problems: Mutex::new(Vec::new()),
    });
    let (rss_start, _) = memory_kib();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let sh = sh.clone();
            thread::spawn(move || worker(&sh, 1000 + t as u64))
        })
        .collect();
    // Resident memory once a second while the threads run.
    let mut samples = Vec::new();
    while Instant::now() < sh.end {
        thread::sleep(Duration::from_secs(1).min(sh.end.saturating_duration_since(Instant::now())));
        samples.push(memory_kib().0);
    }
    let mut tallies = [Tally::default(); 2];
    let (mut issued, mut settled, mut duplicates) = (0, 0, 0);
    for w in workers {
        let (t, l) = w.join().expect("a worker panicked");
        tallies[0].add(&t[0]);
        tallies[1].add(&t[1]);
        issued += l.issued();
        settled += l.settled();
        duplicates += l.duplicates;
    }
    let ran = started.elapsed();
    let sh = Arc::into_inner(sh).expect("workers done");
    sh.lanes.wait_idle();
    let m = sh.lanes.metrics();
    let (rss_end, hwm) = memory_kib();
    drop(sh.lanes);
    let (rss_after_drop, _) = memory_kib();

    let [rt, batch] = tallies;
    eprintln!("soak: {THREADS} threads for {:.1} s", ran.as_secs_f64());
    for (name, t, lm) in [("real-time", rt, &m.realtime), ("batch", batch, &m.batch)] {
        eprintln!(
            "  {name:9}: accepted {}, completed {}, cancelled {} (+{} dropped), expired {}, rejected (queue full) {}, wrong results {}, unexpected errors {}, unsettled {}; scheduler counts: completed {}, failed {}, cancelled {}, submits {}",
            t.accepted,
            t.completed,
            t.cancelled,
            t.dropped,
            t.expired,
            t.rejected,
            t.wrong_results,
            t.unexpected_errors,
            t.unsettled,
            lm.completed,
            lm.failed,
            lm.cancelled,
            lm.submits
        );
    }
    let q = samples.len() / 4;
    let first_quarter = samples[..q.max(1)].iter().copied().max().unwrap_or(0);
    let last_quarter = samples[samples.len() - q.max(1)..]
        .iter()
        .copied()
        .max()
        .unwrap_or(0);
    eprintln!(
        "  memory (MiB): start {:.0}, peak {:.0} (VmHWM), max in first quarter {:.0}, max in last quarter {:.0}, end {:.0}, after dropping the lanes {:.0}",
        rss_start as f64 / 1024.0,
        hwm as f64 / 1024.0,
        first_quarter as f64 / 1024.0,
        last_quarter as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        rss_after_drop as f64 / 1024.0
    );
    eprintln!(
        "  ids: {issued} issued, {settled} settled, {duplicates} settled twice (or never issued)"
    );

    let problems = sh.problems.into_inner().unwrap();
    assert!(
        problems.is_empty(),
        "{} problems, the first: {:#?}",
        problems.len(),
        &problems[..problems.len().min(10)]
    );
    for (name, t) in [("real-time", rt), ("batch", batch)] {
        assert_eq!(t.wrong_results, 0, "{name}: wrong results");
        assert_eq!(t.unsettled, 0, "{name}: unsettled handles");
        assert_eq!(t.unexpected_errors, 0, "{name}: unexpected errors");
        assert!(t.completed > 0, "{name}: nothing completed");
    }
    // The run exercised what it claims to.
    assert!(rt.expired > 0, "no deadline expired");
    assert!(rt.cancelled + batch.cancelled > 0, "nothing was cancelled");
    assert!(rt.rejected + batch.rejected > 0, "no queue was ever full");
    // Nothing lost or duplicated.
    assert_eq!(duplicates, 0, "ids settled twice");
    assert_eq!(issued, rt.accepted + batch.accepted, "ids issued");
    assert_eq!(settled, issued, "ids issued but never settled");
    for (name, t, lm) in [("real-time", rt, &m.realtime), ("batch", batch, &m.batch)] {
        assert_eq!(
            lm.completed + lm.failed + lm.cancelled,
            t.accepted,
            "{name}: the scheduler's counts ({lm:?}) do not add up to the accepted requests"
        );
    }
    // Bounded memory: no steady growth from the first quarter to the last
    // (a leak of a buffer or a job per request would grow by far more).
    let allowance = 64 * 1024 + first_quarter / 4;
    assert!(
        last_quarter <= first_quarter + allowance,
        "resident memory grew from {first_quarter} KiB to {last_quarter} KiB"
    );
}
