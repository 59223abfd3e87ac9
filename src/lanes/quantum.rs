//! Sizing batch chunks by GPU time: an estimate of this device's reduction
//! throughput (bytes/s), seeded by a calibration run and refined from every
//! completed batch chunk (its GPU time from timestamp queries where the
//! adapter has them, else from completion callbacks), turns a chunk's share
//! of the time quantum into a number of level-0 units (8192 floats each).

use std::time::Duration;

use crate::kernels::BLOCK;

const UNIT_BYTES: f64 = (BLOCK * 4) as f64;
/// Weight of the newest observation in the moving average.
const ALPHA: f64 = 0.25;
/// Wall-clock observations shorter than this are dominated by timer and
/// submit noise.
const MIN_OBSERVED: Duration = Duration::from_micros(50);
/// GPU-timestamp observations are exact to the timestamp period; shorter
/// ones than this are left out all the same. (A fast GPU finishes a chunk
/// sized from a low seed in well under 50 us, and its estimate must still
/// be able to rise.)
const MIN_TIMED: Duration = Duration::from_micros(2);

/// Moving estimate of reduction throughput.
#[derive(Clone, Debug)]
pub(crate) struct Throughput {
    bytes_per_s: f64,
    /// How much slower than the seed a job's first chunks may run before
    /// any chunk has been observed (from the calibration's first, cold
    /// reduction; at least 1).
    cold_factor: f64,
    /// A chunk of this scheduler's has been observed.
    observed: bool,
}

impl Throughput {
    /// An estimate seeded at `initial_bytes_per_s`, whose chunks are sized
    /// `cold_factor` times smaller until one has been observed.
    pub fn new(initial_bytes_per_s: f64, cold_factor: f64) -> Self {
        Throughput {
            bytes_per_s: initial_bytes_per_s.max(1e6),
            cold_factor: if cold_factor.is_finite() {
                cold_factor.max(1.0)
            } else {
                1.0
            },
            observed: false,
        }
    }

    /// Adds one chunk of `bytes` that kept the GPU busy for `busy`, measured
    /// with GPU timestamps (`timed`) or by the wall clock.
    pub fn observe(&mut self, bytes: u64, busy: Duration, timed: bool) {
        let min = if timed { MIN_TIMED } else { MIN_OBSERVED };
        if busy < min || bytes == 0 {
            return;
        }
        self.observed = true;
        // Without GPU timestamps, completion times come from callbacks that
        // fire in bursts, so a single busy time can be far too short; one
        // observation may move the estimate by at most 2x either way.
        let rate = (bytes as f64 / busy.as_secs_f64())
            .clamp(self.bytes_per_s / 2.0, self.bytes_per_s * 2.0);
        self.bytes_per_s = (1.0 - ALPHA) * self.bytes_per_s + ALPHA * rate;
    }

    pub fn bytes_per_s(&self) -> f64 {
        self.bytes_per_s
    }

    /// True once an observation has been taken in.
    pub fn is_observed(&self) -> bool {
        self.observed
    }

    /// A new estimate for work like this one's but not the same (another
    /// keyed job): seeded at this rate, with its cold factor, and sized
    /// as cold until one of its own chunks is observed.
    pub fn fresh(&self) -> Throughput {
        Throughput::new(self.bytes_per_s, self.cold_factor)
    }

    /// Units per chunk so one chunk takes about `quantum` of GPU time: at
    /// the estimate once a chunk has been observed, and until then at the
    /// seed slowed by the cold factor (a fresh scheduler's first job must
    /// not hold real-time work longer than a quantum because its chunks ran
    /// slower than the calibration's warm ones).
    pub fn units_for(&self, quantum: Duration, min_units: u64, max_units: u64) -> u64 {
        let units = (self.bytes_for(quantum) / UNIT_BYTES) as u64;
        units.clamp(min_units.max(1), max_units.max(min_units.max(1)))
    }

    /// Bytes that take about `quantum` of GPU time, as [`units_for`]
    /// counts them (cold until observed), unbounded.
    ///
    /// [`units_for`]: Throughput::units_for
    pub fn bytes_for(&self, quantum: Duration) -> f64 {
        let rate = if self.observed {
            self.bytes_per_s
        } else {
            self.bytes_per_s / self.cold_factor
        };
        quantum.as_secs_f64() * rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_size_follows_observed_throughput() {
        let mut t = Throughput::new(1e9, 1.0);
        let q = Duration::from_millis(1);
        assert_eq!(t.units_for(q, 1, u64::MAX), (1e6 / UNIT_BYTES) as u64);
        for _ in 0..50 {
            t.observe(4_000_000, Duration::from_millis(1), false); // 4 GB/s
        }
        assert!((t.bytes_per_s() - 4e9).abs() < 1e8, "{}", t.bytes_per_s());
        assert_eq!(t.units_for(q, 1, 10), 10);
        assert_eq!(t.units_for(Duration::ZERO, 16, 100), 16);
        t.observe(1, Duration::from_micros(1), true); // ignored: too short
        assert!((t.bytes_per_s() - 4e9).abs() < 1e8);
        t.observe(1 << 30, Duration::from_micros(60), false); // an outlier: at most 2x
        assert!(t.bytes_per_s() <= 4e9 * 1.25 + 1e8, "{}", t.bytes_per_s());
    }

    #[test]
    fn chunks_are_cold_sized_until_one_is_observed() {
        let mut t = Throughput::new(1e9, 4.0);
        let q = Duration::from_millis(1);
        let warm = (1e6 / UNIT_BYTES) as u64;
        assert_eq!(t.units_for(q, 1, u64::MAX), warm / 4);
        t.observe(1, Duration::from_micros(1), true); // too short: not seen
        assert_eq!(t.units_for(q, 1, u64::MAX), warm / 4);
        t.observe(1_000_000, Duration::from_millis(1), true);
        assert_eq!(t.units_for(q, 1, u64::MAX), warm);
        // A nonsense factor means none.
        for f in [f64::NAN, 0.0, -3.0, f64::INFINITY] {
            assert_eq!(Throughput::new(1e9, f).units_for(q, 1, u64::MAX), warm);
        }
    }

    #[test]
    fn a_low_seed_rises_on_short_timed_chunks() {
        // A fast GPU (4 TB/s) finishes a chunk sized from a 0.6 TB/s seed in
        // about 20 us: by the wall clock that is noise, by its timestamps a
        // measurement, and the estimate must climb to the real speed.
        let mut wall = Throughput::new(0.6e12, 1.0);
        let mut timed = Throughput::new(0.6e12, 1.0);
        for _ in 0..40 {
            wall.observe(80_000_000, Duration::from_micros(20), false);
            timed.observe(80_000_000, Duration::from_micros(20), true);
        }
        assert_eq!(wall.bytes_per_s(), 0.6e12);
        assert!(
            (timed.bytes_per_s() - 4e12).abs() < 0.1e12,
            "{}",
            timed.bytes_per_s()
        );
    }
}
