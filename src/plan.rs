//! Plans: from checked partition offsets to the passes that reduce them.
//!
//! A plan is a list of levels. Level 0 (the element pass) cuts every
//! partition into units of [`BLOCK`] items; each later level (the partial
//! pass) cuts each partition's partials from the level below into units of
//! [`GROUP`]; levels stop when every partition has at most one partial. The
//! units, and so the reduction tree, depend only on the partition lengths.
//!
//! Each level is then split into dispatches so that every binding stays
//! within the device limits (binding size, buffer size, workgroups per
//! dimension). How a level is split never changes what a unit computes, so
//! results are the same bits however the input was chunked.

use bytemuck::{Pod, Zeroable};

use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::kernels::{BLOCK, GROUP, Pass};

/// One segment-table entry (`Segment` in reduce.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq, Eq)]
pub struct SegmentEntry {
    pub first_unit: u32,
    pub offset_lo: u32,
    pub last_len: u32,
    pub _pad: u32,
}

/// `SegmentEntry`'s layout, checked against exact.wgsl's `Segment` by
/// tests/wgsl_layout.rs.
pub(crate) fn segment_layout() -> crate::layout::HostStruct {
    crate::layout::host_struct!(
        "Segment",
        SegmentEntry {
            first_unit,
            offset_lo,
            last_len,
            _pad,
        }
    )
}

/// One level of the reduction tree.
#[derive(Clone, Debug)]
pub struct Level {
    pub pass: Pass,
    pub unit_size: u64,
    /// k entries plus a sentinel (`first_unit` = total units).
    pub table: Vec<SegmentEntry>,
    pub units: u64,
    /// First input item of each partition at this level.
    starts: Vec<u64>,
    /// Input items of each partition at this level.
    lens: Vec<u64>,
}

impl Level {
    /// One level over partitions whose items start at `starts` (relative to
    /// the level's input buffer) and hold `lens` items each.
    pub(crate) fn new(
        pass: Pass,
        unit_size: u64,
        starts: Vec<u64>,
        lens: Vec<u64>,
    ) -> Result<Self> {
        let mut table = Vec::with_capacity(starts.len() + 1);
        let mut units = 0u64;
        for (&start, &len) in starts.iter().zip(&lens) {
            let n = len.div_ceil(unit_size);
            table.push(SegmentEntry {
                first_unit: units as u32,
                offset_lo: start as u32,
                last_len: if n == 0 {
                    0
                } else {
                    (len - (n - 1) * unit_size) as u32
                },
                _pad: 0,
            });
            units += n;
            if units > u32::MAX as u64 {
                return Err(Error::InvalidInput(format!(
                    "input too large: more than {} work units of {unit_size} items",
                    u32::MAX
                )));
            }
        }
        table.push(SegmentEntry {
            first_unit: units as u32,
            ..Default::default()
        });
        Ok(Level {
            pass,
            unit_size,
            table,
            units,
            starts,
            lens,
        })
    }

    /// Units of each partition (the input lengths of the next level).
    fn units_per_partition(&self) -> Vec<u64> {
        self.table
            .windows(2)
            .map(|w| (w[1].first_unit - w[0].first_unit) as u64)
            .collect()
    }

    /// Every unit of this level in order: (global unit, first item, items).
    fn for_each_unit(&self, mut f: impl FnMut(u64, u64, u64)) {
        for (p, (&start, &len)) in self.starts.iter().zip(&self.lens).enumerate() {
            let first = self.table[p].first_unit as u64;
            let n = len.div_ceil(self.unit_size);
            for j in 0..n {
                let item = start + j * self.unit_size;
                f(first + j, item, (start + len - item).min(self.unit_size));
            }
        }
    }
}

/// All levels for one set of partitions.
#[derive(Clone, Debug)]
pub struct Plan {
    pub levels: Vec<Level>,
    /// Length of every partition.
    pub partition_lens: Vec<u64>,
    /// Where each partition's final partial sits in the last level's output
    /// (`None` for an empty partition).
    pub final_unit: Vec<Option<u32>>,
}

impl Plan {
    /// [`Plan::new`] for partitions of `dtype` values given by k+1 checked
    /// offsets in values (plans count 32-bit words: two a value for the
    /// 64-bit dtypes).
    pub fn of_values(offsets: &[u64], dtype: Dtype) -> Result<Self> {
        let w = dtype.words();
        let words: Vec<u64> = offsets.iter().map(|o| o * w).collect();
        Plan::new(&words)
    }

    /// Builds the levels for partitions given by k+1 checked offsets.
    pub fn new(offsets: &[u64]) -> Result<Self> {
        let partition_lens: Vec<u64> = offsets.windows(2).map(|w| w[1] - w[0]).collect();
        let mut levels = Vec::new();
        if partition_lens.iter().any(|&l| l > 0) {
            let starts = offsets[..offsets.len() - 1].to_vec();
            levels.push(Level::new(
                Pass::Elements,
                BLOCK,
                starts,
                partition_lens.clone(),
            )?);
            loop {
                let last = levels.last().expect("one level at least");
                let lens = last.units_per_partition();
                if lens.iter().all(|&n| n <= 1) {
                    break;
                }
                let starts = last.table[..lens.len()]
                    .iter()
                    .map(|s| s.first_unit as u64)
                    .collect();
                levels.push(Level::new(Pass::Partials, GROUP, starts, lens)?);
            }
        }
        let final_unit = match levels.last() {
            None => vec![None; partition_lens.len()],
            Some(last) => last.table[..partition_lens.len()]
                .iter()
                .zip(&partition_lens)
                .map(|(s, &len)| (len > 0).then_some(s.first_unit))
                .collect(),
        };
        Ok(Plan {
            levels,
            partition_lens,
            final_unit,
        })
    }

    /// Units in the last level (one per non-empty partition).
    pub fn final_units(&self) -> u64 {
        self.levels.last().map_or(0, |l| l.units)
    }
}

/// Levels that [`Plan::new`] builds for a single partition of `len` items
/// (0 for an empty one). A plan over several partitions has as many levels
/// as its deepest partition; shallower partitions pass through the extra
/// levels as units of one partial.
pub(crate) fn depth_of(len: u64) -> usize {
    if len == 0 {
        return 0;
    }
    let mut units = len.div_ceil(BLOCK);
    let mut levels = 1;
    while units > 1 {
        units = units.div_ceil(GROUP);
        levels += 1;
    }
    levels
}

/// A contiguous run of items held by one buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub base_item: u64,
    pub items: u64,
}

/// A binding window: which buffer, which bytes, and the item at its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub buffer: usize,
    pub byte_offset: u64,
    pub byte_size: u64,
    pub base_item: u64,
}

/// One compute dispatch of one level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dispatch {
    pub level: usize,
    pub unit_base: u32,
    pub unit_count: u32,
    pub input: Window,
    pub output: Window,
}

/// The device limits that shape dispatches.
#[derive(Clone, Copy, Debug)]
pub struct DispatchLimits {
    pub max_binding_bytes: u64,
    pub offset_alignment: u64,
    pub max_units_per_dispatch: u64,
}

/// Splits `level` into dispatches. `inputs` are the buffers holding the
/// level's input items (overlapping by at least one unit, so that every unit
/// lies wholly inside one buffer); `item_bytes` is 4 (input words) or
/// `partial_bytes` (the partials of the level below), and `partial_bytes`
/// the size of the partials this level writes.
pub fn dispatches(
    level_index: usize,
    level: &Level,
    inputs: &[Span],
    item_bytes: u64,
    partial_bytes: u64,
    limits: &DispatchLimits,
) -> Vec<Dispatch> {
    let align_items = aligned_step(limits.offset_alignment, item_bytes);
    let max_items = (limits.max_binding_bytes & !15) / item_bytes;
    let out_align = aligned_step(limits.offset_alignment, partial_bytes);
    let out_max = (limits.max_binding_bytes & !15) / partial_bytes;
    let mut out = Vec::new();
    // The dispatch being grown, with its window bounds and the extents used.
    struct Open {
        d: Dispatch,
        win_end: u64,
        out_end: u64,
        used_end: u64,
        buf_end: u64,
    }
    let close = |o: Open, out: &mut Vec<Dispatch>| {
        let mut d = o.d;
        let used = (o.used_end - d.input.base_item) * item_bytes;
        let buf_bytes = (o.buf_end - d.input.base_item) * item_bytes;
        d.input.byte_size = used
            .next_multiple_of(16)
            .min(buf_bytes.next_multiple_of(16));
        d.output.byte_size =
            (d.unit_base as u64 + d.unit_count as u64 - d.output.base_item) * partial_bytes;
        out.push(d);
    };
    let mut open: Option<Open> = None;
    level.for_each_unit(|unit, start, len| {
        if let Some(o) = open.as_mut() {
            let fits = start >= o.d.input.base_item
                && start + len <= o.win_end
                && start + len <= o.buf_end
                && unit < o.out_end
                && (o.d.unit_count as u64) < limits.max_units_per_dispatch;
            if fits {
                o.d.unit_count += 1;
                o.used_end = o.used_end.max(start + len);
                return;
            }
            close(open.take().expect("open dispatch"), &mut out);
        }
        let b = buffer_for(inputs, start, len);
        let span = inputs[b];
        let win_start = span.base_item + (start - span.base_item) / align_items * align_items;
        let out_start = unit / out_align * out_align;
        open = Some(Open {
            d: Dispatch {
                level: level_index,
                unit_base: unit as u32,
                unit_count: 1,
                input: Window {
                    buffer: b,
                    byte_offset: (win_start - span.base_item) * item_bytes,
                    byte_size: 0,
                    base_item: win_start,
                },
                output: Window {
                    buffer: 0,
                    byte_offset: out_start * partial_bytes,
                    byte_size: 0,
                    base_item: out_start,
                },
            },
            win_end: win_start + max_items,
            out_end: out_start + out_max,
            used_end: start + len,
            buf_end: span.base_item + span.items,
        });
    });
    if let Some(o) = open {
        close(o, &mut out);
    }
    out
}

/// The fewest items of `item_bytes` whose bytes are a multiple of `align`.
fn aligned_step(align: u64, item_bytes: u64) -> u64 {
    let gcd = |mut a: u64, mut b: u64| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    (align / gcd(align.max(1), item_bytes)).max(1)
}

/// The buffer that holds items `start..start + len` wholly.
fn buffer_for(inputs: &[Span], start: u64, len: u64) -> usize {
    // Spans are sorted by base; take the last one starting at or before `start`
    // that still holds the whole unit.
    let mut i = inputs
        .partition_point(|s| s.base_item <= start)
        .saturating_sub(1);
    while i > 0 && start + len > inputs[i].base_item + inputs[i].items {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_stop_at_one_partial_per_partition() {
        let plan = Plan::new(&[0, 0, 10, 10 + BLOCK * GROUP + 1]).unwrap();
        assert_eq!(plan.levels.len(), 3);
        assert_eq!(plan.levels[0].units, 1 + GROUP + 1);
        assert_eq!(plan.levels[1].units, 1 + 2);
        assert_eq!(plan.levels[2].units, 2);
        assert_eq!(plan.final_unit, vec![None, Some(0), Some(1)]);
        let empty = Plan::new(&[0, 0, 0]).unwrap();
        assert!(empty.levels.is_empty());
        assert_eq!(empty.final_unit, vec![None, None]);
    }

    #[test]
    fn depth_of_matches_the_plan() {
        for len in [
            0,
            1,
            BLOCK,
            BLOCK + 1,
            BLOCK * GROUP,
            BLOCK * GROUP + 1,
            BLOCK * GROUP * GROUP + 1,
        ] {
            let plan = Plan::new(&[0, len]).unwrap();
            assert_eq!(depth_of(len), plan.levels.len(), "len {len}");
        }
    }

    #[test]
    fn dispatches_cover_every_unit_once_within_limits() {
        let offsets = [0u64, 5, 5, 70_000, 70_001, 300_000];
        let plan = Plan::new(&offsets).unwrap();
        let limits = DispatchLimits {
            max_binding_bytes: 65536,
            offset_alignment: 256,
            max_units_per_dispatch: 3,
        };
        // Buffers of 16000 + BLOCK items, overlapping by one block.
        let inputs = crate::device_array::split_into_spans(300_000, 16_000 + BLOCK);
        assert!(inputs.len() > 10);
        let ds = dispatches(0, &plan.levels[0], &inputs, 4, 64, &limits);
        let mut next = 0u64;
        for d in &ds {
            assert_eq!(d.unit_base as u64, next);
            next += d.unit_count as u64;
            assert!(d.unit_count as u64 <= limits.max_units_per_dispatch);
            assert!(d.input.byte_size <= limits.max_binding_bytes);
            assert_eq!(d.input.byte_offset % 256, 0);
            assert_eq!(d.output.byte_offset % 256, 0);
            let span = inputs[d.input.buffer];
            assert!(
                d.input.byte_offset + d.input.byte_size <= (span.items * 4).next_multiple_of(16)
            );
        }
        assert_eq!(next, plan.levels[0].units);
    }
}
