//! Correctness checks run before anything is timed: each GPU result against
//! the exact CPU reference ([`crate::cpu::reference`]).

use serde::Serialize;

use crate::{Op, Reduction};

/// Largest distance in units in the last place accepted for `op`: f32
/// `sum`/`mean` are compensated and land within a few ulps of the exactly
/// rounded result; `max`/`min`/`count` must be exact.
pub fn tolerance_ulps(op: Op) -> u64 {
    match op {
        Op::Sum | Op::Mean => 4,
        Op::Max | Op::Min | Op::Count => 0,
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

/// How a result compares with its reference.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Comparison {
    /// Partitions compared.
    pub partitions: u64,
    /// Largest distance in ulps over the partitions.
    pub max_ulps: u64,
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

/// Compares `got` with `want` partition by partition.
pub fn compare(got: &Reduction, want: &Reduction, tol_ulps: u64) -> Comparison {
    let mut c = Comparison {
        partitions: want.values.len() as u64,
        ..Default::default()
    };
    if got.values.len() != want.values.len() {
        c.first_bad = Some(format!(
            "{} partitions, expected {}",
            got.values.len(),
            want.values.len()
        ));
        c.max_ulps = u64::MAX;
        c.rel_err = f64::INFINITY;
        return c;
    }
    let (mut diff2, mut ref2) = (0f64, 0f64);
    for (i, (g, w)) in got.values.iter().zip(&want.values).enumerate() {
        let u = match (g, w) {
            (None, None) => 0,
            (Some(g), Some(w)) => {
                diff2 += ((*g as f64) - (*w as f64)).powi(2);
                ref2 += (*w as f64).powi(2);
                ulps(*g, *w)
            }
            _ => u64::MAX,
        };
        c.max_ulps = c.max_ulps.max(u);
        if u > tol_ulps && c.first_bad.is_none() {
            c.first_bad = Some(format!(
                "partition {i}: got {g:?}, expected {w:?} ({} ulps)",
                if u == u64::MAX {
                    "inf".to_string()
                } else {
                    u.to_string()
                }
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
    let (mut d2, mut r2) = (0f64, 0f64);
    for (g, w) in got.iter().zip(&want.values) {
        let w = w.map_or(f64::NAN, |w| w as f64);
        d2 += (g - w).powi(2);
        r2 += w * w;
    }
    if got.len() != want.values.len() {
        return f64::INFINITY;
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
    }

    #[test]
    fn compare_flags_the_first_bad_partition() {
        let want = Reduction {
            op: Op::Sum,
            values: vec![Some(1.0), Some(2.0), None],
            counts: vec![1, 1, 0],
        };
        let mut got = want.clone();
        assert!(compare(&got, &want, 0).pass());
        assert!(same_bits(&got, &want));
        got.values[1] = Some(f32::from_bits(2.0f32.to_bits() + 5));
        let c = compare(&got, &want, 4);
        assert!(!c.pass());
        assert_eq!(c.max_ulps, 5);
        assert!(c.first_bad.unwrap().starts_with("partition 1"));
        assert!(compare(&got, &want, 5).pass());
        got.values[2] = Some(0.0);
        assert!(!compare(&got, &want, 100).pass());
        assert!(!same_bits(&got, &want));
    }
}
