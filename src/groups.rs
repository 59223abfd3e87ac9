//! Partition groups: one reduction holds at most
//! [`max_partitions`](crate::Engine::max_partitions) partitions (its segment
//! table must fit one binding), so a reduction with more runs as consecutive
//! groups of at most that many. A partition's reduction tree depends only on
//! positions inside it, so the groups' results, concatenated in order, have
//! the same bits whatever the limit. This module cuts the offsets into
//! groups and gathers the groups' results.

use std::ops::Range;

use crate::error::Result;
use crate::op::{Op, Reduction};

/// Consecutive groups of at most `limit` partitions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PartitionGroups {
    partitions: usize,
    limit: usize,
}

impl PartitionGroups {
    /// Groups for `partitions` partitions, at most `limit` each.
    pub fn new(partitions: usize, limit: u64) -> Self {
        PartitionGroups {
            partitions,
            limit: usize::try_from(limit).unwrap_or(usize::MAX).max(1),
        }
    }

    /// How many groups: at least one, also with no partitions (an empty
    /// reduction is still one reduction).
    pub fn count(&self) -> usize {
        self.partitions.div_ceil(self.limit).max(1)
    }

    /// The partitions of group `index`.
    pub fn range(&self, index: usize) -> Range<usize> {
        let start = index.saturating_mul(self.limit).min(self.partitions);
        start..start.saturating_add(self.limit).min(self.partitions)
    }

    /// Group `index`'s k+1 offsets, out of all the partitions' `offsets`
    /// (absolute: the group's partitions lie where they lie).
    pub fn offsets<'a>(&self, offsets: &'a [u64], index: usize) -> &'a [u64] {
        let r = self.range(index);
        &offsets[r.start..=r.end]
    }
}

/// The groups' results, gathered as they arrive (in any order) until the
/// whole result can be handed over.
pub(crate) struct Gather<T = f32> {
    op: Op,
    parts: Vec<Option<Reduction<T>>>,
    missing: usize,
    /// The whole result or an error has been handed over.
    delivered: bool,
}

impl<T> Gather<T> {
    pub fn new(op: Op, groups: usize) -> Self {
        Gather {
            op,
            parts: (0..groups).map(|_| None).collect(),
            missing: groups,
            delivered: false,
        }
    }

    /// Stores group `index`'s result. Returns what to deliver: the first
    /// error at once, or every group's result concatenated in order once
    /// the last one is in; `None` until then, and after.
    pub fn put(
        &mut self,
        index: usize,
        result: Result<Reduction<T>>,
    ) -> Option<Result<Reduction<T>>> {
        if self.delivered {
            return None;
        }
        match result {
            Err(e) => {
                self.delivered = true;
                Some(Err(e))
            }
            Ok(r) => {
                if self.parts[index].replace(r).is_none() {
                    self.missing -= 1;
                }
                (self.missing == 0).then(|| {
                    self.delivered = true;
                    let parts = self.parts.iter_mut().map(|p| p.take().expect("all in"));
                    Ok(concat(self.op, parts))
                })
            }
        }
    }
}

/// The groups' results as one, in order.
pub(crate) fn concat<T>(op: Op, parts: impl IntoIterator<Item = Reduction<T>>) -> Reduction<T> {
    let mut parts = parts.into_iter();
    let mut out = parts.next().unwrap_or(Reduction {
        op,
        values: Vec::new(),
        counts: Vec::new(),
    });
    for r in parts {
        out.values.extend(r.values);
        out.counts.extend(r.counts);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn part(values: &[f32]) -> Reduction {
        Reduction {
            op: Op::Sum,
            values: values.iter().map(|&v| Some(v)).collect(),
            counts: values.iter().map(|&v| v as u64).collect(),
        }
    }

    #[test]
    fn groups_cover_every_partition_once_in_order() {
        let offsets: Vec<u64> = (0..=10).collect();
        let g = PartitionGroups::new(10, 4);
        assert_eq!(g.count(), 3);
        assert_eq!(
            (0..3).map(|i| g.range(i)).collect::<Vec<_>>(),
            [0..4, 4..8, 8..10]
        );
        assert_eq!(g.offsets(&offsets, 2), [8, 9, 10]);
        // Exactly full, one over, none at all, a zero limit.
        assert_eq!(PartitionGroups::new(8, 4).count(), 2);
        assert_eq!(PartitionGroups::new(9, 4).count(), 3);
        let none = PartitionGroups::new(0, 4);
        assert_eq!((none.count(), none.range(0)), (1, 0..0));
        assert_eq!(none.offsets(&[0], 0), [0]);
        assert_eq!(PartitionGroups::new(3, 0).count(), 3);
    }

    #[test]
    fn gather_hands_over_all_parts_in_order_once_or_the_first_error() {
        let mut g = Gather::new(Op::Sum, 3);
        assert!(g.put(2, Ok(part(&[5.0]))).is_none());
        assert!(g.put(0, Ok(part(&[1.0, 2.0]))).is_none());
        let whole = g.put(1, Ok(part(&[3.0, 4.0]))).expect("all in").unwrap();
        assert_eq!(whole, part(&[1.0, 2.0, 3.0, 4.0, 5.0]));

        let mut g = Gather::new(Op::Sum, 2);
        assert!(g.put(1, Ok(part(&[1.0]))).is_none());
        assert!(matches!(
            g.put(0, Err(Error::Internal("lost".into()))),
            Some(Err(Error::Internal(_)))
        ));
        assert!(g.put(0, Ok(part(&[1.0]))).is_none(), "delivered once");
        let mut g = Gather::new(Op::Sum, 1);
        assert!(g.put(0, Ok(part(&[1.0]))).is_some());
        assert!(g.put(0, Ok(part(&[1.0]))).is_none(), "delivered once");
        assert_eq!(concat::<f32>(Op::Max, []).op, Op::Max);
    }
}
