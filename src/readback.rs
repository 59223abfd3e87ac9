//! Reading GPU results back without blocking: map a buffer, read it while
//! mapped, unmap it, then hand on what was read. One place for the order
//! that every asynchronous readback needs (the view dropped before the
//! unmap, the unmap before the buffer is reused) and for the errors.

use std::sync::Arc;

use crate::error::{Error, Result};

/// Maps `0..bytes` of `buffer` for reading. Once the GPU is done with it
/// (inside a `device.poll`, on whichever thread polls), `read` gets the
/// mapped bytes, or the error naming `what`; then the buffer is unmapped,
/// and only then does `then` get what `read` returned, so a buffer (or the
/// job holding it) that `then` hands back is ready for reuse.
///
/// A failed map, or a failed view of the mapped range, is
/// [`Error::DeviceLost`]: the engine maps only its own readback buffers,
/// within bounds, once per submission, and reads them inside the callback;
/// wgpu fails that only when the device is lost (a lost device refuses new
/// maps and destroys its buffers, pending maps included).
pub(crate) fn map_read<R: Send + 'static>(
    buffer: &wgpu::Buffer,
    bytes: u64,
    what: &'static str,
    read: impl FnOnce(Result<&[u8]>) -> R + Send + 'static,
    then: impl FnOnce(R) + Send + 'static,
) {
    let mapped = buffer.clone();
    buffer.map_async(wgpu::MapMode::Read, 0..bytes, move |r| {
        let out = match r
            .map_err(|e| Error::lost_while(format!("mapping {what} failed"), Arc::new(e)))
            .and_then(|()| {
                mapped
                    .get_mapped_range(0..bytes)
                    .map_err(|e| Error::lost_while(format!("reading {what} failed"), Arc::new(e)))
            }) {
            Ok(view) => read(Ok(&view)),
            Err(e) => read(Err(e)),
        };
        mapped.unmap();
        then(out);
    });
}
