//! GPU time of recorded work, from timestamp queries.
//!
//! Host clocks cannot tell how long work kept the GPU busy: completion
//! callbacks arrive in bursts from whichever thread polls, and other work
//! runs between submissions on the same queue. Where the adapter has
//! `TIMESTAMP_QUERY`, a [`GpuTimer`] writes GPU timestamps between pieces
//! of work recorded into one encoder, so the work between two stamps is
//! timed on the GPU.
//!
//! A stamp is an empty compute pass writing a timestamp at its beginning,
//! which needs no timestamps inside passes (a feature fewer adapters have).
//! A timer holds a small ring of slots, each with room for the same number
//! of stamps, so that several timed submissions can be in flight: work
//! claims a slot ([`GpuTimer::claim`]), stamps it, resolves it, and reads
//! its intervals back either from a callback run inside a `device.poll`
//! ([`TimerSlot::read`], for code that must not block) or by waiting
//! ([`TimerSlot::read_blocking`]). A slot is free again once it is read or
//! dropped; when every slot is in flight, `claim` says so and the work
//! simply goes untimed.
//!
//! ```
//! use gpulanes::{Engine, GpuTimer, NanPolicy, Op, Partitions};
//! let engine = Engine::new()?;
//! let array = engine.upload(&vec![1.0f32; 1 << 16])?;
//! let timer = GpuTimer::new(engine.device(), engine.queue(), 2, 1);
//! let slot = timer.as_ref().and_then(|t| t.claim());
//! let mut encoder = engine.device().create_command_encoder(&Default::default());
//! if let Some(s) = &slot {
//!     s.begin(&mut encoder);
//! }
//! let pending = engine.encode(&mut encoder, &array, Op::Sum, &Partitions::Whole, NanPolicy::Propagate)?;
//! if let Some(s) = &slot {
//!     s.end(&mut encoder);
//! }
//! let index = engine.queue().submit([encoder.finish()]);
//! let sum = pending.wait(&engine, index)?;
//! assert_eq!(sum.values[0], Some(65536.0));
//! if let Some(s) = slot {
//!     // `None` where the timestamps are unusable; no timestamps at all
//!     // where the adapter lacks TIMESTAMP_QUERY (`timer` is `None`).
//!     let gpu_ns: Option<Vec<f64>> = s.read_blocking(engine.device())?;
//!     assert!(gpu_ns.is_none_or(|v| v.len() == 1));
//! }
//! # Ok::<(), gpulanes::Error>(())
//! ```

use std::sync::{Arc, Mutex, mpsc};

use crate::error::{Error, Result};
use crate::readback::map_read;

/// Bytes of one resolved timestamp.
const STAMP_BYTES: u64 = 8;

/// GPU timestamps written between pieces of recorded work: a ring of slots
/// of `stamps` timestamps each. Cloning is cheap and shares the slots.
#[derive(Clone)]
pub struct GpuTimer {
    inner: Arc<Inner>,
}

struct Inner {
    queries: wgpu::QuerySet,
    stamps: u32,
    /// Where each slot resolves to: resolve offsets must be aligned to
    /// `QUERY_RESOLVE_BUFFER_ALIGNMENT`, so each slot starts on a multiple.
    resolve: wgpu::Buffer,
    resolve_stride: u64,
    /// One mappable buffer per slot, so that reading one slot never waits
    /// for another.
    readback: Vec<wgpu::Buffer>,
    free: Mutex<Vec<u32>>,
    period_ns: f64,
}

/// A claimed slot of a [`GpuTimer`]: stamps one encoder's work, then reads
/// the time between its stamps. Dropping it (or reading it) frees the slot.
pub struct TimerSlot {
    timer: Arc<Inner>,
    slot: u32,
}

impl GpuTimer {
    /// A timer of `slots` slots (at least 1) of `stamps` timestamps each
    /// (at least 2). `None` when `device` lacks `TIMESTAMP_QUERY`, or when
    /// `stamps × slots` exceeds [`wgpu::QUERY_SET_MAX_QUERIES`].
    pub fn new(
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        stamps: u32,
        slots: u32,
    ) -> Option<Self> {
        if !device.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            return None;
        }
        let (stamps, slots) = (stamps.max(2), slots.max(1));
        let count = stamps
            .checked_mul(slots)
            .filter(|&c| c <= wgpu::QUERY_SET_MAX_QUERIES)?;
        let queries = device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("gpulanes timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count,
        });
        let slot_bytes = STAMP_BYTES * stamps as u64;
        let resolve_stride = slot_bytes.next_multiple_of(wgpu::QUERY_RESOLVE_BUFFER_ALIGNMENT);
        let resolve = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("gpulanes timestamp resolve"),
            size: resolve_stride * slots as u64,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let readback = (0..slots)
            .map(|_| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("gpulanes timestamp readback"),
                    size: slot_bytes,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })
            .collect();
        Some(GpuTimer {
            inner: Arc::new(Inner {
                queries,
                stamps,
                resolve,
                resolve_stride,
                readback,
                free: Mutex::new((0..slots).rev().collect()),
                period_ns: queue.get_timestamp_period() as f64,
            }),
        })
    }

    /// Claims a free slot, or `None` when every slot is claimed (in flight).
    pub fn claim(&self) -> Option<TimerSlot> {
        let slot = self
            .inner
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()?;
        Some(TimerSlot {
            timer: self.inner.clone(),
            slot,
        })
    }

    /// Timestamps per slot.
    pub fn stamps(&self) -> u32 {
        self.inner.stamps
    }

    /// Slots in the ring.
    pub fn slots(&self) -> u32 {
        self.inner.readback.len() as u32
    }

    /// Nanoseconds per timestamp tick.
    pub fn period_ns(&self) -> f64 {
        self.inner.period_ns
    }
}

impl Inner {
    fn slot_bytes(&self) -> u64 {
        STAMP_BYTES * self.stamps as u64
    }

    fn release(&self, slot: u32) {
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(slot);
    }

    /// The time between consecutive ticks, `None` unless the ticks are
    /// usable: never decreasing, and the last after the first.
    fn intervals_ns(&self, ticks: &[u64]) -> Option<Vec<f64>> {
        let (first, last) = (ticks.first()?, ticks.last()?);
        if last <= first || ticks.windows(2).any(|w| w[1] < w[0]) {
            return None;
        }
        Some(
            ticks
                .windows(2)
                .map(|w| (w[1] - w[0]) as f64 * self.period_ns)
                .collect(),
        )
    }
}

impl TimerSlot {
    /// Records stamp `i` of this slot (an empty compute pass writing a
    /// timestamp at its beginning). Stamps past the slot's last are not
    /// recorded.
    pub fn stamp(&self, encoder: &mut wgpu::CommandEncoder, i: u32) {
        let t = &self.timer;
        debug_assert!(i < t.stamps, "stamp {i} of a slot of {}", t.stamps);
        if i >= t.stamps {
            return;
        }
        let _ = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("gpulanes timestamp"),
            timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                query_set: &t.queries,
                beginning_of_pass_write_index: Some(self.slot * t.stamps + i),
                end_of_pass_write_index: None,
            }),
        });
    }

    /// Records the copy of every stamp of this slot into its readback;
    /// record it after the last stamp.
    pub fn resolve(&self, encoder: &mut wgpu::CommandEncoder) {
        let t = &self.timer;
        let first = self.slot * t.stamps;
        let at = t.resolve_stride * self.slot as u64;
        encoder.resolve_query_set(&t.queries, first..first + t.stamps, &t.resolve, at);
        encoder.copy_buffer_to_buffer(
            &t.resolve,
            at,
            &t.readback[self.slot as usize],
            0,
            t.slot_bytes(),
        );
    }

    /// Records the first stamp; record the work after it.
    pub fn begin(&self, encoder: &mut wgpu::CommandEncoder) {
        self.stamp(encoder, 0);
    }

    /// Records the last stamp and the resolve.
    pub fn end(&self, encoder: &mut wgpu::CommandEncoder) {
        self.stamp(encoder, self.timer.stamps - 1);
        self.resolve(encoder);
    }

    /// After the submission holding the resolve: calls `done` with the GPU
    /// time between consecutive stamps, in nanoseconds (`None` if the
    /// timestamps are unusable or could not be read), once the GPU has
    /// finished, from inside a `device.poll` on whichever thread polls.
    /// The slot is freed before `done` runs.
    pub fn read(self, done: impl FnOnce(Option<Vec<f64>>) + Send + 'static) {
        let buffer = self.timer.readback[self.slot as usize].clone();
        let bytes = self.timer.slot_bytes();
        let timer = self.timer.clone();
        map_read(
            &buffer,
            bytes,
            "the timestamps",
            move |view| timer.intervals_ns(bytemuck::cast_slice(view.ok()?)),
            move |intervals| {
                drop(self); // frees the slot, now that its readback is unmapped
                done(intervals);
            },
        );
    }

    /// Like [`TimerSlot::read`], but waits for the GPU and returns the
    /// intervals. Errors are those of waiting for the device and of
    /// mapping the readback (a lost device).
    pub fn read_blocking(self, device: &wgpu::Device) -> Result<Option<Vec<f64>>> {
        let buffer = self.timer.readback[self.slot as usize].clone();
        let bytes = self.timer.slot_bytes();
        let timer = self.timer.clone();
        let (tx, rx) = mpsc::channel();
        map_read(
            &buffer,
            bytes,
            "the timestamps",
            move |view| view.map(|v| timer.intervals_ns(bytemuck::cast_slice(v))),
            move |intervals| {
                drop(self);
                let _ = tx.send(intervals);
            },
        );
        device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::wait("waiting for the timestamps", e))?;
        rx.recv()
            .map_err(|_| Error::Internal("a timestamp map callback never ran".into()))?
    }
}

impl Drop for TimerSlot {
    fn drop(&mut self) {
        self.timer.release(self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DeviceArray, Engine, NanPolicy, Op, Partitions, PendingReduction};

    fn engine_and_timer(stamps: u32, slots: u32) -> Option<(Engine, GpuTimer)> {
        let engine = Engine::new().expect("an adapter");
        let Some(timer) = GpuTimer::new(engine.device(), engine.queue(), stamps, slots) else {
            eprintln!("no TIMESTAMP_QUERY on this adapter: nothing to test");
            return None;
        };
        Some((engine, timer))
    }

    fn data() -> Vec<f32> {
        (0..(1 << 20)).map(|i| (i % 13) as f32).collect()
    }

    fn exact_sum(data: &[f32]) -> Option<f32> {
        Some(data.iter().map(|&x| x as f64).sum::<f64>() as f32)
    }

    fn encode_sum(
        engine: &Engine,
        encoder: &mut wgpu::CommandEncoder,
        array: &DeviceArray,
    ) -> PendingReduction {
        engine
            .encode(
                encoder,
                array,
                Op::Sum,
                &Partitions::Whole,
                NanPolicy::Propagate,
            )
            .expect("encode")
    }

    #[test]
    fn slots_are_claimed_once_and_freed_by_read_or_drop() {
        const SLOTS: u32 = 8;
        let Some((engine, timer)) = engine_and_timer(2, SLOTS) else {
            return;
        };
        let mut claimed: Vec<TimerSlot> = (0..SLOTS).filter_map(|_| timer.claim()).collect();
        assert_eq!(claimed.len(), SLOTS as usize);
        assert!(timer.claim().is_none(), "a ninth slot was handed out");
        drop(claimed.pop());
        let chunk = timer.claim().expect("a dropped slot is free again");
        assert!(timer.claim().is_none());
        drop(claimed);

        // Bracket a real reduction and read its GPU time back.
        let data = data();
        let array = engine.upload(&data).expect("upload");
        let mut encoder = engine
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        chunk.begin(&mut encoder);
        let pending = encode_sum(&engine, &mut encoder, &array);
        chunk.end(&mut encoder);
        let index = engine.queue().submit([encoder.finish()]);
        let (tx, rx) = mpsc::channel();
        chunk.read(move |d| tx.send(d).expect("receiver alive"));
        let sum = pending.wait(&engine, index).expect("the reduction");
        assert_eq!(sum.values[0], exact_sum(&data));
        engine
            .device()
            .poll(wgpu::PollType::wait_indefinitely())
            .expect("poll");
        let gpu_ns = rx.recv().expect("read called back");
        assert!(
            gpu_ns.as_ref().is_some_and(|v| v.len() == 1 && v[0] > 0.0),
            "timestamps around a 4 MiB reduction gave {gpu_ns:?}"
        );
        let all: Vec<TimerSlot> = (0..SLOTS).filter_map(|_| timer.claim()).collect();
        assert_eq!(all.len(), SLOTS as usize, "read did not free its slot");
    }

    #[test]
    fn several_stamps_time_each_piece_of_work() {
        const PIECES: u32 = 3;
        let Some((engine, timer)) = engine_and_timer(PIECES + 1, 2) else {
            return;
        };
        let data = data();
        let array = engine.upload(&data).expect("upload");
        // Both slots at once: stamps of one slot never land in the other.
        let slots: Vec<TimerSlot> = (0..2).filter_map(|_| timer.claim()).collect();
        assert_eq!(slots.len(), 2);
        let mut encoder = engine
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        let mut pending = Vec::new();
        for slot in &slots {
            for i in 0..PIECES {
                slot.stamp(&mut encoder, i);
                pending.push(encode_sum(&engine, &mut encoder, &array));
            }
            slot.stamp(&mut encoder, PIECES);
            slot.resolve(&mut encoder);
        }
        let index = engine.queue().submit([encoder.finish()]);
        let (tx, rx) = mpsc::channel();
        for slot in slots {
            let tx = tx.clone();
            slot.read(move |v| tx.send(v).expect("receiver alive"));
        }
        for p in pending {
            let sum = p.wait(&engine, index.clone()).expect("the reduction");
            assert_eq!(sum.values[0], exact_sum(&data));
        }
        engine
            .device()
            .poll(wgpu::PollType::wait_indefinitely())
            .expect("poll");
        for _ in 0..2 {
            let v = rx.recv().expect("read called back");
            let v = v.expect("usable timestamps around three reductions");
            assert_eq!(v.len(), PIECES as usize);
            assert!(v.iter().all(|&ns| ns >= 0.0));
        }
        assert!(timer.claim().is_some() && timer.claim().is_some());
    }

    #[test]
    fn blocking_read_waits_for_the_work() {
        let Some((engine, timer)) = engine_and_timer(2, 1) else {
            return;
        };
        let data = data();
        let array = engine.upload(&data).expect("upload");
        for _ in 0..3 {
            // One slot: each blocking read frees it for the next run.
            let slot = timer.claim().expect("the slot was freed by the last read");
            let mut encoder = engine
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
            slot.begin(&mut encoder);
            let pending = encode_sum(&engine, &mut encoder, &array);
            slot.end(&mut encoder);
            let index = engine.queue().submit([encoder.finish()]);
            let gpu_ns = slot.read_blocking(engine.device()).expect("the timestamps");
            assert!(
                gpu_ns.as_ref().is_some_and(|v| v.len() == 1 && v[0] > 0.0),
                "timestamps around a 4 MiB reduction gave {gpu_ns:?}"
            );
            let sum = pending.wait(&engine, index).expect("the reduction");
            assert_eq!(sum.values[0], exact_sum(&data));
        }
    }

    #[test]
    fn stamp_counts_are_bounded() {
        let Some((engine, _)) = engine_and_timer(2, 1) else {
            return;
        };
        let (device, queue) = (engine.device(), engine.queue());
        let t = GpuTimer::new(device, queue, 0, 0).expect("clamped to 2 stamps, 1 slot");
        assert_eq!((t.stamps(), t.slots()), (2, 1));
        assert!(GpuTimer::new(device, queue, wgpu::QUERY_SET_MAX_QUERIES + 1, 1).is_none());
        assert!(GpuTimer::new(device, queue, u32::MAX, u32::MAX).is_none());
    }
}
