// exact.wgsl: exact, order-independent reduction of partitioned data
// (float32, float64, int32, uint32, int64), shared by every dtype.
//
// What it computes
//   One partial per *work unit*. A work unit is a fixed-size slice of one
//   partition (a segment): BLOCK = 8192 input words (32-bit words: 8192
//   float32 or int32 values, 4096 float64 or int64 values) in the element
//   pass, GROUP = 2048 partials in the partial pass. Units are numbered
//   globally (segment after segment); the segment table tells each
//   workgroup which segment and which slice of it it owns. Running the
//   element pass once and then the partial pass until every segment has a
//   single partial yields one partial per non-empty segment; the host turns
//   it into the final value.
//
//   OP = 0 (sum): every value is decoded from its bits into an integer
//     (float32: mantissa << exponent on a grid of 2^-149; float64: on a grid
//     of 2^-1074; integers as they are) and added into a fixed-point
//     accumulator of LIMBS 32-bit limbs. Integer addition is associative,
//     so the result is the exact sum whatever the order, the kernel width or
//     the chunking, and subnormals count on devices that flush them in
//     float arithmetic: no float arithmetic is used at all.
//     The hot loop keeps, per invocation, a *band*: a 64- or 96-bit window
//     of the accumulator 32 binades wide, anchored below the largest
//     exponent seen, with carries counted rather than propagated. Values
//     below the band (more than ~27 binades under the largest) go through
//     further bands. A band is flushed into the workgroup's accumulator
//     (two arrays of limbs, for positive and negative contributions, added
//     with 32-bit atomics whose returned old value gives the carry) when its
//     anchor must move and at the end of the unit.
//   OP = 1 (max) / OP = 2 (min): the best 64-bit order key (monotonic in
//     the value, -0.0 below +0.0; min uses the complemented key so both are
//     a maximum), reduced with atomicMax in two phases (high word, then low).
//   Every partial carries the count of non-NaN values (64-bit) and flags:
//   NaN seen, +inf seen, -inf seen, a non-NaN value with a clear sign bit
//   seen (a sum that is exactly zero is -0.0 only when every value was).
//   NaN and infinities never enter the accumulator.
//
// Partial layout (PARTIAL_WORDS u32 words; src/partial.rs reads it)
//   [0, LIMBS)   the sum, two's complement little-endian limbs
//   LIMBS + 0,1  count (lo, hi)
//   LIMBS + 2    flags
//   LIMBS + 3,4  best order key (lo, hi)
//
// How it is dispatched
//   Workgroups of WG invocations on a 2-D grid (workgroup =
//   workgroup_id.x + workgroup_id.y * num_workgroups.x) so that more than
//   65535 fit in one dispatch; usually one per unit, surplus ones returning
//   at once, or fewer, each taking several units (exact_entry.wgsl).
//   This file is composed (src/kernels.rs) after a header that defines WG,
//   LIMBS, WPE (words per value) and PARTIAL_WORDS, and before one dtype
//   file (exact_f32.wgsl or exact_f64.wgsl, each followed by exact_float.wgsl,
//   or exact_int.wgsl) that defines `fold_group`, then exact_entry.wgsl with
//   the entry points.

override OP: u32 = 0u;

const OP_SUM: u32 = 0u;
const OP_MAX: u32 = 1u;

const BLOCK: u32 = 8192u;
const GROUP: u32 = 2048u;
// Words one invocation folds at a time: 8 vec4s.
const GROUP_WORDS: u32 = 32u;

const FLAG_NAN: u32 = 1u;
const FLAG_POS_INF: u32 = 2u;
const FLAG_NEG_INF: u32 = 4u;
const FLAG_NONNEG: u32 = 8u;

const P_COUNT: u32 = LIMBS;
const P_FLAGS: u32 = LIMBS + 2u;
const P_KEY: u32 = LIMBS + 3u;

// One entry per segment, plus a sentinel whose first_unit is the unit total.
struct Segment {
    first_unit: u32, // global index of the segment's first unit
    offset_lo: u32,  // low 32 bits of the segment's first input item index
    last_len: u32,   // items in the segment's last unit (1..=unit size)
    _pad: u32,
}

struct Params {
    unit_base: u32,     // global index of this dispatch's first unit
    unit_count: u32,    // units in this dispatch
    input_base_lo: u32, // low 32 bits of the item index at the input binding's start
    out_base: u32,      // global unit index at the output binding's start
    segment_count: u32, // segments in the table (the sentinel not counted)
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> segments: array<Segment>;
@group(0) @binding(2) var<storage, read> in_vec4: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> in_scalar: array<u32>;
@group(0) @binding(4) var<storage, read_write> out_partials: array<u32>;
@group(0) @binding(5) var<storage, read> in_partials: array<u32>;

// The workgroup's accumulator: positive contributions in [0, LIMBS),
// negative ones in [LIMBS, 2 * LIMBS), both unsigned magnitudes.
var<workgroup> wg_acc: array<atomic<u32>, 2u * LIMBS>;
var<workgroup> wg_count_lo: atomic<u32>;
var<workgroup> wg_count_hi: atomic<u32>;
var<workgroup> wg_flags: atomic<u32>;
var<workgroup> wg_nans: atomic<u32>;
var<workgroup> wg_key_hi: atomic<u32>;
var<workgroup> wg_key_lo: atomic<u32>;
// The partial pass's per-limb sums (low and high words).
var<workgroup> wg_limb_lo: array<u32, LIMBS>;
var<workgroup> wg_limb_hi: array<u32, LIMBS>;

// Zeroes the workgroup's accumulator, counts, flags and keys, then waits
// for every invocation: the kernels do not rely on wgpu zero-initialising
// workgroup memory (an engine may turn that off; see EngineOptions). The
// partial pass's limb sums are written before they are read.
fn clear_workgroup(t: u32) {
    for (var i = t; i < 2u * LIMBS; i += WG) {
        atomicStore(&wg_acc[i], 0u);
    }
    if t == 0u {
        atomicStore(&wg_count_lo, 0u);
        atomicStore(&wg_count_hi, 0u);
        atomicStore(&wg_flags, 0u);
        atomicStore(&wg_nans, 0u);
        atomicStore(&wg_key_hi, 0u);
        atomicStore(&wg_key_lo, 0u);
    }
    workgroupBarrier();
}

fn carry(sum: u32, addend: u32) -> u32 {
    return select(0u, 1u, sum < addend);
}

// Adds `x` to limb `i` of the accumulator region ending at `end`, carrying
// into the limbs above: the old value atomicAdd returns says whether the
// add wrapped. Carries commute, so the final limbs are exact in any order.
fn acc_add(first: u32, x: u32, end: u32) {
    var i = first;
    var v = x;
    while v != 0u && i < end {
        let old = atomicAdd(&wg_acc[i], v);
        v = carry(old + v, v);
        i++;
    }
}

// 128-bit two's complement addition of word vectors (x = lowest word).
fn add128(a: vec4<u32>, b: vec4<u32>) -> vec4<u32> {
    let s0 = a.x + b.x;
    let c0 = carry(s0, b.x);
    let t1 = a.y + b.y;
    let s1 = t1 + c0;
    let c1 = carry(t1, b.y) + carry(s1, c0);
    let t2 = a.z + b.z;
    let s2 = t2 + c1;
    let c2 = carry(t2, b.z) + carry(s2, c1);
    return vec4<u32>(s0, s1, s2, a.w + b.w + c2);
}

fn neg128(a: vec4<u32>) -> vec4<u32> {
    return add128(~a, vec4<u32>(1u, 0u, 0u, 0u));
}

// Adds the signed 128-bit `w`, scaled by 2^bit, to the workgroup's
// accumulator (its magnitude to the positive or the negative limbs).
// |w| < 2^127 - 2^31 is required, which the callers' value counts ensure.
fn flush_signed(w: vec4<u32>, bit: u32) {
    let negative = (w.w >> 31u) != 0u;
    let m = select(w, neg128(w), negative);
    let region = select(0u, LIMBS, negative);
    let end = region + LIMBS;
    let l = region + (bit >> 5u);
    let r = bit & 31u;
    // m << r over five words; (x >> 1) >> (31 - r) is x >> (32 - r), and 0 for r = 0.
    let o0 = m.x << r;
    let o1 = (m.y << r) | ((m.x >> 1u) >> (31u - r));
    let o2 = (m.z << r) | ((m.y >> 1u) >> (31u - r));
    let o3 = (m.w << r) | ((m.z >> 1u) >> (31u - r));
    let o4 = (m.w >> 1u) >> (31u - r);
    acc_add(l, o0, end);
    acc_add(l + 1u, o1, end);
    acc_add(l + 2u, o2, end);
    acc_add(l + 3u, o3, end);
    acc_add(l + 4u, o4, end);
}

// The larger of two (lo, hi) keys.
fn key_max(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let b_wins = b.y > a.y || (b.y == a.y && b.x > a.x);
    return select(a, b, b_wins);
}

// Workgroup-wide maximum of every invocation's key, in two phases (high
// word, then the low word among those holding the highest high word).
// Called by every invocation of the workgroup (it holds barriers).
fn key_reduce(k: vec2<u32>) {
    atomicMax(&wg_key_hi, k.y);
    workgroupBarrier();
    if k.y == atomicLoad(&wg_key_hi) {
        atomicMax(&wg_key_lo, k.x);
    }
}

// Index of the segment that owns global unit `unit`: the last segment whose
// first_unit <= unit (empty segments own no unit and are skipped naturally).
fn find_segment(unit: u32) -> u32 {
    var lo = 0u;
    var hi = params.segment_count - 1u;
    while lo < hi {
        let mid = (lo + hi + 1u) / 2u;
        if segments[mid].first_unit <= unit {
            lo = mid;
        } else {
            hi = mid - 1u;
        }
    }
    return lo;
}

struct UnitRange {
    start: u32, // first item, relative to the input binding
    len: u32,   // items in this unit
}

fn unit_range(unit: u32, unit_size: u32) -> UnitRange {
    let seg = find_segment(unit);
    let s = segments[seg];
    let j = unit - s.first_unit;
    let is_last = unit + 1u == segments[seg + 1u].first_unit;
    let len = select(unit_size, s.last_len, is_last);
    // Wrapping arithmetic on the low 32 bits: exact because the true
    // difference is below 2^32 (a binding holds fewer than 2^32 items).
    let start = s.offset_lo + j * unit_size - params.input_base_lo;
    return UnitRange(start, len);
}

// Word j of a unit's input, 0 past its end (scalar loads: any alignment).
fn word_at(range: UnitRange, j: u32) -> u32 {
    if j < range.len {
        return in_scalar[range.start + j];
    }
    return 0u;
}

// The vec4 of words j .. j+3 of a unit (j a multiple of 4), 0 past its end.
fn vec4_at(range: UnitRange, j: u32, fast: bool) -> vec4<u32> {
    if fast {
        return in_vec4[(range.start + j) / 4u];
    }
    return vec4<u32>(word_at(range, j), word_at(range, j + 1u), word_at(range, j + 2u), word_at(range, j + 3u));
}

// Writes the workgroup's result as the partial of `unit`. Invocation 0 only,
// after a barrier that follows every invocation's last flush.
fn write_partial(unit: u32, count_lo: u32, count_hi: u32) {
    let base = (unit - params.out_base) * PARTIAL_WORDS;
    // Positive minus negative limbs, with the borrow carried up.
    var borrow = 0u;
    for (var i = 0u; i < LIMBS; i++) {
        let p = atomicLoad(&wg_acc[i]);
        let n = atomicLoad(&wg_acc[LIMBS + i]);
        let d = p - n;
        let d2 = d - borrow;
        borrow = select(0u, 1u, p < n) + select(0u, 1u, d < borrow);
        out_partials[base + i] = d2;
    }
    out_partials[base + P_COUNT] = count_lo;
    out_partials[base + P_COUNT + 1u] = count_hi;
    out_partials[base + P_FLAGS] = atomicLoad(&wg_flags);
    out_partials[base + P_KEY] = atomicLoad(&wg_key_lo);
    out_partials[base + P_KEY + 1u] = atomicLoad(&wg_key_hi);
}
