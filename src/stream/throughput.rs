//! `gpulanes bench`'s streaming measurement: the streaming rate of one file
//! next to the rates of its stages (page-cache reads, uploads through the
//! staging ring, device-resident compute).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;

use super::ring::{Layout, MAP_FAILED, MAPPED, MAPPING};
use super::{FileFormat, InputFile, RING, StreamOptions};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::op::{NanPolicy, Op};
use crate::partition::Partitions;

/// Streaming throughput next to the rates that bound it, measured in one
/// run on one file: how fast the page cache delivers the file, how fast the
/// staging ring uploads it, how fast the device reduces data it already
/// holds, and how fast the whole stream reduces the file. Streaming
/// overlaps the three stages, so at best it runs at the slowest one.
#[derive(Clone, Debug, Serialize)]
pub struct StreamThroughput {
    pub adapter: String,
    /// True on a software adapter (lavapipe): compare ratios only.
    pub software: bool,
    pub bytes: u64,
    pub budget_bytes: u64,
    pub chunk_bytes: u64,
    /// Reading the (cached) file into a host chunk with `read(2)`, GB/s.
    pub read_gbps: f64,
    /// Host chunk -> staging ring -> device buffer, no compute, GB/s.
    pub upload_gbps: f64,
    /// Sum of a device-resident array (up to 64 MiB), no transfers, GB/s.
    pub compute_gbps: f64,
    /// [`Engine::reduce_file`] (sum, whole) end to end, GB/s.
    pub stream_gbps: f64,
    /// `stream_gbps / read_gbps`.
    pub stream_vs_read: f64,
    /// `stream_gbps / upload_gbps`.
    pub stream_vs_upload: f64,
    /// `stream_gbps / compute_gbps`.
    pub stream_vs_compute: f64,
    /// `stream_gbps / min(read, upload, compute)`: 1.0 means streaming runs
    /// at the rate of its slowest stage.
    pub stream_vs_bound: f64,
    /// Seconds the stream waited for input and for the GPU.
    pub input_wait_seconds: f64,
    pub gpu_wait_seconds: f64,
}

/// Writes a raw float32 file of `bytes` bytes (rounded down to whole values)
/// in the temp directory, then measures the page-cache read rate, the upload
/// rate and the streaming rate on it (see [`StreamThroughput`]); the file is
/// removed afterwards. For `gpulanes bench`.
pub fn measure_stream_throughput(
    engine: &Engine,
    bytes: u64,
    budget_bytes: u64,
) -> Result<StreamThroughput> {
    let options = StreamOptions::with_budget(budget_bytes);
    let ctx = engine.context();
    let layout = Layout::new(ctx, &options)?;
    let chunk_items = layout.chunk_items as usize;
    let items = bytes / 4;
    let bytes = items * 4;
    // Unique per process and per call (measurements may run at once).
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "gpulanes-stream-throughput-{}-{}.f32",
        std::process::id(),
        CALLS.fetch_add(1, Ordering::Relaxed)
    ));
    let file_error = |e: std::io::Error| Error::File {
        path: path.clone(),
        message: e.to_string(),
    };
    struct Remove<'a>(&'a Path);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let _remove = Remove(&path);
    {
        let mut f = std::io::BufWriter::new(File::create(&path).map_err(file_error)?);
        let mut chunk = vec![0f32; chunk_items];
        let mut written = 0u64;
        while written < items {
            let n = (items - written).min(chunk_items as u64) as usize;
            for (i, x) in chunk[..n].iter_mut().enumerate() {
                *x = ((written + i as u64) % 1000) as f32 * 0.25 - 100.0;
            }
            f.write_all(bytemuck::cast_slice(&chunk[..n]))
                .map_err(file_error)?;
            written += n as u64;
        }
        f.flush().map_err(file_error)?;
    }

    // Page-cache read rate: one pass to warm the cache, one timed.
    let mut buf = vec![0u8; chunk_items * 4];
    let mut read_rate = || -> Result<f64> {
        let mut f = File::open(&path).map_err(file_error)?;
        let t = Instant::now();
        while f.read(&mut buf).map_err(file_error)? > 0 {}
        Ok(bytes as f64 / t.elapsed().as_secs_f64().max(1e-9) / 1e9)
    };
    read_rate()?;
    let read_gbps = read_rate()?;

    // Upload rate: the same ring of staging and device buffers, no compute.
    let upload_gbps = {
        let device = &ctx.device;
        let host = vec![1f32; chunk_items];
        let slots: Vec<(wgpu::Buffer, wgpu::Buffer, Arc<AtomicU8>)> = (0..RING)
            .map(|_| {
                (
                    device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("gpulanes upload probe staging"),
                        size: chunk_items as u64 * 4,
                        usage: wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC,
                        mapped_at_creation: true,
                    }),
                    device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("gpulanes upload probe input"),
                        size: chunk_items as u64 * 4,
                        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    }),
                    Arc::new(AtomicU8::new(MAPPED)),
                )
            })
            .collect();
        let wait = |index: Option<wgpu::SubmissionIndex>| {
            device
                .poll(wgpu::PollType::Wait {
                    submission_index: index,
                    timeout: None,
                })
                .map_err(|e| Error::wait("waiting for the GPU", e))
        };
        let t = Instant::now();
        let mut sent = 0u64;
        let mut i = 0usize;
        let mut submitted: VecDeque<wgpu::SubmissionIndex> = VecDeque::new();
        while sent < items {
            if submitted.len() >= RING {
                wait(submitted.pop_front())?;
            }
            let (staging, input, state) = &slots[i % RING];
            // Mapped again once its copy finished (requested below).
            while state.load(Ordering::Acquire) != MAPPED {
                if state.load(Ordering::Acquire) == MAP_FAILED {
                    return Err(Error::map(
                        "mapping a staging buffer",
                        wgpu::BufferAsyncError,
                    ));
                }
                wait(None)?;
            }
            let n = (items - sent).min(chunk_items as u64);
            {
                let mut view = staging
                    .get_mapped_range_mut(0..n * 4)
                    .map_err(|e| Error::map("reading a mapped staging buffer", e))?;
                view.copy_from_slice(bytemuck::cast_slice(&host[..n as usize]));
            }
            staging.unmap();
            let mut encoder = device.create_command_encoder(&Default::default());
            encoder.copy_buffer_to_buffer(staging, 0, input, 0, n * 4);
            submitted.push_back(ctx.queue.submit([encoder.finish()]));
            state.store(MAPPING, Ordering::Release);
            let state = state.clone();
            staging.map_async(wgpu::MapMode::Write, .., move |r| {
                state.store(
                    if r.is_ok() { MAPPED } else { MAP_FAILED },
                    Ordering::Release,
                );
            });
            sent += n;
            i += 1;
        }
        wait(None)?;
        bytes as f64 / t.elapsed().as_secs_f64().max(1e-9) / 1e9
    };

    // Compute rate: a device-resident sum, no transfers.
    let compute_gbps = {
        let n = items.min(16 << 20) as usize;
        let host: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 0.25).collect();
        let array = engine.upload(&host)?;
        let sum =
            || engine.reduce_device(&array, Op::Sum, &Partitions::Whole, NanPolicy::Propagate);
        sum()?;
        let t = Instant::now();
        sum()?;
        sum()?;
        2.0 * n as f64 * 4.0 / t.elapsed().as_secs_f64().max(1e-9) / 1e9
    };

    let input = InputFile::open(&path, FileFormat::RawF32)?;
    let t = Instant::now();
    let (_, stats) = engine.reduce_input_file(
        input,
        Op::Sum,
        &Partitions::Whole,
        NanPolicy::Propagate,
        &options,
    )?;
    let stream_gbps = bytes as f64 / t.elapsed().as_secs_f64().max(1e-9) / 1e9;
    let adapter = engine.adapter();
    Ok(StreamThroughput {
        adapter: adapter.name.clone(),
        software: adapter.software,
        bytes,
        budget_bytes,
        chunk_bytes: layout.chunk_items * 4,
        read_gbps,
        upload_gbps,
        stream_gbps,
        stream_vs_read: stream_gbps / read_gbps,
        stream_vs_upload: stream_gbps / upload_gbps,
        compute_gbps,
        stream_vs_compute: stream_gbps / compute_gbps,
        stream_vs_bound: stream_gbps / read_gbps.min(upload_gbps).min(compute_gbps),
        input_wait_seconds: stats.input_wait_seconds,
        gpu_wait_seconds: stats.gpu_wait_seconds,
    })
}
