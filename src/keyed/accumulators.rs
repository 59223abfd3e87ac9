//! A window of groups read back: accumulators as the group kernel leaves
//! them (layout in shaders/group.wgsl), turned into [`State`]s one group
//! at a time, or records of groups finished on the device (layout in
//! shaders/finish_groups.wgsl).

use std::borrow::Cow;

use crate::dtype::Dtype;
use crate::state::{FLAG_NONNEG, PartialLayout, Settled, State, StateKind};
use crate::state_columns::StateColumns;

use super::finish::{Finish, FinishedSum, RECORD_WORDS, record};
use super::limbs::Limbs;

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
    /// The offsets where the limbs are `limbs.len` a side.
    pub(crate) fn of(limbs: Limbs) -> Self {
        let l = limbs.len as usize;
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

/// A window of consecutive groups, read back: owned, or borrowed from the
/// mapped readback buffer (no copy of what may be hundreds of megabytes).
/// Either the groups' accumulators, or (`finished`) their records.
pub(crate) struct GroupAccumulators<'a> {
    dtype: Dtype,
    /// What the words are: the accumulators holding `Some(limbs)`, or
    /// (`None`) finished records.
    limbs: Option<Limbs>,
    words: Cow<'a, [u32]>,
}

impl<'a> GroupAccumulators<'a> {
    /// Accumulators holding `limbs`, `limbs.stride` words a group.
    pub fn new(dtype: Dtype, limbs: Limbs, words: impl Into<Cow<'a, [u32]>>) -> Self {
        let words = words.into();
        debug_assert_eq!(words.len() % limbs.stride as usize, 0);
        GroupAccumulators {
            dtype,
            limbs: Some(limbs),
            words,
        }
    }

    /// Records of groups finished on the device, [`RECORD_WORDS`] a group.
    pub fn finished(dtype: Dtype, words: impl Into<Cow<'a, [u32]>>) -> Self {
        let words = words.into();
        debug_assert_eq!(words.len() % RECORD_WORDS, 0);
        GroupAccumulators {
            dtype,
            limbs: None,
            words,
        }
    }

    /// What a window whose groups are finished by `finish` reads back, its
    /// accumulators holding `limbs`.
    pub fn read_back(
        dtype: Dtype,
        limbs: Limbs,
        finish: Finish,
        words: impl Into<Cow<'a, [u32]>>,
    ) -> Self {
        match finish {
            Finish::OnHost => Self::new(dtype, limbs, words),
            Finish::OnDevice { .. } => Self::finished(dtype, words),
        }
    }

    /// True for records of groups finished on the device.
    pub fn is_finished(&self) -> bool {
        self.limbs.is_none()
    }

    fn width(&self) -> usize {
        self.limbs.map_or(RECORD_WORDS, |l| l.stride as usize)
    }

    /// The dtype of the values.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// Groups in the window.
    pub fn len(&self) -> usize {
        self.words.len() / self.width()
    }

    #[inline]
    fn group(&self, g: usize) -> &[u32] {
        let s = self.width();
        &self.words[g * s..(g + 1) * s]
    }

    fn pair(w: &[u32], at: usize) -> u64 {
        w[at] as u64 | (w[at + 1] as u64) << 32
    }

    /// Rows of group `g`, NaN included (0: no row had this group).
    #[inline]
    pub fn rows(&self, g: usize) -> u64 {
        let w = self.group(g);
        match self.limbs {
            None => Self::pair(w, record::COUNT) + Self::pair(w, record::NANS),
            Some(limbs) => {
                let at = AccumulatorLayout::of(limbs);
                Self::pair(w, at.count) + Self::pair(w, at.nans)
            }
        }
    }

    /// A finished group's parts of `kind` besides its sum.
    #[inline]
    pub fn settled(&self, g: usize, kind: StateKind) -> Settled {
        debug_assert!(self.is_finished());
        let w = self.group(g);
        let key = match kind {
            StateKind::Sum => 0,
            StateKind::Max => Self::pair(w, record::MAX),
            StateKind::Min => Self::pair(w, record::MIN),
        };
        Settled::from_gpu(
            self.dtype,
            kind,
            self.rows(g),
            Self::pair(w, record::COUNT),
            w[record::FLAGS],
            key,
        )
    }

    /// A finished group's sum and mean, rounded on the device.
    #[inline]
    pub fn finished_sum(&self, g: usize) -> FinishedSum {
        debug_assert!(self.is_finished());
        FinishedSum::of(self.dtype, self.group(g))
    }

    /// The state of `kind` of group `g` (from the accumulators the pass
    /// filled: a kind it did not fill reads as if no value were seen).
    pub fn state(&self, g: usize, kind: StateKind) -> State {
        let mut s = State::empty(self.dtype, kind);
        self.state_into(g, kind, &mut s);
        s
    }

    /// Group `g`'s exact sum as the full grid's two's complement limbs,
    /// into `full` (`dtype.limbs()` of them): positive minus negative
    /// magnitudes, with the borrow carried up, from `base`; the limbs
    /// above take the sign (the difference's top bit, by the rule of
    /// super::limbs). Accumulators only.
    fn sum_limbs(&self, limbs: Limbs, w: &[u32], full: &mut [u32]) {
        let (l, base) = (limbs.len as usize, limbs.base as usize);
        full[..base].fill(0);
        let mut borrow = 0u32;
        for i in 0..l {
            let (d, b1) = w[i].overflowing_sub(w[l + i]);
            let (d2, b2) = d.overflowing_sub(borrow);
            full[base + i] = d2;
            borrow = b1 as u32 + b2 as u32;
        }
        let sign = if borrow != 0 { u32::MAX } else { 0 };
        full[base + l..].fill(sign);
    }

    /// Group `g`'s flags as the pass left them, with the non-negative flag
    /// where a sum was filled: rows added one by one flag only +0.0 as
    /// non-negative, and a positive nonzero value left its magnitude in the
    /// positive limbs.
    fn sum_flags(&self, limbs: Limbs, w: &[u32]) -> u32 {
        let l = limbs.len as usize;
        let positive = self.dtype.is_float() && w[..l].iter().any(|&x| x != 0);
        w[AccumulatorLayout::of(limbs).flags] | if positive { FLAG_NONNEG as u32 } else { 0 }
    }

    /// [`GroupAccumulators::state`] written into `out`, reusing its storage.
    /// Accumulators only: a finished record holds no exact sum.
    pub fn state_into(&self, g: usize, kind: StateKind, out: &mut State) {
        let limbs = self
            .limbs
            .expect("the state of a group finished on the device was asked for");
        let w = self.group(g);
        // The layout of one exact.wgsl partial: limbs, count, flags, key.
        let mut buf = [0u32; MAX_PARTIAL_WORDS];
        let partial = &mut buf[..self.dtype.partial_words()];
        if kind == StateKind::Sum {
            self.sum_limbs(limbs, w, &mut partial[..self.dtype.limbs()]);
        }
        let (acc, part) = (AccumulatorLayout::of(limbs), PartialLayout::of(self.dtype));
        partial[part.count] = w[acc.count];
        partial[part.count + 1] = w[acc.count + 1];
        partial[part.flags] = self.sum_flags(limbs, w);
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

    /// Appends group `g` to `out` (of this window's dtype) with every kind
    /// `out` holds, read from the accumulators one pass filled for all of
    /// them: the parts [`GroupAccumulators::state`] gives each kind.
    /// Accumulators only.
    pub fn push_columns(&self, g: usize, out: &mut StateColumns) {
        let limbs = self
            .limbs
            .expect("the states of a group finished on the device were asked for");
        let w = self.group(g);
        let acc = AccumulatorLayout::of(limbs);
        let (len, count) = (self.rows(g), Self::pair(w, acc.count));
        let flags = self.sum_flags(limbs, w);
        let parts = |kind: StateKind, at: Option<usize>| {
            let raw = at.map_or(0, |k| Self::pair(w, k));
            Settled::from_gpu(self.dtype, kind, len, count, flags, raw)
        };
        let key = |kind: StateKind, at| {
            if out.holds(kind) {
                parts(kind, Some(at)).key
            } else {
                0
            }
        };
        let (max, min) = (key(StateKind::Max, acc.max), key(StateKind::Min, acc.min));
        let mut buf = [0u32; MAX_PARTIAL_WORDS];
        let full = &mut buf[..self.dtype.limbs()];
        let with_sum = out.holds(StateKind::Sum);
        if with_sum {
            self.sum_limbs(limbs, w, full);
        }
        let flags = parts(StateKind::Sum, None).flags;
        out.push_parts(len, count, flags, max, min, with_sum.then_some(&*full));
    }
}
