//! The engine's async forms: the same bits as the blocking forms (keyed
//! reductions too), many futures at once on a multi-threaded tokio
//! runtime, futures dropped before they settle or outliving their engine,
//! a lost device, and errors that come out of the future.

mod common;

use std::sync::Arc;

use common::*;
use gpulanes::{
    DeviceArray, Engine, EngineOptions, Error, NanPolicy, Op, Partitions, Reduction, Scalar,
};

const OPS: [Op; 5] = [Op::Sum, Op::Mean, Op::Max, Op::Min, Op::Count];

/// Same values (NaN payloads aside) and counts.
fn assert_same(a: &Reduction, b: &Reduction, what: &str) {
    assert_eq!(a.op, b.op, "{what}: op");
    assert_eq!(a.counts, b.counts, "{what}: counts");
    assert_eq!(a.values.len(), b.values.len(), "{what}: partitions");
    for (i, (x, y)) in a.values.iter().zip(&b.values).enumerate() {
        let same = match (x, y) {
            (Some(x), Some(y)) => same_value(*x, *y),
            (None, None) => true,
            _ => false,
        };
        assert!(same, "{what}: partition {i}: {x:?} vs {y:?}");
    }
}

fn assert_same_typed(a: &Reduction<Scalar>, b: &Reduction<Scalar>, what: &str) {
    assert_eq!(a.counts, b.counts, "{what}: counts");
    let bits = |r: &Reduction<Scalar>| r.values.iter().map(|v| scalar_bits(*v)).collect::<Vec<_>>();
    assert_eq!(bits(a), bits(b), "{what}: values");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .expect("a tokio runtime")
}

/// Partitionings that reach every path: whole, large and tiny equal
/// partitions, offsets with empty partitions, none at all.
fn partitionings(n: u64) -> Vec<Partitions> {
    vec![
        Partitions::Whole,
        Partitions::EqualSize(4099),
        Partitions::EqualSize(3),
        Partitions::Offsets(vec![0, 0, n / 3, n / 3, n]),
        Partitions::Offsets(vec![0]),
    ]
}

#[test]
fn float32_forms_give_the_bits_of_the_blocking_forms() {
    let mut rng = SplitMix::new(11);
    // The tiny engine splits inputs over several buffers and partitions
    // into several groups.
    for (name, engine) in [("default", engine()), ("tiny", tiny_engine())] {
        for n in [0usize, 1, 1000, 200_003] {
            let data = mixed_data(&mut rng, n, 5);
            let array = engine.upload(&data).unwrap();
            for partitions in partitionings(n as u64) {
                for op in OPS {
                    for nan in POLICIES {
                        let what = format!("{name} n={n} {} {op} {nan:?}", describe(&partitions));
                        let want = engine.reduce_partitions(&data, op, &partitions, nan);
                        let got = pollster::block_on(engine.reduce_partitions_async(
                            &data,
                            op,
                            &partitions,
                            nan,
                        ));
                        let device = pollster::block_on(engine.reduce_device_async(
                            &array,
                            op,
                            &partitions,
                            nan,
                        ));
                        match want {
                            Ok(want) => {
                                assert_same(&got.unwrap(), &want, &format!("host {what}"));
                                assert_same(&device.unwrap(), &want, &format!("device {what}"));
                            }
                            Err(e) => {
                                let (g, d) = (got.unwrap_err(), device.unwrap_err());
                                assert_eq!(g.to_string(), e.to_string(), "host {what}");
                                assert_eq!(d.to_string(), e.to_string(), "device {what}");
                            }
                        }
                    }
                }
            }
            let sum = pollster::block_on(engine.sum_async(&data)).unwrap();
            assert!(
                same_value(sum, engine.sum(&data).unwrap()),
                "{name} sum n={n}"
            );
            for op in OPS {
                let got = pollster::block_on(engine.reduce_async(&data, op)).unwrap();
                let want = engine.reduce(&data, op).unwrap();
                assert_eq!(got.map(|v| v.is_nan()), want.map(|v| v.is_nan()), "{op}");
                assert!(
                    got.zip(want).is_none_or(|(a, b)| same_value(a, b)),
                    "{name} {op} n={n}"
                );
            }
        }
    }
}

fn check_typed<E: gpulanes::Element>(engine: &Engine, data: &[E], what: &str) {
    let array = engine.upload(data).unwrap();
    for partitions in partitionings(data.len() as u64) {
        for op in OPS {
            for nan in POLICIES {
                let what = format!("{what} {} {op} {nan:?}", describe(&partitions));
                let host = (
                    engine.reduce_slice(data, op, &partitions, nan),
                    pollster::block_on(engine.reduce_slice_async(data, op, &partitions, nan)),
                );
                let device = (
                    engine.reduce_device_typed(&array, op, &partitions, nan),
                    pollster::block_on(engine.reduce_device_typed_async(
                        &array,
                        op,
                        &partitions,
                        nan,
                    )),
                );
                for (form, (want, got)) in [("host", host), ("device", device)] {
                    match (want, got) {
                        (Ok(want), Ok(got)) => {
                            assert_same_typed(&got, &want, &format!("{form} {what}"))
                        }
                        (Err(want), Err(got)) => {
                            assert_eq!(got.to_string(), want.to_string(), "{form} {what}")
                        }
                        (want, got) => panic!("{form} {what}: {got:?}, blocking {want:?}"),
                    }
                }
            }
        }
    }
}

#[test]
fn typed_forms_give_the_bits_of_the_blocking_forms() {
    let mut rng = SplitMix::new(12);
    for (name, engine) in [("default", engine()), ("tiny", tiny_engine())] {
        let f: Vec<f32> = mixed_data(&mut rng, 50_001, 5);
        let d: Vec<f64> = f.iter().map(|&x| x as f64 * 1.000_000_1).collect();
        let i: Vec<i32> = (0..50_001).map(|_| rng.next_u64() as i32).collect();
        let u: Vec<u32> = (0..50_001).map(|_| rng.next_u64() as u32).collect();
        let l: Vec<i64> = (0..50_001)
            .map(|_| (rng.next_u64() >> 8) as i64 - (1 << 55))
            .collect();
        check_typed(engine, &f, &format!("{name} f32"));
        check_typed(engine, &d, &format!("{name} f64"));
        check_typed(engine, &i, &format!("{name} i32"));
        check_typed(engine, &u, &format!("{name} u32"));
        check_typed(engine, &l, &format!("{name} i64"));
        check_typed::<f64>(engine, &[], &format!("{name} empty f64"));
    }
}

#[test]
fn many_futures_at_once_on_a_multi_threaded_runtime() {
    let engine = engine().clone();
    let mut rng = SplitMix::new(13);
    let inputs: Vec<Arc<Vec<f32>>> = (0..16)
        .map(|k| Arc::new(mixed_data(&mut rng, 1000 + 4099 * k, 3)))
        .collect();
    let resident: Vec<Arc<DeviceArray>> = inputs
        .iter()
        .map(|d| Arc::new(engine.upload(&d[..]).unwrap()))
        .collect();
    let rt = runtime();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..256usize {
            let (engine, data, array) = (
                engine.clone(),
                inputs[t % inputs.len()].clone(),
                resident[t % resident.len()].clone(),
            );
            tasks.push(tokio::spawn(async move {
                let op = OPS[t % OPS.len()];
                let partitions = Partitions::EqualSize(1 + (t as u64 * 37) % 5000);
                let nan = POLICIES[t % 2];
                // Several futures in flight from one task, awaited in
                // reverse order.
                let host = engine.reduce_partitions_async(&data, op, &partitions, nan);
                let device = engine.reduce_device_async(&array, op, &partitions, nan);
                let typed = engine.reduce_slice_async(&data[..], op, &partitions, nan);
                let typed = typed.await.unwrap();
                let device = device.await.unwrap();
                let host = host.await.unwrap();
                let want = engine
                    .reduce_partitions(&data, op, &partitions, nan)
                    .unwrap();
                let what = format!("task {t}");
                assert_same(&host, &want, &what);
                assert_same(&device, &want, &what);
                let want = engine
                    .reduce_slice(&data[..], op, &partitions, nan)
                    .unwrap();
                assert_same_typed(&typed, &want, &what);
            }));
        }
        for task in tasks {
            task.await.expect("a task panicked");
        }
    });
}

#[test]
fn a_dropped_future_does_not_harm_later_work() {
    let engine = engine();
    let data: Vec<f32> = (0..300_000).map(|i| (i % 1000) as f32).collect();
    let array = engine.upload(&data).unwrap();
    for _ in 0..8 {
        drop(engine.reduce_partitions_async(
            &data,
            Op::Sum,
            &Partitions::EqualSize(7),
            NanPolicy::Propagate,
        ));
        drop(engine.reduce_device_async(&array, Op::Max, &Partitions::Whole, NanPolicy::Propagate));
        drop(engine.reduce_slice_async(&data, Op::Mean, &Partitions::Whole, NanPolicy::Ignore));
    }
    // The array may go too: the GPU work holds its buffers.
    let doomed = engine.upload(&data).unwrap();
    let pending =
        engine.reduce_device_async(&doomed, Op::Sum, &Partitions::Whole, NanPolicy::Propagate);
    drop(doomed);
    assert_eq!(
        pollster::block_on(pending).unwrap().value(),
        Some(149_850_000.0)
    );
    let rt = runtime();
    let got = rt.block_on(engine.sum_async(&data)).unwrap();
    assert_eq!(got, 149_850_000.0);
    assert_eq!(engine.sum(&data).unwrap(), 149_850_000.0);
}

#[test]
fn errors_come_out_of_the_future() {
    let engine = engine();
    let data = vec![1.0f32; 100];
    let bad = Partitions::Offsets(vec![0, 50, 40, 100]);
    let e = pollster::block_on(engine.reduce_partitions_async(
        &data,
        Op::Sum,
        &bad,
        NanPolicy::Propagate,
    ))
    .unwrap_err();
    assert!(matches!(e, Error::InvalidPartitions(_)), "{e:?}");
    let e = pollster::block_on(engine.reduce_slice_async(
        &data,
        Op::Sum,
        &Partitions::EqualSize(0),
        NanPolicy::Propagate,
    ))
    .unwrap_err();
    assert!(matches!(e, Error::InvalidPartitions(_)), "{e:?}");

    // An array of another engine, and a float64 array on the float32 form.
    let other = Engine::with_options(EngineOptions::default()).unwrap();
    let foreign = other.upload(&data).unwrap();
    let e = pollster::block_on(engine.reduce_device_async(
        &foreign,
        Op::Sum,
        &Partitions::Whole,
        NanPolicy::Propagate,
    ))
    .unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
    let e = pollster::block_on(engine.reduce_device_typed_async(
        &foreign,
        Op::Sum,
        &Partitions::Whole,
        NanPolicy::Propagate,
    ))
    .unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
    let doubles = engine.upload(&[1.0f64, 2.0]).unwrap();
    let e = pollster::block_on(engine.reduce_device_async(
        &doubles,
        Op::Sum,
        &Partitions::Whole,
        NanPolicy::Propagate,
    ))
    .unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");

    // An integer sum outside int64 is found after the GPU work.
    let big = vec![i64::MAX; 4];
    let e = pollster::block_on(engine.reduce_slice_async(
        &big,
        Op::Sum,
        &Partitions::Whole,
        NanPolicy::Propagate,
    ))
    .unwrap_err();
    assert!(matches!(e, Error::Overflow(_)), "{e:?}");

    // The engine goes on.
    assert_eq!(pollster::block_on(engine.sum_async(&data)).unwrap(), 100.0);
}

#[test]
fn an_encoded_reduction_can_be_awaited() {
    let engine = engine();
    let data: Vec<f32> = (1..=10_000).map(|i| i as f32).collect();
    let array = engine.upload(&data).unwrap();
    let mut encoder = engine
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    let pending = engine
        .encode(
            &mut encoder,
            &array,
            Op::Sum,
            &Partitions::EqualSize(100),
            NanPolicy::Propagate,
        )
        .unwrap();
    let index = engine.queue().submit([encoder.finish()]);
    let r = runtime()
        .block_on(pending.wait_async(engine, index))
        .unwrap();
    assert_eq!(r.values.len(), 100);
    assert_eq!(r.values[0], Some(5050.0));
}

#[test]
fn an_engine_dropped_with_futures_in_flight_still_settles_them() {
    let engine = Engine::new().unwrap();
    let data = vec![2.0f32; 100_000];
    let futures: Vec<_> = (0..8).map(|_| engine.sum_async(&data)).collect();
    drop(engine);
    for f in futures {
        assert_eq!(pollster::block_on(f).unwrap(), 200_000.0);
    }
}

/// Awaits `futures` after their device was lost: each settles (finished
/// before the loss, or DeviceLost) within two minutes, none hangs.
fn settle_after_the_loss<T: Send + 'static>(futures: Vec<gpulanes::ReductionFuture<T>>) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let outcomes: Vec<_> = futures.into_iter().map(pollster::block_on).collect();
        let _ = tx.send(outcomes);
    });
    let outcomes = rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("futures settle after the loss");
    for r in outcomes {
        if let Err(e) = r {
            assert!(matches!(e, Error::DeviceLost { .. }), "{e:?}");
        }
    }
}

#[test]
fn futures_in_flight_when_the_device_is_lost_settle_with_device_lost() {
    let engine = Engine::new().unwrap();
    let data: Vec<f32> = (0..1 << 20).map(|i| (i % 100) as f32).collect();
    let array = engine.upload(&data).unwrap();
    let futures: Vec<_> = (0..16)
        .map(|k| {
            let partitions = Partitions::EqualSize(1 + 977 * k);
            if k % 2 == 0 {
                engine.reduce_partitions_async(&data, Op::Sum, &partitions, NanPolicy::Propagate)
            } else {
                engine.reduce_device_async(&array, Op::Max, &partitions, NanPolicy::Propagate)
            }
        })
        .collect();
    engine.device().destroy();
    settle_after_the_loss(futures);
    let e = pollster::block_on(engine.sum_async(&data)).unwrap_err();
    assert!(matches!(e, Error::DeviceLost { .. }), "{e:?}");
}

#[test]
fn an_encoded_typed_reduction_gives_the_bits_of_reduce_device_typed() {
    let engine = tiny_engine();
    let mut rng = SplitMix::new(14);
    let data: Vec<f64> = (0..40_000)
        .map(|_| rng.log_uniform(-30, 30) as f64)
        .collect();
    let array = engine.upload(&data).unwrap();
    for partitions in partitionings(data.len() as u64).into_iter().take(4) {
        for op in OPS {
            let want = engine
                .reduce_device_typed(&array, op, &partitions, NanPolicy::Propagate)
                .unwrap();
            let encode = |engine: &Engine| {
                let mut encoder = engine
                    .device()
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
                let pending = engine
                    .encode_typed(&mut encoder, &array, op, &partitions, NanPolicy::Propagate)
                    .unwrap();
                (pending, engine.queue().submit([encoder.finish()]))
            };
            let (pending, index) = encode(engine);
            let what = format!("{} {op}", describe(&partitions));
            assert_same_typed(&pending.wait(engine, index).unwrap(), &want, &what);
            let (pending, index) = encode(engine);
            let got = pollster::block_on(pending.wait_async(engine, index)).unwrap();
            assert_same_typed(&got, &want, &what);
        }
    }
}

#[test]
fn keyed_futures_give_the_bits_of_reduce_by_key() {
    let engine = engine().clone();
    let mut rng = SplitMix::new(41);
    let rt = runtime();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..24u64 {
            let engine = engine.clone();
            let n = 1 + (t as usize * 7919) % 60_000;
            let card = [1u64, 7, 1000, 100_000][t as usize % 4];
            let keys: Vec<i64> = (0..n)
                .map(|_| (rng.below(card) as i64) << (t % 3 * 20))
                .collect();
            let values: Vec<f64> = mixed_data(&mut rng, n, 5)
                .into_iter()
                .map(f64::from)
                .collect();
            tasks.push(tokio::spawn(async move {
                let nan = POLICIES[t as usize % 2];
                let got = engine
                    .reduce_by_key_async(keys.clone(), values.clone(), &OPS, nan)
                    .await
                    .unwrap();
                let want = engine.reduce_by_key(&keys, &values, &OPS, nan).unwrap();
                assert_eq!(grouped_bits(&got), grouped_bits(&want), "task {t}");
            }));
        }
        for task in tasks {
            task.await.expect("a task panicked");
        }
    });
    // Empty input, bad input.
    let g = pollster::block_on(engine.reduce_by_key_async::<i32, f32>(
        vec![],
        vec![],
        &OPS,
        NanPolicy::Propagate,
    ))
    .unwrap();
    assert!(g.is_empty());
    let e = pollster::block_on(engine.reduce_by_key_async(
        vec![1i32, 2],
        vec![1.0f32],
        &OPS,
        NanPolicy::Propagate,
    ))
    .unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
    let e = pollster::block_on(engine.reduce_by_key_async(
        vec![1u32],
        vec![1.0f32],
        &[],
        NanPolicy::Propagate,
    ))
    .unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
}

#[test]
fn a_keyed_future_outlives_its_engine() {
    let engine = Engine::new().unwrap();
    let keys: Vec<u32> = (0..200_000).map(|i| i % 3).collect();
    let futures: Vec<_> = (0..4)
        .map(|_| {
            engine.reduce_by_key_async(
                keys.clone(),
                vec![0.5f32; 200_000],
                &[Op::Sum, Op::Count],
                NanPolicy::Propagate,
            )
        })
        .collect();
    drop(engine);
    for f in futures {
        let g = pollster::block_on(f).unwrap();
        assert_eq!(g.keys, vec![0, 1, 2]);
        assert_eq!(g.reductions[1].counts, vec![66_667, 66_667, 66_666]);
        let sums: Vec<_> = g.reductions[0].values.clone();
        assert_eq!(
            sums,
            vec![
                Some(Scalar::F32(33_333.5)),
                Some(Scalar::F32(33_333.5)),
                Some(Scalar::F32(33_333.0))
            ]
        );
    }
}

#[test]
fn keyed_futures_in_flight_when_the_device_is_lost_settle() {
    let engine = Engine::new().unwrap();
    let keys: Vec<i32> = (0..1 << 20).map(|i| (i * 7919) % 5000).collect();
    let values: Vec<f32> = (0..1 << 20).map(|i| (i % 100) as f32).collect();
    let futures: Vec<_> = (0..6)
        .map(|_| {
            engine.reduce_by_key_async(keys.clone(), values.clone(), &OPS, NanPolicy::Propagate)
        })
        .collect();
    engine.device().destroy();
    settle_after_the_loss(futures);
    let e =
        pollster::block_on(engine.reduce_by_key_async(keys, values, &OPS, NanPolicy::Propagate))
            .unwrap_err();
    assert!(matches!(e, Error::DeviceLost { .. }), "{e:?}");
}

#[test]
fn keyed_device_futures_give_the_bits_of_reduce_by_key_device() {
    let engine = Engine::new().unwrap();
    let mut rng = SplitMix::new(47);
    let n = 90_000;
    // Dense int32 keys (read in place) and sparse int64 keys (read back to
    // be mapped to ids), float64 values.
    let dense: Vec<i32> = (0..n).map(|_| rng.below(3000) as i32 - 100).collect();
    let sparse: Vec<i64> = (0..n).map(|_| (rng.below(500) as i64) << 40).collect();
    let values: Vec<f64> = mixed_data(&mut rng, n, 5)
        .into_iter()
        .map(f64::from)
        .collect();
    let (dk, sk, dv) = (
        engine.upload(&dense).unwrap(),
        engine.upload(&sparse).unwrap(),
        engine.upload(&values).unwrap(),
    );
    let futures: Vec<_> = [&dk, &sk]
        .into_iter()
        .flat_map(|k| POLICIES.map(|nan| (k, nan)))
        .map(|(k, nan)| {
            let want = engine.reduce_by_key_device(k, &dv, &OPS, nan).unwrap();
            (engine.reduce_by_key_device_async(k, &dv, &OPS, nan), want)
        })
        .collect();
    // The arrays and the engine may go before the futures settle.
    drop((dk, sk, dv));
    drop(engine);
    for (i, (future, want)) in futures.into_iter().enumerate() {
        let got = pollster::block_on(future).unwrap();
        assert_eq!(grouped_bits(&got), grouped_bits(&want), "request {i}");
    }
    let engine = Engine::new().unwrap();
    let other = Engine::new().unwrap();
    let keys = other.upload(&[1i32, 2]).unwrap();
    let values = engine.upload(&[1.0f32, 2.0]).unwrap();
    let e = pollster::block_on(engine.reduce_by_key_device_async(
        &keys,
        &values,
        &OPS,
        NanPolicy::Propagate,
    ))
    .unwrap_err();
    assert!(
        matches!(e, Error::InvalidInput(_)),
        "another engine's keys: {e:?}"
    );
}
