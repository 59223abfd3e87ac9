//! GPU-side measurements: work bracketed by the engine's timestamp timer
//! ([`GpuTimer`]), the copy and upload bandwidth floors, the
//! empty round trip, and one timed reduction (device-resident or from host
//! memory).

use std::sync::{Arc, mpsc};
use std::time::Instant;

use serde::Serialize;

use gpulanes::{
    DeviceArray, Engine, Error, GpuTimer, NanPolicy, Op, Partitions, Reduction, Result, Scalar,
    TimerSlot,
};

use super::stats::{Budget, Summary, gbps, summarize};

/// How GPU work is timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerKind {
    /// GPU timestamps written before and after the work (TIMESTAMP_QUERY).
    Timestamps,
    /// Host wall clock from submit to result (includes submit and readback).
    Wall,
}

impl TimerKind {
    pub fn name(self) -> &'static str {
        match self {
            TimerKind::Timestamps => "timestamps",
            TimerKind::Wall => "wall",
        }
    }
}

/// Blocks until submission `index` has finished.
pub fn wait(engine: &Engine, index: wgpu::SubmissionIndex) -> Result<()> {
    engine
        .device()
        .poll(wgpu::PollType::Wait {
            submission_index: Some(index),
            timeout: None,
        })
        .map(|_| ())
        .map_err(|e| wait_error("waiting for the GPU", e))
}

/// Maps the first `bytes` of `buffer` (already written by finished work),
/// copies them out and unmaps.
pub fn read_mapped(engine: &Engine, buffer: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    buffer.map_async(wgpu::MapMode::Read, 0..bytes, move |r| {
        let _ = tx.send(r);
    });
    engine
        .device()
        .poll(wgpu::PollType::Wait {
            submission_index: None,
            timeout: None,
        })
        .map_err(|e| wait_error("waiting for the GPU", e))?;
    rx.recv()
        .map_err(|_| Error::Internal("a map callback never ran".into()))?
        .map_err(|e| map_error("mapping a readback buffer", e))?;
    let out = {
        let view = buffer
            .get_mapped_range(0..bytes)
            .map_err(|e| map_error("reading a mapped buffer", e))?;
        view.to_vec()
    };
    buffer.unmap();
    Ok(out)
}

/// A timer for measurements: one slot of `stamps` stamps, read back
/// (blocking) before the next run claims it; `None` without
/// `TIMESTAMP_QUERY`.
pub fn timer(engine: &Engine, stamps: u32) -> Option<GpuTimer> {
    GpuTimer::new(engine.device(), engine.queue(), stamps, 1)
}

/// Claims `timer`'s slot (when there is a timer) and records its first stamp.
pub fn begin(timer: Option<&GpuTimer>, encoder: &mut wgpu::CommandEncoder) -> Option<TimerSlot> {
    let slot = timer.and_then(GpuTimer::claim);
    if let Some(s) = &slot {
        s.begin(encoder);
    }
    slot
}

/// Records the last stamp of `slot` and its resolve.
pub fn end(slot: Option<&TimerSlot>, encoder: &mut wgpu::CommandEncoder) {
    if let Some(s) = slot {
        s.end(encoder);
    }
}

/// After the stamped work has been submitted: the time from the first
/// stamp to the last, `None` without a slot or usable timestamps.
pub fn read_ns(engine: &Engine, slot: Option<TimerSlot>) -> Result<Option<f64>> {
    match slot {
        Some(s) => Ok(s.read_blocking(engine.device())?.map(|v| v.iter().sum())),
        None => Ok(None),
    }
}

/// One timed run of a device-resident reduction.
pub struct DeviceRun {
    /// The values (float32 ones as [`Scalar::F32`]).
    pub result: Reduction<Scalar>,
    /// Submit to result on the host.
    pub wall_ns: f64,
    /// Between the timestamps, when a timer was given and its values are usable.
    pub gpu_ns: Option<f64>,
}

/// Records what `encode` records (between timestamps when `timer` is
/// given), submits, calls `wait` for the result and reads the timestamps.
fn timed_run<P>(
    engine: &Engine,
    timer: Option<&GpuTimer>,
    encode: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<P>,
    wait: impl FnOnce(P, wgpu::SubmissionIndex) -> Result<Reduction<Scalar>>,
) -> Result<DeviceRun> {
    let mut encoder = engine
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("gpulanes bench"),
        });
    let slot = begin(timer, &mut encoder);
    let pending = encode(&mut encoder)?;
    end(slot.as_ref(), &mut encoder);
    let commands = encoder.finish();
    let start = Instant::now();
    let index = engine.queue().submit([commands]);
    let result = wait(pending, index)?;
    let wall_ns = start.elapsed().as_nanos() as f64;
    let gpu_ns = read_ns(engine, slot)?;
    Ok(DeviceRun {
        result,
        wall_ns,
        gpu_ns,
    })
}

/// Encodes `op` over a float32 `array` with [`Engine::encode`] (between
/// timestamps when `timer` is given), submits, waits for the result and
/// reads the timestamps.
pub fn run_device(
    engine: &Engine,
    timer: Option<&GpuTimer>,
    array: &DeviceArray,
    op: Op,
    partitions: &Partitions,
) -> Result<DeviceRun> {
    timed_run(
        engine,
        timer,
        |encoder| engine.encode(encoder, array, op, partitions, NanPolicy::Propagate),
        |pending, index| Ok(super::check::f32_as_scalars(pending.wait(engine, index)?)),
    )
}

/// Like [`run_device`] for an array of any dtype, with the results of
/// [`Engine::reduce_device_typed`]: [`Engine::encode_typed`] records the
/// same jobs into one encoder between the timestamps as [`Engine::encode`]
/// does for float32 ones, so that every dtype's device rows time the same
/// thing.
pub fn run_device_typed(
    engine: &Engine,
    timer: Option<&GpuTimer>,
    array: &DeviceArray,
    op: Op,
    partitions: &Partitions,
) -> Result<DeviceRun> {
    timed_run(
        engine,
        timer,
        |encoder| engine.encode_typed(encoder, array, op, partitions, NanPolicy::Propagate),
        |pending, index| pending.wait(engine, index),
    )
}

/// One timed run from host memory: upload included (wall clock).
pub fn run_host(
    engine: &Engine,
    data: &[f32],
    op: Op,
    partitions: &Partitions,
) -> Result<(Reduction, f64)> {
    let start = Instant::now();
    let r = engine.reduce_partitions(data, op, partitions, NanPolicy::Propagate)?;
    Ok((r, start.elapsed().as_nanos() as f64))
}

/// A bandwidth floor measured in this run.
#[derive(Clone, Debug, Serialize)]
pub struct Bandwidth {
    /// Size of the buffer moved.
    pub bytes: u64,
    /// Bytes counted per run (a copy counts bytes read + bytes written).
    pub bytes_moved: u64,
    pub timer: TimerKind,
    pub time: Summary,
    /// `bytes_moved` / median time, in GB/s (10^9 bytes/s).
    pub gbps: f64,
    /// Every timed run, in order (nanoseconds), so bimodal timings show.
    pub runs_ns: Vec<f64>,
}

impl Bandwidth {
    /// The floor of `runs` (nanoseconds, in order), each moving
    /// `bytes_moved` bytes of a `bytes`-byte buffer, timed by `timer`.
    fn from_runs(bytes: u64, bytes_moved: u64, timer: TimerKind, runs: Vec<f64>) -> Self {
        let time = summarize(&runs);
        Bandwidth {
            bytes,
            bytes_moved,
            timer,
            gbps: gbps(bytes_moved, time.median_ns),
            time,
            runs_ns: runs,
        }
    }
}

/// Runs `budget` runs of `once`, which returns (wall ns, gpu ns): the
/// timestamps are used when every run produced one.
fn sample_pairs(
    budget: &Budget,
    mut once: impl FnMut(usize) -> Result<(f64, Option<f64>)>,
) -> Result<(TimerKind, Vec<f64>)> {
    let pairs = budget.sample(&mut once)?;
    if !pairs.is_empty() && pairs.iter().all(|p| p.1.is_some()) {
        Ok((
            TimerKind::Timestamps,
            pairs.iter().map(|p| p.1.unwrap_or(p.0)).collect(),
        ))
    } else {
        Ok((TimerKind::Wall, pairs.iter().map(|p| p.0).collect()))
    }
}

fn storage_buffer(engine: &Engine, bytes: u64, label: &str) -> wgpu::Buffer {
    engine.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// Host-to-device upload bandwidth: `queue.write_buffer` of `host` into a
/// device buffer, then an empty submit and a wait (what the engine does with
/// slices). Returns the filled device buffer too, for the copy floor.
pub fn measure_upload(
    engine: &Engine,
    host: &[f32],
    budget: &Budget,
) -> Result<(Bandwidth, wgpu::Buffer)> {
    let bytes = (host.len() * 4) as u64;
    let dst = storage_buffer(engine, bytes, "gpulanes bench upload");
    let scope = engine
        .device()
        .push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let samples = budget.sample(|_| {
        let start = Instant::now();
        engine
            .queue()
            .write_buffer(&dst, 0, bytemuck::cast_slice(host));
        let index = engine.queue().submit([]);
        wait(engine, index)?;
        Ok::<_, Error>(start.elapsed().as_nanos() as f64)
    })?;
    if let Some(e) = pollster::block_on(scope.pop()) {
        return Err(gpu_error("upload floor", e));
    }
    Ok((
        Bandwidth::from_runs(bytes, bytes, TimerKind::Wall, samples),
        dst,
    ))
}

/// The engine's own upload: [`Engine::upload`] of `host` into a new device
/// array, returned once the data is on the device (wall clock; arrays over
/// one staging chunk go through the engine's ring of staging buffers).
pub fn measure_engine_upload(engine: &Engine, host: &[f32], budget: &Budget) -> Result<Bandwidth> {
    let bytes = (host.len() * 4) as u64;
    let samples = budget.sample(|_| {
        let start = Instant::now();
        let array = engine.upload(host)?;
        let ns = start.elapsed().as_nanos() as f64;
        drop(array);
        Ok::<_, Error>(ns)
    })?;
    Ok(Bandwidth::from_runs(bytes, bytes, TimerKind::Wall, samples))
}

/// Device copy bandwidth: `copy_buffer_to_buffer` of all of `src` into a
/// fresh buffer, counting bytes read + bytes written.
pub fn measure_copy(
    engine: &Engine,
    timer: Option<&GpuTimer>,
    src: &wgpu::Buffer,
    host: &[f32],
    budget: &Budget,
) -> Result<Bandwidth> {
    let bytes = src.size();
    let scope = engine
        .device()
        .push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let dst = storage_buffer(engine, bytes, "gpulanes bench copy");
    let (kind, samples) = sample_pairs(budget, |_| {
        let mut encoder = engine
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("gpulanes bench copy"),
            });
        let slot = begin(timer, &mut encoder);
        encoder.copy_buffer_to_buffer(src, 0, &dst, 0, bytes);
        end(slot.as_ref(), &mut encoder);
        let commands = encoder.finish();
        let start = Instant::now();
        let index = engine.queue().submit([commands]);
        wait(engine, index)?;
        let wall = start.elapsed().as_nanos() as f64;
        let gpu = read_ns(engine, slot)?;
        Ok((wall, gpu))
    })?;
    if let Some(e) = pollster::block_on(scope.pop()) {
        return Err(gpu_error("copy floor", e));
    }
    verify_copy(engine, &dst, host, bytes, "copy floor")?;
    Ok(Bandwidth::from_runs(bytes, 2 * bytes, kind, samples))
}

/// The latency floor: what any request pays at least.
#[derive(Clone, Debug, Serialize)]
pub struct RoundTrip {
    /// `queue.submit([])` and wait for it (wall clock).
    pub empty_submit: Summary,
    /// Copy 4 bytes into a mappable buffer, submit, wait, map, read (wall clock).
    pub readback_4_bytes: Summary,
}

/// Measures both round trips, `runs` each after `warmup`.
pub fn measure_round_trip(engine: &Engine, warmup: usize, runs: usize) -> Result<RoundTrip> {
    let device = engine.device();
    let queue = engine.queue();
    let budget = Budget::new(warmup, runs, runs, 0);
    let empty = budget.sample(|_| {
        let start = Instant::now();
        let index = queue.submit([]);
        wait(engine, index)?;
        Ok::<_, Error>(start.elapsed().as_nanos() as f64)
    })?;
    let src = storage_buffer(engine, 4, "gpulanes bench 4 bytes");
    queue.write_buffer(&src, 0, &1.5f32.to_le_bytes());
    let dst = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("gpulanes bench 4-byte readback"),
        size: 4,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let readback = budget.sample(|_| {
        let start = Instant::now();
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("gpulanes bench readback"),
        });
        encoder.copy_buffer_to_buffer(&src, 0, &dst, 0, 4);
        let index = queue.submit([encoder.finish()]);
        wait(engine, index)?;
        let bytes = read_mapped(engine, &dst, 4)?;
        let ns = start.elapsed().as_nanos() as f64;
        if bytes != 1.5f32.to_le_bytes() {
            return Err(Error::Internal(
                "4-byte readback returned the wrong bytes".into(),
            ));
        }
        Ok(ns)
    })?;
    Ok(RoundTrip {
        empty_submit: summarize(&empty),
        readback_4_bytes: summarize(&readback),
    })
}

/// The WGSL copy kernel of the shader-copy floor.
pub const COPY_SHADER: &str = include_str!("../../../../shaders/bench_copy.wgsl");

/// Reads `len` bytes at `offset` of `buffer` (which needs `COPY_SRC`).
fn read_back(engine: &Engine, buffer: &wgpu::Buffer, offset: u64, len: u64) -> Result<Vec<u8>> {
    let staging = engine.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("gpulanes bench verify"),
        size: len,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = engine
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("gpulanes bench verify"),
        });
    encoder.copy_buffer_to_buffer(buffer, offset, &staging, 0, len);
    let index = engine.queue().submit([encoder.finish()]);
    wait(engine, index)?;
    read_mapped(engine, &staging, len)
}

/// Checks that the first and last 4 KiB of `dst` hold `host`'s bytes.
fn verify_copy(
    engine: &Engine,
    dst: &wgpu::Buffer,
    host: &[f32],
    bytes: u64,
    what: &str,
) -> Result<()> {
    let host: &[u8] = bytemuck::cast_slice(host);
    let len = bytes.min(4096) & !3;
    for offset in [0, (bytes - len) & !3] {
        let got = read_back(engine, dst, offset, len)?;
        if got[..] != host[offset as usize..(offset + len) as usize] {
            return Err(Error::Internal(format!(
                "{what}: the destination differs from the source at byte offset {offset}"
            )));
        }
    }
    Ok(())
}

/// Device copy bandwidth through a compute shader ([`COPY_SHADER`]): 16-byte
/// loads and stores over all of `src` (rounded down to 16 bytes), one
/// dispatch per binding-sized chunk, counting bytes read + bytes written.
/// `host` holds `src`'s contents, to check the copy once before timing.
pub fn measure_shader_copy(
    engine: &Engine,
    timer: Option<&GpuTimer>,
    src: &wgpu::Buffer,
    host: &[f32],
    budget: &Budget,
) -> Result<Bandwidth> {
    let device = engine.device();
    let bytes = src.size() & !15;
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let dst = storage_buffer(engine, bytes.max(16), "gpulanes bench shader copy");
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("gpulanes bench copy"),
        source: wgpu::ShaderSource::Wgsl(COPY_SHADER.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("gpulanes bench copy"),
        layout: None,
        module: &module,
        entry_point: Some("copy"),
        compilation_options: Default::default(),
        cache: None,
    });
    let layout = pipeline.get_bind_group_layout(0);
    let limits = engine.limits();
    let chunk = (limits.max_binding_bytes & !255).max(256);
    let max_groups = limits.max_workgroups_per_dim.max(1) as u64;
    let mut chunks = Vec::new();
    let mut offset = 0;
    while offset < bytes {
        let size = chunk.min(bytes - offset);
        let binding = |buffer| {
            wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer,
                offset,
                size: std::num::NonZeroU64::new(size),
            })
        };
        let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("gpulanes bench copy"),
            layout: &layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: binding(src),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: binding(&dst),
                },
            ],
        });
        let groups = (size / 16).div_ceil(256).clamp(1, max_groups) as u32;
        chunks.push((group, groups));
        offset += size;
    }
    let once = |_: usize| {
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("gpulanes bench shader copy"),
        });
        let slot = begin(timer, &mut encoder);
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("gpulanes bench shader copy"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipeline);
            for (group, n) in &chunks {
                pass.set_bind_group(0, group, &[]);
                pass.dispatch_workgroups(*n, 1, 1);
            }
        }
        end(slot.as_ref(), &mut encoder);
        let commands = encoder.finish();
        let start = Instant::now();
        let index = engine.queue().submit([commands]);
        wait(engine, index)?;
        let wall = start.elapsed().as_nanos() as f64;
        let gpu = read_ns(engine, slot)?;
        Ok::<_, Error>((wall, gpu))
    };
    once(0)?;
    if let Some(e) = pollster::block_on(oom.pop()) {
        return Err(gpu_error("shader copy floor", e));
    }
    if let Some(e) = pollster::block_on(scope.pop()) {
        return Err(gpu_error("shader copy floor", e));
    }
    verify_copy(engine, &dst, host, bytes, "shader copy floor")?;
    let (kind, samples) = sample_pairs(budget, once)?;
    Ok(Bandwidth::from_runs(bytes, 2 * bytes, kind, samples))
}

/// A failed wait for the GPU during a measurement.
fn wait_error(context: &str, e: wgpu::PollError) -> Error {
    Error::Wait {
        context: context.into(),
        source: Arc::new(e),
    }
}

/// A failed map of a readback buffer during a measurement.
fn map_error(context: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Map {
        context: context.into(),
        source: Arc::new(e),
    }
}

/// An error wgpu reported in a measurement's error scope: out of memory
/// stays out of memory, the rest is a validation error.
fn gpu_error(context: &str, e: wgpu::Error) -> Error {
    match e {
        wgpu::Error::OutOfMemory { .. } => Error::OutOfMemory {
            message: context.into(),
            source: Some(Arc::new(e)),
        },
        e => Error::Validation {
            context: context.into(),
            source: Arc::new(e),
        },
    }
}
