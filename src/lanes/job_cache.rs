//! Prepared real-time jobs kept for reuse. A group of real-time requests
//! whose shape (kernel, dtype and partition offsets) was seen before gets back the
//! buffers, segment tables, parameters and bind groups made for it then
//! (as wgpu's `repeated_compute` example makes them once), so the repeat
//! costs one upload of its data instead of a plan, three uploads and a bind
//! group per dispatch. Only small, single-buffer groups are kept, and at
//! most [`JobCache::CAPACITY`] of them, oldest out first.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::dtype::Dtype;
use crate::exec::Job;
use crate::op::KernelOp;
use crate::pool::PooledBuffer;

/// A job with the input buffer its bind groups read.
pub(crate) struct PreparedJob {
    pub job: Job,
    /// The input's first (for kept jobs: only) buffer.
    pub input: PooledBuffer,
    /// The whole input is in `input`, so new data can be written there.
    pub single_buffer: bool,
}

/// What a prepared job was made for.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct JobShape {
    pub kernel: KernelOp,
    pub dtype: Dtype,
    /// The group's partition offsets in 32-bit words, 0 first, total last.
    pub offsets: Vec<u64>,
}

impl JobShape {
    /// Groups up to this many input bytes are kept...
    pub const MAX_BYTES: u64 = 1 << 20;
    /// ...and up to this many partitions (a kept job's tables, partials and
    /// readback grow with its partitions, empty ones included).
    pub const MAX_PARTITIONS: usize = 4096;

    pub fn cacheable(&self) -> bool {
        self.offsets.len() <= Self::MAX_PARTITIONS + 1
            && self
                .offsets
                .last()
                .is_some_and(|&n| n * 4 <= Self::MAX_BYTES)
    }
}

/// Idle prepared jobs, newest first.
#[derive(Default)]
pub(crate) struct JobCache {
    idle: Mutex<VecDeque<(JobShape, PreparedJob)>>,
}

impl JobCache {
    /// Jobs kept at most (a few per shape for the real-time submissions in
    /// flight, across a few shapes). With the shape limits above, a kept
    /// job holds at most about 1.5 MiB of device memory (input, tables,
    /// partials, readback), all kept jobs together about 24 MiB.
    pub const CAPACITY: usize = 16;

    /// An idle job made for `shape`, if any.
    pub fn take(&self, shape: &JobShape) -> Option<PreparedJob> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let at = idle.iter().position(|(s, _)| s == shape)?;
        idle.remove(at).map(|(_, job)| job)
    }

    /// Keeps `job` (whose GPU work has completed) for the next group of
    /// its shape; the oldest idle job goes if the cache is full.
    pub fn keep(&self, shape: JobShape, job: PreparedJob) {
        if !shape.cacheable() || !job.single_buffer {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.push_front((shape, job));
        idle.truncate(Self::CAPACITY);
    }
}
