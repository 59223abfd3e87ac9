//! The scheduler's contracts, asserted by order and counts, never by
//! milliseconds (these run on a 2-core CPU under lavapipe).

mod common;

use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use gpulanes::lanes::WhenFull;
use gpulanes::{Engine, Error, Lanes, LanesConfig, NanPolicy, Op, Partitions, Request};

fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| Engine::new().expect("an adapter (run scripts/ensure-vulkan.sh)"))
}

fn data(n: usize, seed: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2654435761).max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x % 20001) as f32 * 1e-3 - 10.0
        })
        .collect()
}

fn solo(d: &[f32], op: Op, p: &Partitions) -> gpulanes::Reduction {
    engine()
        .reduce_partitions(d, op, p, NanPolicy::Propagate)
        .unwrap()
}

fn bits(r: &gpulanes::Reduction) -> Vec<Option<u32>> {
    r.values.iter().map(|v| v.map(f32::to_bits)).collect()
}

/// Small chunks so batch jobs take many submissions even on small inputs.
fn small_chunks() -> LanesConfig {
    LanesConfig::default()
        .quantum(Duration::ZERO)
        .min_chunk_units(2)
        .max_chunk_units(2)
}

#[test]
fn batch_result_is_bitwise_the_same_as_running_alone() {
    let lanes = Lanes::new(engine(), small_chunks()).unwrap();
    let d = data(40 * 8192 + 123, 7);
    for (op, parts) in [
        (Op::Sum, Partitions::Whole),
        (Op::Mean, Partitions::EqualSize(50_000)),
        (
            Op::Max,
            Partitions::Offsets(vec![0, 3, 3, 100_000, d.len() as u64]),
        ),
        (Op::Min, Partitions::EqualSize(8191)),
        (Op::Count, Partitions::Whole),
    ] {
        let got = lanes
            .batch(Request::host(d.clone(), op).partitions(parts.clone()))
            .unwrap()
            .wait()
            .unwrap();
        let want = solo(&d, op, &parts);
        assert_eq!(bits(&got), bits(&want), "{op} {parts:?}");
        assert_eq!(got.counts, want.counts);
    }
    let array = Arc::new(engine().upload(&d).unwrap());
    let got = lanes
        .batch(Request::device(array, Op::Sum))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(bits(&got), bits(&solo(&d, Op::Sum, &Partitions::Whole)));
    let m = lanes.metrics();
    assert!(
        m.batch.submits >= 40,
        "a 40-block job cut in 2-unit chunks needs many submits: {}",
        m.batch.submits
    );
    assert_eq!(m.batch.completed, 6);
}

/// A host job cut into many more spans than the ring of device buffers it
/// holds them in (each buffer reused many times, real-time work going in
/// between its chunks): the same bits as the job run alone.
#[test]
fn a_host_job_through_the_ring_of_input_buffers_has_the_bits_of_running_alone() {
    let lanes = Lanes::new(
        engine(),
        small_chunks().min_chunk_units(1).max_chunk_units(1),
    )
    .unwrap();
    let mut d = data(100 * 8192 + 4099, 21);
    // Adversarial values near span boundaries (every 4 blocks here).
    for (i, v) in [
        (4 * 8192 - 1, f32::NAN),
        (8 * 8192, -0.0),
        (12 * 8192 + 1, 3e38),
    ] {
        d[i] = v;
    }
    for (op, parts, nan) in [
        (Op::Sum, Partitions::EqualSize(10_007), NanPolicy::Ignore),
        (Op::Max, Partitions::Whole, NanPolicy::Propagate),
        (
            Op::Mean,
            Partitions::EqualSize(8192 * 3 + 1),
            NanPolicy::Ignore,
        ),
    ] {
        let job = lanes
            .batch(
                Request::host(d.clone(), op)
                    .partitions(parts.clone())
                    .nan(nan),
            )
            .unwrap();
        let rt: Vec<_> = (0..20)
            .map(|i| {
                lanes
                    .realtime(Request::host(data(300, i), Op::Sum))
                    .unwrap()
            })
            .collect();
        let got = job.wait().unwrap();
        let want = engine().reduce_partitions(&d, op, &parts, nan).unwrap();
        assert_eq!(bits(&got), bits(&want), "{op} {parts:?}");
        assert_eq!(got.counts, want.counts);
        for (i, h) in rt.into_iter().enumerate() {
            let r = h.wait().unwrap();
            assert_eq!(
                bits(&r),
                bits(&solo(&data(300, i as u32), Op::Sum, &Partitions::Whole))
            );
        }
    }
}

#[test]
fn coalesced_realtime_results_match_solo_and_use_few_submits() {
    let lanes = Lanes::new(
        engine(),
        LanesConfig::default().coalesce_delay(Duration::from_millis(20)),
    )
    .unwrap();
    let inputs: Vec<Vec<f32>> = (0..200)
        .map(|i| data(1 + (i * 37) % 5000, i as u32))
        .collect();
    let ops = [Op::Sum, Op::Mean, Op::Max, Op::Min, Op::Count];
    let handles: Vec<_> = inputs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            lanes
                .realtime(
                    Request::host(d.clone(), ops[i % 5]).partitions(Partitions::EqualSize(97)),
                )
                .unwrap()
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let got = h.wait().unwrap();
        let want = solo(&inputs[i], ops[i % 5], &Partitions::EqualSize(97));
        assert_eq!(bits(&got), bits(&want), "request {i}");
        assert_eq!(got.counts, want.counts, "request {i}");
    }
    let m = lanes.metrics();
    assert_eq!(m.realtime.completed, 200);
    assert!(
        m.realtime.submits < 200,
        "200 requests arriving together must be coalesced, got {} submits",
        m.realtime.submits
    );
}

/// Real-time requests that arrive one by one while a long batch chunk runs
/// would only queue behind it, so they go out together when the GPU nears
/// the end of the chunk, and each gets its own result. (This asserts the
/// outcome. On lavapipe a submit made while the queue executes also blocks
/// until the chunk ends, which coalesces too; the dispatcher's hold
/// decision itself is unit-tested in `lanes::tests`.)
#[test]
fn realtime_requests_arriving_during_a_chunk_are_coalesced_at_its_end() {
    let cfg = LanesConfig::default()
        // One chunk for the whole job, so its GPU time is long.
        .quantum(Duration::from_secs(5))
        .submit_lead(Duration::from_micros(100))
        .max_realtime_in_flight(64)
        .batch_min_share(0.0);
    let lanes = Lanes::new(engine(), cfg).unwrap();
    let big = Arc::<[f32]>::from(data(16 << 20, 5));
    let batch = lanes.batch(Request::host(big.clone(), Op::Sum)).unwrap();
    while lanes.metrics().batch.submits == 0 {
        std::thread::sleep(Duration::from_micros(200));
    }
    let inputs: Vec<Vec<f32>> = (0..8).map(|i| data(1000 + i, 40 + i as u32)).collect();
    let handles: Vec<_> = inputs
        .iter()
        .map(|d| {
            std::thread::sleep(Duration::from_millis(1));
            lanes.realtime(Request::host(d.clone(), Op::Sum)).unwrap()
        })
        .collect();
    let chunk_still_running = !batch.is_finished();
    for (h, d) in handles.into_iter().zip(&inputs) {
        assert_eq!(
            bits(&h.wait().unwrap()),
            bits(&solo(d, Op::Sum, &Partitions::Whole))
        );
    }
    assert_eq!(
        bits(&batch.wait().unwrap()),
        bits(&solo(&big, Op::Sum, &Partitions::Whole))
    );
    let m = lanes.metrics();
    assert_eq!(m.realtime.completed, 8);
    // On a device that finished the 64 MiB chunk before the requests came
    // (a fast GPU) there was nothing to wait behind; on lavapipe the chunk
    // takes well over a hundred milliseconds.
    if chunk_still_running {
        assert!(
            m.realtime.submits <= 2,
            "8 requests held behind one chunk went out in {} submissions",
            m.realtime.submits
        );
    }
}

#[test]
fn realtime_request_overtakes_queued_batch_work() {
    let cfg = small_chunks().max_batch_in_flight(1).batch_min_share(0.0);
    let lanes = Lanes::new(engine(), cfg).unwrap();
    let big = Arc::<[f32]>::from(data(64 * 8192, 3));
    let batch = lanes.batch(Request::host(big.clone(), Op::Sum)).unwrap();
    let rt = lanes
        .realtime(Request::host(data(4096, 9), Op::Sum))
        .unwrap();
    let rt_result = rt.wait().unwrap();
    // The 64-block job is cut into 32 chunks of 2 blocks; the real-time
    // request was queued behind it and must finish before the batch does.
    assert!(
        !batch.is_finished(),
        "the batch job finished before the real-time request"
    );
    assert!(rt_result.value().is_some());
    assert_eq!(
        bits(&batch.wait().unwrap()),
        bits(&solo(&big, Op::Sum, &Partitions::Whole))
    );
}

#[test]
fn batch_lane_is_not_starved_by_a_realtime_flood() {
    let cfg = small_chunks()
        .batch_min_share(0.5)
        .coalesce_delay(Duration::ZERO)
        .max_coalesced_requests(1);
    let lanes = Arc::new(Lanes::new(engine(), cfg).unwrap());
    let batch = lanes
        .batch(Request::host(data(16 * 8192, 5), Op::Max))
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooders: Vec<_> = (0..2)
        .map(|t| {
            let (lanes, stop) = (lanes.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    lanes
                        .realtime(Request::host(data(256, t), Op::Sum))
                        .unwrap()
                        .wait()
                        .unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let done = batch.wait();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rt_done: u64 = flooders.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(
        done.is_ok(),
        "the batch job must finish while real-time requests keep coming"
    );
    assert!(rt_done > 0);
}

#[test]
fn cancelled_batch_stops_and_others_are_unaffected() {
    let cfg = small_chunks().max_batch_in_flight(1);
    let lanes = Lanes::new(engine(), cfg).unwrap();
    let d = data(200 * 8192, 11);
    let doomed = lanes.batch(Request::host(d.clone(), Op::Sum)).unwrap();
    let survivor_data = data(10 * 8192, 12);
    let survivor = lanes
        .batch(Request::host(survivor_data.clone(), Op::Sum))
        .unwrap();
    let rt = lanes
        .realtime(Request::host(data(1000, 13), Op::Min))
        .unwrap();
    doomed.cancel();
    assert!(matches!(doomed.wait(), Err(Error::Cancelled)));
    assert_eq!(
        bits(&survivor.wait().unwrap()),
        bits(&solo(&survivor_data, Op::Sum, &Partitions::Whole))
    );
    assert!(rt.wait().is_ok());
    let m = lanes.metrics();
    assert_eq!(m.batch.cancelled, 1);
    assert_eq!(m.batch.completed, 1);
    // The cancelled job stopped early: far fewer chunks than its 100 were sent.
    assert!(
        m.batch.submits < 100,
        "cancelled job kept running: {} submits",
        m.batch.submits
    );
}

#[test]
fn dropped_handle_cancels_queued_realtime_work() {
    let lanes = Lanes::new(
        engine(),
        LanesConfig::default().coalesce_delay(Duration::from_millis(200)),
    )
    .unwrap();
    let dropped = lanes
        .realtime(Request::host(data(100, 1), Op::Sum))
        .unwrap();
    drop(dropped);
    let kept = lanes
        .realtime(Request::host(data(100, 2), Op::Sum))
        .unwrap();
    assert!(kept.wait().is_ok());
    lanes.wait_idle();
    let m = lanes.metrics();
    assert_eq!(m.realtime.cancelled, 1);
    assert_eq!(m.realtime.completed, 1);
}

#[test]
fn past_deadline_fails_with_deadline_exceeded() {
    let lanes = Lanes::new(engine(), LanesConfig::default()).unwrap();
    let late = lanes
        .realtime(Request::host(data(100, 1), Op::Sum).deadline(Instant::now()))
        .unwrap();
    assert!(matches!(late.wait(), Err(Error::DeadlineExceeded { .. })));
    let fine = lanes
        .realtime(Request::host(data(100, 1), Op::Sum).timeout(Duration::from_secs(60)))
        .unwrap();
    assert!(fine.wait().is_ok());
    assert_eq!(lanes.metrics().realtime.deadline_misses, 1);
    let err = lanes
        .batch(Request::host(data(10, 1), Op::Sum).timeout(Duration::from_secs(1)))
        .err()
        .unwrap();
    assert!(err.to_string().contains("real-time"), "{err}");
}

#[test]
fn late_results_are_delivered_and_counted_where_not_rejected() {
    let lanes = Lanes::new(engine(), LanesConfig::default().reject_late(false)).unwrap();
    let d = data(100, 2);
    // Past its deadline before it is even dispatched: it runs anyway.
    let late = lanes
        .realtime(Request::host(d.clone(), Op::Sum).deadline(Instant::now()))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(bits(&late), bits(&solo(&d, Op::Sum, &Partitions::Whole)));
    let on_time = lanes
        .realtime(Request::host(d, Op::Sum).timeout(Duration::from_secs(60)))
        .unwrap();
    assert!(on_time.wait().is_ok());
    let m = lanes.metrics().realtime;
    assert_eq!(m.completed, 2);
    assert_eq!(m.failed, 0);
    // Delivered late, but never silently: the miss is counted.
    assert_eq!(m.deadline_misses, 1);
}

#[test]
fn full_queue_rejects_or_blocks_as_configured() {
    let cfg = LanesConfig::default()
        .when_full(WhenFull::Reject)
        .realtime_queue_len(2)
        .coalesce_delay(Duration::from_millis(300));
    let lanes = Lanes::new(engine(), cfg).unwrap();
    let a = lanes.realtime(Request::host(data(10, 1), Op::Sum)).unwrap();
    let b = lanes.realtime(Request::host(data(10, 2), Op::Sum)).unwrap();
    let err = lanes
        .realtime(Request::host(data(10, 3), Op::Sum))
        .expect_err("third request must be refused");
    assert!(
        matches!(
            err,
            Error::QueueFull {
                lane: "real-time",
                ..
            }
        ),
        "{err}"
    );
    assert!(a.wait().is_ok() && b.wait().is_ok());

    let cfg = LanesConfig::default()
        .realtime_queue_len(1)
        .coalesce_delay(Duration::from_millis(50));
    let lanes = Arc::new(Lanes::new(engine(), cfg).unwrap());
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let lanes = lanes.clone();
            std::thread::spawn(move || {
                lanes
                    .realtime(Request::host(data(10, i), Op::Sum))
                    .unwrap()
                    .wait()
            })
        })
        .collect();
    for h in handles {
        assert!(
            h.join().unwrap().is_ok(),
            "blocked submitters must get through once space frees"
        );
    }
}

#[test]
fn bad_requests_fail_alone() {
    let lanes = Lanes::new(engine(), LanesConfig::default()).unwrap();
    let good = lanes
        .realtime(Request::host(data(300, 1), Op::Sum))
        .unwrap();
    let bad = lanes.realtime(
        Request::host(data(300, 1), Op::Sum).partitions(Partitions::Offsets(vec![0, 500])),
    );
    assert!(matches!(bad, Err(Error::InvalidPartitions(_))));
    let too_big = lanes.realtime(Request::host(vec![0.0; (16 << 20) / 4 + 1], Op::Sum));
    assert!(too_big.err().unwrap().to_string().contains("batch lane"));
    let other = Engine::new().unwrap();
    let foreign = Arc::new(other.upload(&[1.0, 2.0]).unwrap());
    assert!(lanes.batch(Request::device(foreign, Op::Sum)).is_err());
    assert_eq!(
        bits(&good.wait().unwrap()),
        bits(&solo(&data(300, 1), Op::Sum, &Partitions::Whole))
    );
}

#[test]
fn repeated_realtime_shapes_each_get_their_own_answer() {
    // The lane keeps prepared jobs per group shape and reuses them with new
    // data: every repeat must reduce its own data, for every op sharing a
    // kernel, with partitions, and with a shape seen only now and then.
    let lanes = Lanes::new(engine(), LanesConfig::default()).unwrap();
    let parts = Partitions::Offsets(vec![0, 3, 3, 1000, 4096]);
    for round in 0..12u32 {
        for (i, op) in [Op::Sum, Op::Mean, Op::Max, Op::Min]
            .into_iter()
            .enumerate()
        {
            let d = data(4096, round * 8 + i as u32 + 1);
            let p = if round % 3 == 2 {
                Partitions::Whole
            } else {
                parts.clone()
            };
            let got = lanes
                .realtime(Request::host(d.clone(), op).partitions(p.clone()))
                .unwrap()
                .wait()
                .unwrap();
            let want = solo(&d, op, &p);
            assert_eq!(bits(&got), bits(&want), "round {round}, {op}");
            assert_eq!(got.counts, want.counts, "round {round}, {op}");
        }
    }
    assert_eq!(lanes.metrics().realtime.completed, 48);
}

#[test]
fn many_threads_many_requests_none_lost_none_mixed_up() {
    let lanes = Arc::new(Lanes::new(engine(), small_chunks()).unwrap());
    let threads = 8;
    let per_thread = 1250; // 10 000 requests in all
    let barrier = Arc::new(Barrier::new(threads));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (lanes, barrier) = (lanes.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let mut handles = Vec::new();
                for i in 0..per_thread {
                    // Each request's answer identifies it: sum of (id, 1.0 x k).
                    let id = (t * per_thread + i) as f32;
                    let k = 1 + i % 50;
                    let mut d = vec![1.0f32; k];
                    d[0] = id;
                    let want = id + (k - 1) as f32;
                    let req = Request::host(d, Op::Sum);
                    let h = if i % 100 == 0 {
                        lanes.batch(req)
                    } else {
                        lanes.realtime(req)
                    }
                    .unwrap();
                    handles.push((h, want));
                }
                handles
                    .into_iter()
                    .map(|(h, want)| h.wait().ok().and_then(|r| r.value()) == Some(want))
                    .filter(|ok| *ok)
                    .count()
            })
        })
        .collect();
    let correct: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(correct, threads * per_thread);
    let m = lanes.metrics();
    assert_eq!(
        m.realtime.completed + m.batch.completed,
        (threads * per_thread) as u64
    );
    assert_eq!(m.realtime.failed + m.batch.failed, 0);
}

#[test]
fn async_handles_resolve() {
    let lanes = Lanes::new(engine(), LanesConfig::default()).unwrap();
    let h = lanes
        .realtime(Request::host(vec![1.0, 2.0, 3.5], Op::Sum))
        .unwrap();
    assert_eq!(pollster::block_on(h).unwrap().value(), Some(6.5));
    let mut h = lanes
        .batch(Request::host(vec![4.0; 10_000], Op::Max))
        .unwrap();
    let r = loop {
        if let Some(r) = h.try_result() {
            break r;
        }
        std::thread::yield_now();
    };
    assert_eq!(r.unwrap().value(), Some(4.0));
    // A result is delivered once; polling on after taking it does not spin
    // forever on `None`.
    assert!(matches!(h.try_result(), Some(Err(Error::Cancelled))));
}

/// Panics when woken (a user's bug).
struct PanickingWaker;

impl std::task::Wake for PanickingWaker {
    fn wake(self: Arc<Self>) {
        panic!("this waker panics on purpose (a test)");
    }
}

#[test]
fn a_panicking_waker_fails_no_other_request() {
    use std::future::Future;
    let lanes = Lanes::new(engine(), LanesConfig::default()).unwrap();
    let waker = std::task::Waker::from(Arc::new(PanickingWaker));
    let mut cx = std::task::Context::from_waker(&waker);
    // A handle polled while still pending, so the scheduler will call the
    // waker when it completes (retried in the unlikely case a request
    // completes before the first poll).
    let mut registered = None;
    for _ in 0..100 {
        let mut h = lanes
            .realtime(Request::host(data(4096, 5), Op::Sum))
            .unwrap();
        if std::pin::Pin::new(&mut h).poll(&mut cx).is_pending() {
            registered = Some(h);
            break;
        }
    }
    let mut h = registered.expect("a request still pending when first polled");
    // Its result still arrives, and the threads that deliver results live
    // on: the next requests complete.
    let r = loop {
        if let Some(r) = h.try_result() {
            break r;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    assert!(r.is_ok(), "{r:?}");
    for seed in 0..3 {
        let d = data(1000, seed);
        let got = lanes
            .realtime(Request::host(d.clone(), Op::Sum))
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(bits(&got), bits(&solo(&d, Op::Sum, &Partitions::Whole)));
    }
    let b = lanes
        .batch(Request::host(data(20_000, 9), Op::Max))
        .unwrap()
        .wait();
    assert!(b.is_ok(), "{b:?}");
}

#[test]
fn shutdown_with_work_in_flight_neither_hangs_nor_loses_handles() {
    let lanes = Lanes::new(engine(), small_chunks().max_batch_in_flight(1)).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            lanes
                .batch(Request::host(data(30 * 8192, i), Op::Sum))
                .unwrap()
        })
        .collect();
    let rts: Vec<_> = (0..50)
        .map(|i| {
            lanes
                .realtime(Request::host(data(100, i), Op::Sum))
                .unwrap()
        })
        .collect();
    drop(lanes);
    // Every handle resolves: either with its result or with Shutdown.
    for h in handles.into_iter().chain(rts) {
        match h.wait() {
            Ok(_) | Err(Error::Shutdown) => {}
            Err(e) => panic!("unexpected error after shutdown: {e}"),
        }
    }
}

/// A chunk gets the quantum (less the lead) of GPU time, so with a quantum
/// far below one unit the chunks are the minimum size; absurd in-flight
/// bounds neither panic nor change the result.
#[test]
fn tiny_quantum_gives_minimum_chunks_and_extreme_in_flight_bounds_are_safe() {
    let d = data(24 * 8192 + 5, 11);
    let want = bits(&solo(&d, Op::Sum, &Partitions::Whole));
    // 2^32 once truncated a u32 share count to zero (a division by zero).
    let two_pow_32 = usize::try_from(1u64 << 32).unwrap_or(usize::MAX);
    for in_flight in [1usize, 8, two_pow_32, usize::MAX] {
        let lanes = Lanes::new(
            engine(),
            LanesConfig::default()
                .quantum(Duration::from_micros(1))
                .max_batch_in_flight(in_flight)
                .min_chunk_units(1),
        )
        .unwrap();
        let got = lanes
            .batch(Request::host(d.clone(), Op::Sum))
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(bits(&got), want, "in flight {in_flight}");
        // The derived lead never exceeds a configured quantum.
        assert!(lanes.submit_lead() <= lanes.quantum());
        let m = lanes.metrics();
        assert_eq!(m.batch.completed, 1);
        // 25 units, one per chunk at the minimum size.
        assert!(
            m.batch.submits >= 25,
            "in flight {in_flight}: {} submits",
            m.batch.submits
        );
    }
}

#[test]
fn a_submit_lead_above_the_quantum_is_refused_with_a_clear_error() {
    let refused = Lanes::new(
        engine(),
        LanesConfig::default()
            .quantum(Duration::from_millis(1))
            .submit_lead(Duration::from_millis(2)),
    );
    match refused {
        Err(Error::InvalidInput(msg)) => {
            assert!(
                msg.contains("submit_lead") && msg.contains("quantum"),
                "{msg}"
            )
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a lead above the quantum was accepted"),
    }
    // Equal is fine.
    Lanes::new(
        engine(),
        LanesConfig::default()
            .quantum(Duration::from_millis(1))
            .submit_lead(Duration::from_millis(1)),
    )
    .expect("a lead equal to the quantum");
}

#[test]
fn coalesced_groups_stay_within_the_partition_limit_so_no_request_fails_for_its_neighbours() {
    // 64 KiB bindings: at most 4095 partitions in one reduction. Two
    // requests of 3000 partitions each are fine alone; coalesced into one
    // group they used to fail together, with the small request between them.
    let engine = common::small_binding_engine();
    let lanes = Lanes::new(
        engine,
        LanesConfig::default().coalesce_delay(Duration::from_millis(100)),
    )
    .unwrap();
    let each = Partitions::EqualSize(1);
    let (d1, d2, small) = (data(3000, 1), data(3000, 2), data(10, 3));
    let a = lanes
        .realtime(Request::host(d1.clone(), Op::Sum).partitions(each.clone()))
        .unwrap();
    let b = lanes
        .realtime(Request::host(small.clone(), Op::Max))
        .unwrap();
    let c = lanes
        .realtime(Request::host(d2.clone(), Op::Sum).partitions(each.clone()))
        .unwrap();
    let solo_on = |d: &[f32], op, p: &Partitions| {
        engine
            .reduce_partitions(d, op, p, NanPolicy::Propagate)
            .unwrap()
    };
    assert_eq!(
        bits(&a.wait().unwrap()),
        bits(&solo_on(&d1, Op::Sum, &each))
    );
    assert_eq!(
        bits(&b.wait().unwrap()),
        bits(&solo_on(&small, Op::Max, &Partitions::Whole))
    );
    assert_eq!(
        bits(&c.wait().unwrap()),
        bits(&solo_on(&d2, Op::Sum, &each))
    );
    assert_eq!(lanes.metrics().realtime.failed, 0);

    // A real-time request over the limit is refused when submitted, with
    // the limit named and the batch lane pointed to.
    let err = lanes
        .realtime(Request::host(data(5000, 4), Op::Sum).partitions(each.clone()))
        .expect_err("5000 partitions exceed the 4095 of 64 KiB bindings");
    match err {
        Error::InvalidPartitions(msg) => {
            assert!(msg.contains("4095") && msg.contains("batch lane"), "{msg}")
        }
        e => panic!("wrong error: {e}"),
    }
}

#[test]
fn batch_jobs_over_the_partition_limit_run_in_groups_with_the_bits_of_running_alone() {
    // 64 KiB bindings: at most 4095 partitions per reduction, so these jobs
    // run as 2-4 groups, each cut into small chunks. The partitions hold
    // NaN, infinities and signed zeros, straddle the groups' edges, and one
    // whole group is nothing but empty partitions (a group with no work).
    let engine = common::small_binding_engine();
    let limit = engine.max_partitions() as usize;
    assert_eq!(limit, 4095);
    let lanes = Lanes::new(
        engine,
        small_chunks().min_chunk_units(1000).max_chunk_units(1000),
    )
    .unwrap();
    let mut rng = common::SplitMix::new(31);
    let d = common::mixed_data(&mut rng, 3 * 8192 + 77, 20);
    let n = d.len() as u64;
    // Ragged partitions: 5 items each, then empty ones (the whole second
    // group), then 3 items each.
    let mut ragged: Vec<u64> = (0..limit as u64).map(|i| i * 5).collect();
    let end_of_fives = *ragged.last().unwrap();
    ragged.extend(std::iter::repeat_n(end_of_fives, limit + 10));
    ragged.extend((1..).map(|i| end_of_fives + i * 3).take_while(|&o| o < n));
    ragged.push(n);
    let cases = [
        (Op::Sum, Partitions::EqualSize(3), NanPolicy::Propagate),
        (Op::Mean, Partitions::EqualSize(5), NanPolicy::Ignore),
        (
            Op::Max,
            Partitions::Offsets(ragged.clone()),
            NanPolicy::Ignore,
        ),
        (Op::Min, Partitions::Offsets(ragged), NanPolicy::Propagate),
        (Op::Count, Partitions::EqualSize(2), NanPolicy::Ignore),
    ];
    let array = Arc::new(engine.upload(&d).unwrap());
    for (op, parts, nan) in cases {
        let k = parts.offsets(n).unwrap().len() - 1;
        assert!(k > limit, "{op} {k}: the case must need groups");
        let host = lanes
            .batch(
                Request::host(d.clone(), op)
                    .partitions(parts.clone())
                    .nan(nan),
            )
            .unwrap();
        let device = lanes
            .batch(
                Request::device(array.clone(), op)
                    .partitions(parts.clone())
                    .nan(nan),
            )
            .unwrap();
        let (host, device) = (host.wait().unwrap(), device.wait().unwrap());
        let alone = engine.reduce_partitions(&d, op, &parts, nan).unwrap();
        let what = format!("{op} {} {nan:?}", common::describe(&parts));
        assert_eq!(host.values.len(), k, "{what}");
        common::assert_matches_reference(&host, &d, op, &parts, nan, &what);
        common::assert_same_bits(&host, &alone, &format!("{what}: host input"));
        common::assert_same_bits(&device, &alone, &format!("{what}: device input"));
    }
    let m = lanes.metrics();
    assert_eq!((m.batch.completed, m.batch.failed), (10, 0));
}

#[test]
fn cancelling_a_grouped_batch_job_stops_it_between_chunks_and_spares_the_next() {
    let engine = common::small_binding_engine();
    let lanes = Lanes::new(
        engine,
        small_chunks().min_chunk_units(64).max_chunk_units(64),
    )
    .unwrap();
    // 16 groups of 4095 partitions of 64 items (one unit each): about 64
    // chunks per group, about 1000 in all, so the cancel lands long before
    // the end even on a starved test thread.
    let d = data(16 * 4095 * 64, 5);
    let parts = Partitions::EqualSize(64);
    let doomed = lanes
        .batch(Request::host(d.clone(), Op::Sum).partitions(parts.clone()))
        .unwrap();
    // Cancelled once it is into its second group.
    while lanes.metrics().batch.submits < 100 {
        std::thread::sleep(Duration::from_millis(1));
    }
    doomed.cancel();
    assert!(matches!(doomed.wait(), Err(Error::Cancelled)));
    lanes.wait_idle();
    let doomed_chunks = lanes.metrics().batch.submits;
    let next = lanes
        .batch(Request::host(d.clone(), Op::Max).partitions(parts.clone()))
        .unwrap();
    let got = next.wait().unwrap();
    let whole_job_chunks = lanes.metrics().batch.submits - doomed_chunks;
    assert!(
        doomed_chunks < whole_job_chunks,
        "the cancelled job ran {doomed_chunks} chunks, a whole one {whole_job_chunks}"
    );
    let alone = engine
        .reduce_partitions(&d, Op::Max, &parts, NanPolicy::Propagate)
        .unwrap();
    common::assert_same_bits(&got, &alone, "the job after a cancelled one");
    let m = lanes.metrics();
    assert_eq!((m.batch.completed, m.batch.cancelled), (1, 1));
}

#[test]
fn a_cancelled_queued_batch_job_frees_its_queue_slot_at_once() {
    let lanes = Lanes::new(
        engine(),
        small_chunks()
            .batch_queue_len(2)
            .when_full(WhenFull::Reject)
            .max_batch_in_flight(1),
    )
    .unwrap();
    // Hundreds of chunks: the dispatcher looks at its queue between them.
    let long = lanes
        .batch(Request::host(data(400 * 8192, 1), Op::Sum))
        .unwrap();
    let doomed = lanes.batch(Request::host(data(8192, 2), Op::Sum)).unwrap();
    doomed.cancel();
    let next_data = data(100, 3);
    let next = loop {
        match lanes.batch(Request::host(next_data.clone(), Op::Sum)) {
            Ok(h) => break h,
            Err(Error::QueueFull { .. }) => std::thread::yield_now(),
            Err(e) => panic!("unexpected error: {e}"),
        }
    };
    // Accepted while the long job still had most of its 200 chunks to go
    // (the slot used to stay taken until its last chunk was submitted).
    let submitted = lanes.metrics().batch.submits;
    assert!(
        submitted < 100,
        "the cancelled job held its queue slot for {submitted} chunks of the running job"
    );
    assert!(matches!(doomed.wait(), Err(Error::Cancelled)));
    assert_eq!(
        bits(&next.wait().unwrap()),
        bits(&solo(&next_data, Op::Sum, &Partitions::Whole))
    );
    assert!(long.wait().is_ok());
}

#[test]
fn every_request_is_counted_once_even_when_cancelled_in_flight() {
    let lanes = Lanes::new(engine(), LanesConfig::default()).unwrap();
    // Requests big enough to be on the GPU when cancelled, with deadlines
    // they miss: a request cancelled in flight and then found late used to
    // count as cancelled, failed and missed at once.
    let big = data(4 << 20, 1);
    let n = 6u64;
    for i in 0..n {
        let h = lanes
            .realtime(Request::host(big.clone(), Op::Sum).timeout(Duration::from_millis(1)))
            .unwrap();
        if i % 2 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
        h.cancel();
        // Usually cancelled or late; a fast device may finish it first.
        let _ = h.wait();
        lanes.wait_idle();
    }
    let m = lanes.metrics().realtime;
    assert_eq!(
        m.completed + m.failed + m.cancelled,
        n,
        "completed {} failed {} cancelled {}",
        m.completed,
        m.failed,
        m.cancelled
    );
    assert!(m.deadline_misses <= m.failed);
}

#[test]
fn zero_queue_bounds_are_refused_and_huge_timeouts_mean_no_deadline() {
    for cfg in [
        LanesConfig::default().realtime_queue_len(0),
        LanesConfig::default().batch_queue_len(0),
    ] {
        match Lanes::new(engine(), cfg) {
            Err(Error::InvalidInput(msg)) => assert!(msg.contains("queue_len"), "{msg}"),
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("a zero-length queue was accepted"),
        }
    }
    let lanes = Lanes::new(engine(), LanesConfig::default()).unwrap();
    let d = data(100, 5);
    let got = lanes
        .realtime(Request::host(d.clone(), Op::Sum).timeout(Duration::MAX))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(bits(&got), bits(&solo(&d, Op::Sum, &Partitions::Whole)));
}

#[test]
fn empty_batch_jobs_complete_and_the_scheduler_lives_on() {
    // No items at all: nothing to run, the result is ready at once (this
    // used to panic the dispatcher thread, and every handle then waited
    // forever).
    let lanes = Lanes::new(engine(), small_chunks()).unwrap();
    let empty: Vec<f32> = Vec::new();
    let empty_array = Arc::new(engine().upload(&empty).unwrap());
    let cases = [
        (
            Request::host(empty.clone(), Op::Sum),
            Op::Sum,
            Partitions::Whole,
        ),
        (
            Request::host(empty.clone(), Op::Mean).partitions(Partitions::EqualSize(4)),
            Op::Mean,
            Partitions::EqualSize(4),
        ),
        (
            Request::device(empty_array.clone(), Op::Max),
            Op::Max,
            Partitions::Whole,
        ),
    ];
    for (request, op, p) in cases {
        let got = match lanes
            .batch(request)
            .unwrap()
            .wait_timeout(Duration::from_secs(60))
        {
            Ok(r) => r.unwrap(),
            Err(_) => panic!("{op} {p:?}: an empty batch job never completed"),
        };
        assert_eq!(bits(&got), bits(&solo(&empty, op, &p)), "{op} {p:?}");
    }
    // Still alive: both lanes serve.
    let d = data(20_000, 9);
    let rt = lanes.realtime(Request::host(d.clone(), Op::Sum)).unwrap();
    let batch = lanes.batch(Request::host(d.clone(), Op::Max)).unwrap();
    assert_eq!(
        bits(&rt.wait().unwrap()),
        bits(&solo(&d, Op::Sum, &Partitions::Whole))
    );
    assert_eq!(
        bits(&batch.wait().unwrap()),
        bits(&solo(&d, Op::Max, &Partitions::Whole))
    );
    assert_eq!(lanes.metrics().batch.completed, 4);
}

#[test]
fn a_waker_that_calls_back_into_the_lanes_is_woken_without_deadlock() {
    use std::future::Future;
    use std::sync::Mutex;
    use std::sync::mpsc;
    use std::task::{Context, Poll, Wake, Waker};

    // An executor may run a woken task on the waking thread; that task may
    // call the scheduler. Wakers used to be called with the metrics lock
    // held, and this one then deadlocked the poller thread.
    struct CallsBack {
        lanes: Arc<Lanes>,
        woken: Mutex<mpsc::Sender<u64>>,
    }
    impl Wake for CallsBack {
        fn wake(self: Arc<Self>) {
            let completed =
                self.lanes.metrics().realtime.completed + self.lanes.metrics().batch.completed;
            let _ = self.woken.lock().unwrap().send(completed);
        }
    }
    let lanes = Arc::new(Lanes::new(engine(), small_chunks()).unwrap());
    let (tx, rx) = mpsc::channel();
    let waker = Waker::from(Arc::new(CallsBack {
        lanes: lanes.clone(),
        woken: Mutex::new(tx),
    }));
    let mut cx = Context::from_waker(&waker);
    let d = data(50_000, 3);
    for lane in [gpulanes::Lane::RealTime, gpulanes::Lane::Batch] {
        let mut handle = lanes
            .submit(lane, Request::host(d.clone(), Op::Sum))
            .unwrap();
        let result = match std::pin::Pin::new(&mut handle).poll(&mut cx) {
            Poll::Ready(r) => r, // finished before the first poll
            Poll::Pending => {
                let completed = rx
                    .recv_timeout(Duration::from_secs(60))
                    .unwrap_or_else(|_| panic!("{lane:?}: the waker never returned"));
                assert!(
                    completed >= 1,
                    "{lane:?}: metrics counted before the wake-up"
                );
                match std::pin::Pin::new(&mut handle).poll(&mut cx) {
                    Poll::Ready(r) => r,
                    Poll::Pending => panic!("{lane:?}: woken but not ready"),
                }
            }
        };
        assert_eq!(
            bits(&result.unwrap()),
            bits(&solo(&d, Op::Sum, &Partitions::Whole))
        );
    }
}
