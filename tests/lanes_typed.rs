//! Typed requests in both lanes (`Request::host_typed`,
//! `Request::device_typed`): values of every element type, each result in
//! its op's result type with the bits `Engine::reduce_slice` gives and the
//! values of the exact reference (`State` over each partition), alone,
//! coalesced with requests of other dtypes and ops, chunked, and in groups
//! of partitions; errors (an int64 sum that overflows) fail their own
//! request only.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{SplitMix, scalar_bits};
use gpulanes::{
    Dtype, Element, Engine, Error, Handle, Lanes, LanesConfig, NanPolicy, Op, Partitions,
    Reduction, Request, Scalar, State, StateKind,
};

const OPS: [Op; 5] = [Op::Sum, Op::Mean, Op::Max, Op::Min, Op::Count];

/// Small batch chunks, so a job takes many submissions even on small input.
fn small_chunks() -> LanesConfig {
    LanesConfig::default()
        .quantum(Duration::ZERO)
        .min_chunk_units(2)
        .max_chunk_units(2)
}

/// Values of every dtype with the adversarial ones mixed in: NaN, ±inf,
/// -0.0, subnormals and huge cancelling pairs for floats; the extremes for
/// integers (int64 sums that pass int64 on the way and come back).
trait Adversarial: Element + Copy {
    fn draw(rng: &mut SplitMix, i: usize) -> Self;
}

impl Adversarial for f32 {
    fn draw(rng: &mut SplitMix, _: usize) -> Self {
        match rng.below(40) {
            0 => f32::NAN,
            1 => f32::INFINITY,
            2 => f32::NEG_INFINITY,
            3 => -0.0,
            4 => f32::from_bits(1 + rng.below(1 << 20) as u32),
            5 => 3.0e38,
            6 => -3.0e38,
            _ => rng.range(-1e3, 1e3) as f32,
        }
    }
}

impl Adversarial for f64 {
    fn draw(rng: &mut SplitMix, _: usize) -> Self {
        match rng.below(40) {
            0 => f64::NAN,
            1 => f64::INFINITY,
            2 => f64::NEG_INFINITY,
            3 => -0.0,
            4 => f64::from_bits(1 + rng.below(1 << 50)),
            5 => 1.5e308,
            6 => -1.5e308,
            7 => 1e-300,
            _ => rng.range(-1e6, 1e6) * 0.1,
        }
    }
}

impl Adversarial for i32 {
    fn draw(rng: &mut SplitMix, _: usize) -> Self {
        match rng.below(8) {
            0 => i32::MAX,
            1 => i32::MIN,
            _ => rng.next_u64() as i32,
        }
    }
}

impl Adversarial for u32 {
    fn draw(rng: &mut SplitMix, _: usize) -> Self {
        match rng.below(8) {
            0 => u32::MAX,
            1 => 0,
            _ => rng.next_u64() as u32,
        }
    }
}

impl Adversarial for i64 {
    /// Pairs of extremes that cancel (`i64::MAX` then `i64::MIN + 1`), so
    /// running sums pass int64 while every partition's sum fits.
    fn draw(rng: &mut SplitMix, i: usize) -> Self {
        if i.is_multiple_of(2) {
            i64::MAX - rng.below(1000) as i64
        } else {
            i64::MIN + 1 + rng.below(1000) as i64
        }
    }
}

fn values<E: Adversarial>(n: usize, seed: u64) -> Arc<[E]> {
    let mut rng = SplitMix::new(seed);
    (0..n).map(|i| E::draw(&mut rng, i)).collect()
}

/// The exact reference: each partition's `State` finalised, the first
/// error (an integer sum outside int64) as the whole result.
fn reference<E: Element>(
    data: &[E],
    op: Op,
    parts: &Partitions,
    nan: NanPolicy,
) -> gpulanes::Result<Reduction<Scalar>> {
    let offsets = parts.offsets(data.len() as u64)?;
    let mut values = Vec::new();
    let mut counts = Vec::new();
    for w in offsets.windows(2) {
        let s = State::of(&data[w[0] as usize..w[1] as usize], StateKind::for_op(op));
        values.push(s.finalize(op, nan)?);
        counts.push(s.count(nan));
    }
    Ok(Reduction { op, values, counts })
}

/// A result's value bits and counts.
type Bits = (Vec<Option<(u8, u64)>>, Vec<u64>);

/// A result as comparable bits (NaN payloads made equal), or its error's
/// kind.
fn outcome(r: &gpulanes::Result<Reduction<Scalar>>) -> Result<Bits, String> {
    match r {
        Ok(r) => Ok((
            r.values.iter().map(|v| scalar_bits(*v)).collect(),
            r.counts.clone(),
        )),
        Err(Error::Overflow(_)) => Err("overflow".into()),
        Err(e) => Err(format!("unexpected error: {e}")),
    }
}

/// One typed case: the same request in the real-time lane, the batch lane
/// (host data through the ring, small chunks) and, for the batch lane, a
/// device array; every one against `reduce_slice` and the reference.
struct Case {
    what: String,
    want: gpulanes::Result<Reduction<Scalar>>,
    alone: gpulanes::Result<Reduction<Scalar>>,
    handles: Vec<(&'static str, Handle<Reduction<Scalar>>)>,
}

fn submit<E: Adversarial>(
    engine: &Engine,
    lanes: &Lanes,
    data: &Arc<[E]>,
    device: &Arc<gpulanes::DeviceArray>,
    op: Op,
    parts: &Partitions,
    nan: NanPolicy,
) -> Case {
    let host = || {
        Request::host_typed(data.clone(), op)
            .partitions(parts.clone())
            .nan(nan)
    };
    let mut handles = vec![("batch, host", lanes.batch(host()).unwrap())];
    handles.push((
        "batch, device",
        lanes
            .batch(
                Request::device_typed(device.clone(), op)
                    .partitions(parts.clone())
                    .nan(nan),
            )
            .unwrap(),
    ));
    // Real-time requests are held to one reduction's partition limit.
    let partitions = parts.offsets(data.len() as u64).unwrap().len() as u64 - 1;
    if partitions <= engine.max_partitions() {
        handles.push(("real-time", lanes.realtime(host()).unwrap()));
    }
    Case {
        what: format!(
            "{} {op} {} {nan:?} n={}",
            E::DTYPE,
            common::describe(parts),
            data.len()
        ),
        want: reference(data, op, parts, nan),
        alone: engine.reduce_slice(data, op, parts, nan),
        handles,
    }
}

/// Checks a case; returns how many of its requests failed (as they must:
/// an int64 sum past int64).
fn check(case: Case) -> u64 {
    let want = outcome(&case.want);
    assert_eq!(outcome(&case.alone), want, "{}: reduce_slice", case.what);
    let mut failed = 0;
    for (path, h) in case.handles {
        assert_eq!(outcome(&h.wait()), want, "{}: {path}", case.what);
        failed += u64::from(want.is_err());
    }
    failed
}

/// Every op, policy and partitioning over lengths around block edges;
/// returns the requests that failed (int64 overflows).
fn every_case<E: Adversarial>(engine: &Engine, lanes: &Lanes, seed: u64) -> u64 {
    // Lengths around blocks (64 words; 64-bit values take two), a few
    // blocks, and a work unit or more.
    let mut failed = 0;
    for (k, n) in [0usize, 1, 31, 32, 33, 63, 64, 65, 4097, 8193, 20_001]
        .into_iter()
        .enumerate()
    {
        let data = values::<E>(n, seed + k as u64);
        let device = Arc::new(engine.upload(&data).unwrap());
        let ragged = Partitions::Offsets(
            [0, 0, n / 3, n / 3, n / 2 + 1, n]
                .map(|o| o.min(n) as u64)
                .into_iter()
                .scan(0u64, |last, o| {
                    *last = (*last).max(o);
                    Some(*last)
                })
                .collect(),
        );
        // Every op at every length, with two of the six (partitions,
        // policy) pairs in turn: each pair meets each op at several
        // lengths.
        let all_parts = [Partitions::Whole, Partitions::EqualSize(7), ragged];
        let mut cases = Vec::new();
        for op in OPS {
            for turn in [k, k + 1] {
                let parts = &all_parts[turn % 3];
                let nan = [NanPolicy::Propagate, NanPolicy::Ignore][turn / 3 % 2];
                cases.push(submit(engine, lanes, &data, &device, op, parts, nan));
            }
        }
        failed += cases.into_iter().map(check).sum::<u64>();
    }
    failed
}

#[test]
fn typed_requests_have_the_bits_of_reduce_slice_and_the_exact_values_in_both_lanes() {
    let engine = common::engine();
    let lanes = Lanes::new(engine, LanesConfig::default()).unwrap();
    let mut failed = every_case::<f32>(engine, &lanes, 100);
    failed += every_case::<f64>(engine, &lanes, 200);
    failed += every_case::<i32>(engine, &lanes, 300);
    failed += every_case::<u32>(engine, &lanes, 400);
    let overflows = every_case::<i64>(engine, &lanes, 500);
    assert_eq!(failed, 0, "only int64 sums can fail");
    assert!(
        overflows > 0,
        "the int64 cases must include sums past int64"
    );
    let m = lanes.metrics();
    assert_eq!(m.realtime.failed + m.batch.failed, overflows);
}

/// The exact sum, rounded once: what no float accumulation gives here.
#[test]
fn a_float64_sum_is_exact_in_either_lane() {
    let lanes = Lanes::new(common::engine(), LanesConfig::default()).unwrap();
    let data = vec![1e300, 1.0, -1e300, 0.1, 0.2, 0.3, 1e-300];
    let rt = lanes
        .realtime(Request::host_typed(data.clone(), Op::Sum))
        .unwrap();
    let batch = lanes.batch(Request::host_typed(data, Op::Sum)).unwrap();
    // 1 + 0.1 + 0.2 + 0.3 + 1e-300 exactly, rounded to the nearest double
    // (the three decimals' doubles sum to 0.6000000000000000055..., so the
    // total rounds to 1.6).
    assert_eq!(rt.wait().unwrap().value(), Some(Scalar::F64(1.6)));
    assert_eq!(batch.wait().unwrap().value(), Some(Scalar::F64(1.6)));
}

#[test]
fn coalesced_requests_of_every_dtype_and_op_each_get_their_own_bits() {
    let engine = common::engine();
    let lanes = Lanes::new(
        engine,
        LanesConfig::default().coalesce_delay(Duration::from_millis(50)),
    )
    .unwrap();
    let parts = Partitions::EqualSize(13);
    let nan = NanPolicy::Ignore;
    let f32s = values::<f32>(3001, 1);
    let f64s = values::<f64>(2999, 2);
    let i32s = values::<i32>(1500, 3);
    let u32s = values::<u32>(777, 4);
    let i64s = values::<i64>(2000, 5);
    // Whole float32 requests of the untyped kind ride along, with their
    // own bits.
    let plain: Vec<f32> = f32s.to_vec();
    let mut typed = Vec::new();
    let mut floats = Vec::new();
    for op in OPS {
        let req = |r: Request<Scalar>| {
            lanes
                .realtime(r.partitions(parts.clone()).nan(nan))
                .unwrap()
        };
        typed.push((op, Dtype::F32, req(Request::host_typed(f32s.clone(), op))));
        typed.push((op, Dtype::F64, req(Request::host_typed(f64s.clone(), op))));
        typed.push((op, Dtype::I32, req(Request::host_typed(i32s.clone(), op))));
        typed.push((op, Dtype::U32, req(Request::host_typed(u32s.clone(), op))));
        typed.push((op, Dtype::I64, req(Request::host_typed(i64s.clone(), op))));
        floats.push((
            op,
            lanes
                .realtime(
                    Request::host(plain.clone(), op)
                        .partitions(parts.clone())
                        .nan(nan),
                )
                .unwrap(),
        ));
    }
    let mut overflows = 0;
    for (op, dtype, h) in typed {
        let want = match dtype {
            Dtype::F32 => engine.reduce_slice(&f32s, op, &parts, nan),
            Dtype::F64 => engine.reduce_slice(&f64s, op, &parts, nan),
            Dtype::I32 => engine.reduce_slice(&i32s, op, &parts, nan),
            Dtype::U32 => engine.reduce_slice(&u32s, op, &parts, nan),
            Dtype::I64 => engine.reduce_slice(&i64s, op, &parts, nan),
        };
        assert_eq!(outcome(&h.wait()), outcome(&want), "{dtype} {op}");
        overflows += u64::from(want.is_err());
    }
    assert_eq!(overflows, 1, "the int64 sum of odd partitions of extremes");
    for (op, h) in floats {
        let got = h.wait().unwrap();
        let want = engine.reduce_partitions(&plain, op, &parts, nan).unwrap();
        common::assert_same_bits(&got, &want, &format!("float32 {op}"));
    }
    let m = lanes.metrics();
    assert_eq!((m.realtime.completed, m.realtime.failed), (29, 1));
    assert!(
        m.realtime.submits < 30,
        "30 requests arriving together must be coalesced, got {} submits",
        m.realtime.submits
    );
}

#[test]
fn an_int64_sum_past_int64_fails_its_own_request_only() {
    let engine = common::engine();
    let lanes = Lanes::new(
        engine,
        LanesConfig::default().coalesce_delay(Duration::from_millis(50)),
    )
    .unwrap();
    let over: Vec<i64> = vec![i64::MAX, 1, 5];
    let fine: Vec<i64> = vec![i64::MAX, 1, -5];
    // In one coalesced group: the same kernel and dtype, so one job.
    let before = lanes
        .realtime(Request::host_typed(fine.clone(), Op::Sum))
        .unwrap();
    let bad = lanes
        .realtime(Request::host_typed(over.clone(), Op::Sum))
        .unwrap();
    let after = lanes
        .realtime(Request::host_typed(fine.clone(), Op::Mean))
        .unwrap();
    assert!(matches!(bad.wait(), Err(Error::Overflow(_))));
    assert_eq!(
        before.wait().unwrap().value(),
        Some(Scalar::I64(i64::MAX - 4))
    );
    let mean = (i64::MAX as i128 - 4) as f64 / 3.0;
    assert_eq!(after.wait().unwrap().value(), Some(Scalar::F64(mean)));
    // The batch lane: an overflowing partition fails the job; the
    // partitions that fit give their sums in another job.
    let job = lanes
        .batch(Request::host_typed(over.clone(), Op::Sum).partitions(Partitions::EqualSize(2)))
        .unwrap();
    assert!(matches!(job.wait(), Err(Error::Overflow(_))));
    let job = lanes
        .batch(Request::host_typed(over, Op::Max).partitions(Partitions::EqualSize(2)))
        .unwrap();
    assert_eq!(
        job.wait().unwrap().values,
        vec![Some(Scalar::I64(i64::MAX)), Some(Scalar::I64(5))]
    );
    let m = lanes.metrics();
    assert_eq!((m.realtime.failed, m.batch.failed), (1, 1));
}

#[test]
fn device_arrays_of_every_dtype_go_through_device_typed() {
    let engine = common::engine();
    let lanes = Lanes::new(engine, small_chunks()).unwrap();
    let data = values::<f64>(10_000, 9);
    let array = Arc::new(engine.upload(&data).unwrap());
    // The float32 form names the typed one.
    match lanes.batch(Request::device(array.clone(), Op::Sum)) {
        Err(Error::InvalidInput(msg)) => {
            assert!(
                msg.contains("float64") && msg.contains("device_typed"),
                "{msg}"
            )
        }
        other => panic!("wrong outcome: {:?}", other.map(|_| ())),
    }
    // Device arrays are batch-lane input only, typed or not.
    match lanes.realtime(Request::device_typed(array.clone(), Op::Sum)) {
        Err(Error::InvalidInput(msg)) => assert!(msg.contains("batch lane"), "{msg}"),
        other => panic!("wrong outcome: {:?}", other.map(|_| ())),
    }
    let req = Request::device_typed(array, Op::Max).nan(NanPolicy::Ignore);
    assert_eq!(req.dtype(), Dtype::F64);
    let got = lanes.batch(req).unwrap().wait();
    let want = reference(&data, Op::Max, &Partitions::Whole, NanPolicy::Ignore);
    assert_eq!(outcome(&got), outcome(&want));
}

#[test]
fn typed_batch_jobs_over_the_partition_limit_run_in_groups_with_the_bits_of_running_alone() {
    // 64 KiB bindings: at most 4095 partitions per reduction, so these
    // jobs run as several groups, each in small chunks.
    let engine = common::small_binding_engine();
    let lanes = Lanes::new(engine, small_chunks()).unwrap();
    let f64s = values::<f64>(9000, 11);
    let i64s = values::<i64>(9000, 12);
    let parts = Partitions::EqualSize(2);
    for op in OPS {
        for nan in [NanPolicy::Propagate, NanPolicy::Ignore] {
            let a = lanes
                .batch(
                    Request::host_typed(f64s.clone(), op)
                        .partitions(parts.clone())
                        .nan(nan),
                )
                .unwrap();
            let b = lanes
                .batch(
                    Request::host_typed(i64s.clone(), op)
                        .partitions(parts.clone())
                        .nan(nan),
                )
                .unwrap();
            let what = format!("{op} {nan:?}");
            let want = reference(&f64s, op, &parts, nan);
            assert_eq!(outcome(&a.wait()), outcome(&want), "float64 {what}");
            assert_eq!(
                outcome(&engine.reduce_slice(&f64s, op, &parts, nan)),
                outcome(&want),
                "float64 {what}: reduce_slice"
            );
            let want = reference(&i64s, op, &parts, nan);
            assert_eq!(outcome(&b.wait()), outcome(&want), "int64 {what}");
        }
    }
    // Real-time requests of 64-bit values are held to their own limit.
    let err = lanes
        .realtime(Request::host_typed(f64s, Op::Sum).partitions(Partitions::EqualSize(1)))
        .expect_err("9000 partitions exceed one reduction");
    assert!(matches!(err, Error::InvalidPartitions(_)), "{err}");
}
