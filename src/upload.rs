//! Large host-to-device copies through a small ring of reused, mappable
//! staging buffers.
//!
//! `queue.write_buffer` stages each call's data in a fresh host-visible
//! buffer as large as the data: a 1 GiB upload allocates (and faults in) a
//! 1 GiB staging buffer every time. Arrays larger than one chunk are copied
//! instead chunk by chunk through `RING` pooled staging buffers of
//! `CHUNK_BYTES` each (mapped for writing, filled, unmapped, copied on the
//! GPU with `copy_buffer_to_buffer`), so filling one chunk overlaps the
//! GPU's copy of the ones before, and the staging memory is the pool's,
//! reused by the next upload. Smaller arrays keep `write_buffer`.

use std::sync::Arc;
use std::sync::mpsc;

use crate::context::Context;
use crate::error::{Error, Result};

/// Bytes one staging buffer holds (a multiple of 4, as copies need).
pub(crate) const CHUNK_BYTES: u64 = 16 << 20;
/// Staging buffers in the ring.
const RING: usize = 3;

/// Writes `data` into `dst` from offset 0. Each chunk's copy is submitted
/// as it is filled; the caller waits for the queue before using `dst`.
pub(crate) fn write(ctx: &Context, dst: &wgpu::Buffer, data: &[u8]) -> Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    if data.len() as u64 <= CHUNK_BYTES {
        ctx.queue.write_buffer(dst, 0, data);
        return Ok(());
    }
    let ring: Vec<_> = (0..RING)
        .map(|_| {
            ctx.pool.take(
                &ctx.device,
                CHUNK_BYTES,
                wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC,
                "gpulanes upload staging",
            )
        })
        .collect();
    let mut in_flight: Vec<Option<wgpu::SubmissionIndex>> = vec![None; RING];
    for (i, chunk) in data.chunks(CHUNK_BYTES as usize).enumerate() {
        let slot = i % RING;
        let staging = &ring[slot];
        let len = chunk.len() as u64;
        let (tx, rx) = mpsc::channel();
        staging.map_async(wgpu::MapMode::Write, 0..len, move |r| {
            let _ = tx.send(r);
        });
        // The map completes once the slot's previous copy has finished,
        // inside this wait's poll; a slot not used yet in this upload waits
        // for everything submitted so far (its pooled buffer may still be
        // in use by earlier work).
        let until = in_flight[slot].take();
        ctx.device
            .poll(wgpu::PollType::Wait {
                submission_index: until,
                timeout: None,
            })
            .map_err(|e| {
                ctx.health
                    .poll_failed(&ctx.device, &ctx.queue, "uploading to the device", e)
            })?;
        rx.recv()
            .map_err(|_| Error::Internal("an upload staging map never completed".into()))?
            .map_err(|e| {
                Error::lost_while("mapping an upload staging buffer failed", Arc::new(e))
            })?;
        {
            let mut view = staging.get_mapped_range_mut(0..len).map_err(|e| {
                Error::lost_while("writing an upload staging buffer failed", Arc::new(e))
            })?;
            view.copy_from_slice(chunk);
        }
        staging.unmap();
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("gpulanes upload"),
            });
        encoder.copy_buffer_to_buffer(staging, 0, dst, i as u64 * CHUNK_BYTES, len);
        in_flight[slot] = Some(ctx.queue.submit([encoder.finish()]));
    }
    Ok(())
}
