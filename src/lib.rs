//! gpulanes: a GPU compute engine for parallel reductions (sum, mean, max,
//! min, count) over whole and partitioned buffers of float32, float64,
//! int32, uint32 and int64, written in WGSL and run through wgpu on Vulkan,
//! Metal, DX12 or GL.
//!
//! ```
//! use gpulanes::{Engine, NanPolicy, Op, Partitions};
//! let engine = Engine::new()?;
//! let data: Vec<f32> = (0..1_000_000).map(|i| i as f32).collect();
//! let total = engine.sum(&data)?;
//! let per_block = engine.reduce_partitions(&data, Op::Max, &Partitions::EqualSize(1000), NanPolicy::Propagate)?;
//! // The same from async code, on any executor: `engine.sum_async(&data).await?`.
//! let again = pollster::block_on(engine.sum_async(&data))?;
//! assert_eq!(again.to_bits(), total.to_bits());
//! # Ok::<(), gpulanes::Error>(())
//! ```
//!
//! Sums are exact: every value is decoded from its bits into an integer
//! accumulator and the exact sum is rounded once to the result type (see
//! [`crate::op`] and [`crate::dtype`]), so results are the same bits in any
//! order, chunking, kernel shape or device, and partial [`State`]s of any
//! split of the data merge into the bits of one reduction.

pub mod adapter;
#[cfg(feature = "arrow")]
pub mod arrow;
mod context;
pub mod cpu;
mod device_array;
mod device_health;
pub mod dtype;
mod engine;
mod error;
pub mod exact;
mod exec;
mod fit;
mod future;
mod groups;
mod keyed;
pub mod lanes;
pub mod op;
mod options;
mod partial;
mod partition;
mod plan;
mod poller;
mod pool;
mod readback;
pub mod state;
pub mod state_columns;
pub mod stream;
mod sync;
#[cfg(test)]
mod test_rng;
mod threads;
pub mod timing;
mod upload;
mod validity;
mod workers;

// Not part of the library's API, so hidden from its documentation:
// - `kernels` and `layout`: the WGSL sources and the constants and structs
//   the engine builds from, for the shader and layout tests;
// - `npy`: the file readers, for the command-line tool, the fuzz targets and
//   the reader tests (apps read files through `stream`).
#[doc(hidden)]
pub mod kernels;
#[doc(hidden)]
pub mod layout;
#[doc(hidden)]
pub mod npy;

/// The ndarray this crate's view APIs take.
pub use ndarray;
/// The wgpu this crate is built on: use it for devices and buffers given
/// to [`Engine::from_device`] and [`DeviceArray::from_buffer`], so the
/// versions cannot differ.
pub use wgpu;

// The README's Rust snippets run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use adapter::AdapterSummary;
#[cfg(feature = "arrow")]
pub use arrow::{Aggregate, ArrowGrouped};
pub use context::EffectiveLimits;
pub use device_array::DeviceArray;
pub use dtype::{Dtype, Element, Scalar};
pub use engine::{Engine, PendingReduction, PendingTypedReduction};
pub use error::{Error, Result};
pub use future::ReductionFuture;
pub use kernels::KernelShape;
pub use keyed::columns::GroupedStateColumns;
pub use keyed::composite::{CompositeKeys, KeyColumn, KeyValues};
pub use keyed::index::GroupIndex;
pub use keyed::stream::Column;
pub use keyed::{
    DENSE_FLOOR, DENSE_SLACK, Grouped, GroupedStates, Key, MAX_SORTED_ROWS, SMALL_PARTITION,
};
pub use lanes::{
    Handle, KeyedRequest, Lane, Lanes, LanesConfig, Request, Submission, TrySubmitError,
};
pub use op::{NanPolicy, Op, Reduction};
pub use options::EngineOptions;
pub use partition::Partitions;
pub use state::{State, StateKind};
pub use state_columns::StateColumns;
pub use stream::{
    FileFormat, InputFile, StreamOptions, StreamReducer, StreamStats, StreamThroughput,
};
pub use timing::{GpuTimer, TimerSlot};
pub use validity::Validity;
