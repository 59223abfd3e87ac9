//! Keyed reductions (group-by) in both lanes: the same bits as
//! `Engine::reduce_by_key` run alone, whatever the lane, the cut into batch
//! steps or the work around them; bad input refused at submission. Asserted
//! by results and order, never by milliseconds.

mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{POLICIES, SplitMix, engine, scalar_bits, small_binding_engine};
use gpulanes::lanes::WhenFull;
use gpulanes::{
    Element, Engine, Error, Grouped, Key, Lane, Lanes, LanesConfig, NanPolicy, Op, Request,
    TrySubmitError,
};

const OPS: [Op; 5] = [Op::Sum, Op::Mean, Op::Max, Op::Min, Op::Count];

/// Small batch steps, so keyed batch jobs take many submissions even on
/// small inputs.
fn small_steps() -> LanesConfig {
    LanesConfig::default()
        .quantum(Duration::ZERO)
        .min_chunk_units(1)
        .max_chunk_units(1)
}

/// Asserts `got` has the bits of `want`: keys, counts and every value.
fn assert_same_bits<K: Key + std::fmt::Debug>(what: &str, got: &Grouped<K>, want: &Grouped<K>) {
    assert_eq!(got.keys, want.keys, "{what}: keys");
    assert_eq!(got.reductions.len(), want.reductions.len(), "{what}: ops");
    for (g, w) in got.reductions.iter().zip(&want.reductions) {
        assert_eq!(g.op, w.op, "{what}");
        assert_eq!(g.counts, w.counts, "{what}: {} counts", g.op.name());
        let gb: Vec<_> = g.values.iter().map(|v| scalar_bits(*v)).collect();
        let wb: Vec<_> = w.values.iter().map(|v| scalar_bits(*v)).collect();
        assert_eq!(gb, wb, "{what}: {} values", g.op.name());
    }
}

/// `rows` float values with NaN, infinities and signed zeros sprinkled in.
fn floats(rows: usize, seed: u64) -> Vec<f32> {
    let mut r = SplitMix::new(seed);
    (0..rows)
        .map(|_| match r.next_u64() % 97 {
            0 => f32::NAN,
            1 => f32::INFINITY,
            2 => -0.0,
            3 => 1e-40, // subnormal
            _ => r.range(-1e6, 1e6) as f32,
        })
        .collect()
}

/// Keys in `0..range` (dense for small ranges) shifted by `base`.
fn keys_i32(rows: usize, range: u64, base: i32, seed: u64) -> Vec<i32> {
    let mut r = SplitMix::new(seed);
    (0..rows)
        .map(|_| base.wrapping_add((r.next_u64() % range) as i32))
        .collect()
}

/// Sparse int64 keys: a few hundred distinct values spread over the range.
fn sparse_i64(rows: usize, seed: u64) -> Vec<i64> {
    let mut r = SplitMix::new(seed);
    let distinct: Vec<i64> = (0..300).map(|_| r.next_u64() as i64).collect();
    (0..rows)
        .map(|_| distinct[(r.next_u64() % 300) as usize])
        .collect()
}

fn solo<K: Key, E: Element>(e: &Engine, keys: &[K], values: &[E], nan: NanPolicy) -> Grouped<K> {
    e.reduce_by_key(keys, values, &OPS, nan).unwrap()
}

/// Runs `keys`/`values` through `lane` and checks the bits against
/// `reduce_by_key` alone.
fn check_lane<K: Key + std::fmt::Debug, E: Element>(
    e: &Engine,
    lanes: &Lanes,
    lane: Lane,
    what: &str,
    keys: Vec<K>,
    values: Vec<E>,
) {
    for nan in POLICIES {
        let want = solo(e, &keys, &values, nan);
        let got = lanes
            .submit(
                lane,
                Request::keyed(keys.clone(), values.clone(), &OPS, nan),
            )
            .unwrap()
            .wait()
            .unwrap();
        assert_same_bits(&format!("{what} ({lane:?}, {nan:?})"), &got, &want);
    }
}

#[test]
fn realtime_and_batch_keyed_results_are_the_bits_of_reduce_by_key() {
    let e = engine();
    let lanes = Lanes::new(e, LanesConfig::default()).unwrap();
    for lane in [Lane::RealTime, Lane::Batch] {
        check_lane(
            e,
            &lanes,
            lane,
            "dense i32 keys, f32",
            keys_i32(5000, 40, -20, 1),
            floats(5000, 2),
        );
        check_lane(
            e,
            &lanes,
            lane,
            "sparse i64 keys, f32",
            sparse_i64(3000, 3),
            floats(3000, 4),
        );
        let wide: Vec<f64> = floats(4000, 6).iter().map(|&x| x as f64 * 1.5).collect();
        check_lane(
            e,
            &lanes,
            lane,
            "dense i64 keys, f64",
            keys_i32(4000, 100, 7, 5)
                .iter()
                .map(|&k| k as i64 - (1 << 40))
                .collect::<Vec<i64>>(),
            wide,
        );
        let ints: Vec<i64> = (0..3000).map(|i| (i as i64 - 1500) * 1_000_003).collect();
        check_lane(
            e,
            &lanes,
            lane,
            "u32 keys, i64",
            keys_i32(3000, 17, 0, 7)
                .iter()
                .map(|&k| k as u32 * 3)
                .collect::<Vec<u32>>(),
            ints,
        );
        check_lane(
            e,
            &lanes,
            lane,
            "no rows",
            Vec::<i32>::new(),
            Vec::<f32>::new(),
        );
    }
}

#[test]
fn a_keyed_batch_job_cut_into_many_steps_has_the_bits_of_running_alone() {
    let e = engine();
    let lanes = Lanes::new(e, small_steps()).unwrap();
    // One unit of 8192 float32 values a step: 13 steps a job.
    let keys = keys_i32(100_000, 1000, 0, 11);
    let values = floats(100_000, 12);
    let before = lanes.metrics().batch.submits;
    check_lane(e, &lanes, Lane::Batch, "many steps", keys, values);
    let steps = lanes.metrics().batch.submits - before;
    assert!(steps >= 2 * 13, "{steps} submissions for two jobs");
    // 64-bit max/min keys: two phases, each over every step of rows.
    let wide: Vec<f64> = floats(60_000, 14).iter().map(|&x| x as f64).collect();
    check_lane(
        e,
        &lanes,
        Lane::Batch,
        "two phases",
        sparse_i64(60_000, 13),
        wide,
    );
}

#[test]
fn keyed_requests_over_many_windows_and_chunks_have_the_bits_of_running_alone() {
    // 64 KiB bindings: a few hundred groups per window and 16384 rows per
    // chunk, so both lanes run several windows and chunks.
    let e = small_binding_engine();
    let lanes = Lanes::new(e, small_steps()).unwrap();
    for lane in [Lane::RealTime, Lane::Batch] {
        check_lane(
            e,
            &lanes,
            lane,
            "windows",
            keys_i32(40_000, 3000, 100, 21),
            floats(40_000, 22),
        );
        let wide: Vec<f64> = floats(30_000, 24).iter().map(|&x| x as f64).collect();
        check_lane(
            e,
            &lanes,
            lane,
            "wide windows",
            sparse_i64(30_000, 23),
            wide,
        );
    }
}

#[test]
fn keyed_and_float_requests_from_several_threads_each_get_their_own_result() {
    let e = engine();
    let lanes = Arc::new(Lanes::new(e, small_steps()).unwrap());
    let threads = 4;
    let barrier = Arc::new(Barrier::new(threads));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (lanes, barrier) = (lanes.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..6u64 {
                    let seed = t as u64 * 100 + i;
                    let rows = 1000 + (seed as usize * 37) % 3000;
                    let keys = keys_i32(rows, 1 + seed % 50, seed as i32, seed);
                    let values = floats(rows, seed + 1);
                    let lane = if i % 3 == 2 {
                        Lane::Batch
                    } else {
                        Lane::RealTime
                    };
                    let keyed = lanes
                        .submit(
                            lane,
                            Request::keyed(keys.clone(), values.clone(), &OPS, NanPolicy::Ignore),
                        )
                        .unwrap();
                    let plain = lanes
                        .realtime(Request::host(values.clone(), Op::Sum))
                        .unwrap();
                    let want = solo(engine(), &keys, &values, NanPolicy::Ignore);
                    assert_same_bits(
                        &format!("thread {t}, request {i}"),
                        &keyed.wait().unwrap(),
                        &want,
                    );
                    let sum = engine()
                        .reduce_partitions(
                            &values,
                            Op::Sum,
                            &gpulanes::Partitions::Whole,
                            NanPolicy::Propagate,
                        )
                        .unwrap();
                    assert_eq!(
                        plain.wait().unwrap().value().map(f32::to_bits),
                        sum.value().map(f32::to_bits),
                        "thread {t}, request {i}: the float sum"
                    );
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}

#[test]
fn a_realtime_keyed_request_completes_while_a_long_batch_job_runs() {
    let e = engine();
    let cfg = LanesConfig::default()
        .quantum(Duration::ZERO)
        .min_chunk_units(2)
        .max_chunk_units(2)
        .max_batch_in_flight(1)
        .batch_min_share(0.0);
    let lanes = Lanes::new(e, cfg).unwrap();
    // 64 blocks in chunks of 2: 32 chunks.
    let big: Arc<[f32]> = floats(64 * 8192, 31).into();
    let batch = lanes.batch(Request::host(big.clone(), Op::Sum)).unwrap();
    let keys = keys_i32(4096, 16, 0, 32);
    let values = floats(4096, 33);
    let rt = lanes
        .realtime(Request::keyed(
            keys.clone(),
            values.clone(),
            &OPS,
            NanPolicy::Propagate,
        ))
        .unwrap();
    let got = rt.wait().unwrap();
    // Queued behind the job's first chunks, it must finish before the job.
    assert!(
        !batch.is_finished(),
        "the batch job finished before the real-time keyed request"
    );
    assert_same_bits(
        "real-time keyed",
        &got,
        &solo(e, &keys, &values, NanPolicy::Propagate),
    );
    let want = e
        .reduce_partitions(
            &big,
            Op::Sum,
            &gpulanes::Partitions::Whole,
            NanPolicy::Propagate,
        )
        .unwrap();
    assert_eq!(
        batch.wait().unwrap().value().map(f32::to_bits),
        want.value().map(f32::to_bits)
    );
}

#[test]
fn a_keyed_batch_job_lets_realtime_requests_through_and_can_be_cancelled() {
    let e = engine();
    let cfg = small_steps().max_batch_in_flight(1).batch_min_share(0.0);
    let lanes = Lanes::new(e, cfg).unwrap();
    let keys = keys_i32(400_000, 500, 0, 41);
    let values = floats(400_000, 42);
    let job = lanes
        .batch(Request::keyed(keys, values, &OPS, NanPolicy::Ignore))
        .unwrap();
    let rt = lanes
        .realtime(Request::host(floats(4096, 43), Op::Max))
        .unwrap();
    rt.wait().unwrap();
    // About a hundred steps: still running when the request is served.
    assert!(
        !job.is_finished(),
        "the keyed job finished before the request"
    );
    job.cancel();
    assert!(matches!(job.wait(), Err(Error::Cancelled)));
    lanes.wait_idle();
    assert_eq!(lanes.metrics().batch.cancelled, 1);
}

#[test]
fn bad_keyed_requests_are_refused_at_submission() {
    let e = engine();
    let lanes = Lanes::new(
        e,
        LanesConfig::default().max_realtime_request_bytes(1 << 12),
    )
    .unwrap();
    let ops = [Op::Sum];
    for lane in [Lane::RealTime, Lane::Batch] {
        let err = lanes
            .submit(
                lane,
                Request::keyed(
                    vec![1i32, 2, 3],
                    vec![1.0f32, 2.0],
                    &ops,
                    NanPolicy::Propagate,
                ),
            )
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput(m) if m.contains("differ in length")),
            "{lane:?}: {err}"
        );
        let err = lanes
            .submit(
                lane,
                Request::keyed(vec![1i64], vec![1.0f64], &[], NanPolicy::Propagate),
            )
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput(m) if m.contains("no ops")),
            "{lane:?}: {err}"
        );
        // The `try_` forms fail alike, with nothing to hand back.
        let err = lanes
            .try_submit(
                lane,
                Request::keyed(vec![1u32], Vec::<f32>::new(), &ops, NanPolicy::Ignore),
            )
            .unwrap_err();
        assert!(
            matches!(err, TrySubmitError::Failed(Error::InvalidInput(_))),
            "{err}"
        );
    }
    let err = lanes
        .batch(
            Request::keyed(vec![1i32], vec![1.0f32], &ops, NanPolicy::Propagate)
                .timeout(Duration::from_secs(1)),
        )
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput(m) if m.contains("deadlines")),
        "{err}"
    );
    let err = lanes
        .realtime(Request::keyed(
            vec![0i32; 1024],
            vec![0.0f32; 1024],
            &ops,
            NanPolicy::Propagate,
        ))
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput(m) if m.contains("max_realtime_request_bytes")),
        "{err}"
    );
    // The lanes still serve good requests.
    let ok = lanes
        .realtime(Request::keyed(
            vec![2i32, 1, 2],
            vec![1.0f32, 2.0, 3.0],
            &ops,
            NanPolicy::Propagate,
        ))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(ok.keys, vec![1, 2]);
}

#[test]
fn keyed_requests_keep_deadlines_and_queue_bounds() {
    let e = engine();
    let cfg = LanesConfig::default()
        .when_full(WhenFull::Reject)
        .realtime_queue_len(1)
        .coalesce_delay(Duration::from_millis(300));
    let lanes = Lanes::new(e, cfg).unwrap();
    let ops = [Op::Count];
    // A float request held for coalescing fills the queue of one.
    let held = lanes
        .realtime(Request::host(vec![1.0f32; 16], Op::Sum))
        .unwrap();
    let full = lanes
        .try_realtime(Request::keyed(
            vec![1i32, 2],
            vec![1.0f32, 2.0],
            &ops,
            NanPolicy::Propagate,
        ))
        .unwrap_err();
    let back = full
        .into_request()
        .expect("a full queue hands the request back");
    assert!(held.wait().is_ok());
    let counted = lanes.realtime(back).unwrap().wait().unwrap();
    assert_eq!(counted.keys, vec![1, 2]);
    // Past its deadline before it is dispatched: it fails, and counts.
    let late = lanes
        .realtime(
            Request::keyed(vec![1i32], vec![1.0f32], &ops, NanPolicy::Propagate)
                .deadline(Instant::now()),
        )
        .unwrap()
        .wait();
    assert!(
        matches!(late, Err(Error::DeadlineExceeded { .. })),
        "{late:?}"
    );
    assert!(lanes.metrics().realtime.deadline_misses >= 1);
}

#[test]
fn a_lost_device_fails_keyed_work_with_device_lost() {
    let own = Engine::new().expect("an adapter (run scripts/ensure-vulkan.sh)");
    let lanes = Lanes::new(
        &own,
        small_steps().max_batch_in_flight(1).batch_min_share(0.0),
    )
    .unwrap();
    let ops = [Op::Sum, Op::Max];
    let keys = keys_i32(400_000, 500, 0, 51);
    let values = floats(400_000, 52);
    // About a hundred steps each: the second cannot have started when the
    // device goes.
    let jobs: Vec<_> = (0..2)
        .map(|_| {
            lanes
                .batch(Request::keyed(
                    keys.clone(),
                    values.clone(),
                    &ops,
                    NanPolicy::Propagate,
                ))
                .unwrap()
        })
        .collect();
    own.device().destroy();
    let bound = Duration::from_secs(120);
    let mut lost = 0;
    for (i, job) in jobs.into_iter().enumerate() {
        match job.wait_timeout(bound) {
            Ok(Ok(got)) => assert_same_bits(
                "a job done before the loss",
                &got,
                &solo(engine(), &keys, &values, NanPolicy::Propagate),
            ),
            Ok(Err(e)) => {
                assert!(matches!(e, Error::DeviceLost { .. }), "job {i}: {e:?}");
                lost += 1;
            }
            Err(_) => panic!("job {i} did not settle within {bound:?}"),
        }
    }
    assert!(lost > 0, "no keyed job failed with DeviceLost");
    for lane in [Lane::RealTime, Lane::Batch] {
        let request = Request::keyed(vec![1i32], vec![1.0f32], &ops, NanPolicy::Propagate);
        let e = match lanes.submit(lane, request) {
            Err(e) => e,
            Ok(h) => h
                .wait_timeout(bound)
                .unwrap_or_else(|_| panic!("{lane:?}: no answer after the loss"))
                .unwrap_err(),
        };
        assert!(matches!(e, Error::DeviceLost { .. }), "{lane:?}: {e:?}");
    }
}
