//! gpulanes: a GPU compute engine for parallel reductions (sum, mean, max,
//! min, count) over whole and partitioned f32 buffers, written in WGSL and
//! run through wgpu on Vulkan, Metal, DX12 or GL.
//!
//! ```no_run
//! use gpulanes::{Engine, NanPolicy, Op, Partitions};
//! let engine = Engine::new()?;
//! let data: Vec<f32> = (0..1_000_000).map(|i| i as f32).collect();
//! let total = engine.sum(&data)?;
//! let per_block = engine.reduce_partitions(&data, Op::Max, &Partitions::EqualSize(1000), NanPolicy::Propagate)?;
//! # Ok::<(), gpulanes::Error>(())
//! ```
//!
//! Results are deterministic (the same input gives the same bits whatever
//! the chunking) and f32 sums are compensated (double-single arithmetic):
//! the error is at most 2 ulps plus 2^-38 × Σ|x|, so a few ulps of the
//! exactly rounded sum unless the values cancel by more than about 2^14
//! (Σ|x| / |Σx| > 16384).

pub mod adapter;
pub mod bench;
pub mod cpu;
mod device_array;
mod device_health;
mod engine;
mod error;
pub mod exact;
mod exec;
mod fit;
mod groups;
pub mod kernels;
pub mod lanes;
pub mod mixed;
pub mod npy;
mod op;
mod partial;
mod partition;
mod plan;
mod pool;
mod readback;
pub mod stream;

pub use adapter::AdapterSummary;
pub use device_array::DeviceArray;
pub use engine::{EffectiveLimits, Engine, EngineOptions, PendingReduction};
pub use error::{Error, Result};
pub use kernels::KernelShape;
pub use lanes::{Handle, Lane, Lanes, LanesConfig, Request};
pub use op::{NanPolicy, Op, Reduction};
pub use partition::Partitions;
pub use stream::{
    FileFormat, InputFile, StreamOptions, StreamReducer, StreamStats, StreamThroughput,
};
