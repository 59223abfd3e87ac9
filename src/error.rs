//! The one error type of the crate. Every failure a user can cause (bad
//! partitions, bad files, bad environment) has its own variant with a message
//! that names the problem; nothing a user passes in makes the engine panic.

use std::path::PathBuf;

/// Errors returned by gpulanes.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// No adapter was found for the requested backends.
    #[error("no GPU adapter found (backends: {backends}); {hint}")]
    NoAdapter { backends: String, hint: String },
    /// `WGPU_ADAPTER_NAME` matched none of the adapters.
    #[error("no adapter name contains {wanted:?} (WGPU_ADAPTER_NAME); adapters found: {found}")]
    AdapterNotFound { wanted: String, found: String },
    /// An environment variable holds a value we do not understand.
    #[error("invalid {var}={value:?}: expected {expected}")]
    InvalidEnv {
        var: &'static str,
        value: String,
        expected: &'static str,
    },
    /// The adapter refused to create a device.
    #[error("could not open a device on adapter {adapter:?}: {message}")]
    RequestDevice { adapter: String, message: String },
    /// The partitions do not describe the input.
    #[error("invalid partitions: {0}")]
    InvalidPartitions(String),
    /// The input itself is unusable (wrong shape, too large, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The device is lost (destroyed by the app, reset by the driver,
    /// unplugged): this request and every later one on the engine fail
    /// with this error; build a new [`Engine`](crate::Engine) to go on.
    #[error("GPU device lost: {0}")]
    DeviceLost(String),
    /// The device cannot hold what this request needs: an allocation
    /// failed, or one buffer the engine cannot split would pass the
    /// device's largest buffer. Only this request fails; smaller requests
    /// go on.
    #[error("out of GPU memory: {0}")]
    OutOfMemory(String),
    /// Any other error the GPU reported (validation: a bug in gpulanes or
    /// in the app's use of a shared device).
    #[error("GPU error: {0}")]
    Gpu(String),
    /// An integer sum does not fit its result type (int64).
    #[error("overflow: {0}")]
    Overflow(String),
    /// Partial-state bytes that are corrupt, foreign or of another version,
    /// or states that cannot be merged.
    #[error("invalid partial state: {0}")]
    InvalidState(String),
    /// The request was cancelled (by its handle, or the handle was dropped).
    #[error("cancelled")]
    Cancelled,
    /// A real-time request's deadline passed before its result was ready.
    #[error("deadline exceeded by {late_by:?}")]
    DeadlineExceeded { late_by: std::time::Duration },
    /// A lane's queue is full and the lane is configured to reject.
    #[error("{lane} queue is full ({detail})")]
    QueueFull { lane: &'static str, detail: String },
    /// The scheduler is shutting down (or was dropped).
    #[error("the scheduler is shut down")]
    Shutdown,
    /// A file could not be read or is malformed.
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
