//! Partial states: what a reduction knows about a piece of the data, small,
//! serialisable and mergeable in any order. Finalising the merge of the
//! states of any split of the data gives the same bits as one reduction
//! over all of it, because the sum is an exact integer (see
//! [`crate::exact`]) and max/min/count are order-free.
//!
//! # Byte layout (version 1, little-endian)
//!
//! | bytes    | field                                                        |
//! |----------|--------------------------------------------------------------|
//! | 0..4     | magic `GLPS`                                                 |
//! | 4        | version, 1                                                   |
//! | 5        | dtype: 0 float32, 1 float64, 2 int32, 3 uint32, 4 int64      |
//! | 6        | kind: 0 sum (also mean and count), 1 max, 2 min              |
//! | 7        | flags: 1 NaN seen, 2 +inf seen, 4 -inf seen, 8 a non-NaN value with a clear sign bit seen |
//! | 8..16    | values seen (NaN included)                                   |
//! | 16..24   | non-NaN values seen                                          |
//! | 24..32   | max/min: order key of the best value (0 for sums)            |
//! | 32..34   | sum: index of the first stored limb                          |
//! | 34..36   | sum: stored limbs `n`                                        |
//! | 36..     | sum: `n` 32-bit limbs of the exact sum (two's complement on the dtype's grid); limbs below are 0, limbs above repeat the sign |
//!
//! A float64 sum of ordinary data stores a handful of limbs: about 50 bytes.

use crate::dtype::{Dtype, Element, Scalar};
use crate::error::{Error, Result};
use crate::exact::ExactSum;
use crate::op::{KernelOp, NanPolicy, Op};

pub(crate) const FLAG_NAN: u8 = 1;
pub(crate) const FLAG_POS_INF: u8 = 2;
pub(crate) const FLAG_NEG_INF: u8 = 4;
pub(crate) const FLAG_NONNEG: u8 = 8;
const FLAGS_KNOWN: u8 = 15;

/// Word offsets in one GPU partial (exact.wgsl's `P_COUNT`, `P_FLAGS`,
/// `P_KEY`): the sum's limbs first, then the count (lo, hi), the flags and
/// the order key (lo, hi).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PartialLayout {
    pub count: usize,
    pub flags: usize,
    pub key: usize,
}

impl PartialLayout {
    pub(crate) fn of(dtype: Dtype) -> Self {
        let l = dtype.limbs();
        PartialLayout {
            count: l,
            flags: l + 2,
            key: l + 3,
        }
    }
}

const MAGIC: &[u8; 4] = b"GLPS";
const VERSION: u8 = 1;
const HEADER_BYTES: usize = 36;

/// What a state accumulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StateKind {
    /// The exact sum (serves `sum`, `mean` and `count`).
    Sum,
    /// The largest value.
    Max,
    /// The smallest value.
    Min,
}

impl StateKind {
    /// The kind a state must be to finalise `op`.
    pub fn for_op(op: Op) -> StateKind {
        match op.kernel() {
            KernelOp::Sum => StateKind::Sum,
            KernelOp::Max => StateKind::Max,
            KernelOp::Min => StateKind::Min,
        }
    }

    /// The op whose pass fills a state of this kind (sum for sums).
    pub(crate) fn op(self) -> Op {
        match self {
            StateKind::Sum => Op::Sum,
            StateKind::Max => Op::Max,
            StateKind::Min => Op::Min,
        }
    }

    fn code(self) -> u8 {
        match self {
            StateKind::Sum => 0,
            StateKind::Max => 1,
            StateKind::Min => 2,
        }
    }
}

/// The partial state of one reduction over a piece of the data.
#[derive(Clone, Debug)]
pub struct State {
    /// Everything but the sum.
    parts: Settled,
    sum: ExactSum,
}

impl PartialEq for State {
    fn eq(&self, o: &State) -> bool {
        self.parts == o.parts && self.sum.to_limbs() == o.sum.to_limbs()
    }
}

/// The order key of a value's bits: larger values have larger keys (-0.0
/// below +0.0); NaN never reaches it.
fn order_key(dtype: Dtype, bits: u64) -> u64 {
    match dtype {
        Dtype::F32 => {
            let b = bits as u32;
            (if b >> 31 == 1 { !b } else { b | 0x8000_0000 }) as u64
        }
        Dtype::F64 => {
            if bits >> 63 == 1 {
                !bits
            } else {
                bits | 1 << 63
            }
        }
        Dtype::I32 => (bits as u32 ^ 0x8000_0000) as u64,
        Dtype::U32 => bits as u32 as u64,
        Dtype::I64 => bits ^ 1 << 63,
    }
}

fn value_of_key(dtype: Dtype, key: u64) -> Scalar {
    match dtype {
        Dtype::F32 => {
            let k = key as u32;
            Scalar::F32(f32::from_bits(if k >> 31 == 1 {
                k & 0x7fff_ffff
            } else {
                !k
            }))
        }
        Dtype::F64 => Scalar::F64(f64::from_bits(if key >> 63 == 1 {
            key & !(1 << 63)
        } else {
            !key
        })),
        Dtype::I32 => Scalar::I32((key as u32 ^ 0x8000_0000) as i32),
        Dtype::U32 => Scalar::U32(key as u32),
        Dtype::I64 => Scalar::I64((key ^ 1 << 63) as i64),
    }
}

/// What finishing a sum or mean asks of the exact sum: [`ExactSum`] itself,
/// or its value and mean already rounded (keyed groups finished on the
/// device, src/keyed/finish.rs).
pub(crate) trait ExactValue {
    /// True when the sum is exactly zero.
    fn is_zero(&self) -> bool;
    /// The sum rounded once to `target`, as an f64 holding it exactly.
    fn round(&self, target: Dtype) -> f64;
    /// The sum divided by `count`, rounded once to `target`.
    fn mean(&self, count: u64, target: Dtype) -> f64;
    /// The sum as an i64 (integer dtypes), `None` when it does not fit.
    fn to_i64(&self) -> Option<i64>;
}

impl ExactValue for ExactSum {
    fn is_zero(&self) -> bool {
        ExactSum::is_zero(self)
    }
    fn round(&self, target: Dtype) -> f64 {
        ExactSum::round(self, target)
    }
    fn mean(&self, count: u64, target: Dtype) -> f64 {
        ExactSum::mean(self, count, target)
    }
    fn to_i64(&self) -> Option<i64> {
        ExactSum::to_i64(self)
    }
}

/// A state's parts besides its sum: what finishing reads with the sum (one
/// set of rules for [`State`]s and for keyed groups finished on the device).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Settled {
    pub dtype: Dtype,
    pub kind: StateKind,
    /// Values, NaN included.
    pub len: u64,
    /// Non-NaN values.
    pub count: u64,
    pub flags: u8,
    /// The best value's order key (max, min; min's uncomplemented).
    pub key: u64,
}

impl Settled {
    /// From the words a kernel left: `flags` as it set them, `raw_key` its
    /// order key (a 32-bit dtype's in the high word, min's complemented).
    #[inline]
    pub(crate) fn from_gpu(
        dtype: Dtype,
        kind: StateKind,
        len: u64,
        count: u64,
        flags: u32,
        raw_key: u64,
    ) -> Self {
        let key = match (dtype.words(), kind) {
            (1, StateKind::Min) => !(raw_key >> 32) & 0xffff_ffff,
            (1, _) => raw_key >> 32,
            (_, StateKind::Min) => !raw_key,
            _ => raw_key,
        };
        Settled {
            dtype,
            kind,
            len,
            count,
            flags: flags as u8
                & if kind == StateKind::Sum {
                    FLAGS_KNOWN
                } else {
                    FLAGS_KNOWN & !FLAG_NONNEG
                },
            key: if count == 0 || kind == StateKind::Sum {
                0
            } else {
                key
            },
        }
    }

    /// Values counted under `nan`: NaN included under `Propagate`.
    #[inline]
    pub(crate) fn count(&self, nan: NanPolicy) -> u64 {
        match nan {
            NanPolicy::Propagate => self.len,
            NanPolicy::Ignore => self.count,
        }
    }

    #[inline]
    pub(crate) fn finalize(
        &self,
        op: Op,
        nan: NanPolicy,
        sum: &impl ExactValue,
    ) -> Result<Option<Scalar>> {
        if StateKind::for_op(op) != self.kind && op != Op::Count {
            return Err(Error::InvalidState(format!(
                "a {:?} state cannot give {op}",
                self.kind
            )));
        }
        let d = self.dtype;
        if op == Op::Count {
            return Ok(Some(Scalar::I64(self.count(nan) as i64)));
        }
        let float = |v: f64, t: Dtype| match t {
            Dtype::F32 => Scalar::F32(v as f32),
            _ => Scalar::F64(v),
        };
        // The float type of sums and means: the input's, or float64.
        let sum_type = if d == Dtype::F32 {
            Dtype::F32
        } else {
            Dtype::F64
        };
        if self.len > 0 && nan == NanPolicy::Propagate && self.flags & FLAG_NAN != 0 {
            return Ok(Some(float(f64::NAN, sum_type)));
        }
        let valid = self.count;
        let pos_inf = self.flags & FLAG_POS_INF != 0;
        let neg_inf = self.flags & FLAG_NEG_INF != 0;
        match op {
            Op::Sum | Op::Mean => {
                if op == Op::Mean && valid == 0 {
                    return Ok(None);
                }
                if pos_inf || neg_inf {
                    let v = match (pos_inf, neg_inf) {
                        (true, true) => f64::NAN,
                        (true, false) => f64::INFINITY,
                        _ => f64::NEG_INFINITY,
                    };
                    return Ok(Some(float(v, sum_type)));
                }
                if !d.is_float() && op == Op::Sum {
                    return sum.to_i64().map(|v| Some(Scalar::I64(v))).ok_or_else(|| {
                        Error::Overflow(format!(
                            "the {d} sum of {valid} values does not fit in int64"
                        ))
                    });
                }
                if sum.is_zero() {
                    // IEEE: a sum of only -0.0 values is -0.0 (so is the mean).
                    let neg_zero = valid > 0 && self.flags & FLAG_NONNEG == 0 && d.is_float();
                    return Ok(Some(float(if neg_zero { -0.0 } else { 0.0 }, sum_type)));
                }
                let v = match op {
                    Op::Sum => sum.round(sum_type),
                    _ => sum.mean(valid, sum_type),
                };
                Ok(Some(float(v, sum_type)))
            }
            Op::Max | Op::Min => Ok((valid > 0).then(|| value_of_key(d, self.key))),
            Op::Count => unreachable!("handled above"),
        }
    }
}

fn corrupt(msg: impl Into<String>) -> Error {
    Error::InvalidState(msg.into())
}

impl State {
    /// The state of no values.
    pub fn empty(dtype: Dtype, kind: StateKind) -> Self {
        State {
            parts: Settled {
                dtype,
                kind,
                len: 0,
                count: 0,
                flags: 0,
                key: 0,
            },
            sum: ExactSum::new(dtype),
        }
    }

    /// A state from its parts (the readers of state columns).
    pub(crate) fn from_parts(parts: Settled, sum: ExactSum) -> Self {
        State { parts, sum }
    }

    /// Everything but the sum, and the sum (the writers of state columns).
    pub(crate) fn parts(&self) -> (&Settled, &ExactSum) {
        (&self.parts, &self.sum)
    }

    /// The state of `data`, computed on the CPU (the crate's reference, and
    /// a fallback where no GPU is wanted).
    pub fn of<E: Element>(data: &[E], kind: StateKind) -> Self {
        let mut s = State::empty(E::DTYPE, kind);
        let words: &[u32] = bytemuck::cast_slice(data);
        match E::DTYPE.words() {
            1 => words.iter().for_each(|&w| s.add_bits(w as u64)),
            _ => words
                .chunks_exact(2)
                .for_each(|w| s.add_bits(w[0] as u64 | (w[1] as u64) << 32)),
        }
        s
    }

    /// Adds one value given by its bits.
    fn add_bits(&mut self, bits: u64) {
        self.parts.len += 1;
        let d = self.parts.dtype;
        if d.is_float() {
            let (nan, inf, neg) = match d {
                Dtype::F32 => {
                    let x = f32::from_bits(bits as u32);
                    (x.is_nan(), x.is_infinite(), x.is_sign_negative())
                }
                _ => {
                    let x = f64::from_bits(bits);
                    (x.is_nan(), x.is_infinite(), x.is_sign_negative())
                }
            };
            if nan {
                self.parts.flags |= FLAG_NAN;
                return;
            }
            // As the kernels do: infinities leave the sum (flags only), and
            // only a finite value with a clear sign bit sets FLAG_NONNEG
            // (which only sums need: the sign of an exactly zero sum).
            if inf {
                self.parts.flags |= if neg { FLAG_NEG_INF } else { FLAG_POS_INF };
            } else if !neg && self.parts.kind == StateKind::Sum {
                self.parts.flags |= FLAG_NONNEG;
            }
        }
        self.parts.count += 1;
        match self.parts.kind {
            StateKind::Sum => match d {
                Dtype::F32 => self.sum.add_f32(f32::from_bits(bits as u32)),
                Dtype::F64 => self.sum.add_f64(f64::from_bits(bits)),
                Dtype::I32 => self.sum.add_i64(bits as u32 as i32 as i64),
                Dtype::U32 => self.sum.add_i64(bits as u32 as i64),
                Dtype::I64 => self.sum.add_i64(bits as i64),
            },
            StateKind::Max | StateKind::Min => {
                let k = order_key(d, bits);
                let better = match self.parts.kind {
                    StateKind::Max => k > self.parts.key,
                    _ => k < self.parts.key,
                };
                if self.parts.count == 1 || better {
                    self.parts.key = k;
                }
            }
        }
    }

    /// A state from one GPU partial (`dtype.partial_words()` words, the
    /// layout in shaders/exact.wgsl) of a piece of `len` values.
    pub(crate) fn from_gpu(dtype: Dtype, kind: StateKind, len: u64, words: &[u32]) -> Self {
        let mut s = State::empty(dtype, kind);
        s.refill_from_gpu(dtype, kind, len, words);
        s
    }

    /// Makes this the state [`State::from_gpu`] gives, reusing its sum's
    /// storage where the dtype is the same (keyed reductions finish one
    /// state per group and kind).
    pub(crate) fn refill_from_gpu(
        &mut self,
        dtype: Dtype,
        kind: StateKind,
        len: u64,
        words: &[u32],
    ) {
        let l = dtype.limbs();
        let at = PartialLayout::of(dtype);
        let pair = |i: usize| words[i] as u64 | (words[i + 1] as u64) << 32;
        let settled = Settled::from_gpu(
            dtype,
            kind,
            len,
            pair(at.count),
            words[at.flags],
            pair(at.key),
        );
        if self.parts.dtype != dtype {
            self.sum = ExactSum::new(dtype);
        }
        self.parts = settled;
        if kind == StateKind::Sum {
            self.sum.set_limbs(&words[..l]);
        } else {
            self.sum.clear();
        }
    }

    /// The input dtype.
    pub fn dtype(&self) -> Dtype {
        self.parts.dtype
    }

    /// What the state accumulates.
    pub fn kind(&self) -> StateKind {
        self.parts.kind
    }

    /// Values seen, NaN included.
    pub fn len(&self) -> u64 {
        self.parts.len
    }

    /// True when no value was seen.
    pub fn is_empty(&self) -> bool {
        self.parts.len == 0
    }

    /// The count an op reports: every value under
    /// [`NanPolicy::Propagate`], non-NaN values under [`NanPolicy::Ignore`].
    pub fn count(&self, nan: NanPolicy) -> u64 {
        self.parts.count(nan)
    }

    /// Adds `other` (the state of other values of the same dtype and kind).
    pub fn merge(&mut self, other: &State) -> Result<()> {
        if self.parts.dtype != other.parts.dtype || self.parts.kind != other.parts.kind {
            return Err(Error::InvalidState(format!(
                "cannot merge a {} {:?} state into a {} {:?} state",
                other.parts.dtype, other.parts.kind, self.parts.dtype, self.parts.kind
            )));
        }
        if other.parts.count > 0 {
            let better = match self.parts.kind {
                StateKind::Sum => false,
                StateKind::Max => other.parts.key > self.parts.key,
                StateKind::Min => other.parts.key < self.parts.key,
            };
            if self.parts.kind != StateKind::Sum && (self.parts.count == 0 || better) {
                self.parts.key = other.parts.key;
            }
        }
        self.parts.len = self.parts.len.checked_add(other.parts.len).ok_or_else(|| {
            Error::InvalidState("merged states hold more than 2^64 values".into())
        })?;
        self.parts.count += other.parts.count;
        self.parts.flags |= other.parts.flags;
        if self.parts.kind == StateKind::Sum {
            self.sum.merge(&other.sum);
        }
        Ok(())
    }

    /// The value of `op` under `nan` (`None` where the op has no value:
    /// `mean`, `max`, `min` of no values). Integer sums outside int64 are
    /// [`Error::Overflow`].
    pub fn finalize(&self, op: Op, nan: NanPolicy) -> Result<Option<Scalar>> {
        self.parts.finalize(op, nan, &self.sum)
    }

    /// The state as versioned bytes (see the module's layout table).
    pub fn to_bytes(&self) -> Vec<u8> {
        let limbs = if self.parts.kind == StateKind::Sum {
            self.sum.to_limbs()
        } else {
            Vec::new()
        };
        // A zero sum stores no limb, from the limbs' end.
        let (first, stored) = match crate::state_columns::trimmed(&limbs) {
            (_, []) => (limbs.len(), &[][..]),
            window => window,
        };
        let mut out = Vec::with_capacity(HEADER_BYTES + 4 * stored.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(self.parts.dtype.code());
        out.push(self.parts.kind.code());
        out.push(self.parts.flags);
        out.extend_from_slice(&self.parts.len.to_le_bytes());
        out.extend_from_slice(&self.parts.count.to_le_bytes());
        out.extend_from_slice(&self.parts.key.to_le_bytes());
        out.extend_from_slice(&(first as u16).to_le_bytes());
        out.extend_from_slice(&(stored.len() as u16).to_le_bytes());
        for l in stored {
            out.extend_from_slice(&l.to_le_bytes());
        }
        out
    }

    /// Reads bytes written by [`State::to_bytes`]; anything else (another
    /// format, version or length, an impossible field) is
    /// [`Error::InvalidState`] naming the problem.
    pub fn from_bytes(bytes: &[u8]) -> Result<State> {
        if bytes.len() < HEADER_BYTES {
            return Err(corrupt(format!(
                "{} bytes is shorter than the {HEADER_BYTES}-byte header",
                bytes.len()
            )));
        }
        if &bytes[0..4] != MAGIC {
            return Err(corrupt("not a gpulanes state (bad magic)"));
        }
        if bytes[4] != VERSION {
            return Err(corrupt(format!(
                "unsupported state version {} (this build reads {VERSION})",
                bytes[4]
            )));
        }
        let dtype = Dtype::from_code(bytes[5])
            .ok_or_else(|| corrupt(format!("unknown dtype code {}", bytes[5])))?;
        let kind = [StateKind::Sum, StateKind::Max, StateKind::Min]
            .into_iter()
            .find(|k| k.code() == bytes[6])
            .ok_or_else(|| corrupt(format!("unknown state kind {}", bytes[6])))?;
        let flags = bytes[7];
        if flags & !FLAGS_KNOWN != 0 || (!dtype.is_float() && flags != 0) {
            return Err(corrupt(format!(
                "flags {flags:#x} are not valid for {dtype}"
            )));
        }
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]) as usize;
        let (len, count, key) = (u64_at(8), u64_at(16), u64_at(24));
        if count > len {
            return Err(corrupt(format!("{count} non-NaN values of {len} in all")));
        }
        let (first, n) = (u16_at(32), u16_at(34));
        if bytes.len() != HEADER_BYTES + 4 * n {
            return Err(corrupt(format!(
                "{} bytes where the header announces {}",
                bytes.len(),
                HEADER_BYTES + 4 * n
            )));
        }
        let limbs_total = dtype.limbs();
        if kind == StateKind::Sum {
            if key != 0 {
                return Err(corrupt("a sum state with a key"));
            }
            if first + n > limbs_total {
                return Err(corrupt(format!(
                    "limbs {first}..{} exceed the {limbs_total} of a {dtype} sum",
                    first + n
                )));
            }
        } else if n != 0 || first != 0 {
            return Err(corrupt("a max/min state with sum limbs"));
        }
        let mut limbs = vec![0u32; limbs_total];
        for i in 0..n {
            let at = HEADER_BYTES + 4 * i;
            limbs[first + i] = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        }
        if n > 0 && limbs[first + n - 1] >> 31 == 1 {
            limbs[first + n..].iter_mut().for_each(|l| *l = u32::MAX);
        }
        let state = State {
            parts: Settled {
                dtype,
                kind,
                len,
                count,
                flags,
                key,
            },
            sum: ExactSum::from_limbs(dtype, &limbs),
        };
        state.check_consistent()?;
        // One encoding per state: anything else (limbs that only repeat the
        // sign, a leading zero limb) is not what `to_bytes` writes.
        if state.to_bytes() != bytes {
            return Err(corrupt("not in canonical form (as to_bytes writes it)"));
        }
        Ok(state)
    }

    /// What states made from real values always satisfy, so that no bytes
    /// can make a merge wrap around or finalise to a value no data has.
    fn check_consistent(&self) -> Result<()> {
        let (_, mag) = self.sum.sign_magnitude();
        self.parts.check(&mag)
    }
}

/// True when the magnitude `mag` (little-endian u32 digits) is at most
/// (`inclusive`) or below `count` x 2^`shift`.
fn within(mag: &[u32], count: u64, shift: u32, inclusive: bool) -> bool {
    let bits = mag
        .iter()
        .rposition(|&l| l != 0)
        .map_or(0, |i| 32 * i as u64 + 32 - mag[i].leading_zeros() as u64);
    if bits == 0 {
        return true;
    }
    if bits > shift as u64 + 64 {
        return false;
    }
    let (limb, bit) = ((shift / 32) as usize, shift % 32);
    let word = |i: usize| mag.get(i).copied().unwrap_or(0) as u128;
    // mag >> shift, below 2^64 by the bit length.
    let wide = (0..4).fold(0u128, |w, i| w | word(limb + i) << (32 * i));
    let q = (wide >> bit) as u64;
    let exact = mag.iter().take(limb).all(|&l| l == 0) && word(limb) & ((1u128 << bit) - 1) == 0;
    q < count || (inclusive && q == count && exact)
}

impl Settled {
    /// What the parts of a state made from real values always satisfy,
    /// with its sum's magnitude `mag` (little-endian u32 digits): the rules
    /// every reader of serialised states applies.
    pub(crate) fn check(&self, mag: &[u32]) -> Result<()> {
        let d = self.dtype;
        let nan_seen = self.flags & FLAG_NAN != 0;
        let sum_zero = mag.iter().all(|&l| l == 0);
        if self.count > self.len {
            return Err(corrupt(format!(
                "{} non-NaN values of {} in all",
                self.count, self.len
            )));
        }
        if d.is_float() && nan_seen != (self.count < self.len) {
            return Err(corrupt(format!(
                "the NaN flag disagrees with {} non-NaN values of {}",
                self.count, self.len
            )));
        }
        if !d.is_float() && (self.count != self.len || self.flags != 0) {
            return Err(corrupt(
                "integer values with flags, or fewer counted than seen",
            ));
        }
        if self.flags & !FLAGS_KNOWN != 0
            || (self.kind != StateKind::Sum && self.flags & FLAG_NONNEG != 0)
        {
            return Err(corrupt(format!(
                "flags {:#x} are not valid for a {d} {:?} state",
                self.flags, self.kind
            )));
        }
        if self.count == 0 && (self.flags & !FLAG_NAN != 0 || !sum_zero) {
            return Err(corrupt("flags or a sum for no non-NaN values"));
        }
        let infs = self.flags & (FLAG_POS_INF | FLAG_NEG_INF);
        if self.count == 1
            && infs != 0
            && (infs == FLAG_POS_INF | FLAG_NEG_INF || !sum_zero || self.flags & FLAG_NONNEG != 0)
        {
            return Err(corrupt(
                "one value that is an infinity, yet two infinities or a finite sum",
            ));
        }
        // |sum| <= count x the largest magnitude of one value, on the
        // dtype's grid: below 2^277 (float32) or 2^2098 (float64), at most
        // 2^31 (int32) or 2^63 (int64), below 2^32 (uint32).
        let (shift, inclusive) = match d {
            Dtype::F32 => (277, false),
            Dtype::F64 => (2098, false),
            Dtype::I32 => (31, true),
            Dtype::U32 => (32, false),
            Dtype::I64 => (63, true),
        };
        if !within(mag, self.count, shift, inclusive) {
            return Err(corrupt(format!(
                "a sum larger than {} {d} values can reach",
                self.count
            )));
        }
        if self.kind != StateKind::Sum && self.count > 0 {
            let fits = d.words() == 2 || self.key >> 32 == 0;
            if !fits || value_of_key(d, self.key).is_nan() {
                return Err(corrupt(format!("key {:#x} is no {d} value", self.key)));
            }
        }
        if (self.count == 0 || self.kind == StateKind::Sum) && self.key != 0 {
            return Err(corrupt("a key for no values, or for a sum"));
        }
        Ok(())
    }

    /// The best value's order key where the state has one (max or min of
    /// some non-NaN value).
    pub(crate) fn best(&self) -> Option<u64> {
        (self.kind != StateKind::Sum && self.count > 0).then_some(self.key)
    }

    /// The best value (max or min) where the state has one.
    pub(crate) fn best_value(&self) -> Option<Scalar> {
        self.best().map(|k| value_of_key(self.dtype, k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_merge_to_the_whole_and_round_trip_through_bytes() {
        let data: Vec<f64> = (0..1000).map(|i| (i as f64 - 500.3) * 1e-3).collect();
        let whole = State::of(&data, StateKind::Sum);
        let mut merged = State::empty(Dtype::F64, StateKind::Sum);
        for piece in data.chunks(77).rev() {
            let bytes = State::of(piece, StateKind::Sum).to_bytes();
            merged.merge(&State::from_bytes(&bytes).unwrap()).unwrap();
        }
        assert_eq!(merged, whole);
        assert!(whole.to_bytes().len() < 64, "{}", whole.to_bytes().len());
        let a = whole.finalize(Op::Sum, NanPolicy::Propagate).unwrap();
        assert_eq!(a, merged.finalize(Op::Sum, NanPolicy::Propagate).unwrap());
    }

    #[test]
    fn corrupt_bytes_are_named() {
        let good = State::of(&[1.5f32, -2.0], StateKind::Sum).to_bytes();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (good[..10].to_vec(), "shorter"),
            ([b"XXXX", &good[4..]].concat(), "magic"),
            ([&good[..4], &[9u8], &good[5..]].concat(), "version"),
            ([&good[..5], &[7u8], &good[6..]].concat(), "dtype"),
            ([&good[..6], &[5u8], &good[7..]].concat(), "kind"),
            ([&good[..7], &[0x40u8], &good[8..]].concat(), "flags"),
            ([&good[..], &[0u8]].concat(), "header announces"),
        ];
        for (bytes, want) in cases {
            let err = State::from_bytes(&bytes).unwrap_err().to_string();
            assert!(err.contains(want), "{want}: {err}");
        }
        let mut bad_limbs = good.clone();
        bad_limbs[32] = 200;
        assert!(State::from_bytes(&bad_limbs).is_err());
    }

    /// Bytes of states no data can produce: each must be refused, so no
    /// merge can wrap around (an f32 sum with limb 10 = 0x7fffffff would
    /// finalise to +inf alone and to -inf merged with itself).
    #[test]
    fn impossible_states_are_refused() {
        let header = |dtype: u8, kind: u8, flags: u8, len: u64, count: u64, key: u64| {
            let mut b = b"GLPS".to_vec();
            b.extend([1, dtype, kind, flags]);
            b.extend(len.to_le_bytes());
            b.extend(count.to_le_bytes());
            b.extend(key.to_le_bytes());
            b
        };
        let with_limbs = |mut b: Vec<u8>, first: u16, limbs: &[u32]| {
            b.extend(first.to_le_bytes());
            b.extend((limbs.len() as u16).to_le_bytes());
            limbs.iter().for_each(|l| b.extend(l.to_le_bytes()));
            b
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "huge f32 sum",
                with_limbs(header(0, 0, 8, 1, 1, 0), 10, &[0x7fff_ffff]),
            ),
            (
                "f32 key over 32 bits",
                with_limbs(header(0, 1, 0, 1, 1, 1 << 40), 0, &[]),
            ),
            (
                "f32 key of a NaN",
                with_limbs(header(0, 1, 0, 1, 1, 0), 0, &[]),
            ),
            (
                "sum of no values",
                with_limbs(header(0, 0, 8, 0, 0, 0), 0, &[5]),
            ),
            (
                "inf of no values",
                with_limbs(header(1, 0, 2, 0, 0, 0), 0, &[]),
            ),
            (
                "int64 NaN count",
                with_limbs(header(4, 0, 0, 2, 1, 0), 0, &[1]),
            ),
            (
                "i32 sum of 2^40",
                with_limbs(header(2, 0, 0, 1, 1, 0), 1, &[256]),
            ),
            (
                "NaN flag, no NaN",
                with_limbs(header(0, 0, 9, 1, 1, 0), 4, &[1]),
            ),
            (
                "sign limb repeated",
                with_limbs(header(1, 0, 0, 1, 1, 0), 0, &[u32::MAX, u32::MAX]),
            ),
        ];
        for (what, bytes) in cases {
            let r = State::from_bytes(&bytes);
            assert!(matches!(r, Err(Error::InvalidState(_))), "{what}: {r:?}");
        }
        // Real states of extreme values still pass, and merge without wrapping.
        let big = State::of(&[f32::MAX; 1000], StateKind::Sum);
        let mut twice = State::from_bytes(&big.to_bytes()).unwrap();
        twice.merge(&big).unwrap();
        assert_eq!(
            twice.finalize(Op::Sum, NanPolicy::Propagate).unwrap(),
            Some(Scalar::F32(f32::INFINITY))
        );
        for s in [
            State::of(&[i64::MIN, i64::MIN], StateKind::Sum),
            State::of(&[u32::MAX; 3], StateKind::Sum),
            State::of(&[-f64::MAX; 5], StateKind::Sum),
            State::of(&[f64::NAN, 1.0], StateKind::Sum),
            State::of(&[i32::MIN], StateKind::Max),
            State::of(&[u32::MAX], StateKind::Min),
        ] {
            assert_eq!(State::from_bytes(&s.to_bytes()).unwrap(), s);
        }
    }

    #[test]
    fn max_min_and_negative_zero() {
        let s = State::of(&[-0.0f32, -0.0], StateKind::Sum);
        assert_eq!(
            s.finalize(Op::Sum, NanPolicy::Propagate).unwrap(),
            Some(Scalar::F32(-0.0))
        );
        assert!(matches!(
            s.finalize(Op::Sum, NanPolicy::Propagate).unwrap(),
            Some(Scalar::F32(z)) if z.is_sign_negative()
        ));
        let m = State::of(&[3i64, -7, 12, i64::MIN], StateKind::Min);
        assert_eq!(
            m.finalize(Op::Min, NanPolicy::Propagate).unwrap(),
            Some(Scalar::I64(i64::MIN))
        );
        let x = State::of(&[-0.0f64, 0.0, -1.0], StateKind::Max);
        assert!(matches!(
            x.finalize(Op::Max, NanPolicy::Propagate).unwrap(),
            Some(Scalar::F64(z)) if z == 0.0 && z.is_sign_positive()
        ));
        let o = State::of(&[i64::MAX, 1], StateKind::Sum);
        assert!(matches!(
            o.finalize(Op::Sum, NanPolicy::Propagate),
            Err(Error::Overflow(_))
        ));
    }
}
