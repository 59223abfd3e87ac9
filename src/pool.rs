//! A small buffer pool: buffers are reused by (usage, power-of-two size
//! class), so steady streams of reductions allocate nothing. A size whose
//! power of two would pass the largest buffer allowed is its own class
//! (rounded up to 256 bytes only). The pool keeps at most a few idle buffers
//! per class and a bounded number of idle bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const MIN_CLASS_BYTES: u64 = 256;
const MAX_IDLE_PER_CLASS: usize = 8;
const MAX_IDLE_BYTES: u64 = 512 << 20;

#[derive(Default)]
struct Idle {
    by_class: HashMap<(u32, u64), Vec<wgpu::Buffer>>,
    bytes: u64,
}

/// Shared pool of idle buffers.
#[derive(Clone)]
pub struct BufferPool {
    idle: Arc<Mutex<Idle>>,
    /// Largest buffer the pool may create (the engine's buffer limit).
    max_bytes: u64,
}

/// The size class of a request for `size` bytes: the next power of two, or
/// where that would pass `max_bytes`, `size` rounded up to 256 bytes (at
/// most `max_bytes`). Never below `size` when `size <= max_bytes`.
fn class_of(size: u64, max_bytes: u64) -> u64 {
    let size = size.max(MIN_CLASS_BYTES);
    match size.checked_next_power_of_two() {
        Some(class) if class <= max_bytes => class,
        _ => size
            .next_multiple_of(MIN_CLASS_BYTES)
            .min(max_bytes)
            .max(size),
    }
}

/// A buffer on loan from the pool; it goes back when dropped.
pub struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    usage: wgpu::BufferUsages,
    pool: BufferPool,
}

impl std::ops::Deref for PooledBuffer {
    type Target = wgpu::Buffer;
    fn deref(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("buffer present until drop")
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            self.pool.give_back(buffer, self.usage);
        }
    }
}

impl BufferPool {
    /// An empty pool whose buffers never pass `max_bytes` (callers keep
    /// their requests within it).
    pub fn new(max_bytes: u64) -> Self {
        BufferPool {
            idle: Arc::default(),
            max_bytes,
        }
    }

    /// A buffer of at least `size` bytes with exactly `usage`.
    pub fn take(
        &self,
        device: &wgpu::Device,
        size: u64,
        usage: wgpu::BufferUsages,
        label: &str,
    ) -> PooledBuffer {
        let class = class_of(size, self.max_bytes);
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let b = idle
                .by_class
                .get_mut(&(usage.bits(), class))
                .and_then(Vec::pop);
            if b.is_some() {
                idle.bytes -= class;
            }
            b
        };
        let buffer = reused.unwrap_or_else(|| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: class,
                usage,
                mapped_at_creation: false,
            })
        });
        PooledBuffer {
            buffer: Some(buffer),
            usage,
            pool: self.clone(),
        }
    }

    fn give_back(&self, buffer: wgpu::Buffer, usage: wgpu::BufferUsages) {
        let class = buffer.size();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.bytes + class > MAX_IDLE_BYTES {
            return;
        }
        let list = idle.by_class.entry((usage.bits(), class)).or_default();
        if list.len() < MAX_IDLE_PER_CLASS {
            list.push(buffer);
            idle.bytes += class;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_powers_of_two_within_the_limit_and_exact_beyond() {
        let gib = 1u64 << 30;
        // i32::MAX, wgpu's cap on Mesa drivers, rounded down to 256 as the
        // engine rounds its buffer limit.
        let max = (i32::MAX as u64) & !255;
        assert_eq!(class_of(1, max), MIN_CLASS_BYTES);
        assert_eq!(class_of(300, max), 512);
        assert_eq!(class_of(gib, max), gib);
        // A piece between 1 GiB and the limit used to become a 2 GiB buffer,
        // one byte over the limit.
        assert_eq!(class_of(gib + 4, max), gib + 256);
        assert_eq!(class_of(max, max), max);
        assert_eq!(class_of(max - 300, max), max - 256);
        for size in [1, 255, 256, 257, gib - 1, gib + 1, max - 1, max] {
            let class = class_of(size, max);
            assert!(class >= size && class <= max, "size {size}: class {class}");
        }
        // No overflow near u64::MAX (a caller bug, but no panic).
        assert_eq!(class_of(u64::MAX - 3, u64::MAX), u64::MAX - 3);
    }
}
