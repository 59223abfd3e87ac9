//! Partial states of many groups, column by column: for each group the
//! values seen, the non-NaN values and the flags once, and for each kind
//! held the max's and the min's order keys and the exact sum's limbs.
//!
//! A keyed reduction of one value column fills every kind it needs in one
//! pass; its states serialise as one buffer with one header (a per-group
//! [`State`] carries a 36-byte header each, and the count and flags again
//! for every kind); states of many chunks merge by key column by column,
//! with no per-group allocation. Group `i` holds exactly what the
//! [`State`]s of its kinds hold ([`StateColumns::state`] gives them), so
//! finalising gives the same bits, and merging in any order or split the
//! same columns.
//!
//! # Byte layout (version 1, little-endian)
//!
//! | bytes    | field                                                        |
//! |----------|--------------------------------------------------------------|
//! | 0..4     | magic `GLSC`                                                 |
//! | 4        | version, 1                                                   |
//! | 5        | dtype, as in a [`State`]                                     |
//! | 6        | kinds held: 1 sum, 2 max, 4 min (any nonzero mix)            |
//! | 7        | 0                                                            |
//! | 8..16    | groups `n`                                                   |
//! | 16..24   | sum limbs stored in all, `L` (0 without a sum)               |
//! | then     | `n` u64: values seen (NaN included)                          |
//! |          | `n` u64: non-NaN values seen                                 |
//! |          | `n` u8: flags, as in a [`State`] (with a sum held, the sum's) |
//! |          | with max: `n` u64 order keys of the largest values           |
//! |          | with min: `n` u64 order keys of the smallest values          |
//! |          | with sum: `n` u8 first stored limb, `n` u8 limbs stored, `L` u32 limbs |
//!
//! A group's sum stores the limbs of its exact sum from its lowest nonzero
//! limb to its highest limb that is not the sign extension of the one
//! below (two's complement, sign from the top stored limb); a zero sum
//! stores none, from limb 0. Anything else does not read back.

use crate::dtype::{Dtype, Scalar};
use crate::error::{Error, Result};
use crate::exact::{ExactSum, to_magnitude};
use crate::op::{NanPolicy, Op};
use crate::state::{FLAG_NEG_INF, FLAG_NONNEG, FLAG_POS_INF, Settled, State, StateKind};
use crate::threads;

const MAGIC: &[u8; 4] = b"GLSC";
const VERSION: u8 = 1;
const HEADER_BYTES: usize = 24;

/// Limbs of the widest exact sum (float64's), a stack buffer's size.
const MAX_LIMBS: usize = 68;

/// Entries a thread is worth when merging.
const MERGE_PER_THREAD: usize = 1 << 16;

/// Entries added into one run's digits before their carries are settled
/// (each adds less than 2^32 to a digit, so an i64 digit cannot overflow).
const SETTLE_EVERY: usize = 1 << 30;

fn bit(kind: StateKind) -> u8 {
    match kind {
        StateKind::Sum => 1,
        StateKind::Max => 2,
        StateKind::Min => 4,
    }
}

fn corrupt(msg: impl Into<String>) -> Error {
    Error::InvalidState(msg.into())
}

/// The partial states of a sequence of groups of one dtype, holding one or
/// more [`StateKind`]s for every group (module docs: layout and rules).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateColumns {
    dtype: Dtype,
    kinds: u8,
    len: Vec<u64>,
    count: Vec<u64>,
    flags: Vec<u8>,
    max: Vec<u64>,
    min: Vec<u64>,
    /// With a sum: each group's first stored limb, and where its stored
    /// limbs end in `limbs` (they start where the previous group's end).
    first: Vec<u8>,
    ends: Vec<usize>,
    limbs: Vec<u32>,
}

impl StateColumns {
    /// No groups yet, of `dtype` values, holding `kinds` (at least one;
    /// repeats are ignored).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for no kinds.
    pub fn new(dtype: Dtype, kinds: &[StateKind]) -> Result<Self> {
        if kinds.is_empty() {
            return Err(Error::InvalidInput(
                "state columns need at least one kind (sum, max or min)".into(),
            ));
        }
        Ok(Self::of_bits(
            dtype,
            kinds.iter().fold(0, |b, &k| b | bit(k)),
        ))
    }

    fn of_bits(dtype: Dtype, kinds: u8) -> Self {
        StateColumns {
            dtype,
            kinds,
            len: Vec::new(),
            count: Vec::new(),
            flags: Vec::new(),
            max: Vec::new(),
            min: Vec::new(),
            first: Vec::new(),
            ends: Vec::new(),
            limbs: Vec::new(),
        }
    }

    /// No groups yet, of the dtype and kinds of `self`, with room for
    /// `groups`.
    fn like(&self, groups: usize) -> Self {
        let mut out = Self::of_bits(self.dtype, self.kinds);
        out.reserve(groups);
        out
    }

    fn reserve(&mut self, groups: usize) {
        self.len.reserve(groups);
        self.count.reserve(groups);
        self.flags.reserve(groups);
        if self.holds(StateKind::Max) {
            self.max.reserve(groups);
        }
        if self.holds(StateKind::Min) {
            self.min.reserve(groups);
        }
        if self.holds(StateKind::Sum) {
            self.first.reserve(groups);
            self.ends.reserve(groups);
        }
    }

    /// The dtype of the values.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// True when every group holds a state of `kind`.
    pub fn holds(&self, kind: StateKind) -> bool {
        self.kinds & bit(kind) != 0
    }

    /// The kinds held, in the order sum, max, min.
    pub fn kinds(&self) -> Vec<StateKind> {
        [StateKind::Sum, StateKind::Max, StateKind::Min]
            .into_iter()
            .filter(|&k| self.holds(k))
            .collect()
    }

    /// Groups held.
    pub fn len(&self) -> usize {
        self.len.len()
    }

    /// True when no group is held.
    pub fn is_empty(&self) -> bool {
        self.len.is_empty()
    }

    /// Values group `g` has seen, NaN included (`None` past the last
    /// group). 0 for a group whose values were all null.
    pub fn rows(&self, g: usize) -> Option<u64> {
        self.len.get(g).copied()
    }

    /// The count an op reports for every group: its values under
    /// [`NanPolicy::Propagate`], its non-NaN values under
    /// [`NanPolicy::Ignore`] (as [`State::count`]).
    pub fn counts(&self, nan: NanPolicy) -> Vec<u64> {
        match nan {
            NanPolicy::Propagate => self.len.clone(),
            NanPolicy::Ignore => self.count.clone(),
        }
    }

    /// Appends a group that has seen no value (a key whose values are
    /// all null).
    pub fn push_empty(&mut self) {
        self.push_parts(0, 0, 0, 0, 0, None);
    }

    /// Appends a group from its [`State`]s: one of each kind held, in the
    /// order of [`StateColumns::kinds`], all of the same values (as
    /// [`State::of`] or [`StateColumns::state`] give them).
    ///
    /// # Errors
    /// [`Error::InvalidState`] where the states are not one of each kind
    /// held, of this dtype, or disagree on the values they have seen.
    pub fn push(&mut self, states: &[&State]) -> Result<()> {
        let kinds = self.kinds();
        let fits = states.len() == kinds.len()
            && states
                .iter()
                .zip(&kinds)
                .all(|(s, &k)| s.kind() == k && s.dtype() == self.dtype);
        if !fits {
            return Err(Error::InvalidState(format!(
                "state columns of {} {kinds:?} take one {} state of each kind, in that order",
                self.dtype, self.dtype
            )));
        }
        let parts: Vec<&Settled> = states.iter().map(|s| s.parts().0).collect();
        let base = parts[0];
        let seen = |p: &Settled| (p.len, p.count, p.flags & !FLAG_NONNEG);
        if parts.iter().any(|p| seen(p) != seen(base)) {
            return Err(Error::InvalidState(
                "the states of one group disagree on the values seen".into(),
            ));
        }
        let key = |kind| parts.iter().find(|p| p.kind == kind).map_or(0, |p| p.key);
        let mut buf = [0u32; MAX_LIMBS];
        let sum = states.iter().find(|s| s.kind() == StateKind::Sum).map(|s| {
            let limbs = s.parts().1.to_limbs();
            buf[..limbs.len()].copy_from_slice(&limbs);
            &buf[..limbs.len()]
        });
        let flags = parts.iter().fold(0, |f, p| f | p.flags);
        self.push_parts(
            base.len,
            base.count,
            flags,
            key(StateKind::Max),
            key(StateKind::Min),
            sum,
        );
        Ok(())
    }

    /// Appends group `g` of `other` (same dtype and kinds, `g` in range:
    /// checked by the callers).
    fn push_from(&mut self, other: &StateColumns, g: usize) {
        self.len.push(other.len[g]);
        self.count.push(other.count[g]);
        self.flags.push(other.flags[g]);
        if self.holds(StateKind::Max) {
            self.max.push(other.max[g]);
        }
        if self.holds(StateKind::Min) {
            self.min.push(other.min[g]);
        }
        if self.holds(StateKind::Sum) {
            self.first.push(other.first[g]);
            self.limbs.extend_from_slice(other.stored(g));
            self.ends.push(self.limbs.len());
        }
    }

    /// Appends a group from its parts: `flags` as a sum state's (the
    /// non-negative flag dropped where no sum is held), the order keys of
    /// the kinds held (0 otherwise, and for no non-NaN value), and with a
    /// sum its `dtype.limbs()` two's complement limbs.
    pub(crate) fn push_parts(
        &mut self,
        len: u64,
        count: u64,
        flags: u8,
        max: u64,
        min: u64,
        sum: Option<&[u32]>,
    ) {
        self.len.push(len);
        self.count.push(count);
        let flags = if self.holds(StateKind::Sum) {
            flags
        } else {
            flags & !FLAG_NONNEG
        };
        self.flags.push(flags);
        if self.holds(StateKind::Max) {
            self.max.push(if count == 0 { 0 } else { max });
        }
        if self.holds(StateKind::Min) {
            self.min.push(if count == 0 { 0 } else { min });
        }
        if self.holds(StateKind::Sum) {
            let (first, stored) = sum.map_or((0, &[][..]), trimmed);
            self.first.push(first as u8);
            self.limbs.extend_from_slice(stored);
            self.ends.push(self.limbs.len());
        }
    }

    /// Group `g`'s stored sum limbs.
    fn stored(&self, g: usize) -> &[u32] {
        let start = if g == 0 { 0 } else { self.ends[g - 1] };
        &self.limbs[start..self.ends[g]]
    }

    /// Group `g`'s sum as the dtype's full two's complement limbs, in `buf`.
    fn full_limbs<'a>(&self, g: usize, buf: &'a mut [u32; MAX_LIMBS]) -> &'a [u32] {
        let l = self.dtype.limbs();
        let out = &mut buf[..l];
        out.fill(0);
        let first = self.first[g] as usize;
        let stored = self.stored(g);
        out[first..first + stored.len()].copy_from_slice(stored);
        if stored.last().is_some_and(|&t| t >> 31 == 1) {
            out[first + stored.len()..].fill(u32::MAX);
        }
        out
    }

    /// Group `g`'s parts as a state of `kind` (held) has them.
    fn settled(&self, g: usize, kind: StateKind) -> Settled {
        let flags = if kind == StateKind::Sum {
            self.flags[g]
        } else {
            self.flags[g] & !FLAG_NONNEG
        };
        let key = match kind {
            StateKind::Sum => 0,
            StateKind::Max => self.max[g],
            StateKind::Min => self.min[g],
        };
        Settled {
            dtype: self.dtype,
            kind,
            len: self.len[g],
            count: self.count[g],
            flags,
            key,
        }
    }

    fn check_kind(&self, kind: StateKind) -> Result<()> {
        if self.holds(kind) {
            Ok(())
        } else {
            Err(Error::InvalidState(format!(
                "these state columns hold no {kind:?} states (they hold {:?})",
                self.kinds()
            )))
        }
    }

    /// Group `g`'s state of `kind`: the [`State`] a per-group reduction
    /// of its values gives.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] past the last group,
    /// [`Error::InvalidState`] for a kind not held.
    pub fn state(&self, g: usize, kind: StateKind) -> Result<State> {
        if g >= self.len() {
            return Err(Error::InvalidInput(format!(
                "group {g} of {} state columns",
                self.len()
            )));
        }
        self.check_kind(kind)?;
        let sum = if kind == StateKind::Sum {
            let mut buf = [0u32; MAX_LIMBS];
            ExactSum::from_limbs(self.dtype, self.full_limbs(g, &mut buf))
        } else {
            ExactSum::new(self.dtype)
        };
        Ok(State::from_parts(self.settled(g, kind), sum))
    }

    /// The value of `op` for every group under `nan`, as
    /// [`State::finalize`] gives it, except that a group that has seen no
    /// value (all its values null) has none for every op but `count`
    /// (0): SQL's rule for a key whose values are all null.
    ///
    /// # Errors
    /// [`Error::InvalidState`] where the kind `op` needs is not held;
    /// [`Error::Overflow`] for an integer sum outside int64.
    pub fn finalize(&self, op: Op, nan: NanPolicy) -> Result<Vec<Option<Scalar>>> {
        let kind = match op {
            Op::Count => self.kinds()[0],
            _ => StateKind::for_op(op),
        };
        self.check_kind(kind)?;
        let mut sum = ExactSum::new(self.dtype);
        let mut buf = [0u32; MAX_LIMBS];
        (0..self.len())
            .map(|g| {
                if self.len[g] == 0 && op != Op::Count {
                    return Ok(None);
                }
                if kind == StateKind::Sum {
                    sum.set_limbs(self.full_limbs(g, &mut buf));
                }
                self.settled(g, kind).finalize(op, nan, &sum)
            })
            .collect()
    }

    fn check_same(&self, other: &StateColumns) -> Result<()> {
        if self.dtype != other.dtype || self.kinds != other.kinds {
            return Err(Error::InvalidState(format!(
                "state columns of {} {:?} and of {} {:?} do not merge",
                self.dtype,
                self.kinds(),
                other.dtype,
                other.kinds()
            )));
        }
        Ok(())
    }

    /// Appends `other`'s groups after these.
    ///
    /// # Errors
    /// [`Error::InvalidState`] where the dtypes or kinds differ.
    pub fn append(&mut self, other: &StateColumns) -> Result<()> {
        self.check_same(other)?;
        self.reserve(other.len());
        self.limbs.reserve(other.limbs.len());
        for g in 0..other.len() {
            self.push_from(other, g);
        }
        Ok(())
    }

    /// Groups `picks` of `self` in that order, `None` making a group that
    /// has seen no value (`picks` in range: checked by the callers).
    pub(crate) fn gather(&self, picks: impl ExactSizeIterator<Item = Option<usize>>) -> Self {
        let mut out = self.like(picks.len());
        for p in picks {
            match p {
                Some(g) => out.push_from(self, g),
                None => out.push_empty(),
            }
        }
        out
    }

    /// The states of runs of groups merged: `entries` lists
    /// `(part, group)` pairs run by run, run `r` ending at
    /// `run_ends[r]` (ascending, the last `entries.len()`), and the
    /// result's group `r` is the merge of run `r`'s groups. Groups merge
    /// in any order to the same bits.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an entry outside the parts, run ends
    /// that decrease or do not end at the last entry, or an empty run;
    /// [`Error::InvalidState`] where the parts' dtypes or kinds differ, or
    /// merged groups would count more than 2^64 values.
    pub fn merge_runs(
        parts: &[&StateColumns],
        entries: &[(usize, usize)],
        run_ends: &[usize],
    ) -> Result<StateColumns> {
        let Some(&first) = parts.first() else {
            return Err(Error::InvalidInput("no state columns to merge".into()));
        };
        for p in parts {
            first.check_same(p)?;
        }
        if let Some(&(p, g)) = entries
            .iter()
            .find(|&&(p, g)| p >= parts.len() || g >= parts[p].len())
        {
            return Err(Error::InvalidInput(format!(
                "merge entry (part {p}, group {g}) is outside the {} parts given",
                parts.len()
            )));
        }
        let mut start = 0;
        for &end in run_ends {
            if end <= start || end > entries.len() {
                return Err(Error::InvalidInput(format!(
                    "run end {end} after {start}: run ends must rise (no empty run) within {} entries",
                    entries.len()
                )));
            }
            start = end;
        }
        if start != entries.len() {
            return Err(Error::InvalidInput(format!(
                "the runs end at entry {start}, not at the last of {}",
                entries.len()
            )));
        }
        let runs = threads::ranges(
            run_ends.len(),
            threads::threads_for(entries.len(), MERGE_PER_THREAD),
        );
        let pieces = threads::on_threads(runs, |r| {
            let mut out = first.like(r.len());
            let mut at = if r.start == 0 {
                0
            } else {
                run_ends[r.start - 1]
            };
            for &end in &run_ends[r] {
                out.push_merged(parts, &entries[at..end])?;
                at = end;
            }
            Ok(out)
        });
        let mut merged = first.like(run_ends.len());
        for piece in pieces {
            let piece: Result<StateColumns> = piece.unwrap_or_else(|| {
                Err(Error::Internal(
                    "a thread merging state columns panicked".into(),
                ))
            });
            let piece = piece?;
            if merged.is_empty() {
                merged = piece;
            } else {
                merged.append(&piece)?;
            }
        }
        Ok(merged)
    }

    /// Appends the merge of the groups `run` names.
    fn push_merged(&mut self, parts: &[&StateColumns], run: &[(usize, usize)]) -> Result<()> {
        if let [(p, g)] = *run {
            self.push_from(parts[p], g);
            return Ok(());
        }
        let (mut len, mut count, mut flags) = (0u64, 0u64, 0u8);
        let (mut max, mut min, mut seen) = (0u64, 0u64, false);
        let with_sum = self.holds(StateKind::Sum);
        let limbs = self.dtype.limbs();
        // 32-bit digits in i64: limb j of every stored window added at
        // digit first + j, a negative window's sign as -1 just above it.
        let mut digits = [0i64; MAX_LIMBS + 1];
        let mut low = limbs;
        for (i, &(p, g)) in run.iter().enumerate() {
            let c = parts[p];
            len = len.checked_add(c.len[g]).ok_or_else(|| {
                Error::InvalidState("merged states hold more than 2^64 values".into())
            })?;
            count += c.count[g];
            flags |= c.flags[g];
            if c.count[g] > 0 {
                if self.holds(StateKind::Max) && (!seen || c.max[g] > max) {
                    max = c.max[g];
                }
                if self.holds(StateKind::Min) && (!seen || c.min[g] < min) {
                    min = c.min[g];
                }
                seen = true;
            }
            if with_sum {
                let first = c.first[g] as usize;
                let stored = c.stored(g);
                for (d, &l) in digits[first..].iter_mut().zip(stored) {
                    *d += l as i64;
                }
                if stored.last().is_some_and(|&t| t >> 31 == 1) {
                    digits[first + stored.len()] -= 1;
                }
                if !stored.is_empty() {
                    low = low.min(first);
                }
                if (i + 1) % SETTLE_EVERY == 0 {
                    settle(&mut digits[..=limbs], 0);
                }
            }
        }
        let mut full = [0u32; MAX_LIMBS];
        if with_sum {
            // Settle carries upward; the limbs above the dtype's width are
            // the sign, which the bounded sum leaves in the top limb.
            let low = low.min(limbs);
            settle(&mut digits[..=limbs], low);
            for (f, &d) in full[..limbs].iter_mut().zip(&digits[..limbs]) {
                *f = d as u32;
            }
        }
        self.push_parts(
            len,
            count,
            flags,
            max,
            min,
            with_sum.then_some(&full[..limbs]),
        );
        Ok(())
    }

    /// Merges keyed state columns: `parts` of `(keys, states)`, one key a
    /// group each, keys in any order and repeated across parts. Returns
    /// the distinct keys ascending and each one's merged states; the same
    /// bits in any order or split of the parts.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] where a part's keys and groups differ in
    /// number; otherwise as [`StateColumns::merge_runs`].
    pub fn merge_by_key<K: Ord + Copy>(
        parts: &[(&[K], &StateColumns)],
    ) -> Result<(Vec<K>, StateColumns)> {
        let mut entries: Vec<(K, usize, usize)> = Vec::new();
        for (p, (keys, states)) in parts.iter().enumerate() {
            if keys.len() != states.len() {
                return Err(Error::InvalidInput(format!(
                    "part {p}: {} keys for {} groups of states",
                    keys.len(),
                    states.len()
                )));
            }
            entries.extend(keys.iter().enumerate().map(|(g, &k)| (k, p, g)));
        }
        entries.sort_unstable();
        let mut keys = Vec::new();
        let mut run_ends = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            if entries.get(i + 1).is_none_or(|n| n.0 != e.0) {
                keys.push(e.0);
                run_ends.push(i + 1);
            }
        }
        let pairs: Vec<(usize, usize)> = entries.iter().map(|&(_, p, g)| (p, g)).collect();
        let states: Vec<&StateColumns> = parts.iter().map(|(_, s)| *s).collect();
        Ok((keys, Self::merge_runs(&states, &pairs, &run_ends)?))
    }

    /// The columns as versioned bytes (the module's layout table).
    pub fn to_bytes(&self) -> Vec<u8> {
        let n = self.len();
        let u64s =
            2 + usize::from(self.holds(StateKind::Max)) + usize::from(self.holds(StateKind::Min));
        let sum_bytes = if self.holds(StateKind::Sum) {
            2 * n + 4 * self.limbs.len()
        } else {
            0
        };
        let mut out = Vec::with_capacity(HEADER_BYTES + n * (8 * u64s + 1) + sum_bytes);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[VERSION, self.dtype.code(), self.kinds, 0]);
        out.extend_from_slice(&(n as u64).to_le_bytes());
        out.extend_from_slice(&(self.limbs.len() as u64).to_le_bytes());
        let words = |out: &mut Vec<u8>, v: &[u64]| {
            v.iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()))
        };
        words(&mut out, &self.len);
        words(&mut out, &self.count);
        out.extend_from_slice(&self.flags);
        if self.holds(StateKind::Max) {
            words(&mut out, &self.max);
        }
        if self.holds(StateKind::Min) {
            words(&mut out, &self.min);
        }
        if self.holds(StateKind::Sum) {
            out.extend_from_slice(&self.first);
            out.extend((0..n).map(|g| self.stored(g).len() as u8));
            self.limbs
                .iter()
                .for_each(|l| out.extend_from_slice(&l.to_le_bytes()));
        }
        out
    }

    /// Reads bytes written by [`StateColumns::to_bytes`]; anything else
    /// (another format or version, a length the header does not announce,
    /// a group no real values make, limbs not stored as `to_bytes` stores
    /// them) is [`Error::InvalidState`] naming the problem. Nothing is
    /// allocated before the length is checked against the header.
    pub fn from_bytes(bytes: &[u8]) -> Result<StateColumns> {
        if bytes.len() < HEADER_BYTES {
            return Err(corrupt(format!(
                "{} bytes is shorter than the {HEADER_BYTES}-byte header of state columns",
                bytes.len()
            )));
        }
        if &bytes[0..4] != MAGIC {
            return Err(corrupt("not gpulanes state columns (bad magic)"));
        }
        if bytes[4] != VERSION {
            return Err(corrupt(format!(
                "unsupported state columns version {} (this build reads {VERSION})",
                bytes[4]
            )));
        }
        let dtype = Dtype::from_code(bytes[5])
            .ok_or_else(|| corrupt(format!("unknown dtype code {}", bytes[5])))?;
        let kinds = bytes[6];
        if kinds == 0 || kinds > 7 || bytes[7] != 0 {
            return Err(corrupt(format!(
                "kinds {kinds:#x} (byte 7: {}) are not a set of sum, max and min",
                bytes[7]
            )));
        }
        let mut out = Self::of_bits(dtype, kinds);
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        let (n, stored) = (u64_at(8), u64_at(16));
        let u64s = 2 + u64::from(out.holds(StateKind::Max)) + u64::from(out.holds(StateKind::Min));
        let with_sum = out.holds(StateKind::Sum);
        if !with_sum && stored != 0 {
            return Err(corrupt("sum limbs in state columns without a sum"));
        }
        let want = (|| {
            let per_group = 8 * u64s + 1 + if with_sum { 2 } else { 0 };
            n.checked_mul(per_group)?
                .checked_add(stored.checked_mul(4)?)?
                .checked_add(HEADER_BYTES as u64)
        })();
        if want != Some(bytes.len() as u64) {
            return Err(corrupt(format!(
                "{} bytes where the header announces {n} groups and {stored} limbs",
                bytes.len()
            )));
        }
        // The length matches the header: every size below is in bounds.
        let (n, stored) = (n as usize, stored as usize);
        let mut at = HEADER_BYTES;
        let mut take = |len: usize| {
            let s = &bytes[at..at + len];
            at += len;
            s
        };
        let words = |s: &[u8]| -> Vec<u64> {
            s.chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect()
        };
        out.len = words(take(8 * n));
        out.count = words(take(8 * n));
        out.flags = take(n).to_vec();
        if out.holds(StateKind::Max) {
            out.max = words(take(8 * n));
        }
        if out.holds(StateKind::Min) {
            out.min = words(take(8 * n));
        }
        if with_sum {
            out.first = take(n).to_vec();
            let counts = take(n);
            let mut end = 0usize;
            out.ends = counts
                .iter()
                .map(|&c| {
                    end += c as usize;
                    end
                })
                .collect();
            if end != stored {
                return Err(corrupt(format!(
                    "the groups store {end} limbs where the header announces {stored}"
                )));
            }
            out.limbs = take(4 * stored)
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect();
        }
        for g in 0..n {
            out.check_group(g)
                .map_err(|e| corrupt(format!("state columns, group {g}: {e}")))?;
        }
        Ok(out)
    }

    /// What a group made from real values satisfies: [`Settled::check`]
    /// for every kind held, its kinds agreeing with each other (min at
    /// most max, the infinity flags where the max or min is one, the sum's
    /// sign and the non-negative flag as the max and min allow, one value's
    /// sum that value), and its sum stored as `to_bytes` stores it.
    fn check_group(&self, g: usize) -> Result<()> {
        let mut mag = [0u32; MAX_LIMBS];
        let mut negative = false;
        let mut full = [0u32; MAX_LIMBS];
        let with_sum = self.holds(StateKind::Sum);
        if with_sum {
            let first = self.first[g] as usize;
            let stored = self.stored(g);
            let limbs = self.dtype.limbs();
            if first + stored.len() > limbs {
                return Err(corrupt(format!(
                    "limbs {first}..{} exceed the {limbs} of a {} sum",
                    first + stored.len(),
                    self.dtype
                )));
            }
            if trimmed_at(first, stored) != (first, stored.len()) {
                return Err(corrupt("sum limbs not in canonical form"));
            }
            let l = self.full_limbs(g, &mut full).len();
            mag[..l].copy_from_slice(&full[..l]);
            negative = to_magnitude(&mut mag[..l]);
        } else if self.flags[g] & FLAG_NONNEG != 0 {
            return Err(corrupt("the non-negative flag without a sum"));
        }
        let mag = &mag[..self.dtype.limbs()];
        for kind in self.kinds() {
            self.settled(g, kind)
                .check(if kind == StateKind::Sum { mag } else { &[] })?;
        }
        let value = |kind| {
            self.holds(kind)
                .then(|| self.settled(g, kind).best_value())
                .flatten()
        };
        let (max, min) = (value(StateKind::Max), value(StateKind::Min));
        let flags = self.flags[g];
        let pos_inf = flags & FLAG_POS_INF != 0;
        let neg_inf = flags & FLAG_NEG_INF != 0;
        if let (Some(_), Some(_)) = (max, min) {
            let (hi, lo) = (self.max[g], self.min[g]);
            if lo > hi || (self.count[g] == 1 && lo != hi) {
                return Err(corrupt("a min above the max, or two for one value"));
            }
        }
        let is = |v: Option<Scalar>, x: f64| v.is_some_and(|v| v.as_f64() == x);
        let sign = |v: Option<Scalar>| v.map(|v| v.as_f64().is_sign_negative());
        if (max.is_some() && is(max, f64::INFINITY) != pos_inf)
            || (min.is_some() && is(min, f64::NEG_INFINITY) != neg_inf)
            || (is(max, f64::NEG_INFINITY) && !neg_inf)
            || (is(min, f64::INFINITY) && !pos_inf)
        {
            return Err(corrupt("infinity flags that disagree with the max or min"));
        }
        if with_sum {
            let zero = mag.iter().all(|&l| l == 0);
            let nonneg = flags & FLAG_NONNEG != 0;
            let finite = |v: Option<Scalar>| v.is_some_and(|v| v.as_f64().is_finite());
            let bad_sign = (sign(max) == Some(true) && (!negative && !zero || nonneg))
                || (sign(min) == Some(false) && negative)
                || (self.dtype.is_float() && finite(max) && sign(max) == Some(false) && !nonneg)
                || (self.dtype.is_float() && finite(min) && sign(min) == Some(false) && !nonneg);
            if bad_sign {
                return Err(corrupt("a sum or sign flag the max and min rule out"));
            }
            let single = (self.count[g] == 1 && !pos_inf && !neg_inf)
                .then(|| max.or(min))
                .flatten();
            if let Some(v) = single {
                let mut one = ExactSum::new(self.dtype);
                match v {
                    Scalar::F32(x) => one.add_f32(x),
                    Scalar::F64(x) => one.add_f64(x),
                    Scalar::I32(x) => one.add_i64(x as i64),
                    Scalar::U32(x) => one.add_i64(x as i64),
                    Scalar::I64(x) => one.add_i64(x),
                }
                if one.to_limbs()[..] != full[..self.dtype.limbs()] {
                    return Err(corrupt("one value whose sum is not that value"));
                }
            }
        }
        Ok(())
    }
}

/// Settles the carries of 32-bit digits held in i64 from digit `from`
/// up, leaving each in 0..2^32 but the last, which takes the rest.
fn settle(digits: &mut [i64], from: usize) {
    let last = digits.len() - 1;
    let mut carry = 0i64;
    for d in &mut digits[from..last] {
        let v = *d + carry;
        *d = v & 0xffff_ffff;
        carry = v >> 32; // arithmetic shift: floor division
    }
    digits[last] += carry;
}

/// The stored window of two's complement limbs: the first nonzero limb,
/// and the limbs from it up to the highest that is not the sign extension
/// of the one below (none, from limb 0, for zero). Per-group states store
/// the same window ([`State::to_bytes`]).
pub(crate) fn trimmed(full: &[u32]) -> (usize, &[u32]) {
    let Some(first) = full.iter().position(|&l| l != 0) else {
        return (0, &[]);
    };
    let mut last = full.len();
    while last > first + 1 {
        let ext = if full[last - 2] >> 31 == 1 {
            u32::MAX
        } else {
            0
        };
        if full[last - 1] != ext {
            break;
        }
        last -= 1;
    }
    (first, &full[first..last])
}

/// Where a stored window starting at limb `first` would be trimmed to:
/// `(first, len)` of its canonical form, as [`trimmed`] gives it.
fn trimmed_at(first: usize, stored: &[u32]) -> (usize, usize) {
    match trimmed(stored) {
        (_, []) => (0, 0),
        (lead, window) => (first + lead, window.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::Element;
    use crate::test_rng::xorshift;

    /// A scalar's type and bits, every NaN alike.
    fn bits(s: Scalar) -> (u8, u64) {
        match s {
            _ if s.is_nan() => (9, 0),
            Scalar::F32(x) => (0, x.to_bits() as u64),
            Scalar::F64(x) => (1, x.to_bits()),
            Scalar::I32(x) => (2, x as u64),
            Scalar::U32(x) => (3, x as u64),
            Scalar::I64(x) => (4, x as u64),
        }
    }

    const ALL_KINDS: [StateKind; 3] = [StateKind::Sum, StateKind::Max, StateKind::Min];

    /// Every non-empty set of kinds.
    fn kind_sets() -> Vec<Vec<StateKind>> {
        (1u8..8)
            .map(|m| ALL_KINDS.into_iter().filter(|&k| m & bit(k) != 0).collect())
            .collect()
    }

    /// Columns of one group a slice of `groups`, built from `State::of`.
    fn columns_of<E: Element>(groups: &[Vec<E>], kinds: &[StateKind]) -> StateColumns {
        let mut c = StateColumns::new(E::DTYPE, kinds).unwrap();
        for g in groups {
            let states: Vec<State> = c.kinds().iter().map(|&k| State::of(g, k)).collect();
            c.push(&states.iter().collect::<Vec<_>>()).unwrap();
        }
        c
    }

    /// f64 values that stress the exact sum: NaN, infinities, signed
    /// zeros, subnormals, extremes and huge cancellation.
    fn nasty_f64(next: &mut impl FnMut() -> u64) -> f64 {
        match next() % 12 {
            0 => f64::NAN,
            1 => f64::INFINITY,
            2 => f64::NEG_INFINITY,
            3 => -0.0,
            4 => f64::from_bits(next() % (1 << 52)),
            5 => f64::MAX,
            6 => -f64::MAX,
            7 => 1e300,
            8 => -1e300,
            _ => (next() % 2001) as f64 / 7.0 - 140.0,
        }
    }

    fn groups_f64(next: &mut impl FnMut() -> u64, n: usize) -> Vec<Vec<f64>> {
        (0..n)
            .map(|_| {
                let rows = (next() % 9) as usize;
                (0..rows).map(|_| nasty_f64(next)).collect()
            })
            .collect()
    }

    #[test]
    fn groups_hold_the_states_of_their_values_and_round_trip() {
        let mut next = xorshift(5);
        for kinds in kind_sets() {
            let groups = groups_f64(&mut next, 300);
            let c = columns_of(&groups, &kinds);
            for (g, values) in groups.iter().enumerate() {
                for &k in &kinds {
                    assert_eq!(
                        c.state(g, k).unwrap(),
                        State::of(values, k),
                        "group {g} {k:?}"
                    );
                }
            }
            let bytes = c.to_bytes();
            assert_eq!(StateColumns::from_bytes(&bytes).unwrap(), c);
            let ints: Vec<Vec<i64>> = (0..200)
                .map(|_| {
                    (0..next() % 5)
                        .map(|_| match next() % 4 {
                            0 => i64::MIN,
                            1 => i64::MAX,
                            _ => next() as i64 >> (next() % 64),
                        })
                        .collect()
                })
                .collect();
            let ci = columns_of(&ints, &kinds);
            assert_eq!(StateColumns::from_bytes(&ci.to_bytes()).unwrap(), ci);
            for (g, values) in ints.iter().enumerate() {
                for &k in &kinds {
                    assert_eq!(ci.state(g, k).unwrap(), State::of(values, k));
                }
            }
            let floats: Vec<Vec<f32>> = groups
                .iter()
                .map(|g| g.iter().map(|&x| x as f32).collect())
                .collect();
            let cf = columns_of(&floats, &kinds);
            assert_eq!(StateColumns::from_bytes(&cf.to_bytes()).unwrap(), cf);
        }
    }

    #[test]
    fn merging_any_split_gives_the_states_of_the_whole() {
        let mut next = xorshift(9);
        for kinds in kind_sets() {
            // Rows of 40 keys split over 4 parts at random.
            let rows: Vec<(i32, f64)> = (0..3000)
                .map(|_| ((next() % 40) as i32 - 20, nasty_f64(&mut next)))
                .collect();
            let part_of: Vec<u64> = rows.iter().map(|_| next() % 4).collect();
            let mut parts: Vec<(Vec<i32>, StateColumns)> = Vec::new();
            for p in 0..4 {
                let mut by_key = std::collections::BTreeMap::<i32, Vec<f64>>::new();
                for (i, &(k, v)) in rows.iter().enumerate() {
                    if part_of[i] == p {
                        by_key.entry(k).or_default().push(v);
                    }
                }
                let keys: Vec<i32> = by_key.keys().rev().copied().collect();
                let groups: Vec<Vec<f64>> = keys.iter().map(|k| by_key[k].clone()).collect();
                parts.push((keys, columns_of(&groups, &kinds)));
            }
            let refs: Vec<(&[i32], &StateColumns)> =
                parts.iter().map(|(k, c)| (&k[..], c)).collect();
            let (keys, merged) = StateColumns::merge_by_key(&refs).unwrap();
            let (keys2, merged2) =
                StateColumns::merge_by_key(&refs[..].iter().rev().copied().collect::<Vec<_>>())
                    .unwrap();
            assert_eq!((&keys, &merged), (&keys2, &merged2), "order of parts");
            let mut whole = std::collections::BTreeMap::<i32, Vec<f64>>::new();
            for &(k, v) in &rows {
                whole.entry(k).or_default().push(v);
            }
            assert_eq!(keys, whole.keys().copied().collect::<Vec<_>>());
            for (g, values) in whole.values().enumerate() {
                for &k in &kinds {
                    let want = State::of(values, k);
                    assert_eq!(merged.state(g, k).unwrap(), want, "group {g} {k:?}");
                    for op in [Op::Sum, Op::Mean, Op::Max, Op::Min, Op::Count] {
                        if StateKind::for_op(op) != k && op != Op::Count {
                            continue;
                        }
                        for nan in [NanPolicy::Propagate, NanPolicy::Ignore] {
                            let got = merged.finalize(op, nan).unwrap()[g];
                            let want = want.finalize(op, nan).unwrap();
                            assert_eq!(got.map(bits), want.map(bits), "{op} {nan:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn sums_of_many_entries_cancel_exactly() {
        // 1e300 - 1e300 + tiny across many parts: the merge must keep the
        // tiny part and the sign of what is left.
        let kinds = [StateKind::Sum];
        let tiny = f64::from_bits(1);
        let groups: Vec<Vec<f64>> = vec![
            vec![1e300],
            vec![-1e300],
            vec![tiny],
            vec![-f64::MAX],
            vec![f64::MAX, -tiny, -tiny],
        ];
        let c = columns_of(&groups, &kinds);
        let entries: Vec<(usize, usize)> = (0..groups.len()).map(|g| (0, g)).collect();
        let m = StateColumns::merge_runs(&[&c], &entries, &[groups.len()]).unwrap();
        let all: Vec<f64> = groups.concat();
        assert_eq!(
            m.state(0, StateKind::Sum).unwrap(),
            State::of(&all, StateKind::Sum)
        );
        assert_eq!(
            m.finalize(Op::Sum, NanPolicy::Propagate).unwrap()[0],
            Some(Scalar::F64(-tiny))
        );
    }

    #[test]
    fn empty_groups_finalise_to_no_value_but_count() {
        let mut c = StateColumns::new(Dtype::F32, &[StateKind::Sum, StateKind::Min]).unwrap();
        c.push_empty();
        let s = State::of(&[2.5f32, -1.0], StateKind::Sum);
        let m = State::of(&[2.5f32, -1.0], StateKind::Min);
        c.push(&[&s, &m]).unwrap();
        assert_eq!(
            c.finalize(Op::Sum, NanPolicy::Propagate).unwrap(),
            vec![None, Some(Scalar::F32(1.5))]
        );
        assert_eq!(
            c.finalize(Op::Count, NanPolicy::Ignore).unwrap(),
            vec![Some(Scalar::I64(0)), Some(Scalar::I64(2))]
        );
        assert_eq!(
            c.finalize(Op::Min, NanPolicy::Ignore).unwrap(),
            vec![None, Some(Scalar::F32(-1.0))]
        );
        let err = c
            .finalize(Op::Max, NanPolicy::Ignore)
            .unwrap_err()
            .to_string();
        assert!(err.contains("hold no Max"), "{err}");
        assert!(c.state(2, StateKind::Sum).is_err());
        assert!(StateColumns::new(Dtype::F32, &[]).is_err());
        // Wrong kinds, order, dtype or disagreeing states are refused.
        assert!(c.push(&[&m, &s]).is_err());
        assert!(c.push(&[&s]).is_err());
        let other = State::of(&[2.5f32], StateKind::Min);
        assert!(c.push(&[&s, &other]).is_err());
        assert!(
            c.push(&[
                &State::of(&[1.0f64], StateKind::Sum),
                &State::of(&[1.0f64], StateKind::Min)
            ])
            .is_err()
        );
    }

    #[test]
    fn bad_merges_are_refused_by_name() {
        let a = columns_of(&[vec![1.0f64], vec![2.0]], &[StateKind::Sum]);
        let b = columns_of(&[vec![1.0f64]], &[StateKind::Max]);
        let c = columns_of(&[vec![1.0f32]], &[StateKind::Sum]);
        assert!(StateColumns::merge_runs(&[&a, &b], &[(0, 0), (1, 0)], &[2]).is_err());
        assert!(StateColumns::merge_runs(&[&a, &c], &[(0, 0), (1, 0)], &[2]).is_err());
        assert!(StateColumns::merge_runs(&[], &[], &[]).is_err());
        for (entries, ends) in [
            (&[(0, 2)][..], &[1][..]),
            (&[(1, 0)], &[1]),
            (&[(0, 0), (0, 1)], &[1]),
            (&[(0, 0), (0, 1)], &[2, 1]),
            (&[(0, 0), (0, 1)], &[0, 2]),
            (&[(0, 0), (0, 1)], &[1, 1, 2]),
            (&[(0, 0)], &[2]),
            (&[], &[0]),
        ] {
            assert!(
                StateColumns::merge_runs(&[&a], entries, ends).is_err(),
                "{entries:?} {ends:?}"
            );
        }
        let none = StateColumns::merge_runs(&[&a], &[], &[]).unwrap();
        assert!(none.is_empty());
        assert!(StateColumns::merge_by_key(&[(&[1i64][..], &a)]).is_err());
    }

    /// Columns of one group from forged parts, read back from bytes.
    fn forged(
        dtype: Dtype,
        kinds: &[StateKind],
        parts: (u64, u64, u8, u64, u64),
        sum: &[u32],
    ) -> Result<StateColumns> {
        let mut c = StateColumns::new(dtype, kinds).unwrap();
        let mut full = vec![0u32; dtype.limbs()];
        full[..sum.len()].copy_from_slice(sum);
        let (len, count, flags, max, min) = parts;
        c.push_parts(len, count, flags, max, min, Some(&full));
        StateColumns::from_bytes(&c.to_bytes())
    }

    #[test]
    fn groups_no_data_makes_are_refused() {
        use crate::state::{FLAG_NEG_INF, FLAG_POS_INF};
        let sum = [StateKind::Sum];
        let m = u32::MAX;
        // 2^62 int64 values sum to at most 2^125 in magnitude: 2^127 - 1
        // would wrap a merge with itself.
        let big = 1u64 << 62;
        assert!(
            forged(
                Dtype::I64,
                &sum,
                (big, big, 0, 0, 0),
                &[m, m, m, 0x7fff_ffff]
            )
            .is_err()
        );
        // -2^125 is 2^62 values of i64::MIN: real.
        assert!(
            forged(
                Dtype::I64,
                &sum,
                (big, big, 0, 0, 0),
                &[0, 0, 0, 0xe000_0000]
            )
            .is_ok()
        );
        // One float64 of 2^1024 (2^2098 on the grid) is no value.
        let mut limbs = vec![0u32; 66];
        limbs[65] = 1 << 18;
        assert!(forged(Dtype::F64, &sum, (1, 1, FLAG_NONNEG, 0, 0), &limbs).is_err());
        let one_max = columns_of(&[vec![f64::MAX]], &sum);
        assert_eq!(
            StateColumns::from_bytes(&one_max.to_bytes()).unwrap(),
            one_max
        );
        // Kinds that disagree: int32 sum 5, max 1, min 3 of one value.
        let key = |v: i32| (v as u32 ^ 0x8000_0000) as u64;
        let all = [StateKind::Sum, StateKind::Max, StateKind::Min];
        assert!(forged(Dtype::I32, &all, (1, 1, 0, key(1), key(3)), &[5]).is_err());
        assert!(forged(Dtype::I32, &all, (2, 2, 0, key(1), key(3)), &[4]).is_err());
        assert!(forged(Dtype::I32, &all, (1, 1, 0, key(5), key(5)), &[5]).is_ok());
        // A max of 1.0 beside a +inf flag; one +inf with a finite sum.
        let k1 = 1.0f64.to_bits() | 1 << 63;
        let max = [StateKind::Max];
        assert!(forged(Dtype::F64, &max, (1, 1, FLAG_POS_INF, k1, 0), &[]).is_err());
        assert!(forged(Dtype::F64, &sum, (1, 1, FLAG_POS_INF, 0, 0), &[7]).is_err());
        assert!(
            forged(
                Dtype::F64,
                &sum,
                (1, 1, FLAG_POS_INF | FLAG_NEG_INF, 0, 0),
                &[]
            )
            .is_err()
        );
        // A negative max beside a positive sum or the non-negative flag.
        let km = !(-1.0f64).to_bits();
        let sm = [StateKind::Sum, StateKind::Max];
        assert!(
            forged(
                Dtype::F64,
                &sm,
                (2, 2, 0, km, 0),
                &[
                    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                    0, 0, 0, 0, 0, 0, 0, 1
                ]
            )
            .is_err()
        );
        assert!(
            forged(
                Dtype::F64,
                &sm,
                (1, 1, FLAG_NONNEG | FLAG_NEG_INF, km, 0),
                &[]
            )
            .is_err()
        );
        // The non-negative flag where no sum is held.
        let mut c = StateColumns::new(Dtype::F64, &max).unwrap();
        c.push_parts(1, 1, 0, k1, 0, None);
        let mut b = c.to_bytes();
        b[HEADER_BYTES + 16] = FLAG_NONNEG;
        assert!(StateColumns::from_bytes(&b).is_err());
        // And the same holes through a per-group State's bytes.
        let forged_state = |dtype, len, flags, limbs: &[u32]| {
            let mut full = vec![0u32; crate::dtype::Dtype::limbs(dtype)];
            full[..limbs.len()].copy_from_slice(limbs);
            let parts = Settled {
                dtype,
                kind: StateKind::Sum,
                len,
                count: len,
                flags,
                key: 0,
            };
            State::from_bytes(
                &State::from_parts(parts, ExactSum::from_limbs(dtype, &full)).to_bytes(),
            )
        };
        assert!(forged_state(Dtype::I64, big, 0, &[m, m, m, 0x7fff_ffff]).is_err());
        assert!(forged_state(Dtype::F64, 1, FLAG_NONNEG, &limbs).is_err());
        assert!(forged_state(Dtype::F64, 1, FLAG_POS_INF, &[7]).is_err());
    }

    #[test]
    fn corrupt_bytes_are_refused_never_panic() {
        let mut next = xorshift(3);
        let groups = groups_f64(&mut next, 40);
        let c = columns_of(&groups, &ALL_KINDS);
        let bytes = c.to_bytes();
        for cut in 0..bytes.len() {
            assert!(
                StateColumns::from_bytes(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(StateColumns::from_bytes(&longer).is_err());
        // Every byte flipped: read back or refused, never a panic, and what
        // reads back writes the same bytes.
        for at in 0..bytes.len() {
            for flip in [1u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[at] ^= flip;
                if let Ok(back) = StateColumns::from_bytes(&b) {
                    assert_eq!(back.to_bytes(), b, "byte {at}");
                }
            }
        }
        let patch = |at: usize, v: &[u8]| {
            let mut b = bytes.clone();
            b[at..at + v.len()].copy_from_slice(v);
            StateColumns::from_bytes(&b).unwrap_err().to_string()
        };
        assert!(patch(0, b"GLPS").contains("magic"));
        assert!(patch(4, &[2]).contains("version"));
        assert!(patch(5, &[9]).contains("dtype"));
        assert!(patch(6, &[0]).contains("kinds"));
        assert!(patch(6, &[8]).contains("kinds"));
        assert!(patch(8, &u64::MAX.to_le_bytes()).contains("announces"));
        assert!(patch(16, &u64::MAX.to_le_bytes()).contains("announces"));
        // A first group with more non-NaN values than values seen.
        let mut b = bytes.clone();
        let count_at = HEADER_BYTES + 8 * c.len();
        b[count_at..count_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(StateColumns::from_bytes(&b).is_err());
        // Limbs that only repeat the sign, or start with a zero limb.
        let one = columns_of(&[vec![1.0f64]], &[StateKind::Sum]);
        let ob = one.to_bytes();
        let mut padded = ob.clone();
        padded[16] += 1; // one more limb in all
        let n_at = HEADER_BYTES + 8 + 8 + 1 + 1;
        padded[n_at] += 1;
        padded.extend_from_slice(&[0, 0, 0, 0]);
        let err = StateColumns::from_bytes(&padded).unwrap_err().to_string();
        assert!(err.contains("canonical"), "{err}");
        let mut lead = padded.clone();
        let first_at = n_at - 1;
        lead[first_at] -= 1;
        let limbs_at = n_at + 1;
        let top: [u8; 4] = lead[limbs_at..limbs_at + 4].try_into().unwrap();
        lead[limbs_at..limbs_at + 4].copy_from_slice(&[0; 4]);
        lead[limbs_at + 4..limbs_at + 8].copy_from_slice(&top);
        let err = StateColumns::from_bytes(&lead).unwrap_err().to_string();
        assert!(err.contains("canonical"), "{err}");
    }
}
