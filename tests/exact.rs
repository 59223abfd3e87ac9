//! Exact sums for every dtype, checked against an exact reference that
//! shares no code with the crate (tests/oracle.py: Python integers and
//! fractions, rounded by hand), and the order independence that exactness
//! buys: permutations, chunkings, partitions, kernel shapes, device arrays
//! and merges of serialised states all give the same bits.

mod common;

use std::io::Write;
use std::process::Command;

use common::{SplitMix, engine, narrow_engine, no_subgroup_engine};
use gpulanes::{
    Dtype, Element, Engine, Error, NanPolicy, Op, Partitions, Scalar, State, StateKind, cpu,
};

const OPS: [Op; 5] = [Op::Sum, Op::Mean, Op::Max, Op::Min, Op::Count];

/// One dataset of any dtype, as its bytes.
struct Case {
    what: String,
    dtype: Dtype,
    bytes: Vec<u8>,
}

fn case<E: Element>(what: impl Into<String>, data: &[E]) -> Case {
    Case {
        what: what.into(),
        dtype: E::DTYPE,
        bytes: bytemuck::cast_slice(data).to_vec(),
    }
}

/// Lengths around the kernels' boundaries: vec4s, groups of 32 words,
/// blocks of 8192 words, several blocks.
const LENGTHS: [usize; 12] = [0, 1, 3, 4, 5, 31, 33, 4095, 4097, 8191, 8193, 3 * 8192 + 7];

fn random_bits_f32(rng: &mut SplitMix, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| f32::from_bits(rng.next_u64() as u32))
        .collect()
}

fn random_bits_f64(rng: &mut SplitMix, n: usize) -> Vec<f64> {
    (0..n).map(|_| f64::from_bits(rng.next_u64())).collect()
}

fn finite_f32(rng: &mut SplitMix, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            loop {
                let x = f32::from_bits(rng.next_u64() as u32);
                if x.is_finite() {
                    break x;
                }
            }
        })
        .collect()
}

fn finite_f64(rng: &mut SplitMix, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| {
            loop {
                let x = f64::from_bits(rng.next_u64());
                if x.is_finite() {
                    break x;
                }
            }
        })
        .collect()
}

/// Standard-normal-ish values (sum of uniforms).
fn normal(rng: &mut SplitMix) -> f64 {
    (0..12).map(|_| rng.unit()).sum::<f64>() - 6.0
}

/// Pairs ±a of magnitude ~`big` that cancel exactly, plus `small` normal
/// values, shuffled: the exact sum is the small values' sum.
fn cancelling<T: Copy>(
    rng: &mut SplitMix,
    pairs: usize,
    small: usize,
    make: impl Fn(f64) -> T,
    big: f64,
) -> Vec<T> {
    let mut v = Vec::with_capacity(2 * pairs + small);
    for _ in 0..pairs {
        let a = big * (1.0 + rng.unit());
        v.push(make(a));
        v.push(make(-a));
    }
    for _ in 0..small {
        v.push(make(normal(rng)));
    }
    rng.shuffle(&mut v);
    v
}

fn cases() -> Vec<Case> {
    let mut rng = SplitMix::new(16);
    let mut cs = Vec::new();
    for n in LENGTHS {
        cs.push(case(
            format!("f32 random bits x{n}"),
            &random_bits_f32(&mut rng, n),
        ));
        cs.push(case(
            format!("f32 finite bits x{n}"),
            &finite_f32(&mut rng, n),
        ));
        cs.push(case(
            format!("f64 random bits x{n}"),
            &random_bits_f64(&mut rng, n),
        ));
        cs.push(case(
            format!("f64 finite bits x{n}"),
            &finite_f64(&mut rng, n),
        ));
        let i32s: Vec<i32> = (0..n).map(|_| rng.next_u64() as i32).collect();
        cs.push(case(format!("i32 x{n}"), &i32s));
        let u32s: Vec<u32> = (0..n).map(|_| rng.next_u64() as u32).collect();
        cs.push(case(format!("u32 x{n}"), &u32s));
        let i64s: Vec<i64> = (0..n)
            .map(|_| (rng.next_u64() as i64) >> (rng.below(64)))
            .collect();
        cs.push(case(format!("i64 x{n}"), &i64s));
    }
    // Heavy cancellation: 400,000 values of magnitude 1e30 that cancel
    // exactly plus 1,001 normal values; and 1e6 values of magnitude 1e7
    // that cancel to a few units.
    cs.push(case(
        "f32 1e30 cancelling + 1001 normal",
        &cancelling(&mut rng, 200_000, 1001, |x| x as f32, 1e30),
    ));
    let mut near: Vec<f32> = cancelling(&mut rng, 500_000, 0, |x| x as f32, 1e7);
    near.push(6.5);
    cs.push(case("f32 1e6 x 1e7 cancelling to 6.5", &near));
    cs.push(case(
        "f64 1e300 cancelling + 1001 normal",
        &cancelling(&mut rng, 50_000, 1001, |x| x, 1e300),
    ));
    cs.push(case(
        "f64 1e-300 and 1e300",
        &[1e300, 1e-300, -1e300, 3e-310, 1.0],
    ));
    // Subnormals only.
    let subs32: Vec<f32> = (0..20_000)
        .map(|_| f32::from_bits(rng.below(1 << 23) as u32 | ((rng.below(2) as u32) << 31)))
        .collect();
    cs.push(case("f32 subnormals", &subs32));
    let subs64: Vec<f64> = (0..20_000)
        .map(|_| f64::from_bits(rng.below(1 << 52) | (rng.below(2) << 63)))
        .collect();
    cs.push(case("f64 subnormals", &subs64));
    cs.push(case(
        "f32 smallest subnormal x20000",
        &vec![f32::from_bits(1); 20_000],
    ));
    // Near overflow: the sum overflows only when the rounded exact sum does.
    cs.push(case("f32 MAX, MAX, -MAX", &[f32::MAX, f32::MAX, -f32::MAX]));
    cs.push(case("f32 MAX x2", &[f32::MAX, f32::MAX]));
    cs.push(case(
        "f32 MAX + half ulp",
        &[f32::MAX, f32::from_bits(0x7300_0000)],
    ));
    cs.push(case(
        "f32 MAX + just under half ulp",
        &[f32::MAX, f32::from_bits(0x72ff_ffff)],
    ));
    cs.push(case("f64 MAX x2 - MAX", &[f64::MAX, f64::MAX, -f64::MAX]));
    cs.push(case("f64 -MAX x3", &[-f64::MAX; 3]));
    // Ties in rounding.
    cs.push(case("f32 tie to even down", &[16777216.0f32, 1.0]));
    cs.push(case("f32 tie to even up", &[16777216.0f32, 3.0]));
    cs.push(case(
        "f32 tie broken by a tiny value",
        &[16777216.0f32, 1.0, f32::from_bits(1)],
    ));
    cs.push(case("f64 tie to even", &[9007199254740992.0f64, 1.0]));
    cs.push(case(
        "f64 tie broken far below",
        &[9007199254740992.0f64, 1.0, 1e-300],
    ));
    // Zeros, signs, specials.
    cs.push(case("f32 -0.0 only", &[-0.0f32; 9]));
    cs.push(case("f32 -0.0 and +0.0", &[-0.0f32, 0.0, -0.0]));
    cs.push(case("f64 -0.0 only", &[-0.0f64; 8200]));
    cs.push(case(
        "f32 inf and -inf",
        &[f32::INFINITY, 1.0, f32::NEG_INFINITY],
    ));
    cs.push(case("f64 inf and NaN", &[f64::INFINITY, f64::NAN, 2.0]));
    cs.push(case("f32 all NaN", &[f32::NAN; 37]));
    // Means that must be rounded once: (2^53 + 1) / 2.
    cs.push(case("i64 mean of 2^53 + 1 and 0", &[(1i64 << 53) + 1, 0]));
    cs.push(case("f32 mean 1/3", &[1.0f32, 0.0, 0.0]));
    // Integer limits and overflow.
    cs.push(case("i64 overflow", &[i64::MAX, 1]));
    cs.push(case("i64 back in range", &[i64::MAX, 1, -2]));
    cs.push(case("i64 MIN", &[i64::MIN, 0]));
    cs.push(case("i64 below MIN", &[i64::MIN, -1]));
    cs.push(case("i32 extremes", &[i32::MIN, i32::MAX, i32::MIN, -1, 0]));
    cs.push(case("u32 MAX x 70000", &vec![u32::MAX; 70_000]));
    cs.push(case(
        "i64 MAX/2 x 4 (overflow only in total)",
        &[i64::MAX / 2, i64::MAX / 2, i64::MAX / 2, -(i64::MAX / 2)],
    ));
    cs
}

fn op_name(op: Op) -> &'static str {
    op.name()
}

/// The result as the oracle prints it.
fn show(r: Result<Option<Scalar>, Error>) -> String {
    match r {
        Err(Error::Overflow(_)) => "overflow".into(),
        Err(e) => format!("error {e}"),
        Ok(None) => "none".into(),
        Ok(Some(s)) if s.is_nan() => "nan".into(),
        Ok(Some(Scalar::F32(v))) => hex(&v.to_le_bytes()),
        Ok(Some(Scalar::F64(v))) => hex(&v.to_le_bytes()),
        Ok(Some(Scalar::I32(v))) => hex(&v.to_le_bytes()),
        Ok(Some(Scalar::U32(v))) => hex(&v.to_le_bytes()),
        Ok(Some(Scalar::I64(v))) => hex(&v.to_le_bytes()),
    }
}

fn show_count(r: Result<Option<Scalar>, Error>) -> String {
    match r {
        Ok(Some(Scalar::I64(c))) => c.to_string(),
        other => format!("not a count: {other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn with_slice<R>(c: &Case, f: impl FnOnce(&dyn ReduceAny) -> R) -> R {
    match c.dtype {
        Dtype::F32 => f(&Typed::<f32>(bytemuck::pod_collect_to_vec(&c.bytes))),
        Dtype::F64 => f(&Typed::<f64>(bytemuck::pod_collect_to_vec(&c.bytes))),
        Dtype::I32 => f(&Typed::<i32>(bytemuck::pod_collect_to_vec(&c.bytes))),
        Dtype::U32 => f(&Typed::<u32>(bytemuck::pod_collect_to_vec(&c.bytes))),
        Dtype::I64 => f(&Typed::<i64>(bytemuck::pod_collect_to_vec(&c.bytes))),
    }
}

/// A dataset of a dtype known at run time.
trait ReduceAny {
    fn gpu(&self, e: &Engine, op: Op, nan: NanPolicy) -> Result<Option<Scalar>, Error>;
    fn cpu(&self, op: Op, nan: NanPolicy) -> Result<Option<Scalar>, Error>;
}

struct Typed<E>(Vec<E>);

impl<E: Element> ReduceAny for Typed<E> {
    fn gpu(&self, e: &Engine, op: Op, nan: NanPolicy) -> Result<Option<Scalar>, Error> {
        let r = e.reduce_slice(&self.0, op, &Partitions::Whole, nan)?;
        Ok(r.values[0])
    }
    fn cpu(&self, op: Op, nan: NanPolicy) -> Result<Option<Scalar>, Error> {
        Ok(cpu::reduce(&self.0, op, &Partitions::Whole, nan)?.values[0])
    }
}

#[test]
fn every_dtype_and_op_matches_an_independent_exact_reference() {
    let cases = cases();
    let dir = std::env::temp_dir().join(format!("gpulanes-oracle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("cases.txt");
    let mut lines = Vec::new();
    let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
    for c in &cases {
        let policies: &[NanPolicy] = if c.dtype.is_float() {
            &[NanPolicy::Propagate, NanPolicy::Ignore]
        } else {
            &[NanPolicy::Propagate]
        };
        for &nan in policies {
            for op in OPS {
                let nan_name = if nan == NanPolicy::Propagate {
                    "propagate"
                } else {
                    "ignore"
                };
                writeln!(
                    f,
                    "{} {} {nan_name} {}",
                    c.dtype.name(),
                    op_name(op),
                    hex(&c.bytes)
                )
                .unwrap();
                lines.push((c, op, nan));
            }
        }
    }
    drop(f);
    // GPULANES_ORACLE names the oracle where the test binary runs away
    // from its checkout (a prebuilt binary on another machine).
    let oracle = std::env::var("GPULANES_ORACLE")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oracle.py").into());
    let out = Command::new("python3")
        .arg(oracle)
        .arg(&input)
        .output()
        .expect("python3 runs the oracle (installed with the test tools)");
    assert!(
        out.status.success(),
        "oracle failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(want.len(), lines.len());
    std::fs::remove_dir_all(&dir).ok();
    let mut failures = Vec::new();
    for ((c, op, nan), want) in lines.iter().zip(&want) {
        let (gpu, cpu) = with_slice(c, |d| (d.gpu(engine(), *op, *nan), d.cpu(*op, *nan)));
        let (g, k) = if *op == Op::Count {
            (show_count(gpu), show_count(cpu))
        } else {
            (show(gpu), show(cpu))
        };
        if &g != want || &k != want {
            failures.push(format!(
                "{} {op} {nan:?}: oracle {want}, gpu {g}, cpu {k}",
                c.what
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The state of `data` computed on the GPU with `engine`, as bytes.
fn gpu_state<E: Element>(e: &Engine, data: &[E], kind: StateKind) -> Vec<u8> {
    e.states(data, kind, &Partitions::Whole).unwrap()[0].to_bytes()
}

fn order_independence<E: Element + std::fmt::Debug>(rng: &mut SplitMix, data: Vec<E>, what: &str) {
    for kind in [StateKind::Sum, StateKind::Max, StateKind::Min] {
        let whole = State::of(&data, kind).to_bytes();
        // GPU, every kernel shape, and a device array: the CPU's bits.
        for e in [engine(), narrow_engine(), no_subgroup_engine()] {
            assert_eq!(gpu_state(e, &data, kind), whole, "{what} {kind:?}: gpu");
        }
        let array = engine().upload(&data).unwrap();
        let dev = engine()
            .device_states(&array, kind, &Partitions::Whole)
            .unwrap();
        assert_eq!(dev[0].to_bytes(), whole, "{what} {kind:?}: device array");
        // A permutation.
        let mut shuffled = data.clone();
        rng.shuffle(&mut shuffled);
        assert_eq!(
            gpu_state(engine(), &shuffled, kind),
            whole,
            "{what} {kind:?}: permuted"
        );
        // Random chunks as partitions, their states merged through bytes in
        // a random order.
        let n = data.len() as u64;
        let mut offsets = vec![0u64, n];
        for _ in 0..rng.below(6) {
            offsets.push(rng.below(n + 1));
        }
        offsets.sort();
        let parts = engine()
            .states(&data, kind, &Partitions::Offsets(offsets.clone()))
            .unwrap();
        let mut order: Vec<usize> = (0..parts.len()).collect();
        rng.shuffle(&mut order);
        let mut merged = State::empty(E::DTYPE, kind);
        for i in order {
            let s = State::from_bytes(&parts[i].to_bytes()).unwrap();
            assert_eq!(
                s.to_bytes(),
                State::of(&data[offsets[i] as usize..offsets[i + 1] as usize], kind).to_bytes(),
                "{what} {kind:?}: partition {i}"
            );
            merged.merge(&s).unwrap();
        }
        assert_eq!(merged.to_bytes(), whole, "{what} {kind:?}: merged chunks");
        for op in OPS {
            if StateKind::for_op(op) == kind || op == Op::Count {
                for nan in [NanPolicy::Propagate, NanPolicy::Ignore] {
                    let a = merged.finalize(op, nan).map_err(|e| e.to_string());
                    let b = State::of(&data, kind)
                        .finalize(op, nan)
                        .map_err(|e| e.to_string());
                    assert_eq!(format!("{a:?}"), format!("{b:?}"), "{what} {op} {nan:?}");
                }
            }
        }
    }
}

#[test]
fn the_same_bits_in_any_order_chunking_shape_or_path() {
    let mut rng = SplitMix::new(7);
    for round in 0..4 {
        let n = [100usize, 8192, 20_000, 70_001][round];
        let f32s = random_bits_f32(&mut rng, n);
        order_independence(&mut rng, f32s, "f32 random bits");
        let wide: Vec<f32> = (0..n)
            .map(|_| rng.log_uniform(-140, 120) * if rng.below(2) == 0 { 1.0 } else { -1.0 })
            .collect();
        order_independence(&mut rng, wide, "f32 wide magnitudes");
        let f64s = random_bits_f64(&mut rng, n);
        order_independence(&mut rng, f64s, "f64 random bits");
        let i64s: Vec<i64> = (0..n).map(|_| (rng.next_u64() as i64) >> 8).collect();
        order_independence(&mut rng, i64s, "i64");
        let i32s: Vec<i32> = (0..n).map(|_| rng.next_u64() as i32).collect();
        order_independence(&mut rng, i32s, "i32");
        let u32s: Vec<u32> = (0..n).map(|_| rng.next_u64() as u32).collect();
        order_independence(&mut rng, u32s, "u32");
    }
}

#[test]
fn partitions_of_every_dtype_match_the_cpu() {
    let mut rng = SplitMix::new(9);
    let data = random_bits_f64(&mut rng, 50_000);
    let p = Partitions::Offsets(vec![0, 0, 1, 7, 4096, 4097, 12_289, 12_289, 50_000]);
    for op in OPS {
        for nan in [NanPolicy::Propagate, NanPolicy::Ignore] {
            let g = engine().reduce_slice(&data, op, &p, nan).unwrap();
            let c = cpu::reduce(&data, op, &p, nan).unwrap();
            assert_eq!(format!("{:?}", g), format!("{:?}", c), "{op} {nan:?}");
        }
    }
    let ints: Vec<i32> = (0..30_000).map(|_| rng.next_u64() as i32).collect();
    for op in OPS {
        let p = Partitions::EqualSize(777);
        let g = engine()
            .reduce_slice(&ints, op, &p, NanPolicy::Propagate)
            .unwrap();
        let c = cpu::reduce(&ints, op, &p, NanPolicy::Propagate).unwrap();
        assert_eq!(g, c, "i32 {op}");
    }
}

#[test]
fn integer_overflow_is_an_error_not_a_wrapped_value() {
    let err = engine()
        .reduce_slice(
            &[i64::MAX, 1],
            Op::Sum,
            &Partitions::Whole,
            NanPolicy::Propagate,
        )
        .unwrap_err();
    assert!(matches!(err, Error::Overflow(_)), "{err}");
    assert!(err.to_string().contains("int64"), "{err}");
    // The mean of the same values is fine (float64).
    let mean = engine()
        .reduce_slice(
            &[i64::MAX, 1],
            Op::Mean,
            &Partitions::Whole,
            NanPolicy::Propagate,
        )
        .unwrap();
    assert_eq!(mean.value(), Some(Scalar::F64(4611686018427387904.0)));
}

#[test]
fn corrupt_state_bytes_fail_cleanly() {
    let mut rng = SplitMix::new(3);
    let data = random_bits_f64(&mut rng, 5000);
    let good = State::of(&data, StateKind::Sum).to_bytes();
    assert!(good.len() < 600);
    for i in 0..2000 {
        let mut bad = good.clone();
        match i % 3 {
            0 => {
                let at = rng.below(bad.len() as u64) as usize;
                bad[at] ^= 1 << rng.below(8);
            }
            1 => bad.truncate(rng.below(bad.len() as u64) as usize),
            _ => bad.extend((0..rng.below(9)).map(|_| rng.next_u64() as u8)),
        }
        // Either a clean error or a state that finalises without panicking.
        if let Ok(s) = State::from_bytes(&bad) {
            let _ = s.finalize(Op::Sum, NanPolicy::Propagate);
            let _ = s.finalize(Op::Mean, NanPolicy::Ignore);
        }
    }
    let f32_state = State::of(&[1.0f32], StateKind::Sum);
    let mut f64_state = State::of(&[1.0f64], StateKind::Sum);
    assert!(matches!(
        f64_state.merge(&f32_state),
        Err(Error::InvalidState(_))
    ));
}

#[test]
fn typed_streams_give_the_in_memory_bits_and_check_their_length() {
    let mut rng = SplitMix::new(11);
    let data = random_bits_f64(&mut rng, 100_003);
    let bytes: Vec<u8> = bytemuck::cast_slice(&data).to_vec();
    let options = gpulanes::StreamOptions::with_budget(512 << 10);
    let n = data.len() as u64;
    for p in [
        Partitions::Whole,
        Partitions::EqualSize(40_000),
        Partitions::Offsets(vec![0, 0, 3, 16_384, 16_385, 70_000, n, n]),
    ] {
        for op in OPS {
            let want = engine()
                .reduce_slice(&data, op, &p, NanPolicy::Ignore)
                .unwrap();
            let got = engine()
                .reduce_reader_typed::<f64, _>(&bytes[..], n, op, &p, NanPolicy::Ignore, &options)
                .unwrap();
            assert_eq!(format!("{got:?}"), format!("{want:?}"), "{op} {p:?}");
        }
    }
    let short = engine()
        .reduce_reader_typed::<f64, _>(
            &bytes[..bytes.len() - 3],
            n,
            Op::Sum,
            &Partitions::Whole,
            NanPolicy::Propagate,
            &options,
        )
        .unwrap_err();
    assert!(short.to_string().contains("truncated"), "{short}");
    let long = [&bytes[..], &[0u8]].concat();
    let junk = engine()
        .reduce_reader_typed::<f64, _>(
            &long[..],
            n,
            Op::Sum,
            &Partitions::Whole,
            NanPolicy::Propagate,
            &options,
        )
        .unwrap_err();
    assert!(junk.to_string().contains("bytes after"), "{junk}");
}

#[test]
fn ndarray_views_of_every_dtype() {
    use ndarray::{Array2, Axis};
    let mut rng = SplitMix::new(5);
    let m = Array2::from_shape_fn((37, 1000), |_| rng.next_u64() as i64 >> 12);
    for axis in [Axis(0), Axis(1)] {
        let got = engine()
            .reduce_axis_typed(m.view(), axis, Op::Sum, NanPolicy::Propagate)
            .unwrap();
        let want: Vec<Option<Scalar>> = m
            .axis_iter(Axis(1 - axis.index()))
            .map(|lane| {
                let s: i128 = lane.iter().map(|&x| x as i128).sum();
                i64::try_from(s).ok().map(Scalar::I64)
            })
            .collect();
        assert_eq!(got.values, want, "axis {axis:?}");
    }
    // A strided 1-D view is copied, with the same result.
    let col = m.column(3);
    let r = engine()
        .reduce_view_typed(col, Op::Max, NanPolicy::Propagate)
        .unwrap();
    assert_eq!(r.value(), col.iter().max().copied().map(Scalar::I64));
}
