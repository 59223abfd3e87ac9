//! The serialisable report of a run: the schema tag, one row per GPU or CPU
//! measurement with its correctness check (folded from the comparisons of
//! its inputs), the floors, the host, and the [`BenchReport`] that holds
//! them.

use serde::Serialize;

use gpulanes::AdapterSummary;

use super::check::{self, Comparison};
use super::config::BenchConfig;
use super::cpu::CpuImpl;
use super::gpu::{Bandwidth, RoundTrip, TimerKind};
use super::stats::Summary;
use super::table;

/// Identifies the JSON layout; bumped when fields change meaning.
pub const SCHEMA: &str = "gpulanes-bench/1";

/// Where a timed reduction read its input from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A device-resident array (no upload).
    Device,
    /// A host slice (upload included).
    Host,
}

/// The correctness check of one row.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    /// Every checked input the reference's bits, and every timed run
    /// identical to the checked result.
    pub pass: bool,
    pub inputs_checked: usize,
    pub partitions_checked: u64,
    /// The acceptance rule ([`check::RULE`]).
    pub rule: &'static str,
    pub max_ulps: u64,
    /// Worst |gpu − reference| / tolerance: 0 when every value matches (the
    /// tolerance is zero, so a mismatch is infinite: `null` in the JSON).
    pub max_err_over_tol: f64,
    /// ‖gpu − reference‖₂ / ‖reference‖₂, worst over the inputs.
    pub max_rel_err: f64,
    /// Every timed run returned exactly the checked result.
    pub timed_runs_match: bool,
    /// What went wrong, if anything.
    pub detail: Option<String>,
}

/// One GPU measurement.
#[derive(Clone, Debug, Serialize)]
pub struct GpuRow {
    /// The input's dtype (`float32`, `float64`, ...).
    pub dtype: &'static str,
    pub op: &'static str,
    pub source: Source,
    pub bytes: u64,
    pub size: String,
    pub elements: u64,
    /// `None` for a whole-buffer reduction.
    pub partition_size: Option<u64>,
    pub partitions: u64,
    /// Input buffers rotated over (the timed ones: a short budget may end
    /// before the rotation reaches all that were made).
    pub inputs: usize,
    /// The timer behind `time` and `gbps`.
    pub timer: TimerKind,
    pub time: Summary,
    /// Submit-to-result wall clock (the same samples as `time` when the timer is wall).
    pub wall: Summary,
    /// Input bytes / median time, GB/s.
    pub gbps: f64,
    /// `gbps` / the bandwidth floor's GB/s (`floors.bandwidth`: the faster
    /// of the buffer copy and the shader copy, read + write counted): 1.0 = a
    /// reduction streaming input bytes as fast as the device copies bytes.
    pub ratio_to_copy: f64,
    /// `gbps` / the buffer-to-buffer copy's GB/s alone.
    pub ratio_to_buffer_copy: f64,
    /// Median time per rotated input (index = input), to expose any
    /// dependence on where a buffer was placed.
    pub per_input_median_ns: Vec<f64>,
    /// `gbps` / upload-floor GB/s.
    pub ratio_to_upload: f64,
    pub check: CheckReport,
    /// Set when the measurement could not be made.
    pub error: Option<String>,
}

/// One CPU baseline measurement.
#[derive(Clone, Debug, Serialize)]
pub struct CpuRow {
    /// The input's dtype (float32 or float64: the only ones with baselines).
    pub dtype: &'static str,
    pub op: &'static str,
    pub implementation: CpuImpl,
    pub threads: usize,
    pub bytes: u64,
    pub size: String,
    pub elements: u64,
    pub partition_size: Option<u64>,
    pub partitions: u64,
    pub inputs: usize,
    pub time: Summary,
    pub gbps: f64,
    pub ratio_to_copy: f64,
    /// ‖cpu − reference‖₂ / ‖reference‖₂ (informational: f32 ndarray sums drift).
    pub rel_err: f64,
}

/// The floors measured in the same run.
#[derive(Clone, Debug, Serialize)]
pub struct Floors {
    /// `copy_buffer_to_buffer` (read + write counted).
    pub copy: Bandwidth,
    /// The WGSL copy kernel (`shaders/bench_copy.wgsl`), read + write counted.
    pub shader_copy: Option<Bandwidth>,
    pub shader_copy_error: Option<String>,
    /// The faster of the two copies: what `ratio_to_copy` divides by.
    pub bandwidth: BandwidthFloor,
    pub upload: Bandwidth,
    pub round_trip: RoundTrip,
}

/// The device bandwidth a reduction is compared with.
#[derive(Clone, Debug, Serialize)]
pub struct BandwidthFloor {
    /// Bytes read + written per second, 10^9.
    pub gbps: f64,
    /// `buffer_copy` or `shader_copy`.
    pub source: &'static str,
}

/// The machine the CPU baselines (and, on lavapipe, the "GPU") ran on.
#[derive(Clone, Debug, Serialize)]
pub struct HostInfo {
    pub os: &'static str,
    pub arch: &'static str,
    pub cpu_model: Option<String>,
    pub threads: usize,
}

impl HostInfo {
    pub fn detect() -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| cpu_model_of(&s));
        HostInfo {
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
            cpu_model,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// The CPU's name from `/proc/cpuinfo`: x86 has "model name"; ARM and
/// RISC-V kernels have none, and some have "Model" (the board, e.g. a
/// Raspberry Pi), "Hardware", "cpu model" or "uarch" instead, tried in that
/// order. Mainline arm64 kernels have none of them, only the core's
/// implementer and part numbers: a few well-known cores are named from
/// those (Neoverse in Graviton and Grace), others are given as the numbers.
fn cpu_model_of(cpuinfo: &str) -> Option<String> {
    let field = |key: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key && !v.trim().is_empty()).then(|| v.trim().to_string())
        })
    };
    ["model name", "Model", "Hardware", "cpu model", "uarch"]
        .iter()
        .find_map(|key| field(key))
        .or_else(|| {
            let implementer = field("CPU implementer")?;
            let part = field("CPU part")?;
            Some(arm_core_name(&implementer, &part).map_or_else(
                || format!("CPU implementer {implementer} part {part}"),
                str::to_string,
            ))
        })
}

/// A few well-known Arm cores by `/proc/cpuinfo` implementer and part.
fn arm_core_name(implementer: &str, part: &str) -> Option<&'static str> {
    let arm = implementer.eq_ignore_ascii_case("0x41");
    Some(match part.to_ascii_lowercase().as_str() {
        "0xd03" if arm => "Arm Cortex-A53",
        "0xd08" if arm => "Arm Cortex-A72",
        "0xd0b" if arm => "Arm Cortex-A76",
        "0xd0c" if arm => "Arm Neoverse-N1",
        "0xd40" if arm => "Arm Neoverse-V1",
        "0xd49" if arm => "Arm Neoverse-N2",
        "0xd4f" if arm => "Arm Neoverse-V2",
        _ => return None,
    })
}

/// Everything one `gpulanes bench` run measured.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub schema: &'static str,
    pub gpulanes_version: &'static str,
    pub date_utc: String,
    pub unix_time: u64,
    pub command: Vec<String>,
    /// True on a software adapter: the timings say nothing about GPU speed.
    pub software: bool,
    pub note: String,
    pub adapter: AdapterSummary,
    pub host: HostInfo,
    pub config: BenchConfig,
    /// The timer used for device-resident rows (host rows are always wall clock).
    pub timer: TimerKind,
    pub timestamp_period_ns: Option<f64>,
    pub floors: Floors,
    pub results: Vec<GpuRow>,
    pub cpu: Vec<CpuRow>,
    /// Group-by and small-partition rows (from host, upload included).
    pub group_by: Vec<super::group_by::GroupByRow>,
    pub all_checks_pass: bool,
    pub failures: Vec<String>,
    /// Cases not measured (see `config.max_partitions`).
    pub skipped: Vec<String>,
    pub elapsed_s: f64,
}

impl BenchReport {
    /// The human-readable table (what `gpulanes bench` prints on stdout).
    pub fn table(&self) -> String {
        table::render(self)
    }
}

/// Folds the comparisons of one row into its check report.
pub(super) fn fold_checks(comparisons: &[Comparison]) -> CheckReport {
    let mut c = CheckReport {
        pass: true,
        inputs_checked: comparisons.len(),
        rule: check::RULE,
        timed_runs_match: true,
        ..Default::default()
    };
    for (i, cmp) in comparisons.iter().enumerate() {
        c.partitions_checked += cmp.partitions;
        c.max_ulps = c.max_ulps.max(cmp.max_ulps);
        c.max_err_over_tol = c.max_err_over_tol.max(cmp.max_err_over_tol);
        c.max_rel_err = c.max_rel_err.max(cmp.rel_err);
        if let (None, Some(bad)) = (&c.detail, &cmp.first_bad) {
            c.pass = false;
            c.detail = Some(format!("input {i}: {bad}"));
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_model_is_found_on_x86_and_on_arm() {
        let x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel\t\t: 143\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n";
        assert_eq!(
            cpu_model_of(x86).as_deref(),
            Some("Intel(R) Xeon(R) Platinum 8480+")
        );
        // A Raspberry Pi: no "model name", a "Model" line at the end.
        let pi = "processor\t: 0\nBogoMIPS\t: 108.00\nCPU part\t: 0xd08\n\nHardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n";
        assert_eq!(
            cpu_model_of(pi).as_deref(),
            Some("Raspberry Pi 4 Model B Rev 1.4")
        );
        assert_eq!(
            cpu_model_of("Hardware\t: BCM2835\n").as_deref(),
            Some("BCM2835")
        );
        // Mainline arm64 (Graviton 2): only the core's numbers.
        let server_arm =
            "processor\t: 0\nBogoMIPS\t: 2000.00\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n";
        assert_eq!(cpu_model_of(server_arm).as_deref(), Some("Arm Neoverse-N1"));
        let ampere = "CPU implementer\t: 0xc0\nCPU architecture: 8\nCPU part\t: 0xac3\n";
        assert_eq!(
            cpu_model_of(ampere).as_deref(),
            Some("CPU implementer 0xc0 part 0xac3")
        );
        assert_eq!(cpu_model_of("processor\t: 0\nBogoMIPS\t: 50.00\n"), None);
        // "model" alone (a number on x86) is not the model name.
        assert_eq!(cpu_model_of("model\t\t: 143\n"), None);
    }
}
