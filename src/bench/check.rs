//! Correctness checks run before anything is timed: each GPU result against
//! the exact CPU reference ([`crate::cpu::reference`]), with the same rule as
//! the engine's tests (`tests/common/mod.rs`):
//!
//! - `max`, `min`, `count`: bit for bit (two NaNs are equal);
//! - `sum`: `|gpu - ref| <= 2 ulp(ref) + 1024 u^2 sum|x|` with `u = 2^-24`
//!   and `sum|x|` over the partition (what double-single compensated
//!   arithmetic guarantees); `mean`: the same with `sum|x| / n`;
//! - non-finite sums and means must be the same value; `None` must be `None`.

use serde::Serialize;

use crate::{NanPolicy, Op, Partitions, Reduction, Result};

/// The factor in front of `u^2 sum|x|` in the sum tolerance.
pub const SUM_ERROR_FACTOR: f64 = 1024.0;
/// The unit roundoff of f32.
const U: f64 = 1.0 / (1u64 << 24) as f64;

/// The rule, as recorded in the JSON.
pub const RULE: &str = "max/min exact; sum |gpu-ref| <= 2 ulp(ref) + 1024 u^2 sum|x| (u = 2^-24); mean the same with sum|x|/n";

/// The exact reference of one input, with what the tolerance needs.
#[derive(Clone, Debug)]
pub struct Reference {
    pub exact: Reduction,
    /// `sum|x|` per partition (sum and mean only; empty otherwise).
    pub abs_sums: Vec<f64>,
}

/// The exact reference of `op` over `data` (NaN propagated).
pub fn reference(data: &[f32], op: Op, partitions: &Partitions) -> Result<Reference> {
    let exact = crate::cpu::reference(data, op, partitions, NanPolicy::Propagate)?;
    let abs_sums = if matches!(op, Op::Sum | Op::Mean) {
        partitions
            .offsets(data.len() as u64)?
            .windows(2)
            .map(|w| {
                data[w[0] as usize..w[1] as usize]
                    .iter()
                    .filter(|x| x.is_finite())
                    .map(|&x| (x as f64).abs())
                    .sum()
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(Reference { exact, abs_sums })
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

/// The spacing of f32 values at `x` (one ulp).
pub fn ulp(x: f32) -> f64 {
    let a = x.abs();
    if !a.is_finite() {
        return f64::INFINITY;
    }
    let next = f32::from_bits(a.to_bits() + 1);
    next as f64 - a as f64
}

/// The accepted absolute error of a finite `sum` / `mean` result.
pub fn tolerance(op: Op, want: f32, abs_sum: f64, count: u64) -> f64 {
    let scaled = SUM_ERROR_FACTOR * U * U * abs_sum;
    match op {
        Op::Sum => 2.0 * ulp(want) + scaled,
        Op::Mean => 2.0 * ulp(want) + scaled / count.max(1) as f64,
        Op::Max | Op::Min | Op::Count => 0.0,
    }
}

/// How a result compares with its reference.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Comparison {
    /// Partitions compared.
    pub partitions: u64,
    /// Largest distance in ulps over the partitions.
    pub max_ulps: u64,
    /// Largest |gpu − ref| / tolerance (≤ 1 passes; 0 for exact matches).
    pub max_err_over_tol: f64,
    /// ‖got − want‖₂ / ‖want‖₂ over the partitions (absolute when ‖want‖ = 0).
    pub rel_err: f64,
    /// The first partition out of tolerance, if any.
    pub first_bad: Option<String>,
}

impl Comparison {
    pub fn pass(&self) -> bool {
        self.first_bad.is_none()
    }
}

fn same_value(a: f32, b: f32) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

/// Compares `got` with the reference partition by partition.
pub fn compare(got: &Reduction, want: &Reference) -> Comparison {
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
    let op = exact.op;
    let (mut diff2, mut ref2) = (0f64, 0f64);
    for (i, (g, w)) in got.values.iter().zip(&exact.values).enumerate() {
        let (u, over) = match (g, w) {
            (None, None) => (0, 0.0),
            (Some(g), Some(w)) => {
                let err = ((*g as f64) - (*w as f64)).abs();
                if err.is_finite() {
                    diff2 += err * err;
                    ref2 += (*w as f64).powi(2);
                }
                let over = if same_value(*g, *w) {
                    0.0
                } else if !w.is_finite()
                    || !g.is_finite()
                    || matches!(op, Op::Max | Op::Min | Op::Count)
                {
                    f64::INFINITY
                } else {
                    let abs_sum = want.abs_sums.get(i).copied().unwrap_or(0.0);
                    let count = exact.counts.get(i).copied().unwrap_or(1);
                    let tol = tolerance(op, *w, abs_sum, count);
                    if tol > 0.0 { err / tol } else { f64::INFINITY }
                };
                (ulps(*g, *w), over)
            }
            _ => (u64::MAX, f64::INFINITY),
        };
        c.max_ulps = c.max_ulps.max(u);
        c.max_err_over_tol = c.max_err_over_tol.max(over);
        if over > 1.0 && c.first_bad.is_none() {
            c.first_bad = Some(format!(
                "partition {i}: got {g:?}, expected {w:?} ({} ulps, {:.1}x the tolerance)",
                if u == u64::MAX {
                    "inf".to_string()
                } else {
                    u.to_string()
                },
                over
            ));
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
pub fn same_bits(a: &Reduction, b: &Reduction) -> bool {
    a.values.len() == b.values.len()
        && a.values
            .iter()
            .zip(&b.values)
            .all(|(x, y)| x.map(f32::to_bits) == y.map(f32::to_bits))
}

/// ‖got − want‖₂ / ‖want‖₂ for the CPU baselines (f64 results).
pub fn rel_err_f64(got: &[f64], want: &Reduction) -> f64 {
    if got.len() != want.values.len() {
        return f64::INFINITY;
    }
    let (mut d2, mut r2) = (0f64, 0f64);
    for (g, w) in got.iter().zip(&want.values) {
        let w = w.map_or(f64::NAN, |w| w as f64);
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
        assert_eq!(ulp(1.0), f32::EPSILON as f64);
    }

    fn reference_of(op: Op, values: Vec<Option<f32>>, abs_sums: Vec<f64>) -> Reference {
        let counts = vec![4; values.len()];
        Reference {
            exact: Reduction { op, values, counts },
            abs_sums,
        }
    }

    #[test]
    fn sums_get_the_compensated_tolerance() {
        let want = reference_of(
            Op::Sum,
            vec![Some(1.0), Some(2.0), None],
            vec![1.0, 2.0, 0.0],
        );
        let mut got = want.exact.clone();
        assert!(compare(&got, &want).pass());
        assert!(same_bits(&got, &want.exact));
        // 2 ulps pass, 3 fail (the u^2 term is negligible here).
        got.values[1] = Some(f32::from_bits(2.0f32.to_bits() + 2));
        assert!(compare(&got, &want).pass());
        got.values[1] = Some(f32::from_bits(2.0f32.to_bits() + 3));
        let c = compare(&got, &want);
        assert!(!c.pass());
        assert_eq!(c.max_ulps, 3);
        assert!(c.first_bad.unwrap().starts_with("partition 1"));
        // A huge sum|x| (cancellation) widens the tolerance.
        let loose = reference_of(
            Op::Sum,
            vec![Some(1.0), Some(2.0), None],
            vec![1.0, 1e12, 0.0],
        );
        assert!(compare(&got, &loose).pass());
        got.values[2] = Some(0.0);
        assert!(!compare(&got, &want).pass());
        assert!(!same_bits(&got, &want.exact));
    }

    #[test]
    fn max_is_exact_and_nan_matches_nan() {
        let want = reference_of(Op::Max, vec![Some(1.0), Some(f32::NAN)], vec![]);
        let mut got = want.exact.clone();
        assert!(compare(&got, &want).pass());
        got.values[0] = Some(f32::from_bits(1.0f32.to_bits() + 1));
        assert!(!compare(&got, &want).pass());
        got.values[0] = Some(1.0);
        got.values[1] = Some(1.0);
        assert!(!compare(&got, &want).pass());
    }

    #[test]
    fn reference_carries_abs_sums() {
        let data = [1.0, -2.0, 3.0, -4.0, 5.0];
        let r = reference(&data, Op::Sum, &Partitions::EqualSize(2)).unwrap();
        assert_eq!(r.abs_sums, vec![3.0, 7.0, 5.0]);
        assert_eq!(r.exact.values, vec![Some(-1.0), Some(-1.0), Some(5.0)]);
        assert!(
            reference(&data, Op::Max, &Partitions::Whole)
                .unwrap()
                .abs_sums
                .is_empty()
        );
    }
}
