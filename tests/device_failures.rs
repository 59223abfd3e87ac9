//! Device failures on the real device (lavapipe in CI), with real threads:
//! a lost device fails pending and new work with `Error::DeviceLost` on the
//! engine and on both lanes, no thread hangs and a new engine works; a
//! request larger than the device can hold fails alone with
//! `Error::OutOfMemory` while other requests complete. Every wait is
//! bounded (a generous bound that only a hang passes); nothing is timed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use gpulanes::lanes::WhenFull;
use gpulanes::{
    Engine, EngineOptions, Error, Handle, Lanes, LanesConfig, NanPolicy, Op, Partitions, Reduction,
    Request, StreamOptions, cpu,
};

/// Far longer than any settle takes; only a hang reaches it.
const SETTLE_BOUND: Duration = Duration::from_secs(120);

/// Small integers (-3..=3): every partial sum is exact in f32, so a
/// result must equal the CPU reference bit for bit.
fn ints(n: usize, seed: u64) -> Arc<[f32]> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 7) as f32 - 3.0
        })
        .collect()
}

fn bits(r: &Reduction) -> Vec<Option<u32>> {
    r.values.iter().map(|v| v.map(f32::to_bits)).collect()
}

/// Panics unless `got` is the reference's bits for `op` over `data`.
fn assert_correct(got: &Reduction, data: &[f32], op: Op, p: &Partitions, what: &str) {
    let want = cpu::reference(data, op, p, NanPolicy::Propagate).unwrap();
    assert_eq!(bits(got), bits(&want), "{what}: {op} values");
    assert_eq!(got.counts, want.counts, "{what}: {op} counts");
}

/// Waits for `handle` within [`SETTLE_BOUND`], failing the test on a hang.
fn settle(handle: Handle<Reduction>, what: &str) -> Result<Reduction, Error> {
    match handle.wait_timeout(SETTLE_BOUND) {
        Ok(r) => r,
        Err(_) => panic!("{what}: the handle did not settle within {SETTLE_BOUND:?}"),
    }
}

/// Runs `f` on a thread and fails the test if it does not return within
/// [`SETTLE_BOUND`] (a hang), instead of hanging the test run.
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(SETTLE_BOUND)
        .unwrap_or_else(|_| panic!("{what} did not return within {SETTLE_BOUND:?}"))
}

fn is_lost(e: &Error) -> bool {
    matches!(e, Error::DeviceLost { .. })
}

const OPS: [Op; 5] = [Op::Sum, Op::Mean, Op::Max, Op::Min, Op::Count];

#[test]
fn a_lost_device_fails_pending_and_new_work_with_device_lost_and_a_new_engine_works() {
    let engine = Engine::new().expect("an adapter (run scripts/ensure-vulkan.sh)");
    // Batch jobs of many small chunks, and a short blocking batch queue:
    // the last jobs cannot have finished when the device goes, and
    // submitters are blocked on the full queue when it does.
    let lanes = Arc::new(
        Lanes::new(
            &engine,
            LanesConfig::default()
                .quantum(Duration::ZERO)
                .min_chunk_units(2)
                .max_chunk_units(2)
                .batch_queue_len(3)
                .when_full(WhenFull::Block),
        )
        .unwrap(),
    );
    let big = ints(1 << 21, 1);
    let resident = Arc::new(engine.upload(&big).unwrap());
    let rt_data: Vec<Arc<[f32]>> = (0..8).map(|i| ints(4096 + 7 * i, 10 + i as u64)).collect();

    // Four submitting threads: real-time requests, and batch jobs over host
    // and device data, until a submission is refused.
    let submitted = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (lanes, big, resident, rt_data, submitted) = (
                lanes.clone(),
                big.clone(),
                resident.clone(),
                rt_data.clone(),
                submitted.clone(),
            );
            thread::spawn(move || {
                let mut handles = Vec::new();
                for i in 0..100_000usize {
                    let op = OPS[(i + t) % OPS.len()];
                    let (request, data, batch) = match i % 8 {
                        3 if t % 2 == 0 => (Request::host(big.clone(), op), big.clone(), true),
                        3 => (Request::device(resident.clone(), op), big.clone(), true),
                        k => {
                            let d = rt_data[k].clone();
                            (Request::host(d.clone(), op), d, false)
                        }
                    };
                    let outcome = if batch {
                        lanes.batch(request)
                    } else {
                        lanes.realtime(request)
                    };
                    match outcome {
                        Ok(h) => handles.push((h, data, op, batch)),
                        Err(e) => return (handles, e),
                    }
                    submitted.fetch_add(1, Ordering::Relaxed);
                }
                panic!("thread {t}: 100000 submissions and none refused after the loss");
            })
        })
        .collect();
    let waiting = std::time::Instant::now();
    while submitted.load(Ordering::Relaxed) < 64 {
        assert!(
            waiting.elapsed() < SETTLE_BOUND && threads.iter().all(|t| !t.is_finished()),
            "the submitting threads stopped before the device was destroyed"
        );
        thread::sleep(Duration::from_millis(1));
    }
    engine.device().destroy();

    let (mut lost, mut batch_lost, mut completed) = (0usize, 0usize, 0usize);
    for (t, th) in threads.into_iter().enumerate() {
        let (handles, refused) = bounded("a submitting thread", move || th.join().unwrap());
        assert!(is_lost(&refused), "thread {t}: refused with {refused:?}");
        for (i, (h, data, op, batch)) in handles.into_iter().enumerate() {
            let what = format!("thread {t} request {i} (batch: {batch})");
            match settle(h, &what) {
                Ok(r) => {
                    assert_correct(&r, &data, op, &Partitions::Whole, &what);
                    completed += 1;
                }
                Err(e) => {
                    assert!(is_lost(&e), "{what}: {e:?}");
                    lost += 1;
                    batch_lost += usize::from(batch);
                }
            }
        }
    }
    // The batch queue was full when the device went: jobs that had not
    // started (hundreds of chunks behind) cannot have completed.
    assert!(batch_lost > 0, "no batch job failed with DeviceLost");
    eprintln!("after the loss: {completed} completed before it, {lost} failed with DeviceLost");

    // New work fails at once, on the engine and on both lanes.
    assert!(engine.is_device_lost());
    let e = engine.sum(&[1.0, 2.0]).unwrap_err();
    assert!(is_lost(&e), "engine.sum: {e:?}");
    let e = engine.upload(&[1.0]).err().unwrap();
    assert!(is_lost(&e), "engine.upload: {e:?}");
    let e = engine
        .reduce_device(&resident, Op::Max, &Partitions::Whole, NanPolicy::Propagate)
        .unwrap_err();
    assert!(is_lost(&e), "engine.reduce_device: {e:?}");
    let mut encoder = engine
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    let e = engine
        .encode(
            &mut encoder,
            &resident,
            Op::Min,
            &Partitions::Whole,
            NanPolicy::Propagate,
        )
        .err()
        .unwrap();
    assert!(is_lost(&e), "engine.encode: {e:?}");
    for lane in [gpulanes::Lane::RealTime, gpulanes::Lane::Batch] {
        let e = match lanes.submit(lane, Request::host(vec![1.0f32; 16], Op::Sum)) {
            Err(e) => e,
            Ok(h) => settle(h, "a request after the loss").unwrap_err(),
        };
        assert!(is_lost(&e), "{lane:?} after the loss: {e:?}");
    }
    let e = Lanes::new(&engine, LanesConfig::default()).err().unwrap();
    assert!(is_lost(&e), "Lanes::new on a lost device: {e:?}");

    // Neither scheduler thread hangs: waiting for idle returns, and the
    // scheduler drops (joining both threads).
    let l = lanes.clone();
    bounded("wait_idle after the loss", move || l.wait_idle());
    drop(resident);
    bounded("dropping the lanes", move || drop(lanes));
    drop(engine);

    // The process goes on with a new device.
    let fresh = Engine::new().expect("a new engine after the loss");
    let data = ints(100_003, 7);
    for op in OPS {
        let r = fresh
            .reduce_partitions(
                &data,
                op,
                &Partitions::EqualSize(1000),
                NanPolicy::Propagate,
            )
            .unwrap();
        assert_correct(&r, &data, op, &Partitions::EqualSize(1000), "new engine");
    }
    let lanes = Lanes::new(&fresh, LanesConfig::default()).unwrap();
    let r = lanes
        .realtime(Request::host(data.clone(), Op::Sum))
        .unwrap()
        .wait()
        .unwrap();
    assert_correct(&r, &data, Op::Sum, &Partitions::Whole, "new lanes");
}

#[test]
fn a_stream_fails_with_device_lost_when_the_device_goes_and_a_new_one_does_not_start() {
    let engine = Engine::new().expect("an adapter");
    // A small budget: chunks are submitted while the stream is fed.
    let options = StreamOptions::with_budget(4 << 20);
    let mut stream = engine
        .stream(
            Op::Sum,
            &Partitions::EqualSize(4099),
            NanPolicy::Propagate,
            &options,
        )
        .unwrap();
    let chunk = ints(1 << 18, 5);
    for _ in 0..8 {
        stream.push(&chunk).unwrap();
    }
    engine.device().destroy();
    // Feeding on fails with DeviceLost (not at once: chunks are pushed into
    // a host-side buffer until one is full), and nothing hangs.
    let outcome = bounded("feeding a stream after the loss", move || {
        for _ in 0..64 {
            stream.push(&chunk)?;
        }
        stream.finish()
    });
    let e = outcome.expect_err("a stream over a lost device");
    assert!(is_lost(&e), "stream: {e:?}");
    let e = engine
        .reduce_chunks(
            [vec![1.0f32; 8]],
            Op::Sum,
            &Partitions::Whole,
            NanPolicy::Propagate,
            &options,
        )
        .unwrap_err();
    assert!(is_lost(&e), "a new stream: {e:?}");
}

#[test]
fn a_destroyed_device_is_a_typed_loss_with_its_reason() {
    let engine = Engine::new().expect("an adapter");
    let data = ints(10_000, 7);
    assert!(engine.sum(&data).is_ok());
    engine.device().destroy();
    // wgpu runs the lost callback in the next poll (the queue is empty).
    let _ = engine.device().poll(wgpu::PollType::wait_indefinitely());
    assert!(engine.is_device_lost());
    let e = engine.sum(&data).expect_err("a destroyed device");
    assert!(
        matches!(
            e,
            Error::DeviceLost {
                reason: Some(wgpu::DeviceLostReason::Destroyed),
                ..
            }
        ),
        "{e:?}"
    );
    let e = engine.upload(&data[..]).expect_err("no uploads either");
    assert!(is_lost(&e), "{e:?}");
}

/// An engine on a device whose largest buffer (and binding) is 1 MiB:
/// 32768 partials, 65535 partitions per reduction.
/// Warming a dtype's kernels (on its first request) is only a saving: on
/// a lost device the requests of dtypes never warmed fail as every other
/// request does, with `DeviceLost`, each time they are tried.
#[test]
fn requests_of_dtypes_not_yet_warmed_fail_with_device_lost_on_a_lost_device() {
    let engine = Engine::new().unwrap();
    let lanes = Lanes::new(&engine, LanesConfig::default()).unwrap();
    engine.device().destroy();
    for round in 0..3 {
        for lane in [gpulanes::Lane::RealTime, gpulanes::Lane::Batch] {
            let outcomes = [
                lanes
                    .submit(lane, Request::host_typed(vec![1.0f64; 16], Op::Sum))
                    .and_then(|h| h.wait()),
                lanes
                    .submit(lane, Request::host_typed(vec![1i32; 16], Op::Max))
                    .and_then(|h| h.wait()),
                lanes
                    .submit(lane, Request::host_typed(vec![1i64; 16], Op::Mean))
                    .and_then(|h| h.wait()),
            ];
            for (i, outcome) in outcomes.into_iter().enumerate() {
                match outcome {
                    Err(e) => assert!(is_lost(&e), "round {round} {lane:?} request {i}: {e:?}"),
                    Ok(r) => panic!(
                        "round {round} {lane:?} request {i}: a result {r:?} on a lost device"
                    ),
                }
            }
        }
    }
    bounded("dropping the lanes", move || drop(lanes));
}

fn small_device_engine() -> Engine {
    let (_instance, adapter) = gpulanes::adapter::open().expect("an adapter");
    let info = adapter.get_info();
    let limits = wgpu::Limits {
        max_buffer_size: 1 << 20,
        max_storage_buffer_binding_size: 1 << 20,
        ..adapter.limits()
    };
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("small device"),
        required_limits: limits,
        ..Default::default()
    }))
    .expect("a device with smaller limits");
    Engine::from_device(device, queue, &info, EngineOptions::default()).unwrap()
}

/// Offsets of `k` one-item partitions over the first `k` items.
fn one_item_partitions(k: u64) -> Partitions {
    Partitions::Offsets((0..=k).collect())
}

#[test]
fn a_request_larger_than_the_device_can_hold_fails_alone() {
    let engine = small_device_engine();
    let limit = engine.device().limits().max_buffer_size;
    assert_eq!(limit, 1 << 20);
    // 20000 partitions need 20000 partials of 64 bytes (1.28 MB): more
    // than one buffer may hold, and the engine cannot split partials.
    // 10000 fit alone (640 KB), but two of them together do not.
    let too_many = one_item_partitions(20_000);
    let fits_alone = one_item_partitions(10_000);
    let data = ints(20_000, 3);

    // The engine splits a reduction into groups of partitions whose
    // partials fit one buffer of the device, so it completes.
    let r = engine
        .reduce_partitions(&data, Op::Sum, &too_many, NanPolicy::Propagate)
        .unwrap_or_else(|e| panic!("engine, split into groups: {e}"));
    assert_correct(&r, &data, Op::Sum, &too_many, "engine, split into groups");
    assert!(engine.max_partitions() < 20_000);
    let half = &data[..10_000];
    let r = engine
        .reduce_partitions(half, Op::Sum, &fits_alone, NanPolicy::Propagate)
        .unwrap();
    assert_correct(&r, half, Op::Sum, &fits_alone, "engine after OOM");

    // The lanes: the oversized real-time request (held to one group of
    // partitions) is refused alone, a batch job of as many partitions runs
    // in groups, and everything around them completes correctly. One real-time submission on the GPU at a time,
    // so the requests queued behind it are coalesced: pairs of requests
    // that fit only alone must land in different groups.
    let lanes = Lanes::new(&engine, LanesConfig::default().max_realtime_in_flight(1)).unwrap();
    let e = lanes
        .realtime(Request::host(data.clone(), Op::Sum).partitions(too_many.clone()))
        .expect_err("refused");
    // Partition groups are bounded by what one buffer of partials holds.
    assert!(matches!(e, Error::InvalidPartitions(_)), "real-time: {e:?}");
    assert!(e.to_string().contains("batch lane takes any number"), "{e}");
    let oversized_batch = lanes
        .batch(Request::host(data.clone(), Op::Max).partitions(too_many.clone()))
        .unwrap();
    // Made first, so that the requests arrive together.
    let requests: Vec<_> = (0..24u64)
        .map(|i| {
            let op = OPS[i as usize % OPS.len()];
            match i % 3 {
                0 => (ints(4096 + i as usize, 100 + i), op, Partitions::Whole),
                _ => (ints(10_000, 200 + i), op, fits_alone.clone()),
            }
        })
        .collect();
    let mut handles = Vec::new();
    for (d, op, p) in requests {
        let h = lanes
            .realtime(Request::host(d.clone(), op).partitions(p.clone()))
            .unwrap();
        handles.push((h, d, op, p));
    }
    let big = ints(300_000, 9);
    let batch = lanes
        .batch(Request::host(big.clone(), Op::Sum).partitions(Partitions::EqualSize(999)))
        .unwrap();
    let r = settle(oversized_batch, "batch job of many partitions")
        .unwrap_or_else(|e| panic!("batch job of many partitions: {e}"));
    assert_correct(
        &r,
        &data,
        Op::Max,
        &too_many,
        "batch job of many partitions",
    );
    for (i, (h, d, op, p)) in handles.into_iter().enumerate() {
        let what = format!("real-time request {i}");
        let r = settle(h, &what).unwrap_or_else(|e| panic!("{what}: {e:?}"));
        assert_correct(&r, &d, op, &p, &what);
    }
    let r = settle(batch, "batch job").unwrap();
    assert_correct(&r, &big, Op::Sum, &Partitions::EqualSize(999), "batch job");
    let m = lanes.metrics();
    assert!(
        m.realtime.submits < 24,
        "no real-time requests were coalesced ({} submits), so the group bound went untested",
        m.realtime.submits
    );
}
