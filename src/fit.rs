//! Whether one reduction's buffers fit the device.
//!
//! Inputs are split across buffers (and batch jobs over host data stream
//! through a ring), but a reduction's partials (one per unit of its first
//! level) and its segment tables are one buffer each. A reduction whose
//! partials or tables would pass the device's largest buffer cannot run on
//! it: it is refused with [`Error::OutOfMemory`] before its GPU work is
//! prepared (a real-time request when it is submitted), rather than
//! failing on the device, where (coalesced with other real-time requests)
//! it would fail them too. The limit is the
//! device's own; the engine's caps (`EngineOptions`) bound only what the
//! engine can split.

use crate::context::Context;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::kernels::SEGMENT_BYTES;
use crate::plan::Plan;

/// What sizes a reduction's unsplittable buffers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Footprint {
    /// Units of the first level (the largest: later levels have fewer).
    pub units: u64,
    /// Partitions (each level's segment table has one entry per partition
    /// and a sentinel).
    pub partitions: u64,
    /// Levels of the tree (0 when there is nothing to run).
    pub levels: u64,
    /// Bytes of one partial (float64 partials are larger than float32
    /// ones; the largest where reductions of several dtypes coalesce).
    pub partial_size: u64,
}

impl Footprint {
    /// The footprint of `plan` over `dtype` values.
    pub fn of(plan: &Plan, dtype: Dtype) -> Self {
        Footprint {
            units: plan.levels.first().map_or(0, |l| l.units),
            partitions: plan.partition_lens.len() as u64,
            levels: plan.levels.len() as u64,
            partial_size: dtype.partial_bytes(),
        }
    }

    /// Two reductions coalesced into one, their partitions side by side:
    /// units and partitions add up, the tree is as deep as the deeper one,
    /// and every partial counts at the larger size (a bound: coalesced
    /// reductions of two dtypes run as two jobs, each smaller).
    pub fn with(self, other: Footprint) -> Self {
        Footprint {
            units: self.units.saturating_add(other.units),
            partitions: self.partitions.saturating_add(other.partitions),
            levels: self.levels.max(other.levels),
            partial_size: self.partial_size.max(other.partial_size),
        }
    }

    /// Bytes of the first level's partials buffer.
    fn partial_bytes(&self) -> u64 {
        self.units.saturating_mul(self.partial_size)
    }

    /// Bytes of the buffer holding every level's segment table (each at an
    /// offset aligned to `align`).
    fn table_bytes(&self, align: u64) -> u64 {
        if self.levels == 0 {
            return 0;
        }
        let one = self
            .partitions
            .saturating_add(1)
            .saturating_mul(SEGMENT_BYTES)
            .next_multiple_of(align.max(1));
        one.saturating_mul(self.levels)
    }

    /// True when both buffers fit the device's largest buffer.
    pub fn fits_in(&self, ctx: &Context) -> bool {
        self.check(ctx).is_ok()
    }

    /// `Err(OutOfMemory)` naming the buffer that does not fit the device.
    pub fn check(&self, ctx: &Context) -> Result<()> {
        self.check_limit(ctx.device_buffer_bytes, ctx.limits.offset_alignment)
    }

    /// `Err(OutOfMemory)` naming the buffer that does not fit in `limit`
    /// bytes, tables aligned to `align`.
    fn check_limit(&self, limit: u64, align: u64) -> Result<()> {
        let partials = self.partial_bytes();
        let tables = self.table_bytes(align);
        let (what, need) = if partials > limit {
            ("partials", partials)
        } else if tables > limit {
            ("segment tables", tables)
        } else {
            return Ok(());
        };
        Err(Error::too_large(format!(
            "a reduction of {} partitions in {} work units needs one buffer of {need} bytes for its {what}; the device's largest buffer is {limit} bytes (use fewer partitions per request)",
            self.partitions, self.units
        )))
    }
}

/// `Err(OutOfMemory)` when `plan` over float32 values cannot run on this
/// device.
pub(crate) fn check(ctx: &Context, plan: &Plan) -> Result<()> {
    check_dtype(ctx, plan, Dtype::F32)
}

/// `Err(OutOfMemory)` when `plan` over `dtype` values cannot run here.
pub(crate) fn check_dtype(ctx: &Context, plan: &Plan, dtype: Dtype) -> Result<()> {
    Footprint::of(plan, dtype).check(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::PARTIAL_BYTES;

    /// Offsets of partitions of `lens` items, 0 first.
    fn offsets(lens: &[u64]) -> Vec<u64> {
        let mut o = vec![0];
        for l in lens {
            o.push(o.last().unwrap() + l);
        }
        o
    }

    /// The coalescer adds up requests' footprints with `with`: that must
    /// be exactly the footprint of the plan of the group (their partitions
    /// side by side), or the group bound would let an oversized group by.
    #[test]
    fn a_group_footprint_is_the_footprint_of_the_coalesced_plan() {
        let requests: [&[u64]; 6] = [
            &[1, 2, 3],
            &[0],
            &[8192 * 3 + 1],
            &[8192 * 2048 * 2 + 5, 0, 7],
            &[],
            &[5; 100],
        ];
        for first in 0..requests.len() {
            let group: Vec<&[u64]> = requests[first..].to_vec();
            let added = group.iter().fold(Footprint::default(), |f, lens| {
                let plan = Plan::new(&offsets(lens)).unwrap();
                f.with(Footprint::of(&plan, Dtype::F32))
            });
            let all: Vec<u64> = group.iter().flat_map(|l| l.iter().copied()).collect();
            let whole = Footprint::of(&Plan::new(&offsets(&all)).unwrap(), Dtype::F32);
            assert_eq!(added, whole, "requests {first}..");
        }
        // Coalesced dtypes count every partial at the larger size.
        let plan = Plan::new(&offsets(&[100_000])).unwrap();
        let (f32s, f64s) = (
            Footprint::of(&plan, Dtype::F32),
            Footprint::of(&plan, Dtype::F64),
        );
        assert!(f64s.partial_size > f32s.partial_size);
        assert_eq!(f32s.with(f64s).partial_size, f64s.partial_size);
        assert_eq!(f64s.with(f32s).partial_size, f64s.partial_size);
    }

    #[test]
    fn buffers_over_the_limit_are_named_and_within_it_pass() {
        let f = Footprint {
            units: 400,
            partitions: 999,
            levels: 2,
            partial_size: PARTIAL_BYTES,
        };
        assert_eq!(f.partial_bytes(), 25_600);
        // Two tables of 1000 entries of 16 bytes, each aligned to 256.
        assert_eq!(f.table_bytes(256), 2 * 16_128);
        assert!(f.check_limit(32_256, 256).is_ok());
        let e = f.check_limit(32_255, 256).unwrap_err();
        assert!(
            matches!(&e, Error::OutOfMemory { message, source: None } if message.contains("segment tables")),
            "{e}"
        );
        let e = f.check_limit(25_599, 256).unwrap_err();
        assert!(
            matches!(&e, Error::OutOfMemory { message, source: None } if message.contains("partials")),
            "{e}"
        );
        assert!(Footprint::default().check_limit(0, 256).is_ok());
    }
}
