//! Sampling loops and order statistics.

use std::time::{Duration, Instant};

use serde::Serialize;

/// How many runs to make: `warmup` discarded runs, then at least `min_runs`
/// and at most `max_runs`, stopping once `target` has elapsed.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Budget {
    pub warmup: usize,
    pub min_runs: usize,
    pub max_runs: usize,
    #[serde(serialize_with = "secs", rename = "target_s")]
    pub target: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Budget {
    pub const fn new(warmup: usize, min_runs: usize, max_runs: usize, target_ms: u64) -> Self {
        Budget {
            warmup,
            min_runs,
            max_runs,
            target: Duration::from_millis(target_ms),
        }
    }

    /// Runs `f(i)` and keeps what the timed calls return. Warm-up calls
    /// count i = 0, 1, ..., then the timed calls count again from 0, so a
    /// caller rotating inputs by i times the first ones in order (n timed
    /// calls over m inputs time inputs 0..min(n, m)).
    pub fn sample<T, E>(&self, mut f: impl FnMut(usize) -> Result<T, E>) -> Result<Vec<T>, E> {
        for i in 0..self.warmup {
            f(i)?;
        }
        let start = Instant::now();
        let mut out = Vec::with_capacity(self.min_runs);
        while out.len() < self.max_runs.max(1)
            && (out.len() < self.min_runs || start.elapsed() < self.target)
        {
            out.push(f(out.len())?);
        }
        Ok(out)
    }
}

/// Order statistics of a set of timings, in nanoseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub runs: usize,
    pub median_ns: f64,
    pub min_ns: f64,
    pub p10_ns: f64,
    pub p90_ns: f64,
    pub p99_ns: f64,
    pub max_ns: f64,
    pub mean_ns: f64,
}

/// Summarises `samples` (nanoseconds); all zeros for an empty set.
pub fn summarize(samples: &[f64]) -> Summary {
    if samples.is_empty() {
        return Summary::default();
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    let q = |p: f64| s[((p * (n - 1) as f64).round() as usize).min(n - 1)];
    Summary {
        runs: n,
        median_ns: median,
        min_ns: s[0],
        p10_ns: q(0.10),
        p90_ns: q(0.90),
        p99_ns: q(0.99),
        max_ns: s[n - 1],
        mean_ns: s.iter().sum::<f64>() / n as f64,
    }
}

/// Bytes per nanosecond is GB/s (10^9 bytes per second).
pub fn gbps(bytes: u64, ns: f64) -> f64 {
    if ns > 0.0 { bytes as f64 / ns } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_quantiles() {
        let s = summarize(&[5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!(s.median_ns, 3.0);
        assert_eq!(s.min_ns, 1.0);
        assert_eq!(s.max_ns, 5.0);
        assert_eq!(summarize(&[1.0, 2.0]).median_ns, 1.5);
        assert_eq!(summarize(&[]).runs, 0);
        assert_eq!(gbps(1000, 1000.0), 1.0);
    }

    #[test]
    fn budget_counts_runs() {
        let b = Budget::new(2, 3, 5, 0);
        let mut calls = Vec::new();
        let kept: Vec<usize> = b
            .sample(|i| {
                calls.push(i);
                Ok::<_, ()>(i)
            })
            .unwrap();
        // Timed calls count from 0 again: the first inputs are timed.
        assert_eq!(kept, vec![0, 1, 2]);
        assert_eq!(calls, vec![0, 1, 0, 1, 2]);
    }
}
