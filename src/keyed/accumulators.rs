//! Group accumulators as the group kernel leaves them (layout in
//! shaders/group.wgsl), turned into [`State`]s one group at a time.

use crate::dtype::Dtype;
use crate::state::{State, StateKind};

use super::kernels::stride_words;

/// The accumulators of a window of consecutive groups, read back.
pub(crate) struct GroupAccumulators {
    dtype: Dtype,
    words: Vec<u32>,
}

impl GroupAccumulators {
    pub fn new(dtype: Dtype, words: Vec<u32>) -> Self {
        debug_assert_eq!(words.len() % stride_words(dtype), 0);
        GroupAccumulators { dtype, words }
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
        let l = self.dtype.limbs();
        let w = self.group(g);
        Self::pair(w, 2 * l) + Self::pair(w, 2 * l + 2)
    }

    /// The state of `kind` of group `g` (from the accumulators the pass
    /// filled: a kind it did not fill reads as if no value were seen).
    pub fn state(&self, g: usize, kind: StateKind) -> State {
        let l = self.dtype.limbs();
        let w = self.group(g);
        // The layout of one exact.wgsl partial: limbs, count, flags, key.
        let mut partial = vec![0u32; self.dtype.partial_words()];
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
        partial[l] = w[2 * l];
        partial[l + 1] = w[2 * l + 1];
        partial[l + 2] = w[2 * l + 4];
        let key_at = match kind {
            StateKind::Sum => None,
            StateKind::Max => Some(2 * l + 5),
            StateKind::Min => Some(2 * l + 7),
        };
        if let Some(k) = key_at {
            partial[l + 3] = w[k];
            partial[l + 4] = w[k + 1];
        }
        State::from_gpu(self.dtype, kind, self.rows(g), &partial)
    }
}
