//! The scheduler's start-up measurements of this device: the real-time
//! round trip (which sets the quantum and the submit lead), the marginal
//! reduction throughput (which seeds the chunk sizes), and whether a submit
//! blocks while the queue executes earlier work.

use std::time::{Duration, Instant};

use crate::device_array::DeviceArray;
use crate::dtype::{Dtype, Element};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::kernels::BLOCK;
use crate::op::{NanPolicy, Op};
use crate::partition::Partitions;

pub(super) struct Calibration {
    /// A whole reduction of one float: submit, dispatch, readback.
    pub round_trip: Duration,
    /// Marginal reduction throughput: extra bytes over extra time.
    pub bytes_per_s: f64,
    /// A submit made while the queue executes earlier work waits for it.
    pub submit_blocks: bool,
    /// The first reduction of the big input (its buffers, bind groups and
    /// memory used for the first time) over the median of the next ones,
    /// beyond the round trip each: how much slower a fresh job's first
    /// chunks may run than the seed says (at least 1, at most
    /// [`MAX_COLD_FACTOR`]).
    pub cold_factor: f64,
}

/// Largest cold factor: a first run slowed by an outside stall (a busy
/// host) must not make every first job's chunks tiny.
const MAX_COLD_FACTOR: f64 = 8.0;

/// Items of the first throughput calibration input (16 MiB).
const FIRST_CALIBRATION_ITEMS: u64 = 4 << 20;
/// Items of the largest (256 MiB), for devices so fast that smaller inputs'
/// work hides in the round trip's fixed costs.
const MAX_CALIBRATION_ITEMS: u64 = 64 << 20;

/// Measures the real-time round trip and the marginal throughput (a big
/// reduction's time minus a one-float reduction's, so fixed costs do not
/// count as slowness). A few milliseconds on a GPU.
///
/// The round trip sets the quantum and the submit lead, so it should be the
/// device's, not the host's noise: it is the lower quartile of 16 runs after
/// 2 warm-up runs (noise only ever adds time; a median of 5 swung the
/// quantum between 1.1 and 1.9 ms from run to run on lavapipe), taken twice
/// (the second look after the big reductions, with 1 warm-up run), and the
/// lower of the two kept, so noise that lasts through only one look (on
/// lavapipe, often just after start-up) does not set the quantum. Over 16
/// runs in a row on lavapipe the quantum swung 362-784 us with one look and
/// 358-628 us with two: noise through both looks still counts.
///
/// The big reduction starts at 16 MiB. Where its work does not stand out
/// of the round trip (a fast GPU reduces 16 MiB in a few microseconds), the
/// input grows 4x at a time, up to 256 MiB (zeros made on the device, no
/// host copy), and the seed errs low (see [`seed_throughput`]).
pub(super) fn calibrate(engine: &Engine) -> Result<Calibration> {
    let n = FIRST_CALIBRATION_ITEMS as usize;
    let data: Vec<f32> = (0..n).map(|i| (i % 1024) as f32 * 0.5 - 7.0).collect();
    let mut big = engine.upload(&data)?;
    let one = engine.upload(&data[..1])?;
    warm_dtype(engine, Dtype::F32)?;
    drop(data);
    // The chosen quantile of `runs` timed runs after `warm_up`, and the
    // first timed run.
    let time_runs = |array: &DeviceArray, warm_up: usize, runs: usize, quantile: f64| {
        let mut times = Vec::with_capacity(runs);
        for i in 0..warm_up + runs {
            let t = Instant::now();
            engine.reduce_device(array, Op::Sum, &Partitions::Whole, NanPolicy::Propagate)?;
            if i >= warm_up {
                times.push(t.elapsed());
            }
        }
        let first = times[0];
        times.sort();
        Ok::<_, Error>((times[((runs - 1) as f64 * quantile) as usize], first))
    };
    let time = |array: &DeviceArray, warm_up: usize, runs: usize, quantile: f64| {
        time_runs(array, warm_up, runs, quantile).map(|(q, _)| q)
    };
    let first_look = time(&one, 2, 16, 0.25)?;
    let (mut full, first_full) = time_runs(&big, 0, 5, 0.5)?;
    let cold_factor = cold_factor(first_full, full, first_look);
    while !work_stands_out(full, first_look) && big.len() < MAX_CALIBRATION_ITEMS {
        // A device that cannot hold the bigger input keeps the last figure.
        let Ok(bigger) = DeviceArray::zeroed(engine.context(), big.len() * 4) else {
            break;
        };
        big = bigger;
        full = time(&big, 1, 5, 0.5)?;
    }
    let round_trip = first_look.min(time(&one, 1, 16, 0.25)?);
    let extra = full.saturating_sub(round_trip);
    Ok(Calibration {
        round_trip,
        bytes_per_s: seed_throughput(big.len() * 4, full, round_trip),
        // A failed probe only loses an optimisation: assume a queueing driver.
        submit_blocks: probe_blocking_submit(engine, &big, extra).unwrap_or(false),
        cold_factor,
    })
}

/// How much longer the first, cold reduction's work took than the warm
/// median's, each beyond the round trip (counted as at least one round
/// trip, as in [`seed_throughput`], so noise in a short reduction does not
/// pass for slowness): within 1 ..= [`MAX_COLD_FACTOR`].
fn cold_factor(first: Duration, warm: Duration, round_trip: Duration) -> f64 {
    let work = |t: Duration| {
        t.saturating_sub(round_trip)
            .max(round_trip)
            .max(Duration::from_micros(1))
            .as_secs_f64()
    };
    (work(first) / work(warm)).clamp(1.0, MAX_COLD_FACTOR)
}

/// Runs every kernel the lanes use for `dtype` (the element and the
/// partial pass of each kernel op) once, over zeros spanning three blocks
/// (so both passes run). Pipelines are made on a dtype's first use, and
/// some drivers compile a pipeline on its first dispatch, not when it is
/// made: on lavapipe a fresh scheduler's first `Max` request took 1-5 ms
/// instead of 0.2 ms, the compilation holding the queue, and a first
/// float64 reduction 100 ms. The lanes warm float32 when they start and
/// each other dtype on the thread that first submits it, so no request
/// waits for another dtype's compilation.
pub(super) fn warm_dtype(engine: &Engine, dtype: Dtype) -> Result<()> {
    fn run<E: Element + Default>(engine: &Engine) -> Result<()> {
        let words = 2 * BLOCK + 1;
        let zeros = vec![E::default(); words.div_ceil(E::DTYPE.words()) as usize];
        let array = engine.upload(&zeros)?;
        for op in [Op::Sum, Op::Max, Op::Min] {
            engine.reduce_device_typed(&array, op, &Partitions::Whole, NanPolicy::Propagate)?;
        }
        Ok(())
    }
    match dtype {
        Dtype::F32 => run::<f32>(engine),
        Dtype::F64 => run::<f64>(engine),
        Dtype::I32 => run::<i32>(engine),
        Dtype::U32 => run::<u32>(engine),
        Dtype::I64 => run::<i64>(engine),
    }
}

/// Whether a reduction taking `full` has enough work beyond the fixed
/// `round_trip` for its marginal throughput to mean something.
fn work_stands_out(full: Duration, round_trip: Duration) -> bool {
    full.saturating_sub(round_trip) >= round_trip.saturating_mul(2)
}

/// The throughput seed: `bytes` over the reduction's time beyond the round
/// trip, that time counted as at least one round trip. Work hidden in the
/// round trip's noise would otherwise make the seed absurdly high (16 MiB
/// over a microsecond of difference is 16 TB/s), and a seed too high sizes
/// the first chunks far over the quantum, while one too low only makes them
/// small until GPU timestamps correct it.
fn seed_throughput(bytes: u64, full: Duration, round_trip: Duration) -> f64 {
    let extra = full
        .saturating_sub(round_trip)
        .max(round_trip)
        .max(Duration::from_micros(1));
    bytes as f64 / extra.as_secs_f64()
}

/// Whether a submit made while the queue executes earlier work blocks until
/// that work is done. Lavapipe's does: its queue runs one submission at a
/// time and `vkQueueSubmit` waits for the running one (measured: a second
/// submit during a 70 ms job returned after 69 ms, the first after 62 us).
/// Probed by submitting an empty command buffer right behind the
/// calibration's big reduction (16 MiB, or up to 256 MiB where it grew),
/// whose GPU work takes `work`; the fastest of three such submit calls
/// decides (see [`submit_blocked`]; one slow call can be preemption on a
/// busy host). A reduction under 1 ms is too short to tell, and such a fast
/// device is assumed to queue.
fn probe_blocking_submit(engine: &Engine, big: &DeviceArray, work: Duration) -> Result<bool> {
    if work < Duration::from_millis(1) {
        return Ok(false);
    }
    let mut fastest = Duration::MAX;
    for _ in 0..3 {
        fastest = fastest.min(time_submit_behind(engine, big)?);
        if !submit_blocked(fastest, work) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether a submit call that took `call` behind earlier work of `work`
/// waited for that work: over a quarter of it, and over 1 ms.
///
/// * A queueing driver returns in tens of microseconds (lavapipe's first
///   submit: 62 us), so the 1 ms floor keeps a GPU whose probe work is just
///   over the 1 ms minimum from counting as blocking on a few slow submits
///   (a half of the work was the threshold before, 500 us at the minimum).
/// * On lavapipe the blocked call took 38% or more of a 16 MiB reduction's
///   time (median 75%; two runs of 600 probes back to back in one process,
///   each against the median of 6 reductions after warm-up, 12-13 ms): it
///   starts while the reduction is under way, and the reduction varies. At
///   a half, 3 and 58 of those probes came out "queueing", and 4 of 750
///   `Lanes::new` calls (25 processes) gave lavapipe a 200 us quantum and
///   queue-style pacing; at a quarter, none of 750. (`work` here is the
///   calibration's median of 5 start-up reductions less the round trip.)
fn submit_blocked(call: Duration, work: Duration) -> bool {
    call > (work / 4).max(Duration::from_millis(1))
}

/// How long an empty submit takes right behind a reduction of `big`.
fn time_submit_behind(engine: &Engine, big: &DeviceArray) -> Result<Duration> {
    let device = engine.device();
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("gpulanes submit probe"),
    });
    let pending = engine.encode(
        &mut encoder,
        big,
        Op::Sum,
        &Partitions::Whole,
        NanPolicy::Propagate,
    )?;
    let queue = engine.queue();
    let first = queue.submit([encoder.finish()]);
    let empty = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("gpulanes submit probe (empty)"),
    });
    let t = Instant::now();
    queue.submit([empty.finish()]);
    let second_call = t.elapsed();
    pending.wait(engine, first)?;
    Ok(second_call)
}

/// The quantum derived from the measured round trip (see
/// [`LanesConfig::quantum`](super::LanesConfig#structfield.quantum)): 1 round trip
/// where submissions queue, 3 where the driver's submit blocks, within
/// 200 us ..= 4 ms.
pub(super) fn default_quantum(round_trip: Duration, submit_blocks: bool) -> Duration {
    let round_trips = if submit_blocks { 3 } else { 1 };
    round_trip
        .saturating_mul(round_trips)
        .clamp(Duration::from_micros(200), Duration::from_millis(4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_errs_low_where_the_work_hides_in_the_round_trip() {
        let us = Duration::from_micros;
        let mib16 = 16 << 20;
        // Lavapipe-like: 12 ms of work beyond a 200 us round trip.
        let lvp = seed_throughput(mib16, us(12_200), us(200));
        assert!((lvp - mib16 as f64 / 12e-3).abs() < 1.0, "{lvp}");
        assert!(work_stands_out(us(12_200), us(200)));
        // A fast GPU: 16 MiB in 6 us, inside a 200 us round trip with 1 us
        // of noise. The old formula gave 16 TB/s; the seed is now 84 GB/s
        // (low, corrected by timestamps), and calibration grows the input.
        let fast = seed_throughput(mib16, us(201), us(200));
        assert!((fast - mib16 as f64 / 200e-6).abs() < 1.0, "{fast}");
        assert!(!work_stands_out(us(201), us(200)));
        assert!(
            !work_stands_out(us(200), us(250)),
            "faster than the round trip"
        );
        assert!(seed_throughput(mib16, Duration::ZERO, Duration::ZERO).is_finite());
    }

    #[test]
    fn the_cold_factor_compares_work_beyond_the_round_trip_within_bounds() {
        let us = Duration::from_micros;
        // 12 ms of work warm, 24 ms cold, beyond a 200 us round trip.
        assert_eq!(cold_factor(us(24_200), us(12_200), us(200)), 2.0);
        // A first run faster than the median is not "hot": 1.
        assert_eq!(cold_factor(us(10_000), us(12_200), us(200)), 1.0);
        // An outside stall is capped.
        assert_eq!(cold_factor(us(10_000_000), us(1_200), us(200)), 8.0);
        // Work hidden in the round trip's noise does not count as slowness.
        assert_eq!(cold_factor(us(390), us(201), us(200)), 1.0);
        assert_eq!(
            cold_factor(Duration::ZERO, Duration::ZERO, Duration::ZERO),
            1.0
        );
    }

    #[test]
    fn a_submit_blocked_for_part_of_the_work_still_counts_as_blocking() {
        let us = Duration::from_micros;
        let work = us(12_100);
        // Lavapipe's shortest blocked calls (38-47% of the work) block;
        // at a threshold of half the work they counted as queueing.
        assert!(submit_blocked(us(4_700), work));
        assert!(submit_blocked(us(9_000), work));
        // A queueing driver's submit, even a slow one, does not.
        assert!(!submit_blocked(us(40), work));
        assert!(!submit_blocked(us(1_000), work));
        // Just over the 1 ms minimum of work, a submit needs over 1 ms.
        assert!(!submit_blocked(us(40), us(1_000)));
        assert!(!submit_blocked(us(600), us(1_200)));
        assert!(!submit_blocked(us(1_000), us(1_200)));
        assert!(submit_blocked(us(1_001), us(1_200)));
    }

    #[test]
    fn the_quantum_is_one_round_trip_where_submissions_queue_and_three_where_they_block() {
        let us = Duration::from_micros;
        assert_eq!(default_quantum(us(300), false), us(300));
        assert_eq!(default_quantum(us(300), true), us(900));
        // Within 200 us ..= 4 ms.
        assert_eq!(default_quantum(us(50), false), us(200));
        assert_eq!(default_quantum(us(50), true), us(200));
        assert_eq!(default_quantum(us(2000), true), us(4000));
        assert_eq!(default_quantum(Duration::MAX / 2, true), us(4000));
    }
}
