//! A small buffer pool: buffers are reused by (usage, power-of-two size
//! class), so steady streams of reductions allocate nothing. The pool keeps
//! at most a few idle buffers per class and a bounded number of idle bytes.

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
#[derive(Clone, Default)]
pub struct BufferPool {
    idle: Arc<Mutex<Idle>>,
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
    /// A buffer of at least `size` bytes with exactly `usage`.
    pub fn take(
        &self,
        device: &wgpu::Device,
        size: u64,
        usage: wgpu::BufferUsages,
        label: &str,
    ) -> PooledBuffer {
        let class = size.max(MIN_CLASS_BYTES).next_power_of_two();
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
