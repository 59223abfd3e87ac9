//! GPU time of batch chunks, from timestamp queries.
//!
//! The batch lane sizes its chunks by GPU time, so it needs to know how long
//! a chunk kept the GPU busy. Host clocks cannot tell: completion callbacks
//! arrive in bursts from whichever thread polls, and real-time work runs
//! between batch chunks on the same queue. Where the adapter has
//! `TIMESTAMP_QUERY`, each chunk is bracketed by two GPU timestamps (empty
//! compute passes writing at their beginning and end, which needs no
//! timestamps inside passes), resolved and read back with the chunk. A small
//! ring of slots lets several timed chunks be in flight; a chunk that finds
//! every slot busy simply goes untimed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::readback::map_read;

/// Timestamp slots (two queries each); more than the chunks ever in flight.
const SLOTS: u32 = 8;
/// Two u64 timestamps per slot.
const SLOT_BYTES: u64 = 16;
/// Where each slot resolves to (resolve offsets must be aligned to this).
const RESOLVE_STRIDE: u64 = wgpu::QUERY_RESOLVE_BUFFER_ALIGNMENT;

pub(crate) struct ChunkTimer {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: Vec<wgpu::Buffer>,
    free: Mutex<Vec<u32>>,
    period_ns: f64,
}

/// A claimed slot: brackets one chunk, then reads its GPU time.
pub(crate) struct TimedChunk {
    timer: Arc<ChunkTimer>,
    slot: u32,
}

impl ChunkTimer {
    /// `None` when the device has no `TIMESTAMP_QUERY`.
    pub fn new(device: &wgpu::Device, queue: &wgpu::Queue) -> Option<Arc<Self>> {
        if !device.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            return None;
        }
        let queries = device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("gpulanes chunk timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: 2 * SLOTS,
        });
        let resolve = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("gpulanes chunk timestamp resolve"),
            size: RESOLVE_STRIDE * SLOTS as u64,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let readback = (0..SLOTS)
            .map(|_| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("gpulanes chunk timestamp readback"),
                    size: SLOT_BYTES,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })
            .collect();
        Some(Arc::new(ChunkTimer {
            queries,
            resolve,
            readback,
            free: Mutex::new((0..SLOTS).rev().collect()),
            period_ns: queue.get_timestamp_period() as f64,
        }))
    }

    /// Claims a slot, or `None` when all are in flight.
    pub fn claim(self: &Arc<Self>) -> Option<TimedChunk> {
        let slot = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
        Some(TimedChunk {
            timer: self.clone(),
            slot,
        })
    }

    fn write(&self, encoder: &mut wgpu::CommandEncoder, index: u32, begin: bool) {
        let _ = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("gpulanes chunk timestamp"),
            timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                query_set: &self.queries,
                beginning_of_pass_write_index: begin.then_some(index),
                end_of_pass_write_index: (!begin).then_some(index),
            }),
        });
    }

    fn release(&self, slot: u32) {
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(slot);
    }
}

impl TimedChunk {
    /// Writes the first timestamp; encode the chunk's passes after it.
    pub fn begin(&self, encoder: &mut wgpu::CommandEncoder) {
        self.timer.write(encoder, 2 * self.slot, true);
    }

    /// Writes the second timestamp and copies both to this slot's readback.
    pub fn end(&self, encoder: &mut wgpu::CommandEncoder) {
        let t = &self.timer;
        t.write(encoder, 2 * self.slot + 1, false);
        let at = RESOLVE_STRIDE * self.slot as u64;
        encoder.resolve_query_set(&t.queries, 2 * self.slot..2 * self.slot + 2, &t.resolve, at);
        encoder.copy_buffer_to_buffer(
            &t.resolve,
            at,
            &t.readback[self.slot as usize],
            0,
            SLOT_BYTES,
        );
    }

    /// After the submission holding `end`: calls `done` with the GPU time
    /// between the timestamps (`None` if they are unusable) once the GPU has
    /// finished, from inside a `device.poll`. The slot is freed when the
    /// chunk is read or dropped.
    pub fn read(self, done: impl FnOnce(Option<Duration>) + Send + 'static) {
        let buffer = self.timer.readback[self.slot as usize].clone();
        let period_ns = self.timer.period_ns;
        map_read(
            &buffer,
            SLOT_BYTES,
            "the chunk timestamps",
            move |view| {
                let ticks: &[u64] = bytemuck::cast_slice(view.ok()?);
                let (t0, t1) = (ticks[0], ticks[1]);
                (t1 > t0).then(|| Duration::from_nanos(((t1 - t0) as f64 * period_ns) as u64))
            },
            move |elapsed| {
                drop(self); // frees the slot, now that its readback is unmapped
                done(elapsed);
            },
        );
    }
}

impl Drop for TimedChunk {
    fn drop(&mut self) {
        self.timer.release(self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Engine, NanPolicy, Op, Partitions};
    use std::sync::mpsc;

    #[test]
    fn slots_are_claimed_once_and_freed_by_read_or_drop() {
        let engine = Engine::new().expect("an adapter");
        let Some(timer) = ChunkTimer::new(engine.device(), engine.queue()) else {
            eprintln!("no TIMESTAMP_QUERY on this adapter: nothing to test");
            return;
        };
        let mut claimed: Vec<TimedChunk> = (0..SLOTS).filter_map(|_| timer.claim()).collect();
        assert_eq!(claimed.len(), SLOTS as usize);
        assert!(timer.claim().is_none(), "a ninth slot was handed out");
        drop(claimed.pop());
        let chunk = timer.claim().expect("a dropped chunk frees its slot");
        assert!(timer.claim().is_none());
        drop(claimed);

        // Bracket a real reduction and read its GPU time back.
        let data: Vec<f32> = (0..(1 << 20)).map(|i| (i % 13) as f32).collect();
        let array = engine.upload(&data).expect("upload");
        let mut encoder = engine
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        chunk.begin(&mut encoder);
        let pending = engine
            .encode(
                &mut encoder,
                &array,
                Op::Sum,
                &Partitions::Whole,
                NanPolicy::Propagate,
            )
            .expect("encode");
        chunk.end(&mut encoder);
        let index = engine.queue().submit([encoder.finish()]);
        let (tx, rx) = mpsc::channel();
        chunk.read(move |d| tx.send(d).expect("receiver alive"));
        let sum = pending.wait(&engine, index).expect("the reduction");
        assert_eq!(
            sum.values[0],
            Some(data.iter().map(|&x| x as f64).sum::<f64>() as f32)
        );
        engine
            .device()
            .poll(wgpu::PollType::wait_indefinitely())
            .expect("poll");
        let gpu_time = rx.recv().expect("read called back");
        assert!(
            gpu_time.is_some_and(|d| d > Duration::ZERO),
            "timestamps around a 4 MiB reduction gave {gpu_time:?}"
        );
        let all: Vec<TimedChunk> = (0..SLOTS).filter_map(|_| timer.claim()).collect();
        assert_eq!(all.len(), SLOTS as usize, "read did not free its slot");
    }
}
