//! What the benchmark needs of each dtype it measures: its random inputs,
//! its CPU reference, one timed device-resident run and one from host
//! memory (float32 through the float32 entry points, every other dtype
//! through the typed ones), and its CPU baselines (float32 and float64
//! only).

use gpulanes::{DeviceArray, Dtype, Element, Engine, GpuTimer, NanPolicy, Op, Partitions, Result};

use super::check::{self, Reference};
use super::cpu::{self, CpuImpl};
use super::data;
use super::gpu::{self, DeviceRun};

/// A dtype `gpulanes bench` measures.
pub trait BenchElement: Element {
    /// `n` random values from `seed` (see [`data`]).
    fn random(n: usize, seed: u64, threads: usize) -> Vec<Self>;

    /// The reference of `op` over `data`.
    fn reference(data: &[Self], op: Op, partitions: &Partitions) -> Result<Reference> {
        check::reference_typed(data, op, partitions)
    }

    /// One timed device-resident run (see [`gpu::run_device_typed`]).
    fn run_device(
        engine: &Engine,
        timer: Option<&GpuTimer>,
        array: &DeviceArray,
        op: Op,
        partitions: &Partitions,
    ) -> Result<DeviceRun> {
        gpu::run_device_typed(engine, timer, array, op, partitions)
    }

    /// One timed run from host memory, upload included: the result and
    /// the wall-clock nanoseconds.
    fn run_host(
        engine: &Engine,
        data: &[Self],
        op: Op,
        partitions: &Partitions,
    ) -> Result<(gpulanes::Reduction<gpulanes::Scalar>, f64)> {
        let start = std::time::Instant::now();
        let r = engine.reduce_slice(data, op, partitions, NanPolicy::Propagate)?;
        Ok((r, start.elapsed().as_nanos() as f64))
    }

    /// A CPU baseline over `data` (one value per partition), `None` for
    /// the dtypes without baselines.
    fn cpu_baseline(
        _which: CpuImpl,
        _data: &[Self],
        _op: Op,
        _part: Option<u64>,
        _threads: usize,
    ) -> Option<Vec<f64>> {
        None
    }
}

impl BenchElement for f32 {
    fn random(n: usize, seed: u64, threads: usize) -> Vec<Self> {
        data::random_f32(n, seed, threads)
    }

    fn reference(data: &[Self], op: Op, partitions: &Partitions) -> Result<Reference> {
        check::reference(data, op, partitions)
    }

    /// Through [`Engine::encode`], the float32 entry point.
    fn run_device(
        engine: &Engine,
        timer: Option<&GpuTimer>,
        array: &DeviceArray,
        op: Op,
        partitions: &Partitions,
    ) -> Result<DeviceRun> {
        gpu::run_device(engine, timer, array, op, partitions)
    }

    /// Through [`Engine::reduce_partitions`], the float32 entry point.
    fn run_host(
        engine: &Engine,
        data: &[Self],
        op: Op,
        partitions: &Partitions,
    ) -> Result<(gpulanes::Reduction<gpulanes::Scalar>, f64)> {
        let (r, ns) = gpu::run_host(engine, data, op, partitions)?;
        Ok((check::f32_as_scalars(r), ns))
    }

    fn cpu_baseline(
        which: CpuImpl,
        data: &[Self],
        op: Op,
        part: Option<u64>,
        threads: usize,
    ) -> Option<Vec<f64>> {
        Some(cpu::reduce(which, data, op, part, threads))
    }
}

impl BenchElement for f64 {
    fn random(n: usize, seed: u64, threads: usize) -> Vec<Self> {
        data::random_f64(n, seed, threads)
    }

    fn cpu_baseline(
        which: CpuImpl,
        data: &[Self],
        op: Op,
        part: Option<u64>,
        threads: usize,
    ) -> Option<Vec<f64>> {
        Some(cpu::reduce(which, data, op, part, threads))
    }
}

impl BenchElement for i32 {
    fn random(n: usize, seed: u64, threads: usize) -> Vec<Self> {
        data::random_i32(n, seed, threads)
    }
}

impl BenchElement for u32 {
    fn random(n: usize, seed: u64, threads: usize) -> Vec<Self> {
        data::random_u32(n, seed, threads)
    }
}

impl BenchElement for i64 {
    fn random(n: usize, seed: u64, threads: usize) -> Vec<Self> {
        data::random_i64(n, seed, threads)
    }
}

/// True for the dtypes with CPU baselines.
pub fn has_cpu_baselines(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F32 | Dtype::F64)
}
