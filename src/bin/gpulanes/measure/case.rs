//! One (dtype, op, size, partitioning) case: the references of its inputs,
//! and its timed, checked rows (device-resident and from the host on the
//! GPU, and the CPU baselines).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use gpulanes::{Dtype, Engine, Error, GpuTimer, Op, Partitions, Reduction, Result, Scalar};

use super::check::{self, Reference, compare_scalars, same_bits};
use super::cpu::CpuImpl;
use super::element::{BenchElement, has_cpu_baselines};
use super::gpu::TimerKind;
use super::report::{CheckReport, CpuRow, GpuRow, Source, fold_checks};
use super::size;
use super::stats::{Budget, Summary, gbps, summarize};

pub(super) fn partitions_of(part: Option<u64>) -> Partitions {
    part.map_or(Partitions::Whole, Partitions::EqualSize)
}

pub(super) fn case_label(dtype: Dtype, op: Op, bytes: u64, part: Option<u64>) -> String {
    match part {
        None => format!("{dtype} {op} {} whole", size::label(bytes)),
        Some(p) => format!("{dtype} {op} {} p={}", size::label(bytes), size::label(p)),
    }
}

/// The references of `op` for every input, computed on `threads` threads
/// (partitioned inputs are split at partition boundaries).
pub(super) fn references<E: BenchElement>(
    inputs: &[Vec<E>],
    op: Op,
    part: Option<u64>,
    threads: usize,
) -> Result<Vec<Reference>> {
    // Jobs: (input, element range); ranges of one input are consecutive.
    let mut jobs: Vec<(usize, usize, usize)> = Vec::new();
    for (i, data) in inputs.iter().enumerate() {
        let n = data.len();
        match part {
            Some(p) if n > 0 => {
                let p = p as usize;
                let per_job = n.div_ceil(p).div_ceil(threads.max(1)).max(1) * p;
                let mut start = 0;
                while start < n {
                    let end = (start + per_job).min(n);
                    jobs.push((i, start, end));
                    start = end;
                }
            }
            _ => jobs.push((i, 0, n)),
        }
    }
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, Result<Reference>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.clamp(1, jobs.len().max(1)))
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let j = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(i, a, b)) = jobs.get(j) else {
                            break;
                        };
                        out.push((j, E::reference(&inputs[i][a..b], op, &partitions_of(part))));
                    }
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("reference worker"))
            .collect()
    });
    done.sort_by_key(|d| d.0);
    let mut out: Vec<Reference> = (0..inputs.len())
        .map(|_| Reference {
            exact: Reduction {
                op,
                values: Vec::new(),
                counts: Vec::new(),
            },
        })
        .collect();
    for (j, r) in done {
        let r = r?;
        let target = &mut out[jobs[j].0];
        target.exact.values.extend(r.exact.values);
        target.exact.counts.extend(r.exact.counts);
    }
    Ok(out)
}

pub(super) fn failed_row(
    dtype: Dtype,
    op: Op,
    source: Source,
    bytes: u64,
    part: Option<u64>,
    inputs: usize,
    error: String,
) -> GpuRow {
    let elements = bytes / dtype.size();
    GpuRow {
        dtype: dtype.name(),
        op: op.name(),
        source,
        bytes,
        size: size::label(bytes),
        elements,
        partition_size: part,
        partitions: part.map_or(1, |p| elements.div_ceil(p)),
        inputs,
        timer: TimerKind::Wall,
        time: Summary::default(),
        wall: Summary::default(),
        gbps: 0.0,
        ratio_to_copy: 0.0,
        ratio_to_buffer_copy: 0.0,
        per_input_median_ns: Vec::new(),
        ratio_to_upload: 0.0,
        check: CheckReport {
            detail: Some(error.clone()),
            ..Default::default()
        },
        error: Some(error),
    }
}

/// One (dtype, op, size, partitioning) case with its references.
pub(super) struct Case<'a> {
    pub(super) engine: &'a Engine,
    pub(super) timer: Option<&'a GpuTimer>,
    pub(super) dtype: Dtype,
    pub(super) op: Op,
    pub(super) bytes: u64,
    pub(super) part: Option<u64>,
    pub(super) partitions: &'a Partitions,
    pub(super) refs: &'a [Reference],
    pub(super) copy_gbps: f64,
    pub(super) buffer_copy_gbps: f64,
    pub(super) upload_gbps: f64,
}

impl Case<'_> {
    fn elements(&self) -> u64 {
        self.bytes / self.dtype.size()
    }

    fn row(
        &self,
        source: Source,
        timer: TimerKind,
        time: Summary,
        wall: Summary,
        runs: &[(usize, f64)],
        check: CheckReport,
    ) -> GpuRow {
        // The budget may end before the rotation reaches every input.
        let inputs = inputs_timed(runs);
        let g = gbps(self.bytes, time.median_ns);
        GpuRow {
            dtype: self.dtype.name(),
            op: self.op.name(),
            source,
            bytes: self.bytes,
            size: size::label(self.bytes),
            elements: self.elements(),
            partition_size: self.part,
            partitions: self.refs.first().map_or(0, |r| r.exact.values.len() as u64),
            inputs,
            timer,
            time,
            wall,
            gbps: g,
            ratio_to_copy: ratio(g, self.copy_gbps),
            ratio_to_buffer_copy: ratio(g, self.buffer_copy_gbps),
            per_input_median_ns: per_input_medians(inputs, runs),
            ratio_to_upload: ratio(g, self.upload_gbps),
            check,
            error: None,
        }
    }

    /// Times `run(k)` rotating over the inputs k. Before an input is first
    /// timed, one untimed run of it is checked against its reference; every
    /// timed run must then reproduce that result bit for bit.
    fn checked_runs<T>(
        &self,
        budget: &Budget,
        mut run: impl FnMut(usize) -> Result<(Reduction<Scalar>, T)>,
    ) -> Result<(Vec<(usize, T)>, CheckReport)> {
        let n = self.refs.len();
        let mut checked: Vec<Option<Reduction<Scalar>>> = vec![None; n];
        let mut comparisons = Vec::new();
        let mut mismatch = false;
        let samples = budget.sample(|i| {
            let k = i % n;
            if checked[k].is_none() {
                let (r, _) = run(k)?;
                comparisons.push(compare_scalars(&r, &self.refs[k]));
                checked[k] = Some(r);
            }
            let (r, t) = run(k)?;
            mismatch |= checked[k].as_ref().is_none_or(|c| !same_bits(&r, c));
            Ok::<_, Error>((k, t))
        })?;
        let mut check = fold_checks(&comparisons);
        if mismatch {
            check.pass = false;
            check.timed_runs_match = false;
            check
                .detail
                .get_or_insert_with(|| "a timed run differed from the checked result".into());
        }
        Ok((samples, check))
    }

    /// A device-resident reduction, rotating over `arrays`.
    pub(super) fn device<E: BenchElement>(
        &self,
        arrays: &[gpulanes::DeviceArray],
        budget: &Budget,
    ) -> GpuRow {
        let scope = self
            .engine
            .device()
            .push_error_scope(wgpu::ErrorFilter::Validation);
        let outcome = self.checked_runs(budget, |k| {
            let run = E::run_device(
                self.engine,
                self.timer,
                &arrays[k],
                self.op,
                self.partitions,
            )?;
            Ok((run.result, (run.wall_ns, run.gpu_ns)))
        });
        let scope_error = pollster::block_on(scope.pop());
        let (runs, check) = match (outcome, scope_error) {
            (Ok(o), None) => o,
            (Err(e), _) => return self.failed(Source::Device, e.to_string()),
            (Ok(_), Some(e)) => return self.failed(Source::Device, e.to_string()),
        };
        let walls: Vec<f64> = runs.iter().map(|r| r.1.0).collect();
        let (kind, chosen): (TimerKind, Vec<(usize, f64)>) =
            if self.timer.is_some() && runs.iter().all(|r| r.1.1.is_some()) {
                let gpu = runs
                    .iter()
                    .map(|&(k, (w, g))| (k, g.unwrap_or(w)))
                    .collect();
                (TimerKind::Timestamps, gpu)
            } else {
                (
                    TimerKind::Wall,
                    runs.iter().map(|&(k, (w, _))| (k, w)).collect(),
                )
            };
        let times: Vec<f64> = chosen.iter().map(|r| r.1).collect();
        self.row(
            Source::Device,
            kind,
            summarize(&times),
            summarize(&walls),
            &chosen,
            check,
        )
    }

    /// The same reduction from host slices (upload included), rotating over `inputs`.
    pub(super) fn host<E: BenchElement>(&self, inputs: &[Vec<E>], budget: &Budget) -> GpuRow {
        let outcome = self.checked_runs(budget, |k| {
            E::run_host(self.engine, &inputs[k], self.op, self.partitions)
        });
        match outcome {
            Ok((runs, check)) => {
                let times: Vec<f64> = runs.iter().map(|r| r.1).collect();
                let time = summarize(&times);
                self.row(
                    Source::Host,
                    TimerKind::Wall,
                    time.clone(),
                    time,
                    &runs,
                    check,
                )
            }
            Err(e) => self.failed(Source::Host, e.to_string()),
        }
    }

    fn failed(&self, source: Source, error: String) -> GpuRow {
        failed_row(
            self.dtype,
            self.op,
            source,
            self.bytes,
            self.part,
            self.refs.len(),
            error,
        )
    }

    /// A CPU baseline row; `None` for a dtype without baselines.
    pub(super) fn cpu<E: BenchElement>(
        &self,
        which: CpuImpl,
        inputs: &[Vec<E>],
        threads: usize,
        budget: &Budget,
    ) -> Option<CpuRow> {
        if !has_cpu_baselines(self.dtype) {
            return None;
        }
        let threads = if which == CpuImpl::LoopThreads {
            threads
        } else {
            1
        };
        let mut first: Option<Vec<f64>> = None;
        let samples = budget
            .sample(|i| {
                let k = i % inputs.len();
                let start = Instant::now();
                let out = E::cpu_baseline(
                    which,
                    std::hint::black_box(&inputs[k]),
                    self.op,
                    self.part,
                    threads,
                )
                .unwrap_or_default();
                let ns = start.elapsed().as_nanos() as f64;
                if k == 0 && first.is_none() {
                    first = Some(out);
                } else {
                    std::hint::black_box(out);
                }
                Ok::<_, ()>(ns)
            })
            .unwrap_or_default();
        let first = first.unwrap_or_else(|| {
            E::cpu_baseline(which, &inputs[0], self.op, self.part, threads).unwrap_or_default()
        });
        let time = summarize(&samples);
        let g = gbps(self.bytes, time.median_ns);
        Some(CpuRow {
            dtype: self.dtype.name(),
            op: self.op.name(),
            implementation: which,
            threads,
            bytes: self.bytes,
            size: size::label(self.bytes),
            elements: self.elements(),
            partition_size: self.part,
            partitions: first.len() as u64,
            // The budget may end before the rotation reaches every input.
            inputs: samples.len().clamp(1, inputs.len()),
            time,
            gbps: g,
            ratio_to_copy: ratio(g, self.copy_gbps),
            rel_err: check::rel_err_f64(&first, &self.refs[0].exact),
        })
    }
}

/// How many inputs the timed runs rotated over (runs go round the inputs
/// in order, so those timed are the first ones).
fn inputs_timed(runs: &[(usize, f64)]) -> usize {
    runs.iter().map(|r| r.0 + 1).max().unwrap_or(0)
}

/// The median time of each of the first `n` inputs.
fn per_input_medians(n: usize, runs: &[(usize, f64)]) -> Vec<f64> {
    (0..n)
        .map(|k| {
            let mine: Vec<f64> = runs.iter().filter(|r| r.0 == k).map(|r| r.1).collect();
            summarize(&mine).median_ns
        })
        .collect()
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::measure::data;

    #[test]
    fn rows_count_only_the_inputs_that_were_timed() {
        // A budget of 5 runs over 64 inputs times inputs 0..5.
        let runs: Vec<(usize, f64)> = (0..5).map(|i| (i % 64, 10.0 * (i + 1) as f64)).collect();
        assert_eq!(inputs_timed(&runs), 5);
        assert_eq!(per_input_medians(5, &runs), [10.0, 20.0, 30.0, 40.0, 50.0]);
        // Two rotations over 3 inputs.
        let runs: Vec<(usize, f64)> = (0..6).map(|i| (i % 3, 1.0)).collect();
        assert_eq!(inputs_timed(&runs), 3);
        assert_eq!(inputs_timed(&[]), 0);
    }

    fn split_matches_whole<E: BenchElement>(inputs: &[Vec<E>]) {
        for part in [None, Some(64), Some(1000)] {
            for op in [Op::Sum, Op::Max, Op::Count] {
                let split = references(inputs, op, part, 3).unwrap();
                assert_eq!(split.len(), inputs.len());
                for (d, r) in inputs.iter().zip(&split) {
                    let whole = E::reference(d, op, &partitions_of(part)).unwrap();
                    assert_eq!(whole.exact, r.exact, "{} {op} {part:?}", E::DTYPE);
                    let parts = part.map_or(1, |p| d.len().div_ceil(p as usize));
                    assert_eq!(r.exact.values.len(), parts);
                }
            }
        }
    }

    #[test]
    fn references_split_at_partition_boundaries() {
        split_matches_whole(&[
            data::random_f32(10_007, 1, 1),
            data::random_f32(5_000, 2, 1),
        ]);
        split_matches_whole(&[
            data::random_f64(10_007, 1, 1),
            data::random_f64(5_000, 2, 1),
        ]);
        split_matches_whole(&[
            data::random_i64(10_007, 1, 1),
            data::random_i64(5_000, 2, 1),
        ]);
    }

    #[test]
    fn float32_references_are_the_float32_entry_points_results() {
        let d = data::random_f32(3_000, 5, 1);
        let r = references(std::slice::from_ref(&d), Op::Count, Some(1000), 2).unwrap();
        assert_eq!(r[0].exact.values, vec![Some(Scalar::F32(1000.0)); 3]);
        let r = references(std::slice::from_ref(&d), Op::Sum, None, 2).unwrap();
        let want = gpulanes::cpu::reference(
            &d,
            Op::Sum,
            &Partitions::Whole,
            gpulanes::NanPolicy::Propagate,
        )
        .unwrap();
        assert_eq!(r[0].exact.values, vec![want.values[0].map(Scalar::F32)]);
    }
}
