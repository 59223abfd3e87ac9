//! Group accumulators as the group kernel leaves them (layout in
//! shaders/group.wgsl), turned into [`State`]s one group at a time.

use std::borrow::Cow;

use crate::dtype::Dtype;
use crate::state::{FLAG_NONNEG, PartialLayout, State, StateKind};

use super::kernels::stride_words;

/// Word offsets in one group's accumulator (group.wgsl's `A_COUNT`,
/// `A_NANS`, `A_FLAGS`, `A_MAX`, `A_MIN`), after the positive and the
/// negative limbs: non-NaN count (lo, hi), NaN count (lo, hi), flags, max
/// key (lo, hi), min key (lo, hi).
#[derive(Clone, Copy, Debug)]
pub(crate) struct AccumulatorLayout {
    pub count: usize,
    pub nans: usize,
    pub flags: usize,
    pub max: usize,
    pub min: usize,
}

impl AccumulatorLayout {
    pub(crate) fn of(dtype: Dtype) -> Self {
        let l = dtype.limbs();
        AccumulatorLayout {
            count: 2 * l,
            nans: 2 * l + 2,
            flags: 2 * l + 4,
            max: 2 * l + 5,
            min: 2 * l + 7,
        }
    }
}

/// Words of the widest partial (float64's), a stack buffer's size.
const MAX_PARTIAL_WORDS: usize = 80;

/// The accumulators of a window of consecutive groups, read back: owned,
/// or borrowed from the mapped readback buffer (no copy of what may be
/// hundreds of megabytes).
pub(crate) struct GroupAccumulators<'a> {
    dtype: Dtype,
    words: Cow<'a, [u32]>,
}

impl<'a> GroupAccumulators<'a> {
    pub fn new(dtype: Dtype, words: impl Into<Cow<'a, [u32]>>) -> Self {
        let words = words.into();
        debug_assert_eq!(words.len() % stride_words(dtype), 0);
        GroupAccumulators { dtype, words }
    }

    /// The dtype of the values.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// Groups in the window.
    pub fn len(&self) -> usize {
        self.words.len() / stride_words(self.dtype)
    }

    fn group(&self, g: usize) -> &[u32] {
        let s = stride_words(self.dtype);
        &self.words[g * s..(g + 1) * s]
    }

    fn pair(w: &[u32], at: usize) -> u64 {
        w[at] as u64 | (w[at + 1] as u64) << 32
    }

    /// Rows of group `g`, NaN included (0: no row had this group).
    pub fn rows(&self, g: usize) -> u64 {
        let at = AccumulatorLayout::of(self.dtype);
        let w = self.group(g);
        Self::pair(w, at.count) + Self::pair(w, at.nans)
    }

    /// The state of `kind` of group `g` (from the accumulators the pass
    /// filled: a kind it did not fill reads as if no value were seen).
    pub fn state(&self, g: usize, kind: StateKind) -> State {
        let mut s = State::empty(self.dtype, kind);
        self.state_into(g, kind, &mut s);
        s
    }

    /// [`GroupAccumulators::state`] written into `out`, reusing its storage.
    pub fn state_into(&self, g: usize, kind: StateKind, out: &mut State) {
        let l = self.dtype.limbs();
        let w = self.group(g);
        // The layout of one exact.wgsl partial: limbs, count, flags, key.
        let mut buf = [0u32; MAX_PARTIAL_WORDS];
        let partial = &mut buf[..self.dtype.partial_words()];
        if kind == StateKind::Sum {
            // Positive minus negative magnitudes, with the borrow carried up.
            let mut borrow = 0u32;
            for i in 0..l {
                let (d, b1) = w[i].overflowing_sub(w[l + i]);
                let (d2, b2) = d.overflowing_sub(borrow);
                partial[i] = d2;
                borrow = b1 as u32 + b2 as u32;
            }
        }
        let (acc, part) = (
            AccumulatorLayout::of(self.dtype),
            PartialLayout::of(self.dtype),
        );
        partial[part.count] = w[acc.count];
        partial[part.count + 1] = w[acc.count + 1];
        // Rows added one by one flag only +0.0 as non-negative; a positive
        // nonzero value left its magnitude in the positive limbs.
        let positive = self.dtype.is_float() && w[..l].iter().any(|&x| x != 0);
        partial[part.flags] = w[acc.flags] | if positive { FLAG_NONNEG as u32 } else { 0 };
        let key_at = match kind {
            StateKind::Sum => None,
            StateKind::Max => Some(acc.max),
            StateKind::Min => Some(acc.min),
        };
        if let Some(k) = key_at {
            partial[part.key] = w[k];
            partial[part.key + 1] = w[k + 1];
        }
        out.refill_from_gpu(self.dtype, kind, self.rows(g), partial);
    }
}
