//! The one error type of the crate. Every failure a user can cause (bad
//! partitions, bad files, bad environment) has its own variant with a message
//! that names the problem; nothing a user passes in makes the engine panic.
//!
//! Errors wgpu reports are kept as [`std::error::Error::source`]s (behind an
//! `Arc`, so [`Error`] stays `Clone`: one failure of a coalesced submission
//! reaches every request in it). The enum is `#[non_exhaustive]`: match the
//! variants you act on and keep a catch-all arm.

use std::path::PathBuf;
use std::sync::Arc;

/// Errors returned by gpulanes.
///
/// What a caller can do, by variant:
/// - fix the call: [`InvalidInput`](Error::InvalidInput),
///   [`InvalidPartitions`](Error::InvalidPartitions),
///   [`InvalidState`](Error::InvalidState), [`File`](Error::File),
///   [`InvalidEnv`](Error::InvalidEnv), [`Overflow`](Error::Overflow);
/// - open another device: [`DeviceLost`](Error::DeviceLost),
///   [`NoAdapter`](Error::NoAdapter), [`AdapterNotFound`](Error::AdapterNotFound),
///   [`RequestDevice`](Error::RequestDevice);
/// - retry smaller or later: [`OutOfMemory`](Error::OutOfMemory),
///   [`QueueFull`](Error::QueueFull), [`DeadlineExceeded`](Error::DeadlineExceeded),
///   [`Wait`](Error::Wait), [`Map`](Error::Map), [`Thread`](Error::Thread);
/// - report a bug: [`Validation`](Error::Validation) (unless the app shares
///   the device and misused it), [`Internal`](Error::Internal).
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No adapter was found for the requested backends (`WGPU_BACKEND`).
    /// Install a driver (Vulkan, Metal, DX12, or Mesa's lavapipe for a
    /// CPU-only machine) or widen the backends; `hint` says which.
    #[error("no GPU adapter found (backends: {backends}); {hint}")]
    NoAdapter { backends: String, hint: String },
    /// `WGPU_ADAPTER_NAME` matched none of the adapters (`found` lists
    /// them): fix the variable.
    #[error("no adapter name contains {wanted:?} (WGPU_ADAPTER_NAME); adapters found: {found}")]
    AdapterNotFound { wanted: String, found: String },
    /// An environment variable holds a value gpulanes does not understand:
    /// set it to one of `expected` or unset it.
    #[error("invalid {var}={value:?}: expected {expected}")]
    InvalidEnv {
        var: &'static str,
        value: String,
        expected: &'static str,
    },
    /// The adapter refused to create a device (missing features or limits,
    /// a driver failure): try another adapter.
    #[error("could not open a device on adapter {adapter:?}: {source}")]
    RequestDevice {
        /// The adapter's name.
        adapter: String,
        /// The error wgpu returned.
        #[source]
        source: Arc<wgpu::RequestDeviceError>,
    },
    /// The partitions do not describe the input (offsets not
    /// non-decreasing, not starting at 0 or not ending at the length, a
    /// zero partition size, ...): the message names the first problem.
    #[error("invalid partitions: {0}")]
    InvalidPartitions(String),
    /// The input itself is unusable (wrong dtype or shape, an axis out of
    /// range, an array of another engine, a buffer without the usage the
    /// engine needs, ...): the message names the argument and the problem.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The device is lost (destroyed by the app, reset by the driver,
    /// unplugged): this request and every later one on the engine fail
    /// with this error; build a new [`Engine`](crate::Engine) to go on.
    #[error("GPU device lost: {message}")]
    DeviceLost {
        /// Why, in words: the driver's message, or the first sign of the
        /// loss the engine saw.
        message: String,
        /// What wgpu's device-lost callback said:
        /// [`Destroyed`](wgpu::DeviceLostReason::Destroyed) when the device
        /// was destroyed (by the app), [`Unknown`](wgpu::DeviceLostReason::Unknown)
        /// when the driver lost it; `None` when the engine found the device
        /// refusing work before wgpu reported the loss.
        reason: Option<wgpu::DeviceLostReason>,
        /// The wgpu error with which this request met the loss (a failed
        /// wait, map or command), where there was one.
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// The device cannot hold what this request needs: an allocation
    /// failed (`source` holds wgpu's out-of-memory error), or one buffer
    /// the engine cannot split would pass the device's largest buffer
    /// (refused before allocating; no `source`). Only this request fails;
    /// smaller requests go on (or free GPU memory and retry).
    #[error("out of GPU memory: {message}")]
    OutOfMemory {
        /// What did not fit, or what the engine was doing when an
        /// allocation failed.
        message: String,
        /// wgpu's error, where an allocation failed.
        #[source]
        source: Option<Arc<wgpu::Error>>,
    },
    /// wgpu rejected a command of this request as invalid (a validation
    /// error in the request's error scope). On a device only the engine
    /// uses this is a bug in gpulanes: please report it. On a device the
    /// app shares, the app may have broken what the engine relies on (for
    /// example destroyed a buffer given to
    /// [`DeviceArray::from_buffer`](crate::DeviceArray::from_buffer)). Only
    /// this request fails.
    #[error("GPU validation error ({context}): {source}")]
    Validation {
        /// What the engine was doing.
        context: String,
        /// The error wgpu reported.
        #[source]
        source: Arc<wgpu::Error>,
    },
    /// Waiting for the GPU failed on a device that is not lost (a poll
    /// timed out or was refused). Retrying may succeed; if it keeps
    /// failing, open a new engine.
    #[error("{context} failed: {source}")]
    Wait {
        /// What the engine was waiting for.
        context: String,
        /// The error wgpu's poll returned.
        #[source]
        source: Arc<wgpu::PollError>,
    },
    /// Mapping a staging or readback buffer failed on a device that is not
    /// lost. Retrying may succeed; if it keeps failing, open a new engine.
    #[error("{context} failed: {source}")]
    Map {
        /// Which buffer the engine was mapping.
        context: String,
        /// The error wgpu reported.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// The operating system refused to start one of the engine's threads
    /// (a scheduler's, or the poller of the async forms; too many threads,
    /// out of memory): free resources and retry.
    #[error("cannot start the {thread} thread: {source}")]
    Thread {
        /// Which thread.
        thread: &'static str,
        /// The error the OS returned.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A rule gpulanes keeps internally was broken (a result of the wrong
    /// shape or type, a callback that never ran, a result that disagrees
    /// with the exact CPU reference): a bug in gpulanes or the driver.
    /// Please report it with the message.
    #[error("internal error (a bug in gpulanes): {0}")]
    Internal(String),
    /// An integer sum does not fit its result type (int64): reduce smaller
    /// pieces, or a float copy of the data.
    #[error("overflow: {0}")]
    Overflow(String),
    /// Partial-state bytes that are corrupt, foreign or of another version,
    /// or states that cannot be merged (different kinds or dtypes).
    #[error("invalid partial state: {0}")]
    InvalidState(String),
    /// The request was cancelled (by its handle, or the handle was
    /// dropped); nothing to do.
    #[error("cancelled")]
    Cancelled,
    /// A real-time request's deadline passed before its result was ready:
    /// its result is dropped; retry with a later deadline or less load.
    #[error("deadline exceeded by {late_by:?}")]
    DeadlineExceeded { late_by: std::time::Duration },
    /// A lane's queue is full and the lane is configured to reject: retry
    /// later (the `try_` submit forms hand the request back instead).
    #[error("{lane} queue is full ({detail})")]
    QueueFull { lane: &'static str, detail: String },
    /// The scheduler is shutting down (or was dropped): no more requests.
    #[error("the scheduler is shut down")]
    Shutdown,
    /// A file could not be read or is malformed (truncated, a lying
    /// header, an unsupported dtype): the message says which.
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
}

impl Error {
    /// A validation error wgpu reported while the engine did `context`.
    pub(crate) fn validation(context: impl Into<String>, e: wgpu::Error) -> Self {
        Error::Validation {
            context: context.into(),
            source: Arc::new(e),
        }
    }

    /// A failed poll on a device that is not lost.
    pub(crate) fn wait(context: impl Into<String>, e: wgpu::PollError) -> Self {
        Error::Wait {
            context: context.into(),
            source: Arc::new(e),
        }
    }

    /// A failed map on a device that is not lost.
    pub(crate) fn map(
        context: impl Into<String>,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Map {
            context: context.into(),
            source: Arc::new(e),
        }
    }

    /// The error for one of wgpu's errors caught in a scope: out of memory
    /// stays out of memory, the rest is a validation (or internal) error.
    pub(crate) fn from_wgpu(context: impl Into<String>, e: wgpu::Error) -> Self {
        match e {
            wgpu::Error::OutOfMemory { .. } => Error::out_of_memory(context, e),
            e => Error::validation(context, e),
        }
    }

    /// An allocation wgpu refused while the engine did `context`.
    pub(crate) fn out_of_memory(context: impl Into<String>, e: wgpu::Error) -> Self {
        Error::OutOfMemory {
            message: context.into(),
            source: Some(Arc::new(e)),
        }
    }

    /// A buffer the engine refused before allocating it: `message` says
    /// which and how large.
    pub(crate) fn too_large(message: impl Into<String>) -> Self {
        Error::OutOfMemory {
            message: message.into(),
            source: None,
        }
    }

    /// A lost device met while doing `what`, with the wgpu error that
    /// showed it (the loss itself, reason and all, is in `device_health`).
    pub(crate) fn lost_while(
        what: impl Into<String>,
        source: Arc<dyn std::error::Error + Send + Sync>,
    ) -> Self {
        Error::DeviceLost {
            message: what.into(),
            reason: None,
            source: Some(source),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
