//! Streaming a file bigger than the memory you give it: writes a float32
//! `.npy` file, reduces it in chunks within a memory budget (reads, uploads
//! and GPU work overlapping), and checks the result against a CPU pass over
//! the same file (the exactly rounded sum, and the maximum).
//!
//! `cargo run --release --example stream_file [--size-mb N] [--budget-mb M]
//! [--path FILE] [--keep] [--full]` (default: a 24 MB file, a 2 MiB budget,
//! in the temp directory, removed afterwards; `--full` writes 8 GB with a
//! 256 MiB budget: use `--path` on a disk with room).

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use gpulanes::exact::ExactSum;
use gpulanes::{Engine, FileFormat, InputFile, NanPolicy, Op, Partitions, StreamOptions};

/// What to write and how much memory to stream it with.
#[derive(Clone, Debug)]
pub struct Args {
    pub size_mb: u64,
    pub budget_mb: u64,
    pub path: Option<PathBuf>,
    pub keep: bool,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            size_mb: 24,
            budget_mb: 2,
            path: None,
            keep: false,
        }
    }
}

impl Args {
    fn parse() -> Self {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut out = Args::default();
        let value = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .map(|i| args.get(i + 1).cloned().expect("a value after the flag"))
        };
        if args.iter().any(|a| a == "--full") {
            out.size_mb = 8000;
            out.budget_mb = 256;
        }
        if let Some(v) = value("--size-mb") {
            out.size_mb = v.parse().expect("--size-mb N");
        }
        if let Some(v) = value("--budget-mb") {
            out.budget_mb = v.parse().expect("--budget-mb M");
        }
        out.path = value("--path").map(PathBuf::from);
        out.keep = args.iter().any(|a| a == "--keep");
        out
    }
}

fn main() -> Result<(), gpulanes::Error> {
    env_logger::init();
    run(&Args::parse())
}

/// The value at index `i`: a smooth signal with spikes, so that a naive f32
/// sum drifts and the maximum sits somewhere in the middle.
fn value(i: u64) -> f32 {
    let base = ((i % 10_000) as f32) * 1e-4 + 0.1;
    if i % 1_000_003 == 7 {
        base + 1000.0 + (i % 17) as f32
    } else {
        base
    }
}

fn io_error(path: &std::path::Path) -> impl Fn(std::io::Error) -> gpulanes::Error + '_ {
    move |e| gpulanes::Error::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Writes `n` values as a version 1.0 `.npy` file, chunk by chunk.
fn write_npy(path: &std::path::Path, n: u64) -> Result<(), gpulanes::Error> {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({n},), }}");
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut f = BufWriter::new(File::create(path).map_err(io_error(path))?);
    f.write_all(b"\x93NUMPY\x01\x00").map_err(io_error(path))?;
    f.write_all(&(header.len() as u16).to_le_bytes())
        .map_err(io_error(path))?;
    f.write_all(header.as_bytes()).map_err(io_error(path))?;
    let mut chunk = Vec::with_capacity(1 << 20);
    let mut i = 0;
    while i < n {
        chunk.clear();
        chunk.extend((i..n.min(i + (1 << 20))).map(value));
        f.write_all(bytemuck::cast_slice(&chunk))
            .map_err(io_error(path))?;
        i += chunk.len() as u64;
    }
    f.flush().map_err(io_error(path))
}

/// The CPU pass: exact sum and maximum of the file's data, chunk by chunk.
fn cpu_pass(path: &std::path::Path, data_offset: u64) -> Result<(f32, f32), gpulanes::Error> {
    let mut f = File::open(path).map_err(io_error(path))?;
    let mut skip = vec![0u8; data_offset as usize];
    f.read_exact(&mut skip).map_err(io_error(path))?;
    let mut buf = vec![0f32; 1 << 20];
    let mut sum = ExactSum::new(gpulanes::Dtype::F32);
    let mut max = f32::NEG_INFINITY;
    loop {
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut buf);
        let full = bytes.len();
        let mut filled = 0;
        while filled < bytes.len() {
            match f.read(&mut bytes[filled..]).map_err(io_error(path))? {
                0 => break,
                k => filled += k,
            }
        }
        for &x in &buf[..filled / 4] {
            sum.add_f32(x);
            max = max.max(x);
        }
        if filled < full {
            return Ok((sum.round(gpulanes::Dtype::F32) as f32, max));
        }
    }
}

/// Deletes the generated file when dropped, unless it is to be kept.
struct RemoveOnDrop<'a> {
    path: &'a Path,
    keep: bool,
}

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(self.path);
        }
    }
}

pub fn run(args: &Args) -> Result<(), gpulanes::Error> {
    let engine = Engine::new()?;
    let a = engine.adapter();
    println!(
        "adapter: {} ({}, {}{})",
        a.name,
        a.backend,
        a.device_type,
        if a.software { ", software" } else { "" }
    );
    let n = args.size_mb * 1_000_000 / 4;
    let path = args.path.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "gpulanes-stream-example-{}.npy",
            std::process::id()
        ))
    });
    // Removed on every way out (a failed write or reduction too), unless kept.
    let _cleanup = RemoveOnDrop {
        path: &path,
        keep: args.keep,
    };
    let t = Instant::now();
    write_npy(&path, n)?;
    println!(
        "wrote {} ({} values, {:.1} MB) in {:.2} s",
        path.display(),
        n,
        n as f64 * 4e-6,
        t.elapsed().as_secs_f64()
    );

    let options = StreamOptions::with_budget(args.budget_mb << 20);
    let mut results = Vec::new();
    for op in [Op::Sum, Op::Max] {
        let input = InputFile::open(&path, FileFormat::Npy)?;
        let t = Instant::now();
        let (r, stats) = engine.reduce_input_file(
            input,
            op,
            &Partitions::Whole,
            NanPolicy::Propagate,
            &options,
        )?;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "gpu {op}: {:?}  ({:.2} GB/s; budget {} MiB, chunks of {} KiB, peak {:.2} MiB held, \
             {} submissions)",
            r.value(),
            n as f64 * 4.0 / secs / 1e9,
            args.budget_mb,
            stats.chunk_bytes >> 10,
            stats.peak_bytes as f64 / (1 << 20) as f64,
            stats.submissions
        );
        results.push(r.value());
    }

    let t = Instant::now();
    let data_offset = InputFile::open(&path, FileFormat::Npy)?.data_offset;
    let (exact_sum, cpu_max) = cpu_pass(&path, data_offset)?;
    println!(
        "cpu: exact sum {exact_sum:?}, max {cpu_max:?} ({:.2} GB/s)",
        n as f64 * 4.0 / t.elapsed().as_secs_f64() / 1e9
    );
    let sum = results[0].unwrap_or(0.0);
    let ulps = (sum.to_bits() as i64 - exact_sum.to_bits() as i64).unsigned_abs();
    println!(
        "sum within {ulps} ulp of the exact sum; max {}",
        if results[1] == Some(cpu_max) {
            "identical"
        } else {
            "DIFFERENT"
        }
    );
    if ulps > 4 || results[1] != Some(cpu_max) {
        return Err(gpulanes::Error::Internal(
            "streamed results disagree with the CPU".into(),
        ));
    }
    Ok(())
}
