//! Device-resident arrays of any [`Dtype`]: upload once, reduce many times.
//! Buffers hold 32-bit words (two per float64 or int64 value). An array
//! larger than one GPU buffer is held as several buffers that overlap by one
//! block, so every block of every partition lies wholly inside one buffer.

use crate::context::Context;
use crate::dtype::{Dtype, Element};
use crate::error::{Error, Result};
use crate::kernels::BLOCK;
use crate::plan::Span;

/// One buffer of a device array.
pub(crate) struct Piece {
    pub buffer: wgpu::Buffer,
    pub span: Span,
}

/// An array that lives in GPU memory.
pub struct DeviceArray {
    pub(crate) pieces: Vec<Piece>,
    /// Values (not words).
    len: u64,
    dtype: Dtype,
    owner: u64,
}

impl DeviceArray {
    /// The buffers of its pieces, in order (the inputs a job binds).
    pub(crate) fn buffers(&self) -> Vec<&wgpu::Buffer> {
        self.pieces.iter().map(|p| &p.buffer).collect()
    }

    /// Another handle on the same GPU buffers, for work that outlives a
    /// borrow of this one (an async request's thread).
    pub(crate) fn share(&self) -> DeviceArray {
        DeviceArray {
            pieces: self
                .pieces
                .iter()
                .map(|p| Piece {
                    buffer: p.buffer.clone(),
                    span: p.span,
                })
                .collect(),
            len: self.len,
            dtype: self.dtype,
            owner: self.owner,
        }
    }
}

impl std::fmt::Debug for DeviceArray {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceArray")
            .field("len", &self.len)
            .field("dtype", &self.dtype)
            .field("buffers", &self.pieces.len())
            .finish()
    }
}

impl DeviceArray {
    /// Number of elements.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The element type.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// True when the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of GPU memory held (overlaps and padding included).
    pub fn device_bytes(&self) -> u64 {
        self.pieces.iter().map(|p| p.buffer.size()).sum()
    }

    /// [`Error::InvalidInput`] unless the engine of `ctx` uploaded (or
    /// wraps) this array.
    pub(crate) fn check_owner(&self, ctx: &Context) -> Result<()> {
        if self.owner != ctx.id {
            return Err(Error::InvalidInput(
                "this DeviceArray was uploaded by another engine".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn spans(&self) -> Vec<Span> {
        self.pieces.iter().map(|p| p.span).collect()
    }

    /// Wraps an app's buffer on the context's device (the rules are on
    /// `DeviceArray::from_buffer`, the public form, next to the engine).
    pub(crate) fn adopt(
        ctx: &Context,
        buffer: wgpu::Buffer,
        dtype: Dtype,
        len: u64,
    ) -> Result<Self> {
        ctx.health.check()?;
        let usage = buffer.usage();
        if !usage.contains(wgpu::BufferUsages::STORAGE) {
            return Err(Error::InvalidInput(format!(
                "DeviceArray::from_buffer: the buffer's usage {usage:?} lacks STORAGE \
                 (the kernels bind it as a storage buffer)"
            )));
        }
        let words = len
            .checked_mul(dtype.words())
            .filter(|w| *w <= ctx.max_buffer_items());
        let Some(words) = words else {
            return Err(Error::InvalidInput(format!(
                "DeviceArray::from_buffer: {len} {dtype} values pass the engine's largest \
                 buffer ({} bytes); upload them with Engine::upload, which splits them",
                ctx.limits.max_buffer_bytes
            )));
        };
        let needed = float_buffer_bytes(words);
        if buffer.size() < needed {
            return Err(Error::InvalidInput(format!(
                "DeviceArray::from_buffer: {len} {dtype} values need a buffer of at least \
                 {needed} bytes (their bytes rounded up to 16), the buffer has {}",
                buffer.size()
            )));
        }
        Ok(DeviceArray {
            pieces: vec![Piece {
                buffer,
                span: Span {
                    base_item: 0,
                    items: words,
                },
            }],
            len,
            dtype,
            owner: ctx.id,
        })
    }

    pub(crate) fn upload<E: Element>(ctx: &Context, data: &[E]) -> Result<Self> {
        let words: &[u32] = bytemuck::cast_slice(data);
        Self::allocate(ctx, E::DTYPE, data.len() as u64, Some(words))
    }

    /// `len` float32 zeros, made on the device (wgpu zero-initializes buffers).
    pub(crate) fn zeroed(ctx: &Context, len: u64) -> Result<Self> {
        Self::allocate(ctx, Dtype::F32, len, None)
    }

    fn allocate(ctx: &Context, dtype: Dtype, len: u64, data: Option<&[u32]>) -> Result<Self> {
        let spans = split_into_spans(len * dtype.words(), ctx.max_buffer_items());
        let validation = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let mut pieces = Vec::with_capacity(spans.len());
        let mut written = Ok(());
        for span in spans {
            let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("gpulanes device array"),
                size: float_buffer_bytes(span.items),
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            if let (Some(data), Ok(())) = (data, &written) {
                let slice = &data[span.base_item as usize..(span.base_item + span.items) as usize];
                written = crate::upload::write(ctx, &buffer, bytemuck::cast_slice(slice));
            }
            pieces.push(Piece { buffer, span });
        }
        if let Some(err) = pollster::block_on(oom.pop()) {
            return Err(Error::out_of_memory(
                format!("could not allocate {len} {dtype} values on the device"),
                err,
            ));
        }
        if let Some(err) = pollster::block_on(validation.pop()) {
            return Err(Error::validation("allocating a device array", err));
        }
        written?;
        if data.is_some() {
            // wgpu stages the writes and sends them with the queue's next
            // submission, whoever makes it: left pending, a large upload
            // is paid by the next request (a 64 MiB upload held a
            // real-time request ~35 ms on lavapipe). The caller pays here.
            let index = ctx.queue.submit([]);
            ctx.wait_submission(&index, "uploading to the device")?;
        }
        Ok(DeviceArray {
            pieces,
            len,
            dtype,
            owner: ctx.id,
        })
    }
}

/// Pooled input buffers for `len` items, split into overlapping spans as
/// [`split_into_spans`] does, each filled from `data` when it is given (the
/// batch lane fills host jobs chunk by chunk later instead).
pub(crate) fn pooled_input<T: bytemuck::Pod>(
    ctx: &Context,
    len: u64,
    data: Option<&[T]>,
    label: &str,
) -> (Vec<crate::pool::PooledBuffer>, Vec<Span>) {
    let spans = split_into_spans(len, ctx.max_buffer_items());
    let buffers = spans
        .iter()
        .map(|s| {
            let b = pooled_input_buffer(ctx, s.items, label);
            if let Some(data) = data {
                write_floats(
                    &ctx.queue,
                    &b,
                    &data[s.base_item as usize..(s.base_item + s.items) as usize],
                );
            }
            b
        })
        .collect();
    (buffers, spans)
}

/// A pooled storage buffer for `items` input floats, written from the host.
pub(crate) fn pooled_input_buffer(
    ctx: &Context,
    items: u64,
    label: &str,
) -> crate::pool::PooledBuffer {
    let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
    ctx.pool
        .take(&ctx.device, float_buffer_bytes(items), usage, label)
}

/// Bytes of a buffer for `items` floats: a whole number of 16-byte words
/// (the kernels read `vec4`s), at least one.
fn float_buffer_bytes(items: u64) -> u64 {
    (items * 4).next_multiple_of(16).max(16)
}

/// Writes `data` (32-bit words or floats) at the start of `buffer` (nothing
/// for empty data, which `write_buffer` has no use for; 4-byte items are
/// always the multiple of 4 bytes it requires).
pub(crate) fn write_floats<T: bytemuck::Pod>(
    queue: &wgpu::Queue,
    buffer: &wgpu::Buffer,
    data: &[T],
) {
    if !data.is_empty() {
        queue.write_buffer(buffer, 0, bytemuck::cast_slice(data));
    }
}

/// Spans for an array of `len` items in buffers of at most `max_items`
/// (a multiple of 64). Consecutive spans overlap by one block.
pub(crate) fn split_into_spans(len: u64, max_items: u64) -> Vec<Span> {
    if len <= max_items {
        return vec![Span {
            base_item: 0,
            items: len,
        }];
    }
    let stride = (max_items - BLOCK) / 64 * 64;
    let mut spans = Vec::new();
    let mut base = 0;
    loop {
        let items = (len - base).min(stride + BLOCK);
        spans.push(Span {
            base_item: base,
            items,
        });
        if base + items >= len {
            return spans;
        }
        base += stride;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_overlap_by_a_block_and_cover_everything() {
        let max = 4 * BLOCK;
        let spans = split_into_spans(10 * BLOCK + 7, max);
        assert_eq!(spans[0].base_item, 0);
        for w in spans.windows(2) {
            assert_eq!(w[0].base_item + w[0].items, w[1].base_item + BLOCK);
            assert!(w[0].items <= max);
        }
        let last = spans.last().unwrap();
        assert_eq!(last.base_item + last.items, 10 * BLOCK + 7);
        assert_eq!(
            split_into_spans(5, max),
            vec![Span {
                base_item: 0,
                items: 5
            }]
        );
    }

    #[test]
    fn zeroed_arrays_hold_zeros_in_every_piece() {
        // 64 KiB buffers: 100 000 floats take several pieces.
        let engine =
            crate::Engine::with_options(crate::EngineOptions::default().max_buffer_bytes(64 << 10))
                .expect("an adapter");
        let zeros = DeviceArray::zeroed(engine.context(), 100_000).unwrap();
        assert!(zeros.pieces.len() > 1);
        let each = crate::Partitions::EqualSize(1000);
        for op in [crate::Op::Sum, crate::Op::Max, crate::Op::Min] {
            let r = engine
                .reduce_device(&zeros, op, &each, crate::NanPolicy::Propagate)
                .unwrap();
            assert_eq!(r.values.len(), 100);
            for v in r.values {
                assert_eq!(v.map(f32::to_bits), Some(0), "{op}: +0.0 everywhere");
            }
        }
    }
}
