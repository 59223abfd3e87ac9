//! The `gpulanes` command line: `info` shows the adapter, `reduce` reduces a
//! `.npy` file, `mixed` runs the two-lanes experiment (real-time alone,
//! batch alone, both together), `bench` runs the benchmarks, `doctor`
//! diagnoses a GPU's speed (per-run times, floors, engine variants). Bad input
//! exits with code 2 and one line on stderr; other failures (no GPU, device
//! errors) exit with code 1.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gpulanes::Error;

mod bench;
mod doctor;
mod experiment;
mod group_by;
mod info;
mod measure;
mod mixed;
mod plot;
mod reduce;

#[derive(Parser)]
#[command(
    name = "gpulanes",
    version,
    about = "GPU reductions (sum, mean, max, min, count) over whole and partitioned f32 buffers",
    // With no subcommand, say that one is missing (exit 2), rather than
    // print the help as if it had been asked for.
    arg_required_else_help = false
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the adapter gpulanes picks and the limits that matter.
    Info {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Real-time lane alone, batch lane alone, and both together: latency and throughput ratios.
    Mixed {
        /// Seconds per phase (over all rounds together; default 4).
        #[arg(long)]
        duration: Option<f64>,
        /// Rounds of the three phases, interleaved, figures merged; the two batch phases swap order every round, so an even number balances them (default 4).
        #[arg(long)]
        rounds: Option<usize>,
        /// Coalesced real-time submissions queued on the GPU at once (default 2).
        #[arg(long)]
        rt_in_flight: Option<usize>,
        /// Real-time requests per second (default 1000 on a GPU; 500 on a
        /// software adapter, where on lavapipe each small reduction costs
        /// about 100-150 us of fixed costs).
        #[arg(long)]
        rt_rate: Option<f64>,
        /// Element type of both lanes' values: float32 (default), float64, int32, uint32 or int64.
        #[arg(long)]
        dtype: Option<String>,
        /// Values per real-time request (default 4096).
        #[arg(long)]
        rt_size: Option<usize>,
        /// Values per batch job (default 256M on a GPU, 8M on a software adapter).
        #[arg(long)]
        batch_size: Option<usize>,
        /// Batch jobs are group-by sums over this many distinct int32 keys
        /// scattered over the rows (keys and values held on the host)
        /// instead of sums over a device-resident column.
        #[arg(long)]
        batch_groups: Option<u64>,
        /// Batch chunk quantum in microseconds of GPU time (default: the
        /// measured round trip, 3x where the driver's submit blocks, within
        /// 200..=4000 us).
        #[arg(long)]
        quantum_us: Option<u64>,
        /// Just-in-time submission lead in microseconds, at most the quantum
        /// (default: half the measured round trip, within 50..=500 us).
        #[arg(long)]
        lead_us: Option<u64>,
        /// Hard bound on batch chunks queued on the GPU at once (default 2).
        #[arg(long)]
        batch_in_flight: Option<usize>,
        /// Fresh schedulers in the cold-start phase, each measured during
        /// its first batch job (default 8; 0 skips the phase).
        #[arg(long)]
        cold_starts: Option<usize>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Write SVG charts into DIR (created if missing): the real-time
        /// latency distribution, and the run in time.
        #[arg(long, value_name = "DIR")]
        plot: Option<std::path::PathBuf>,
    },
    /// Reduce a .npy (1-D, or 2-D with --axis) or raw (--raw) file of any size, or group its values by --keys.
    Reduce(reduce::ReduceArgs),
    /// Benchmark sum/mean/max against the copy, upload and round-trip floors and CPU baselines.
    Bench(bench::BenchArgs),
    Doctor(doctor::DoctorArgs),
}

/// Why the command failed: bad input (exit 2) or a runtime failure (exit 1).
pub enum Failure {
    Input(String),
    Runtime(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        match e {
            // A misconfigured environment (GPULANES_KERNELS, WGPU_BACKEND,
            // WGPU_POWER_PREF, a WGPU_ADAPTER_NAME that matches no adapter)
            // is the user's input too.
            // An integer sum outside int64 is a property of the data.
            Error::InvalidPartitions(_)
            | Error::InvalidInput(_)
            | Error::Overflow(_)
            | Error::InvalidState(_)
            | Error::File { .. }
            | Error::InvalidEnv { .. }
            | Error::AdapterNotFound { .. } => Failure::Input(e.to_string()),
            other => Failure::Runtime(other.to_string()),
        }
    }
}

/// Output piped into a reader that stops early (`gpulanes reduce ... | head`)
/// should end the program quietly, as it does any Unix tool. Rust ignores
/// SIGPIPE, which turns the closed pipe into a panic in `println!`; restore
/// the default before any thread starts.
fn die_quietly_on_closed_pipe() {
    #[cfg(target_os = "linux")]
    // SAFETY: setting a signal's disposition to the default is
    // async-signal-safe and done before the process has other threads.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Mesa's Vulkan loader runs its device-select layer in every process; to
/// order GPUs it connects to a Wayland display, and with no Wayland display running
/// (a server, a container, CI) libwayland prints `error: XDG_RUNTIME_DIR is
/// invalid or not set in the environment.` on stderr, which reads as a
/// failure. gpulanes picks its adapter itself (`WGPU_ADAPTER_NAME`,
/// `WGPU_POWER_PREF`), so the layer has nothing to do here: turn it off
/// (`NODEVICE_SELECT`, Mesa's switch) unless the user chose a device through
/// it (`MESA_VK_DEVICE_SELECT`) or set the switch. Real errors (a missing
/// driver, a failed device) are untouched.
fn quiet_device_select_layer() {
    let chosen = std::env::var_os("MESA_VK_DEVICE_SELECT").is_some()
        || std::env::var_os("NODEVICE_SELECT").is_some();
    if !chosen {
        // SAFETY: called first in `main`, before any other thread exists,
        // so nothing reads the environment concurrently.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
}

fn main() -> ExitCode {
    quiet_device_select_layer();
    die_quietly_on_closed_pipe();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp_micros()
        .init();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.to_string();
            // The first paragraph, on one line: for a missing argument clap
            // puts the argument's name on the lines after the first.
            let first: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let line = match first.join(" ") {
                l if l.is_empty() => "invalid arguments".to_string(),
                l => l.trim_start_matches("error: ").to_string(),
            };
            eprintln!("gpulanes: {line} (see gpulanes --help)");
            return ExitCode::from(2);
        }
    };
    let outcome = match cli.command {
        Command::Info { json } => info::run(json),
        Command::Bench(args) => bench::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Mixed {
            duration,
            rounds,
            rt_in_flight,
            rt_rate,
            dtype,
            rt_size,
            batch_size,
            batch_groups,
            quantum_us,
            lead_us,
            batch_in_flight,
            cold_starts,
            json,
            plot,
        } => mixed::run(mixed::Args {
            duration,
            rounds,
            rt_in_flight,
            rt_rate,
            dtype,
            rt_size,
            batch_size,
            batch_groups,
            quantum_us,
            lead_us,
            batch_in_flight,
            cold_starts,
            json,
            plot,
        }),
        Command::Reduce(args) => reduce::run(args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Input(msg)) => {
            eprintln!("gpulanes: {}", one_line(&msg));
            ExitCode::from(2)
        }
        Err(Failure::Runtime(msg)) => {
            eprintln!("gpulanes: {}", one_line(&msg));
            ExitCode::from(1)
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
