//! The reader thread of file and reader streams: fills host chunks from a
//! byte stream, checks its length against what the header announced, and
//! hands the chunks to the uploading thread over a bounded channel; read
//! failures come back as errors naming the file and the byte offset.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use super::{HOST_CHUNKS, ProgressFn};
use crate::error::Error;
use crate::npy;

/// Where a byte stream comes from (for error messages) and how long it is.
pub(super) struct Source {
    pub(super) name: PathBuf,
    /// Byte offset of the reader's first byte in the file (for messages).
    pub(super) data_offset: u64,
    pub(super) expected_bytes: Option<u64>,
}

pub(super) enum Msg {
    Data(Vec<f32>, usize),
    End,
    Failed(ReadFailure),
}

pub(super) enum ReadFailure {
    Io { offset: u64, error: std::io::Error },
    MidValue { offset: u64 },
    EndsEarly { offset: u64, expected: u64 },
    Extra { offset: u64 },
}

impl ReadFailure {
    /// The error, with offsets counted in the file (`base` is the byte
    /// offset of the reader's first byte).
    pub(super) fn into_error(self, name: &Path, base: u64) -> Error {
        let message = match self {
            ReadFailure::Io { offset, error } => {
                format!("read error at byte {}: {error}", base + offset)
            }
            ReadFailure::MidValue { offset } => format!(
                "the data ends at byte {}, in the middle of a float32 value \
                 (the data must be a whole number of 4-byte values)",
                base + offset
            ),
            // The same words as the in-memory reader's.
            ReadFailure::EndsEarly { offset, expected } => {
                npy::truncated_message(base + offset, base + expected)
            }
            ReadFailure::Extra { offset } => npy::trailing_message(base + offset),
        };
        Error::File {
            path: name.to_path_buf(),
            message,
        }
    }
}

/// The reader thread: fills host chunks (at most [`HOST_CHUNKS`], recycled)
/// and sends them on. Offsets in errors count from the reader's start (for
/// a `.npy`, the first data byte; the caller adds the header length).
pub(super) fn read_loop<R: Read>(
    mut reader: R,
    chunk_items: usize,
    expected: Option<u64>,
    tx: mpsc::SyncSender<Msg>,
    recycle: mpsc::Receiver<Vec<f32>>,
    progress: Option<ProgressFn>,
) {
    let chunk_bytes = chunk_items as u64 * 4;
    let mut offset = 0u64;
    let mut allocated = 0;
    loop {
        let mut buf = match recycle.try_recv() {
            Ok(b) => b,
            Err(_) if allocated < HOST_CHUNKS => {
                allocated += 1;
                vec![0f32; chunk_items]
            }
            Err(_) => match recycle.recv() {
                Ok(b) => b,
                Err(_) => return,
            },
        };
        let want = expected.map_or(chunk_bytes, |e| chunk_bytes.min(e - offset)) as usize;
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut buf[..]);
        let mut filled = 0;
        while filled < want {
            match reader.read(&mut bytes[filled..want]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => {
                    let offset = offset + filled as u64;
                    let _ = tx.send(Msg::Failed(ReadFailure::Io { offset, error }));
                    return;
                }
            }
        }
        offset += filled as u64;
        if let Some(p) = &progress {
            p(offset);
        }
        let at_end = filled < want || expected == Some(offset);
        let failure = match expected {
            Some(e) if at_end && offset < e => Some(ReadFailure::EndsEarly {
                offset,
                expected: e,
            }),
            None if !filled.is_multiple_of(4) => Some(ReadFailure::MidValue { offset }),
            Some(_) if at_end => {
                // The announced data is all there: anything more is corrupt,
                // and a read that fails here is reported like any other.
                let mut probe = [0u8; 1];
                loop {
                    match reader.read(&mut probe) {
                        Ok(0) => break None,
                        Ok(_) => break Some(ReadFailure::Extra { offset }),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(error) => break Some(ReadFailure::Io { offset, error }),
                    }
                }
            }
            _ => None,
        };
        if let Some(f) = failure {
            let _ = tx.send(Msg::Failed(f));
            return;
        }
        #[cfg(target_endian = "big")]
        for x in &mut buf[..filled / 4] {
            *x = f32::from_bits(u32::from_le(x.to_bits()));
        }
        if filled > 0 && tx.send(Msg::Data(buf, filled / 4)).is_err() {
            return;
        }
        if at_end {
            let _ = tx.send(Msg::End);
            return;
        }
    }
}
