//! The benchmark configuration: what to measure and for how long
//! ([`BenchConfig`]), its defaults for an adapter, and its validation.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

use gpulanes::{AdapterSummary, Dtype, Op};

use super::size;
use super::stats::Budget;

/// Which timer to use for device-resident work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerChoice {
    /// Timestamp queries where available, wall clock otherwise.
    Auto,
    /// Always the wall clock (submit to result).
    Wall,
}

fn op_names<S: Serializer>(ops: &[Op], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(ops.iter().map(|o| o.name()))
}

fn dtype_names<S: Serializer>(dtypes: &[Dtype], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(dtypes.iter().map(|d| d.name()))
}

/// What to measure and for how long.
#[derive(Clone, Debug, Serialize)]
pub struct BenchConfig {
    pub quick: bool,
    /// The dtypes measured, in this order (every size, op and partitioning
    /// for each).
    #[serde(serialize_with = "dtype_names")]
    pub dtypes: Vec<Dtype>,
    /// Input sizes in bytes (multiples of every dtype's size: 8 bytes per
    /// float64 or int64 value).
    pub sizes: Vec<u64>,
    #[serde(serialize_with = "op_names")]
    pub ops: Vec<Op>,
    /// Equal partition sizes in elements; each is used for inputs with
    /// more elements than it.
    pub partition_sizes: Vec<u64>,
    /// Skip partitionings with more partitions than this (`None`: no cap);
    /// skipped cases are listed in the report.
    pub max_partitions: Option<u64>,
    /// Also measure from host memory (upload included).
    pub host: bool,
    /// Also measure the CPU baselines.
    pub cpu: bool,
    pub timer: TimerChoice,
    /// Size of the buffer for the copy and upload floors.
    pub copy_bytes: u64,
    /// Rotate over enough input buffers to hold at least this many bytes
    /// (between 2 and `max_inputs` buffers).
    pub rotate_bytes: u64,
    pub max_inputs: usize,
    /// Threads for the multi-threaded CPU baseline (and for data set-up).
    pub threads: usize,
    /// Seed of the random inputs (uniform in [-1, 1)).
    pub seed: u64,
    pub device_budget: Budget,
    pub host_budget: Budget,
    pub cpu_budget: Budget,
    pub copy_budget: Budget,
    pub latency_warmup: usize,
    pub latency_runs: usize,
    /// Rows of the group-by and small-partition rows (0: none).
    pub group_by_rows: u64,
    /// Key cardinalities of the group-by rows.
    pub group_by_cardinalities: Vec<u64>,
    /// Equal partition sizes of the small-partition rows.
    pub small_partition_sizes: Vec<u64>,
    /// Timed runs of each group-by and small-partition row.
    pub group_by_runs: usize,
}

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

impl BenchConfig {
    /// The largest default size: 1 GiB on a GPU (256 MiB with `quick`),
    /// 64 MiB on a software adapter (16 MiB with `quick`).
    pub fn default_max_bytes(software: bool, quick: bool) -> u64 {
        match (software, quick) {
            (false, false) => GIB,
            (false, true) => 256 * MIB,
            (true, false) => 64 * MIB,
            (true, true) => 16 * MIB,
        }
    }

    /// Defaults for this adapter: float32 and float64, sizes from 4 KiB to
    /// [`Self::default_max_bytes`] (x4 steps, x16 with `quick`), ops sum,
    /// mean and max, partitions of 64, 4096 and 1Mi elements.
    pub fn new(adapter: &AdapterSummary, quick: bool) -> Self {
        let software = adapter.software;
        let max = Self::default_max_bytes(software, quick);
        let sizes = size::ladder(4 * KIB, max, if quick { 16 } else { 4 });
        let (device_budget, host_budget, cpu_budget, copy_budget) = if quick {
            (
                Budget::new(2, 5, 50, 100),
                Budget::new(1, 3, 20, 100),
                Budget::new(1, 3, 10, 60),
                Budget::new(2, 5, 20, 150),
            )
        } else {
            (
                Budget::new(3, 10, 200, 300),
                Budget::new(2, 5, 50, 400),
                Budget::new(1, 3, 20, 200),
                Budget::new(3, 10, 100, 500),
            )
        };
        BenchConfig {
            quick,
            dtypes: vec![Dtype::F32, Dtype::F64],
            copy_bytes: default_copy_bytes(&sizes, adapter),
            sizes,
            ops: vec![Op::Sum, Op::Mean, Op::Max],
            partition_sizes: vec![64, 4096, 1 << 20],
            // Software adapters run many small partitions very slowly.
            max_partitions: match (software, quick) {
                (false, _) => None,
                (true, true) => Some(4096),
                (true, false) => Some(16384),
            },
            host: true,
            cpu: true,
            timer: TimerChoice::Auto,
            rotate_bytes: if software { 64 * MIB } else { 512 * MIB },
            max_inputs: 64,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            seed: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64),
            device_budget,
            host_budget,
            cpu_budget,
            copy_budget,
            latency_warmup: if quick { 10 } else { 50 },
            latency_runs: if quick { 100 } else { 500 },
            group_by_rows: if quick { 1 << 20 } else { 16 << 20 },
            group_by_cardinalities: vec![16, 1 << 10, 1 << 16, 1 << 20],
            small_partition_sizes: vec![64, 4096],
            group_by_runs: if quick { 3 } else { 5 },
        }
    }

    /// Replaces the sizes and sizes the copy floor to match.
    pub fn set_sizes(&mut self, sizes: Vec<u64>, adapter: &AdapterSummary) {
        self.copy_bytes = default_copy_bytes(&sizes, adapter);
        self.sizes = sizes;
    }

    /// Checks the configuration; the message names the problem.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.sizes.is_empty() {
            return Err("no sizes to measure".into());
        }
        if self.dtypes.is_empty() {
            return Err("no dtypes to measure".into());
        }
        for d in &self.dtypes {
            if let Some(s) = self
                .sizes
                .iter()
                .find(|&&s| s < d.size() || !s.is_multiple_of(d.size()))
            {
                return Err(format!(
                    "size {s} bytes is not a positive multiple of {} ({d} elements)",
                    d.size()
                ));
            }
        }
        if self.ops.is_empty() {
            return Err("no ops to measure".into());
        }
        if self.partition_sizes.contains(&0) {
            return Err("partition sizes must be at least 1 element".into());
        }
        if self.copy_bytes < 4 || !self.copy_bytes.is_multiple_of(4) {
            return Err(format!(
                "copy size {} is not a positive multiple of 4",
                self.copy_bytes
            ));
        }
        Ok(())
    }

    /// Number of input buffers rotated over for inputs of `bytes`.
    pub fn inputs_for(&self, bytes: u64) -> usize {
        (self.rotate_bytes.div_ceil(bytes.max(1)) as usize).clamp(2, self.max_inputs.max(2))
    }

    /// The partitionings measured for inputs of `elements`: whole, then each
    /// partition size below `elements` (within `max_partitions`).
    pub fn partitionings(&self, elements: u64) -> Vec<Option<u64>> {
        std::iter::once(None)
            .chain(
                self.partition_sizes
                    .iter()
                    .filter(|&&p| p < elements && !self.over_cap(elements, p))
                    .map(|&p| Some(p)),
            )
            .collect()
    }

    fn over_cap(&self, elements: u64, p: u64) -> bool {
        self.max_partitions
            .is_some_and(|m| elements.div_ceil(p.max(1)) > m)
    }

    /// Partitionings left out by `max_partitions`, as readable lines.
    pub fn skipped(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (&dtype, &bytes) in self.cases() {
            let n = bytes / dtype.size();
            for &p in &self.partition_sizes {
                if p < n && self.over_cap(n, p) {
                    out.push(format!(
                        "{dtype} {} p={}: {} partitions > max_partitions {}",
                        size::label(bytes),
                        size::label(p),
                        n.div_ceil(p),
                        self.max_partitions.unwrap_or(0)
                    ));
                }
            }
        }
        out
    }

    /// Progress steps of a run (for a progress bar).
    pub fn steps(&self) -> u64 {
        self.case_steps() + self.group_by_steps()
    }

    /// Steps of the group-by and small-partition rows.
    fn group_by_steps(&self) -> u64 {
        if self.group_by_rows == 0 {
            0
        } else {
            (self.group_by_cardinalities.len() + self.small_partition_sizes.len()) as u64
        }
    }

    fn case_steps(&self) -> u64 {
        4 + self
            .cases()
            .map(|(d, &b)| (self.ops.len() * self.partitionings(b / d.size()).len()) as u64)
            .sum::<u64>()
    }

    /// Every (dtype, size) measured, in order.
    fn cases(&self) -> impl Iterator<Item = (&Dtype, &u64)> {
        self.dtypes
            .iter()
            .flat_map(|d| self.sizes.iter().map(move |b| (d, b)))
    }
}

/// The copy floor uses a buffer as large as the largest size, between
/// 16 MiB and 1 GiB, within the device's buffer limit.
fn default_copy_bytes(sizes: &[u64], adapter: &AdapterSummary) -> u64 {
    let largest = sizes.iter().copied().max().unwrap_or(16 * MIB);
    largest
        .clamp(16 * MIB, GIB)
        .min(adapter.max_buffer_bytes & !255)
        .max(4)
}
