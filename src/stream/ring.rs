//! The upload ring: the chunk size and the units per submission derived
//! from the memory budget ([`Layout`]), and the ring's slots ([`Slot`]), each
//! a mappable staging buffer and the device input buffer the element pass
//! reads, with the mapping state of the staging buffer.

use std::sync::Arc;
use std::sync::atomic::AtomicU8;

use super::{BUDGET_SHARES, MAX_CHUNK_BYTES, StreamOptions};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::{BLOCK, SEGMENT_BYTES};

pub(super) const MAPPED: u8 = 1;
pub(super) const MAPPING: u8 = 0;
pub(super) const MAP_FAILED: u8 = 2;

/// One ring slot: a mappable staging buffer and the device buffer the
/// element pass reads.
pub(super) struct Slot {
    pub(super) staging: wgpu::Buffer,
    pub(super) input: wgpu::Buffer,
    pub(super) state: Arc<AtomicU8>,
}

/// Sizes derived from the budget.
#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    pub(super) chunk_items: u64,
    /// Units (segments) per submission: bounds tables and partial buffers.
    pub(super) max_units: usize,
}

impl Layout {
    pub(super) fn new(ctx: &Context, options: &StreamOptions) -> Result<Self> {
        super::check_budget(options.budget_bytes)?;
        let max_items = (ctx.limits.max_buffer_bytes.min(MAX_CHUNK_BYTES) / 4) & !63;
        let chunk_items = match options.chunk_bytes {
            Some(c) if c < BLOCK * 4 || !c.is_multiple_of(256) => {
                return Err(Error::InvalidInput(format!(
                    "chunk size {c} bytes: must be a multiple of 256 and at least {}",
                    BLOCK * 4
                )));
            }
            Some(c) => (c / 4).min(max_items),
            None => ((options.budget_bytes / BUDGET_SHARES / 4) & !63).clamp(BLOCK, max_items),
        };
        // A submission's segment table (one entry per unit, plus a
        // sentinel) must fit one binding, whatever the chunk size.
        let table_units = (ctx.limits.max_binding_bytes / SEGMENT_BYTES).saturating_sub(1);
        let max_units = (chunk_items * 4 / 64).max(64).min(table_units) as usize;
        Ok(Layout {
            chunk_items,
            max_units,
        })
    }
}
