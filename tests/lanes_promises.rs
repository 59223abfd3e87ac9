//! The lanes' promises from the first request on: a fresh scheduler's
//! first batch job holds real-time work no longer than a chunk, a failure
//! in one coalesced request fails it alone, blocked submitters get queue
//! space first come first served, the `try_` forms hand a request back
//! when its queue is full, and a queued request fails at its deadline. Asserted by order and counts, never by milliseconds (these
//! run on a 2-core CPU under lavapipe).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gpulanes::{Error, Lanes, LanesConfig, NanPolicy, Op, Partitions, Request, TrySubmitError};

use common::engine;

fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = common::SplitMix::new(seed);
    (0..n)
        .map(|_| (rng.next_u64() % 20001) as f32 * 1e-3 - 10.0)
        .collect()
}

fn bits(r: &gpulanes::Reduction) -> Vec<Option<u32>> {
    r.values.iter().map(|v| v.map(f32::to_bits)).collect()
}

fn solo(d: &[f32], op: Op) -> Vec<Option<u32>> {
    bits(
        &engine()
            .reduce_partitions(d, op, &Partitions::Whole, NanPolicy::Propagate)
            .unwrap(),
    )
}

/// A fresh scheduler, then at once a large device-resident job of long
/// chunks (tens of milliseconds each on lavapipe) and a real-time request:
/// the request is answered before the job's second chunk completes, so
/// before a third one is submitted (one chunk in flight at a time).
#[test]
fn on_a_fresh_scheduler_a_realtime_request_goes_before_the_first_jobs_second_chunk_ends() {
    let column = data(16 << 20, 1);
    let array = Arc::new(engine().upload(&column).unwrap());
    let want = solo(&column, Op::Sum);
    let lanes = Lanes::new(
        engine(),
        LanesConfig::default()
            .quantum(Duration::from_millis(20))
            .submit_lead(Duration::from_millis(1))
            .max_batch_in_flight(1)
            .batch_min_share(0.0),
    )
    .unwrap();
    let window = data(4096, 2);
    let job = lanes.batch(Request::device(array, Op::Sum)).unwrap();
    let tile = lanes
        .realtime(Request::host(window.clone(), Op::Max))
        .unwrap();
    let tile = tile.wait().unwrap();
    let chunks_by_then = lanes.metrics().batch.submits;
    assert_eq!(bits(&tile), solo(&window, Op::Max));
    assert_eq!(bits(&job.wait().unwrap()), want);
    let chunks = lanes.metrics().batch.submits;
    if chunks >= 3 {
        assert!(
            chunks_by_then <= 2,
            "the real-time request was answered after {chunks_by_then} of {chunks} chunks were submitted"
        );
    } else {
        eprintln!("the job ran in {chunks} chunks on this device: nothing to hold the request");
    }
}

/// Six requests coalesced into one submission (held by the coalescing
/// delay until the sixth arrives); the fourth fails on the device. It
/// fails alone, and the other five get the bits they get alone.
#[test]
fn a_failure_in_one_coalesced_request_fails_that_request_alone() {
    let lanes = Lanes::new(
        engine(),
        LanesConfig::default()
            .coalesce_delay(Duration::from_secs(600))
            .max_coalesced_requests(6),
    )
    .unwrap();
    let ops = [Op::Sum, Op::Max, Op::Sum, Op::Sum, Op::Min, Op::Mean];
    let inputs: Vec<Vec<f32>> = (0..6).map(|i| data(3000 + 7 * i, 10 + i as u64)).collect();
    let handles: Vec<_> = inputs
        .iter()
        .zip(ops)
        .enumerate()
        .map(|(i, (d, op))| {
            let r = Request::host(d.clone(), op);
            let r = if i == 3 { r.inject_failure() } else { r };
            lanes.realtime(r).unwrap()
        })
        .collect();
    for (i, (h, (d, op))) in handles.into_iter().zip(inputs.iter().zip(ops)).enumerate() {
        match h.wait() {
            Err(Error::Validation { .. }) if i == 3 => {}
            Ok(r) if i != 3 => assert_eq!(bits(&r), solo(d, op), "request {i}"),
            other => panic!("request {i}: {other:?}"),
        }
    }
    let m = lanes.metrics().realtime;
    assert_eq!((m.completed, m.failed), (5, 1));
    assert_eq!(m.submits, 1, "the six requests were one submission");
    // The scheduler goes on: the next six go together, all fine.
    let again: Vec<_> = inputs
        .iter()
        .map(|d| lanes.realtime(Request::host(d.clone(), Op::Sum)).unwrap())
        .collect();
    for (h, d) in again.into_iter().zip(&inputs) {
        assert_eq!(bits(&h.wait().unwrap()), solo(d, Op::Sum));
    }
    assert_eq!(lanes.metrics().realtime.submits, 2);
}

/// A large request blocked on the queue's byte bound is not overtaken by
/// smaller ones that arrive after it and would fit: once space frees, it
/// goes in first, and the small ones after it as far as they fit.
/// (Requests are held in the queue by the coalescing delay, so the queue
/// stays full until the test frees it.) The sizes tell the order apart:
/// the large request first leaves room for two of the three small ones,
/// the small ones first would leave none for the large one.
#[test]
fn a_blocked_large_submitter_is_not_overtaken_by_later_small_ones() {
    let lanes = Arc::new(
        Lanes::new(
            engine(),
            LanesConfig::default()
                .coalesce_delay(Duration::from_secs(600))
                .realtime_queue_bytes(4000),
        )
        .unwrap(),
    );
    // 3600 of the 4000 bytes.
    let first = lanes
        .realtime(Request::host(data(900, 1), Op::Sum))
        .unwrap();
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let started = Arc::new(AtomicUsize::new(0));
    let submitter = |name: &'static str, floats: usize| {
        let (lanes, accepted, started) = (lanes.clone(), accepted.clone(), started.clone());
        std::thread::spawn(move || {
            started.fetch_add(1, Ordering::SeqCst);
            let h = lanes
                .realtime(Request::host(data(floats, 2), Op::Sum))
                .unwrap();
            accepted.lock().unwrap().push((name, h));
        })
    };
    let names = |a: &Mutex<Vec<(&'static str, _)>>| -> Vec<&'static str> {
        a.lock().unwrap().iter().map(|(n, _)| *n).collect()
    };
    // 3200 bytes: blocked behind the first request.
    let large = submitter("large", 800);
    while started.load(Ordering::SeqCst) < 1 {
        std::thread::yield_now();
    }
    std::thread::sleep(Duration::from_millis(100)); // let it block
    // 300 bytes each: each would fit beside the first request.
    let small: Vec<_> = (0..3).map(|_| submitter("small", 75)).collect();
    while started.load(Ordering::SeqCst) < 4 {
        std::thread::yield_now();
    }
    std::thread::sleep(Duration::from_millis(100)); // let them try
    assert!(
        names(&accepted).is_empty(),
        "queued while a larger submitter waited first: {:?}",
        names(&accepted)
    );
    // Space frees: the large request goes in (3200 bytes), then two small
    // ones (3800); the third does not fit.
    first.cancel();
    large.join().unwrap();
    while names(&accepted).len() < 3 {
        std::thread::yield_now();
    }
    std::thread::sleep(Duration::from_millis(100)); // let the third try
    // (Threads record after they return, so not necessarily in order.)
    let mut got = names(&accepted);
    got.sort();
    assert_eq!(got, ["large", "small", "small"]);
    // The large one leaves: the third small one goes in.
    let at = got_index(&accepted, "large");
    let large_handle = accepted.lock().unwrap().remove(at).1;
    large_handle.cancel();
    for t in small {
        t.join().unwrap();
    }
    assert_eq!(names(&accepted), ["small", "small", "small"]);
}

fn got_index<T>(accepted: &Mutex<Vec<(&'static str, T)>>, name: &str) -> usize {
    let a = accepted.lock().unwrap();
    a.iter().position(|(n, _)| *n == name).expect("accepted")
}

/// While a long batch job of many chunks keeps the device busy, a
/// real-time request that cannot be dispatched (held by the coalescing
/// delay, so however the chunks fall) fails with `DeadlineExceeded` at its
/// deadline, before the job completes; without a batch job, too, long
/// before the delay ends, and only the expired request leaves the queue.
#[test]
fn a_queued_request_fails_at_its_deadline_not_when_it_is_reached() {
    let column = data(16 << 20, 5);
    let array = Arc::new(engine().upload(&column).unwrap());
    let lanes = Lanes::new(
        engine(),
        LanesConfig::default()
            .quantum(Duration::from_millis(10))
            .submit_lead(Duration::from_millis(1))
            .max_batch_in_flight(1)
            .batch_min_share(0.0)
            .coalesce_delay(Duration::from_secs(600)),
    )
    .unwrap();
    let job = lanes.batch(Request::device(array, Op::Sum)).unwrap();
    while lanes.metrics().batch.submits == 0 {
        std::thread::sleep(Duration::from_micros(200));
    }
    let late = lanes
        .realtime(Request::host(data(100, 6), Op::Sum).timeout(Duration::from_millis(1)))
        .unwrap();
    let outcome = late.wait();
    let chunks_by_then = lanes.metrics().batch.submits;
    let job_done_by_then = job.is_finished();
    assert!(
        matches!(outcome, Err(Error::DeadlineExceeded { .. })),
        "{outcome:?}"
    );
    assert_eq!(bits(&job.wait().unwrap()), solo(&column, Op::Sum));
    let chunks = lanes.metrics().batch.submits;
    if chunks >= 4 {
        assert!(
            !job_done_by_then && chunks_by_then < chunks,
            "the request failed only after {chunks_by_then} of {chunks} chunks (job done: {job_done_by_then})"
        );
    } else {
        eprintln!("the job ran in {chunks} chunks on this device: too few to tell");
    }
    let m = lanes.metrics().realtime;
    assert_eq!((m.submits, m.failed, m.deadline_misses), (0, 1, 1));

    let held = Lanes::new(
        engine(),
        LanesConfig::default().coalesce_delay(Duration::from_secs(600)),
    )
    .unwrap();
    let late = held
        .realtime(Request::host(data(100, 7), Op::Sum).timeout(Duration::from_millis(50)))
        .unwrap();
    let waiting = held.realtime(Request::host(data(100, 8), Op::Sum)).unwrap();
    match late.wait_timeout(Duration::from_secs(60)) {
        Ok(Err(Error::DeadlineExceeded { .. })) => {}
        Ok(other) => panic!("{other:?}"),
        Err(_) => panic!("still queued a minute after its 50 ms deadline"),
    }
    assert!(!waiting.is_finished(), "only the expired request left");
    let m = held.metrics().realtime;
    assert_eq!((m.failed, m.deadline_misses, m.queue_depth), (1, 1, 1));
}

/// Two requests fill a real-time queue of two (they wait to be coalesced
/// with more); a third, tried, comes back untouched; once a queued one is
/// cancelled the same request is accepted. Invalid requests fail as
/// `submit` fails them, full queue or not.
#[test]
fn try_forms_hand_the_request_back_when_the_queue_is_full() {
    let lanes = Lanes::new(
        engine(),
        LanesConfig::default()
            .coalesce_delay(Duration::from_secs(600))
            .max_coalesced_requests(6)
            .realtime_queue_len(2),
    )
    .unwrap();
    let first = lanes
        .try_realtime(Request::host(data(100, 1), Op::Sum))
        .unwrap();
    let _second = lanes
        .try_realtime(Request::host(data(100, 2), Op::Sum))
        .unwrap();
    let third = data(3000, 3);
    let e = lanes
        .try_realtime(Request::host(third.clone(), Op::Max))
        .unwrap_err();
    assert!(e.is_full(), "{e:?}");
    let back = e.into_request().expect("the request comes back");
    let e = lanes
        .try_realtime(Request::host(data(10, 4), Op::Sum).partitions(Partitions::EqualSize(0)))
        .unwrap_err();
    assert!(
        matches!(e, TrySubmitError::Failed(Error::InvalidPartitions(_))),
        "{e:?}"
    );
    let e = lanes
        .try_batch(Request::host(data(10, 5), Op::Sum).timeout(Duration::from_secs(1)))
        .unwrap_err();
    assert!(
        matches!(e, TrySubmitError::Failed(Error::InvalidInput(_))),
        "{e:?}"
    );
    // Cancelling a queued request makes room (the dispatcher prunes it).
    drop(first);
    let bound = Instant::now() + Duration::from_secs(120);
    let mut retry = back.clone();
    let accepted = loop {
        match lanes.try_realtime(retry) {
            Ok(h) => break h,
            Err(TrySubmitError::Full(r)) if Instant::now() < bound => {
                retry = r;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("still not accepted: {e:?}"),
        }
    };
    assert_eq!(lanes.metrics().realtime.cancelled, 1);
    // The queued work never runs here (it waits to be coalesced): dropping
    // the scheduler fails it.
    drop(lanes);
    assert!(matches!(accepted.wait(), Err(Error::Shutdown)));
    // The request handed back is the one tried: it gives that result.
    let fresh = Lanes::new(engine(), LanesConfig::default()).unwrap();
    let r = fresh.try_realtime(back).unwrap().wait().unwrap();
    assert_eq!(bits(&r), solo(&third, Op::Max));
    let r = fresh
        .try_batch(Request::host(third.clone(), Op::Sum))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(bits(&r), solo(&third, Op::Sum));
}
