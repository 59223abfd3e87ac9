//! Correctness checks run before anything is timed: each GPU result against
//! the CPU reference, with the same rule as the engine's tests
//! (`tests/common/mod.rs`): every value must be the reference's bits (two
//! NaNs are equal whatever their payload; `-0.0 != +0.0`), `None` must be
//! `None`. Sums are exact on the GPU and rounded once, as in the reference,
//! so there is no tolerance.
//!
//! The reference of a float32 input is [`gpulanes::cpu::reference`] (the float32
//! entry points' results: `count` as a float32); that of any other dtype is
//! [`gpulanes::cpu::reduce`] (values in their op's result type).

use serde::Serialize;

use gpulanes::{Element, NanPolicy, Op, Partitions, Reduction, Result, Scalar};

/// The rule, as recorded in the JSON.
pub const RULE: &str = "bit for bit: every value the CPU reference's bits (cpu::reduce; NaN = NaN); sums are exact, rounded once";

/// The reference of one input.
#[derive(Clone, Debug)]
pub struct Reference {
    pub exact: Reduction<Scalar>,
}

/// The reference of `op` over float32 `data` (NaN propagated), as the
/// float32 entry points ([`gpulanes::Engine::encode`],
/// [`gpulanes::Engine::reduce_partitions`]) give it.
pub fn reference(data: &[f32], op: Op, partitions: &Partitions) -> Result<Reference> {
    let r = gpulanes::cpu::reference(data, op, partitions, NanPolicy::Propagate)?;
    Ok(Reference {
        exact: f32_as_scalars(r),
    })
}

/// The reference of `op` over `data` of any dtype (NaN propagated), as
/// [`gpulanes::Engine::reduce_slice`] gives it.
pub fn reference_typed<E: Element>(
    data: &[E],
    op: Op,
    partitions: &Partitions,
) -> Result<Reference> {
    Ok(Reference {
        exact: gpulanes::cpu::reduce(data, op, partitions, NanPolicy::Propagate)?,
    })
}

/// A float32 result as [`Scalar`]s.
pub fn f32_as_scalars(r: Reduction) -> Reduction<Scalar> {
    Reduction {
        op: r.op,
        values: r.values.into_iter().map(|v| v.map(Scalar::F32)).collect(),
        counts: r.counts,
    }
}

/// Distance between two f32 values in units in the last place; 0 when both
/// are NaN, `u64::MAX` when only one is.
pub fn ulps(a: f32, b: f32) -> u64 {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => return 0,
        (false, false) => {}
        _ => return u64::MAX,
    }
    // Map to integers that are ordered like the floats (-0.0 next to +0.0).
    let key = |x: f32| {
        let bits = x.to_bits() as i64;
        if bits & 0x8000_0000 != 0 {
            0x8000_0000 - bits
        } else {
            bits
        }
    };
    (key(a) - key(b)).unsigned_abs()
}

/// Distance between two f64 values in units in the last place; 0 when both
/// are NaN, `u64::MAX` when only one is.
pub fn ulps_f64(a: f64, b: f64) -> u64 {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => return 0,
        (false, false) => {}
        _ => return u64::MAX,
    }
    let key = |x: f64| {
        let bits = x.to_bits() as i128;
        if bits & (1 << 63) != 0 {
            (1i128 << 63) - bits
        } else {
            bits
        }
    };
    u64::try_from((key(a) - key(b)).unsigned_abs()).unwrap_or(u64::MAX)
}

/// Distance between two scalars: ulps for floats, the difference for
/// integers; `u64::MAX` for scalars of different types.
pub fn distance(a: Scalar, b: Scalar) -> u64 {
    match (a, b) {
        (Scalar::F32(x), Scalar::F32(y)) => ulps(x, y),
        (Scalar::F64(x), Scalar::F64(y)) => ulps_f64(x, y),
        (Scalar::I32(x), Scalar::I32(y)) => (x as i64 - y as i64).unsigned_abs(),
        (Scalar::U32(x), Scalar::U32(y)) => (x as i64 - y as i64).unsigned_abs(),
        (Scalar::I64(x), Scalar::I64(y)) => (x as i128 - y as i128)
            .unsigned_abs()
            .try_into()
            .unwrap_or(u64::MAX),
        _ => u64::MAX,
    }
}

/// True when `a` and `b` are the same value: the same type and bits, or
/// both NaN.
pub fn same_value(a: Scalar, b: Scalar) -> bool {
    match (a, b) {
        (Scalar::F32(x), Scalar::F32(y)) => {
            (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits()
        }
        (Scalar::F64(x), Scalar::F64(y)) => {
            (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits()
        }
        (Scalar::I32(x), Scalar::I32(y)) => x == y,
        (Scalar::U32(x), Scalar::U32(y)) => x == y,
        (Scalar::I64(x), Scalar::I64(y)) => x == y,
        _ => false,
    }
}

/// How a result compares with its reference.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Comparison {
    /// Partitions compared.
    pub partitions: u64,
    /// Largest distance in ulps (the difference, for integers) over the
    /// partitions.
    pub max_ulps: u64,
    /// Largest |gpu − ref| / tolerance: 0 when every value matches, infinite
    /// otherwise (the tolerance is zero).
    pub max_err_over_tol: f64,
    /// ‖got − want‖₂ / ‖want‖₂ over the partitions (absolute when ‖want‖ = 0).
    pub rel_err: f64,
    /// The first partition that differs, if any.
    pub first_bad: Option<String>,
}

impl Comparison {
    // Used by the criterion bench (benches/reduce.rs), which shares this file.
    #[allow(dead_code)]
    pub fn pass(&self) -> bool {
        self.first_bad.is_none()
    }
}

/// Compares a float32 result with the reference partition by partition.
// Used by the criterion bench (benches/reduce.rs), which shares this file.
#[allow(dead_code)]
pub fn compare(got: &Reduction, want: &Reference) -> Comparison {
    compare_scalars(&f32_as_scalars(got.clone()), want)
}

/// Compares a result of any dtype with the reference partition by partition.
pub fn compare_scalars(got: &Reduction<Scalar>, want: &Reference) -> Comparison {
    let exact = &want.exact;
    let mut c = Comparison {
        partitions: exact.values.len() as u64,
        ..Default::default()
    };
    if got.values.len() != exact.values.len() {
        c.first_bad = Some(format!(
            "{} partitions, expected {}",
            got.values.len(),
            exact.values.len()
        ));
        c.max_ulps = u64::MAX;
        c.max_err_over_tol = f64::INFINITY;
        c.rel_err = f64::INFINITY;
        return c;
    }
    let (mut diff2, mut ref2) = (0f64, 0f64);
    for (i, (g, w)) in got.values.iter().zip(&exact.values).enumerate() {
        let (u, same) = match (g, w) {
            (None, None) => (0, true),
            (Some(g), Some(w)) => {
                let err = (g.as_f64() - w.as_f64()).abs();
                if err.is_finite() {
                    diff2 += err * err;
                    ref2 += w.as_f64().powi(2);
                }
                (distance(*g, *w), same_value(*g, *w))
            }
            _ => (u64::MAX, false),
        };
        c.max_ulps = c.max_ulps.max(u);
        if !same {
            c.max_err_over_tol = f64::INFINITY;
            if c.first_bad.is_none() {
                c.first_bad = Some(format!(
                    "partition {i}: got {g:?}, expected {w:?} ({} ulps)",
                    if u == u64::MAX {
                        "inf".to_string()
                    } else {
                        u.to_string()
                    },
                ));
            }
        }
    }
    c.rel_err = if ref2 > 0.0 {
        (diff2 / ref2).sqrt()
    } else {
        diff2.sqrt()
    };
    c
}

/// True when two results are bit-for-bit identical (the engine is
/// deterministic, so every timed run must reproduce the checked result).
pub fn same_bits(a: &Reduction<Scalar>, b: &Reduction<Scalar>) -> bool {
    a.values.len() == b.values.len()
        && a.values.iter().zip(&b.values).all(|(x, y)| match (x, y) {
            (None, None) => true,
            (Some(x), Some(y)) => same_value(*x, *y),
            _ => false,
        })
}

/// ‖got − want‖₂ / ‖want‖₂ for the CPU baselines (f64 results).
pub fn rel_err_f64(got: &[f64], want: &Reduction<Scalar>) -> f64 {
    if got.len() != want.values.len() {
        return f64::INFINITY;
    }
    let (mut d2, mut r2) = (0f64, 0f64);
    for (g, w) in got.iter().zip(&want.values) {
        let w = w.map_or(f64::NAN, Scalar::as_f64);
        d2 += (g - w).powi(2);
        r2 += w * w;
    }
    if r2 > 0.0 {
        (d2 / r2).sqrt()
    } else {
        d2.sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulps_distance() {
        assert_eq!(ulps(1.0, 1.0), 0);
        assert_eq!(ulps(1.0, f32::from_bits(1.0f32.to_bits() + 3)), 3);
        assert_eq!(ulps(0.0, -0.0), 0);
        assert_eq!(ulps(f32::from_bits(1), -f32::from_bits(1)), 2);
        assert_eq!(ulps(f32::NAN, f32::NAN), 0);
        assert_eq!(ulps(f32::NAN, 1.0), u64::MAX);
        assert_eq!(ulps_f64(1.0, f64::from_bits(1.0f64.to_bits() + 5)), 5);
        assert_eq!(ulps_f64(f64::from_bits(1), -f64::from_bits(1)), 2);
        // The widest finite distance fits in a u64.
        assert_eq!(ulps_f64(f64::MAX, -f64::MAX), 2 * f64::MAX.to_bits());
        assert_eq!(ulps_f64(f64::NAN, 0.0), u64::MAX);
        assert_eq!(distance(Scalar::I64(-3), Scalar::I64(4)), 7);
        assert_eq!(distance(Scalar::F32(1.0), Scalar::F64(1.0)), u64::MAX);
    }

    fn reference_of(op: Op, values: Vec<Option<Scalar>>) -> Reference {
        let counts = vec![4; values.len()];
        Reference {
            exact: Reduction { op, values, counts },
        }
    }

    #[test]
    fn sums_must_be_the_same_bits() {
        let want = reference_of(
            Op::Sum,
            vec![Some(Scalar::F64(1.0)), Some(Scalar::F64(2.0)), None],
        );
        let mut got = want.exact.clone();
        let c = compare_scalars(&got, &want);
        assert!(c.pass() && c.max_ulps == 0 && c.max_err_over_tol == 0.0);
        assert!(same_bits(&got, &want.exact));
        // One ulp off fails.
        got.values[1] = Some(Scalar::F64(f64::from_bits(2.0f64.to_bits() + 1)));
        let c = compare_scalars(&got, &want);
        assert!(!c.pass());
        assert_eq!(c.max_ulps, 1);
        assert!(c.first_bad.unwrap().starts_with("partition 1"));
        assert!(!same_bits(&got, &want.exact));
        // So do a value for None, a zero of the other sign, another type.
        got.values[1] = Some(Scalar::F64(2.0));
        got.values[2] = Some(Scalar::F64(0.0));
        assert!(!compare_scalars(&got, &want).pass());
        let zero = reference_of(Op::Sum, vec![Some(Scalar::F32(0.0))]);
        let neg = Reduction {
            op: Op::Sum,
            values: vec![Some(-0.0f32)],
            counts: vec![4],
        };
        assert!(!compare(&neg, &zero).pass());
        let int = reference_of(Op::Sum, vec![Some(Scalar::I64(5))]);
        let as_float = reference_of(Op::Sum, vec![Some(Scalar::F64(5.0))]);
        assert!(!compare_scalars(&as_float.exact, &int).pass());
        assert!(compare_scalars(&int.exact, &int).pass());
        // A different partition count fails.
        let short = reference_of(Op::Sum, vec![Some(Scalar::F64(1.0))]);
        assert!(!compare_scalars(&short.exact, &want).pass());
    }

    #[test]
    fn max_is_exact_and_nan_matches_nan() {
        let want = reference_of(
            Op::Max,
            vec![Some(Scalar::F32(1.0)), Some(Scalar::F32(f32::NAN))],
        );
        let mut got = want.exact.clone();
        assert!(compare_scalars(&got, &want).pass());
        // Another NaN payload is still NaN.
        got.values[1] = Some(Scalar::F32(f32::from_bits(0x7fc0_0001)));
        assert!(compare_scalars(&got, &want).pass());
        got.values[0] = Some(Scalar::F32(f32::from_bits(1.0f32.to_bits() + 1)));
        assert!(!compare_scalars(&got, &want).pass());
        got.values[0] = Some(Scalar::F32(1.0));
        got.values[1] = Some(Scalar::F32(1.0));
        assert!(!compare_scalars(&got, &want).pass());
    }

    #[test]
    fn references_follow_the_dtype() {
        let data = [1.0f32, -2.0, 3.0, -4.0, 5.0];
        let r = reference(&data, Op::Sum, &Partitions::EqualSize(2)).unwrap();
        assert_eq!(
            r.exact.values,
            vec![
                Some(Scalar::F32(-1.0)),
                Some(Scalar::F32(-1.0)),
                Some(Scalar::F32(5.0))
            ]
        );
        // The float32 entry points give counts as float32.
        let c = reference(&data, Op::Count, &Partitions::Whole).unwrap();
        assert_eq!(c.exact.values, vec![Some(Scalar::F32(5.0))]);
        let wide = [1.0f64, 1e-30, -1.0];
        let r = reference_typed(&wide, Op::Sum, &Partitions::Whole).unwrap();
        assert_eq!(r.exact.values, vec![Some(Scalar::F64(1e-30))]);
        let ints = [i64::MAX, -1, 1];
        let r = reference_typed(&ints, Op::Sum, &Partitions::Whole).unwrap();
        assert_eq!(r.exact.values, vec![Some(Scalar::I64(i64::MAX))]);
    }
}
