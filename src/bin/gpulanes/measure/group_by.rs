//! Group-by and small-partition rows of `gpulanes bench`: keyed reductions
//! (int32 keys uniform over `cardinality` values, float32 values, ops sum,
//! mean, max and count in one pass) and equal partitions of a few small
//! sizes (sum), both from host slices (upload included, wall clock), each
//! timed alternately with the whole-buffer sum of the same values so that
//! its ratio to the whole-buffer sum compares like with like on a noisy
//! machine. Every row is checked first against the exact CPU reference.

use std::time::Instant;

use serde::Serialize;

use gpulanes::{Engine, NanPolicy, Op, Partitions, Result, State, StateKind};

use super::config::BenchConfig;
use super::data;
use super::stats::{Summary, gbps, summarize};

/// One group-by or small-partition measurement.
#[derive(Clone, Debug, Serialize)]
pub struct GroupByRow {
    /// `group_by` or `partitions`.
    pub kind: &'static str,
    pub rows: u64,
    /// group_by: keys are uniform over this many values.
    pub cardinality: Option<u64>,
    /// Distinct keys found, or partitions.
    pub groups: u64,
    pub partition_size: Option<u64>,
    pub key_dtype: Option<&'static str>,
    pub dtype: &'static str,
    pub ops: Vec<&'static str>,
    /// Bytes read: keys and values.
    pub bytes: u64,
    pub time: Summary,
    /// `bytes` / median time.
    pub gbps: f64,
    /// The whole-buffer sum of the same values, timed alternately with this row.
    pub whole: Summary,
    pub whole_gbps: f64,
    /// `gbps` / `whole_gbps`.
    pub ratio_to_whole: f64,
    /// The result matched the exact CPU reference.
    pub check_pass: bool,
}

const OPS: [Op; 4] = [Op::Sum, Op::Mean, Op::Max, Op::Count];

/// Times `row` and the whole-buffer sum alternately, `runs` times each
/// after one warm-up of each; returns (row, whole) summaries.
fn alternate(
    runs: usize,
    mut row: impl FnMut() -> Result<()>,
    mut whole: impl FnMut() -> Result<()>,
) -> Result<(Summary, Summary)> {
    row()?;
    whole()?;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        row()?;
        a.push(t.elapsed().as_nanos() as f64);
        let t = Instant::now();
        whole()?;
        b.push(t.elapsed().as_nanos() as f64);
    }
    Ok((summarize(&a), summarize(&b)))
}

/// The exact per-key reference of `OPS` for keys in `0..cardinality`: the
/// values counting-sorted by key, each group's exact state.
fn check_group_by(
    keys: &[i32],
    values: &[f32],
    cardinality: u64,
    got: &gpulanes::Grouped<i32>,
) -> bool {
    let mut starts = vec![0usize; cardinality as usize + 1];
    for &k in keys {
        starts[k as usize + 1] += 1;
    }
    for i in 0..cardinality as usize {
        starts[i + 1] += starts[i];
    }
    let mut next = starts.clone();
    let mut sorted = vec![0f32; values.len()];
    for (&k, &v) in keys.iter().zip(values) {
        sorted[next[k as usize]] = v;
        next[k as usize] += 1;
    }
    let present: Vec<usize> = (0..cardinality as usize)
        .filter(|&k| starts[k + 1] > starts[k])
        .collect();
    if got.keys.len() != present.len()
        || got
            .keys
            .iter()
            .zip(&present)
            .any(|(&a, &b)| a as usize != b)
    {
        return false;
    }
    present.iter().enumerate().all(|(i, &k)| {
        let group = &sorted[starts[k]..starts[k + 1]];
        got.reductions.iter().all(|r| {
            let s = State::of(group, StateKind::for_op(r.op));
            let want = s.finalize(r.op, NanPolicy::Propagate).ok().flatten();
            let same = match (r.values[i], want) {
                (Some(a), Some(b)) => super::check::same_value(a, b),
                (a, b) => a.is_none() && b.is_none(),
            };
            same && r.counts[i] == s.count(NanPolicy::Propagate)
        })
    })
}

/// The group-by rows (each of `config.group_by_cardinalities` over
/// `config.group_by_rows` rows) and the small-partition rows
/// (`config.small_partition_sizes`, sum), `config.group_by_runs` timed
/// runs each.
pub fn measure(
    engine: &Engine,
    config: &BenchConfig,
    threads: usize,
    step: &mut dyn FnMut(&str),
) -> Result<Vec<GroupByRow>> {
    let (rows, runs, seed) = (config.group_by_rows, config.group_by_runs, config.seed);
    let n = rows as usize;
    let values = data::random_f32(n, seed ^ 0x6B7, threads);
    let whole = || {
        engine
            .reduce_slice(&values, Op::Sum, &Partitions::Whole, NanPolicy::Propagate)
            .map(|_| ())
    };
    let mut out = Vec::new();
    for &card in &config.group_by_cardinalities {
        step(&format!("group-by, {card} keys"));
        let keys: Vec<i32> = data::random_u32(n, seed ^ card, threads)
            .into_iter()
            .map(|x| ((x as u64 * card) >> 32) as i32)
            .collect();
        let first = engine.reduce_by_key(&keys, &values, &OPS, NanPolicy::Propagate)?;
        let check_pass = check_group_by(&keys, &values, card, &first);
        let (time, whole_time) = alternate(
            runs,
            || {
                engine
                    .reduce_by_key(&keys, &values, &OPS, NanPolicy::Propagate)
                    .map(|_| ())
            },
            whole,
        )?;
        out.push(row(
            "group_by",
            rows,
            Some(card),
            first.len() as u64,
            None,
            Some("int32"),
            OPS.iter().map(|o| o.name()).collect(),
            rows * 8,
            time,
            whole_time,
            check_pass,
        ));
    }
    for &size in &config.small_partition_sizes {
        step(&format!("partitions of {size}"));
        let parts = Partitions::EqualSize(size);
        let got = engine.reduce_slice(&values, Op::Sum, &parts, NanPolicy::Propagate)?;
        let want = gpulanes::cpu::reduce(&values, Op::Sum, &parts, NanPolicy::Propagate)?;
        let check_pass = super::check::same_bits(&got, &want);
        let (time, whole_time) = alternate(
            runs,
            || {
                engine
                    .reduce_slice(&values, Op::Sum, &parts, NanPolicy::Propagate)
                    .map(|_| ())
            },
            whole,
        )?;
        out.push(row(
            "partitions",
            rows,
            None,
            got.len() as u64,
            Some(size),
            None,
            vec!["sum"],
            rows * 4,
            time,
            whole_time,
            check_pass,
        ));
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn row(
    kind: &'static str,
    rows: u64,
    cardinality: Option<u64>,
    groups: u64,
    partition_size: Option<u64>,
    key_dtype: Option<&'static str>,
    ops: Vec<&'static str>,
    bytes: u64,
    time: Summary,
    whole: Summary,
    check_pass: bool,
) -> GroupByRow {
    let g = gbps(bytes, time.median_ns);
    let w = gbps(rows * 4, whole.median_ns);
    GroupByRow {
        kind,
        rows,
        cardinality,
        groups,
        partition_size,
        key_dtype,
        dtype: "float32",
        ops,
        bytes,
        gbps: g,
        whole_gbps: w,
        ratio_to_whole: if w > 0.0 { g / w } else { 0.0 },
        time,
        whole,
        check_pass,
    }
}
